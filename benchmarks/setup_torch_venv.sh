#!/usr/bin/env bash
# benchmarks/.venv-torch: Python 3.11 with pytorch-grad-cam, for benchmarks/speed.py only.
# torch 2.14.1 and torchvision 0.29.1 are the pair whose wheels this machine kind keeps on disk
# (pytorch-grad-cam imports torchvision; the CPU-only torch 2.13.0 wheel has no torchvision to match).
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv-torch
[ -f "$VENV/.installed" ] && exit 0
PY=${PYTHON311:-$(command -v python3.11 || true)}
if [ -z "$PY" ]; then
    echo "error: python3.11 not found (needed for the pytorch-grad-cam comparison)" >&2
    exit 1
fi
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check grad-cam==1.5.7
touch "$VENV/.installed"
