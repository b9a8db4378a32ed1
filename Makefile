# EBW: `make serve` runs the server, `make test` passes the tests. Both set up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ebw-installed
SOURCES := pyproject.toml setup.py $(wildcard ebw/_fast/*.pyx ebw/_fast/*.pxd)

.PHONY: install serve test bench clean

install: $(STAMP)

$(STAMP): $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel Cython
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python setup.py --quiet build_ext --inplace
	$(BIN)/python -c "import ebw._fast.hl7scan, ebw._fast.adtread, ebw._fast.cfind"
	touch $(STAMP)

serve: install
	$(BIN)/ebw serve

# The whole suite on the compiled extensions, then the unit tests and the end-to-end
# worklist tests once more on the pure-Python twins (EBW_NO_EXTENSIONS=1).
test: install
	$(BIN)/python -m pytest -q tests
	EBW_NO_EXTENSIONS=1 $(BIN)/python -m pytest -q tests/unit tests/integration/test_slice.py tests/integration/test_lifecycle.py

# Micro-benchmarks, then the load harness (`ebw bench --help`): ADT durable and not,
# C-FIND at 10,000 items, C-FIND under ADT load, and the same load against wlmscpfs,
# Orthanc and python-hl7.
bench: install
	$(BIN)/python -m pytest bench -q --benchmark-only --benchmark-group-by=group
	$(BIN)/ebw bench adt -k 1 -k 16 -k 64 --messages 20000
	$(BIN)/ebw bench adt -k 16 --messages 20000 --fsync off
	$(BIN)/ebw bench cfind --items 10000
	$(BIN)/ebw bench mixed --items 10000 --duration 20 -k 16 -m 4
	$(BIN)/ebw bench peers --items 10000 --messages 5000
	$(BIN)/ebw bench ceiling

clean:
	rm -rf $(VENV) build *.egg-info ebw/_fast/*.c ebw/_fast/*.so ebw/_fast/*.html
