#!/usr/bin/env bash
# Create .venv with a Python 3.7 interpreter (TensorFlow 1.15 supports 3.5 to 3.7 only)
# and install requirements.txt. Looks in: $PYTHON37, python3.7 on PATH, pyenv's versions.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

is_py37() { [ -n "$1" ] && [ -x "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 7))' 2>/dev/null; }

find_python37() {
    local candidates=("${PYTHON37:-}" "$(command -v python3.7 || true)")
    local root
    root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
    for p in "$root"/versions/3.7*/bin/python3.7 "$root"/versions/3.7*/bin/python; do
        candidates+=("$p")
    done
    for p in "${candidates[@]}"; do
        if is_py37 "$p"; then echo "$p"; return 0; fi
    done
    return 1
}

if ! PY=$(find_python37); then
    echo "error: no Python 3.7 found (TensorFlow 1.15 needs Python 3.5-3.7). Install one, e.g." \
         "'pyenv install 3.7.16', or point PYTHON37 at a python3.7 binary." >&2
    exit 1
fi
echo "using $PY ($("$PY" --version 2>&1))"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "pip<24"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
touch "$VENV/.installed"
echo "installed requirements into $VENV"
