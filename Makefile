# Two entry points for a fresh machine: `make submission` and `make test`.
# Both create .venv when it is missing and (re)install when pyproject.toml or the lock changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
LOCK := requirements/lock.txt
PROFILE ?= default
DATA ?=
NAME ?= ISTRATI_LUCIAN
OUT ?= dist

# WeasyPrint lays the technical report out as a PDF through the Pango system library,
# and embeds font subsets through HarfBuzz's subsetting library.
PANGO_PACKAGES := libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0

.PHONY: submission test install lock pango data benchmark benchmark-pipeline clean

install: $(INSTALLED)
	@($(BIN)/python -c "from weasyprint import HTML" && /sbin/ldconfig -p | grep -q libharfbuzz-subset) >/dev/null 2>&1 \
		|| $(MAKE) --no-print-directory pango

# Pango from Debian when WeasyPrint cannot load it: installed as root, else said how.
pango:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Pango for the PDF report: apt-get install -y $(PANGO_PACKAGES)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(PANGO_PACKAGES) >/dev/null; \
	else \
		echo "note: the PDF report needs the Pango library, which WeasyPrint cannot load here;" \
			"install it as root (Debian/Ubuntu: apt-get install -y $(PANGO_PACKAGES)) and rerun;" \
			"until then the export writes the HTML report only" >&2; \
	fi

# The exact versions of the lock (CPU TensorFlow), then the package itself without resolving again.
$(INSTALLED): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# Re-resolve the lock after editing pyproject.toml's dependencies (uv keeps the pins that still
# fit; UPGRADE=--upgrade moves every pin to the newest allowed), then environment.yml from it.
# tensorflow stays out: the CPU build of the extra "cpu" provides its module.
lock: install
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/python -m uv pip compile pyproject.toml --extra cpu --extra test --no-emit-package tensorflow \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 --annotation-style line $(UPGRADE) -o $(LOCK)
	$(BIN)/python scripts/write_environment.py

submission: install
	$(BIN)/python scripts/export_submission.py --profile $(PROFILE) --name $(NAME) --out $(OUT) $(if $(DATA),--data-dir $(DATA))

test: install
	$(BIN)/python -m pytest

data: install
	$(BIN)/python -m contest_study.synthetic --out data/embedded

# Loader against the per-file loop, then the training throughput of every network (a few minutes).
benchmark: install data
	$(BIN)/python scripts/benchmark_loader.py
	$(BIN)/python scripts/benchmark_training.py

# End-to-end time of the pipeline in a scratch folder: empty registry, then nothing changed.
benchmark-pipeline: install data
	$(BIN)/python scripts/benchmark_pipeline.py --profile $(PROFILE) $(if $(DATA),--data-dir $(DATA))

clean:
	rm -rf build dist .cache
