# Two entry points for a fresh machine: `make submission` and `make test`.
# Both create .venv when it is missing and (re)install when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PROFILE ?= default
DATA ?=
NAME ?= ISTRATI_LUCIAN
OUT ?= dist

.PHONY: submission test install data benchmark clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

submission: install
	$(BIN)/python scripts/export_submission.py --profile $(PROFILE) --name $(NAME) --out $(OUT) $(if $(DATA),--data-dir $(DATA))

test: install
	$(BIN)/python -m pytest

data: install
	$(BIN)/python -m contest_study.synthetic --out data/embedded

benchmark: install
	$(BIN)/python scripts/benchmark_loader.py

clean:
	rm -rf build dist .cache
