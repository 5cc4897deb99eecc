"""Speed work changes no array: raw.npz of the example images against the reference fingerprints.

See tests/raw_reference.py for what is kept and how it is compared.
"""
import json

import pytest

import raw_reference


@pytest.fixture(scope="module")
def reference():
    with open(raw_reference.REFERENCE) as f:
        data = json.load(f)
    entry = data.get(raw_reference.runtime())
    if entry is None:
        pytest.skip("no reference for runtime %s in tests/data/raw_reference.json" % raw_reference.runtime())
    return entry


def test_arrays_equal_the_reference(reference, shared_graphs):
    from ggcam.explainer import Explainer
    with Explainer() as ex:
        current = raw_reference.compute(ex)
    assert sorted(current) == sorted(reference["entries"])
    problems = raw_reference.mismatches(reference["entries"], current)
    assert not problems, "\n".join(problems)


def test_the_comparison_sees_a_change(reference):
    """A reordered sum passes; a change of 1e-4 of the scale in one value, or a swapped label, does not."""
    import copy
    entries = reference["entries"]
    key = sorted(entries)[0]
    assert raw_reference.mismatches(entries, entries) == []
    nudged = copy.deepcopy(entries)
    g = nudged[key]["conv_gradient"]
    g["sha256"] = "0" * 64
    g["sum"] += 1e-7 * g["abs_max"]  # rounding-sized: passes
    assert raw_reference.mismatches(entries, nudged) == []
    g["samples"][3] += 1e-4 * g["abs_max"]
    assert raw_reference.mismatches(entries, nudged) == ["%s conv_gradient: differs by 1.00e-04 of its scale" % key]
    nudged = copy.deepcopy(entries)
    nudged[key]["label"] += 1
    assert any("label" in p for p in raw_reference.mismatches(entries, nudged))
