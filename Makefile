# difix-ns: `make demo` and `make test` each set up everything they need (idempotent).
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTHON ?= python3

.PHONY: setup system-deps demo test constraints clean

setup: $(STAMP)

# Re-run the install only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	$(MAKE) --no-print-directory system-deps
	touch $(STAMP)

# nerfstudio reads point clouds (splatfacto's initial points) with open3d, which needs the system's libusb.
system-deps:
	@$(PY) -c "import open3d" 2>/dev/null || { \
	  command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
	  && { apt-get update -qq && apt-get install -y -qq libusb-1.0-0 >/dev/null; } \
	  || { echo "open3d cannot load: install the system package libusb-1.0-0 (e.g. sudo apt-get install libusb-1.0-0)"; exit 1; }; }
	@$(PY) -c "import open3d"

demo: setup
	$(VENV)/bin/difix-ns demo --out outputs/demo

test: setup
	$(PY) -m pytest -q tests

# Refresh constraints.txt from the current environment (after changing dependencies in pyproject.toml).
constraints: setup
	{ sed -n '1,3p' constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -v -i '^difix' \
	  | sed -e 's/^torch==/torch===/' -e 's/^torchvision==/torchvision===/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) outputs
