# Two commands do all the set-up on a fresh machine:
#   make demo   - install what the demo needs into .venv, then analyse the shipped sample case
#   make test   - install that plus the test tools (slicer-core, trame-slicer), then run every test suite
# and one checks a change quickly:
#   make check  - the fast tier: every test not marked slow, harness or browser (a few minutes)
# and one builds the documentation site:
#   make docs   - mkdocs build --strict into site/ (mkdocs.yml; warnings, broken links among them, fail it)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --progress-bar off
# torch 2.13.0: on the project's CPU machines pip takes a CPU build from local disk.
TORCH ?= torch==2.13.0

.PHONY: demo test check install bench screenshot docs
install: $(VENV)/.installed

# The library alone: what `normativead` needs (no Slicer, no VTK).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) "$(TORCH)"
	$(PIP) -e .
	touch $@

# The test tools: pytest, a real MRML scene (slicer-core) and rendered views (trame-slicer).
$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e ".[test,slicer,web,batch]"
	touch $@

demo: install
	$(VENV)/bin/normativead demo --out normativead_demo --overwrite

test:
	@echo "make test: about 20-25 minutes on a 2-core CPU (plus about 5 minutes of installation on a fresh machine)"
	@$(MAKE) --no-print-directory $(VENV)/.installed-test
	$(PY) -m pytest Testing

# The markers are registered in pyproject.toml; Testing/conftest.py says which tests are slow and why.
FAST := not slow and not harness and not browser
check:
	@echo "make check: about 3-4 minutes on a 2-core CPU shared with other work (make test runs everything)"
	@$(MAKE) --no-print-directory $(VENV)/.installed-test
	$(PY) -m pytest Testing -q -m "$(FAST)"

bench: install
	$(VENV)/bin/normativead bench

# Refresh the README's screenshot (docs/screenshot_overlay.png); tests alone never write into the tree.
screenshot: $(VENV)/.installed-test
	NORMATIVEAD_UPDATE_SCREENSHOT=1 $(PY) -m pytest -q Testing/module/test_slicer_render.py -k overlay

# The documentation site (mkdocs.yml) into site/; --strict turns every warning (a broken link or anchor,
# an API page that cannot be generated) into a failure. CI runs it too.
$(VENV)/.installed-docs: $(VENV)/.installed
	$(PIP) -e ".[docs]"
	touch $@

docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict
