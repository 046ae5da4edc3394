# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install migrate run test models bench lint format

install: $(STAMP)

# torch first, pinned, so pip takes the local CPU build and never pulls a CUDA one.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test]'
	touch $(STAMP)

migrate: install
	$(BIN)/genserve migrate

run: migrate
	$(BIN)/genserve serve

# Most tests wait on servers, clusters and browsers starting, not on the CPU: two modules run
# at a time (each pytest worker has its own PostgreSQL database, tests/conftest.py).
test: install
	$(BIN)/pytest -x -q -n 2 --dist loadfile --ignore=tests/ray
	$(BIN)/pytest -x -q -n 2 --dist loadfile tests/ray

models: install
	$(BIN)/python -m models.build sentiment digits

bench: install
	$(BIN)/python bench/classification_quality.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
