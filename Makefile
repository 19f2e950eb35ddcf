# The two commands of the quick start. Both create or reuse .venv and install what is needed.
PY := .venv/bin/python

.PHONY: demo test setup lint

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) -m switchnerf demo

# The viewer's browser test needs chromium: setup installs it when SWITCHNERF_BROWSER=1.
# The native ops are required here (a failed build is an error, not skipped tests); pytest
# runs tests/ and the doctests of switchnerf/ and prints why anything was skipped
# (pyproject.toml [tool.pytest.ini_options]).
test:
	SWITCHNERF_BROWSER=1 bash scripts/setup.sh
	SWITCHNERF_BACKEND=native $(PY) -m pytest

lint: setup
	$(PY) -m ruff check switchnerf tests bench
