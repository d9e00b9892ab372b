# Two commands do all the set-up on a fresh machine:
#   make demo   - install into .venv, then analyse the shipped sample case with the shipped model
#   make test   - install into .venv, then run the test suites
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.13.0: on the project's CPU machines pip takes a CPU build from local disk.
TORCH ?= torch==2.13.0
EXTRAS ?= test,slicer

.PHONY: demo test install bench
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

demo: install
	$(VENV)/bin/normativead demo --out normativead_demo --overwrite

test: install
	$(PY) -m pytest Testing

bench: install
	$(VENV)/bin/normativead bench
