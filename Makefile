# Two commands do all the set-up on a fresh machine:
#   make demo   enhance the bundled EMD-3488 example (writes demo_output/)
#   make test   run the test suite
# A GPU user installs the CUDA build of torch instead:  make demo TORCH_SPEC=torch
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP = $(VENV)/bin/pip

.PHONY: demo test benchmark clean

# The plugin (repository root) brings a copy of the engine (engine/) as its dependency; the engine
# is then made editable too.
$(VENV)/.installed: pyproject.toml setup.py engine/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -c constraints.txt -e ".[test]"
	$(PIP) install --quiet --no-deps -e ./engine
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/python scripts/demo.py

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q

benchmark: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/bench_enhance.py

clean:
	rm -rf $(VENV) demo_output
