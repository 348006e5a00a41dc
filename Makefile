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

# System packages (Debian), each checked by what needs it, so a set-up machine runs no apt at all:
#   libusb-1.0-0  open3d (nerfstudio reads splatfacto's initial points with it) needs it: required;
#   ffmpeg        ns-render writes videos with it;
#   chromium      the viewer test drives the real web viewer in headless chromium (skipped without it).
# Root with apt-get: one quiet `apt-get update` and install of what is missing; otherwise one line naming them.
system-deps:
	@missing=""; \
	$(PY) -c "import open3d" 2>/dev/null || missing="$$missing libusb-1.0-0"; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	[ -z "$$missing" ] && exit 0; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "installing system packages:$$missing"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } \
	    || echo "apt-get could not install:$$missing (see the messages above)"; \
	else \
	  echo "missing system packages:$$missing (needs root and apt-get; install them, e.g. sudo apt-get install$$missing)"; \
	fi; \
	$(PY) -c "import open3d" 2>/dev/null || { echo "open3d cannot load: install the system package libusb-1.0-0"; exit 1; }

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
