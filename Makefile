# Two entry points for people and CI: `make run` and `make test`. Everything else is a helper of those.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test install data validate bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Restore data/ (dvc pull where a remote is configured, else rebuild from pinned wheels) and check it.
data: $(STAMP)
	$(VENV)/bin/mnn-parity data restore

run: data
	$(VENV)/bin/mnn-parity run suites/

validate: $(STAMP)
	$(VENV)/bin/mnn-parity validate suites/

test: data
	$(PY) -m pytest -q

bench: data
	$(PY) bench/overhead.py

clean:
	rm -rf $(VENV) .cache
