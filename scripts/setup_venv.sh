#!/usr/bin/env bash
# Create the venv of one TensorFlow runtime and install its pinned requirements.
#
#   RUNTIME=tf1 (default): .venv, Python 3.7 (TensorFlow 1.15 supports 3.5 to 3.7 only),
#       requirements.txt. Looks in: $PYTHON37, python3.7 on PATH, pyenv's 3.7 versions.
#   RUNTIME=tf2: .venv-tf2, the Python versions requirements-tf2.txt names on its
#       "# python:" line, requirements-tf2.txt. Looks in: $PYTHON3, python3.X on PATH (newest
#       first), pyenv's versions.
#   RUNTIME=auto: tf1 when a Python 3.7 is found, else tf2.
#   RUNTIME=docs: .venv-docs, the documentation site's tools (requirements-docs.txt) and the
#       package without TensorFlow, on the Python TF 2 would use (mkdocs needs 3.8 or newer).
#   RUNTIME=reference: .venv-reference, scipy and scikit-image (requirements-reference.txt) for
#       the metrics' reference check, on that Python too.
#   setup_venv.sh --detect: print the runtime auto would choose (tf1, tf2, or none) and exit.
#
# VENV overrides the venv folder. It installs the requirements and the package itself (editable).
# After installing, `python -m ggcam.tf.compat` builds and runs a
# small tf_slim network: a TensorFlow that breaks tf_slim fails the set-up with one line.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Python versions TensorFlow 2's pinned release has wheels for, from requirements-tf2.txt.
tf2_versions() {
    sed -n 's/^# python: *//p' requirements-tf2.txt | head -1
}

is_version() {  # interpreter, "3.7" -> whether it runs and is that version
    [ -n "$1" ] && [ -x "$1" ] && "$1" -c "import sys; sys.exit('%d.%d' % sys.version_info[:2] != '$2')" 2>/dev/null
}

resolve() {  # a name on PATH -> its path; paths and "" unchanged
    case "$1" in */*|"") echo "$1" ;; *) command -v "$1" || echo "$1" ;; esac
}
PYTHON3=$(resolve "${PYTHON3:-}")
PYTHON37=$(resolve "${PYTHON37:-}")

pyenv_root() { pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}"; }

find_python() {  # version, then the variable that may name an interpreter -> path on stdout
    local version=$1 given=$2 root p
    local candidates=("$given" "$(command -v "python$version" || true)")
    root=$(pyenv_root)
    for p in "$root"/versions/"$version".*/bin/python"$version" "$root"/versions/"$version".*/bin/python; do
        candidates+=("$p")
    done
    for p in "${candidates[@]}"; do
        if is_version "$p" "$version"; then echo "$p"; return 0; fi
    done
    return 1
}

find_python_tf2() {  # $PYTHON3 if it is a supported version, else the newest supported one found
    local v
    for v in $(tf2_versions); do
        if is_version "${PYTHON3:-}" "$v"; then echo "$PYTHON3"; return 0; fi
    done
    for v in $(tf2_versions | tr ' ' '\n' | sort -t. -k2,2nr); do
        if find_python "$v" ""; then return 0; fi
    done
    return 1
}

range() {  # "3.9 3.10 3.11" -> "3.9-3.11"
    local vs; vs=($(tf2_versions | tr ' ' '\n' | sort -t. -k2,2n))
    echo "${vs[0]}-${vs[${#vs[@]}-1]}"
}

RUNTIME=${RUNTIME:-tf1}
if [ "${1:-}" = "--detect" ]; then  # none: neither runtime's Python (the set-up then names both)
    if find_python 3.7 "${PYTHON37:-}" >/dev/null; then echo tf1
    elif find_python_tf2 >/dev/null; then echo tf2
    else echo none; fi
    exit 0
fi
case "$RUNTIME" in
    auto)
        if PY=$(find_python 3.7 "${PYTHON37:-}"); then
            RUNTIME=tf1
        elif PY=$(find_python_tf2); then
            RUNTIME=tf2
        else
            echo "error: neither Python 3.7 (for TensorFlow 1.15) nor Python $(range) (for TensorFlow 2) found." \
                 "Install one, e.g. 'pyenv install 3.11.7' or 'pyenv install 3.7.16', or point PYTHON3" \
                 "(TensorFlow 2) or PYTHON37 (TensorFlow 1.15) at one." >&2
            exit 1
        fi ;;
    tf1)
        if ! PY=$(find_python 3.7 "${PYTHON37:-}"); then
            echo "error: no Python 3.7 found (TensorFlow 1.15 needs Python 3.5-3.7). Install one, e.g." \
                 "'pyenv install 3.7.16', or point PYTHON37 at a python3.7 binary; or use TensorFlow 2:" \
                 "RUNTIME=tf2." >&2
            exit 1
        fi ;;
    tf2|docs|reference)
        if ! PY=$(find_python_tf2); then
            echo "error: no Python $(range) found (TensorFlow 2's pinned release, requirements-tf2.txt, has" \
                 "wheels for $(tf2_versions | sed 's/ /, /g') only). Install one, e.g. 'pyenv install 3.11.7'," \
                 "or point PYTHON3 at one." >&2
            exit 1
        fi ;;
    *)
        echo "error: RUNTIME must be auto, tf1 or tf2 (or docs, reference), not '$RUNTIME'" >&2
        exit 2 ;;
esac

if [ "$RUNTIME" = docs ] || [ "$RUNTIME" = reference ]; then  # tools of their own, no TensorFlow
    VENV=${VENV:-.venv-$RUNTIME}
    echo "$RUNTIME: using $PY ($("$PY" --version 2>&1)) for $VENV"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    if [ "$RUNTIME" = docs ]; then
        # the package's own dependencies (the flag tables build its parsers), no TensorFlow
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-docs.txt -e .
    else
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-reference.txt
    fi
    touch "$VENV/.installed"
    echo "installed requirements-$RUNTIME.txt into $VENV"
    exit 0
fi
if [ "$RUNTIME" = tf1 ]; then
    VENV=${VENV:-.venv}
    REQUIREMENTS=requirements.txt
    PIP="pip<24"  # the last pip for Python 3.7
else
    VENV=${VENV:-.venv-tf2}
    REQUIREMENTS=requirements-tf2.txt
    PIP=""  # the venv's own pip installs these wheels
fi
echo "runtime $RUNTIME: using $PY ($("$PY" --version 2>&1)) for $VENV"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
[ -z "$PIP" ] || "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$PIP"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS" -r requirements-dev.txt
# The package itself, editable: `ggcam` in the venv's bin, `import ggcam` from any folder.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e .
if ! "$VENV/bin/python" -m ggcam.tf.compat; then
    exit 1  # tf_compat said why in one line; no stamp, so the next make tries again
fi
touch "$VENV/.installed"
echo "installed $REQUIREMENTS into $VENV"
