# Everything sets itself up from nothing: `make test` and `make demo` create .venv,
# install the CPU build of torch (override with TORCH_SPEC=...), then the package.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# The torchvision release built for TORCH_SPEC (tests and benchmarks only: the model zoo).
TORCHVISION_SPEC ?= torchvision==0.28.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-fast demo docs bench clean

$(STAMP): pyproject.toml tests/support/torchvision_cpu_shim.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" "$(TORCHVISION_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]" --config-settings editable_mode=compat
	$(PY) tests/support/install_torchvision_shim.py
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	$(PY) examples/seed_readme.py
	$(PY) examples/demo_digits.py
	$(PY) examples/response_maps_digits.py

# The README's pictures: the digits demo's, from the newest run `make demo` wrote (needs the
# Debian package chromium), and the heatmaps of the README, MNIST and ResNet-18 networks.
docs: $(STAMP)
	$(PY) examples/docs_images.py --docs docs
	$(PY) examples/render_heatmaps.py docs

bench: $(STAMP)
	$(PY) benchmarks/transform.py

clean:
	rm -rf $(VENV) build *.egg-info
