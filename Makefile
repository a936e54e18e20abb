# The two commands of the README: `make demo` (the main job) and `make test`.
# Both create .venv when it is missing and install everything the project needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: demo test lint protos fashion-mnist chromium bench-replay clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: pip takes this build from the machine's disk.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Fashion-MNIST comes from Debian's package (root needed once).
fashion-mnist:
	@test -f $(FASHION) || { \
	  echo "installing dataset-fashion-mnist (Debian package)"; \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; } \
	  || { echo "could not install dataset-fashion-mnist: run 'apt-get install -y dataset-fashion-mnist' as root" >&2; exit 1; }

# Headless Chromium (Debian) opens the HTML report in the tests.
chromium:
	@test -x /usr/bin/chromium || { \
	  echo "installing chromium (Debian package)"; \
	  apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	  || { echo "could not install chromium: run 'apt-get install -y chromium chromium-driver' as root" >&2; exit 1; }

demo: $(STAMP) fashion-mnist
	$(PY) -m clients.demo

test: $(STAMP) fashion-mnist chromium lint
	$(PY) -m pytest

# ruff, and the architecture's import contracts (pyproject.toml [tool.importlinter]).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

protos: $(STAMP)
	scripts/generate_protos.sh

clean:
	rm -rf var .pytest_cache
