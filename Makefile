# `make test` and `make demo` each set up everything on a fresh machine (.venv, torch, the project).
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL ?= Salesforce/blip2-itm-vit-g
DEMO_DIR ?= runs/demo
# torch first: on CPU-only machines torch==2.13.0 resolves to a local CPU build; with a GPU, install your own.
TORCH ?= torch==2.13.0

.PHONY: test demo install clean docs docs-serve

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,finetune,ray,captions,data,knn,labels,docs]"
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(VENV)/bin/lint-imports --no-logo  # the import contracts in setup.cfg (docs/ARCHITECTURE.md)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

docs: $(VENV)/.installed  # the documentation site in site/ (built strictly: no broken link, no missing page)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

docs-serve: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

demo: $(VENV)/.installed
	$(VENV)/bin/featcache demo --model "$(MODEL)" --out "$(DEMO_DIR)"

clean:
	rm -rf $(VENV) runs site *.egg-info .pytest_cache .import_linter_cache
