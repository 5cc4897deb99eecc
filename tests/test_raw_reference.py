"""Speed work changes no array: raw.npz of the example images against the reference fingerprints.

See tests/raw_reference.py for what is kept and how it is compared.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import raw_reference
from conftest import ROOT

pytestmark = pytest.mark.graph


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


@pytest.mark.e2e
def test_the_one_image_command_line_keeps_to_the_reference(reference, tmp_path):
    """Run as a script, inference.py explains one photo on TF 1.15's plain kernels, from a
    cached graph the second time: both runs within 1e-5 of the reference, and equal."""
    runs = []
    for i in range(2):
        out = str(tmp_path / str(i))
        done = subprocess.run([sys.executable, os.path.join(ROOT, "inference.py"), "--image=%s" % os.path.join(
            ROOT, "images", "chelsea.png"), "--save_raw", "--output_dir=%s" % out],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        assert done.returncode == 0, done.stderr
        runs.append(np.load(os.path.join(out, "raw.npz")))
    assert os.listdir(os.environ["GGCAM_GRAPH_CACHE"])  # the first run kept its graph
    for raw in runs:
        assert raw_reference.mismatches(reference["entries"], {"chelsea.png:best": raw_reference.entry_of(raw)}) == []
    for name in runs[0].files:
        np.testing.assert_array_equal(runs[0][name], runs[1][name], err_msg=name)
