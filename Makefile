# Two commands: `make demo` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV := .venv
STAMP := $(VENV)/.stamp-setup
PYTEST_ARGS ?=

.PHONY: demo test setup clean

$(STAMP): pyproject.toml requirements.lock scripts/setup.sh scripts/install-debian-deps.sh scripts/debian-packages.txt
	bash scripts/setup.sh
	touch $@

# The strict editable install links files, so new modules need a (quick, offline) relink.
setup: $(STAMP)
	@bash scripts/install-debian-deps.sh
	@$(VENV)/bin/python -m pip install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=strict \
		> $(VENV)/relink.log 2>&1 || { cat $(VENV)/relink.log; exit 1; }

demo: setup
	$(VENV)/bin/tympan demo

test: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
