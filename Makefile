# asgi_lab: two commands for a newcomer (see README.md)
#   make lab    create .venv if missing, install everything, open JupyterLab on notebooks/
#   make test   the same bootstrap, then pytest over tests/ and (with nbval) notebooks/
# and a few more:
#   make demo   the headless main job: serve, trace and chart without a browser
#   make notebooks  execute every notebook in a clean kernel and store it with its outputs
#   make bench  the side-by-side benchmarks (prints tables)
#   make fuzz   the long property-based fuzzing run

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: lab test demo notebooks bench fuzz clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[lab,test,bench]'
	@touch $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

test: $(STAMP)
	$(PY) -m pytest tests notebooks --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider

demo: $(STAMP)
	$(PY) -m asgi_lab demo --out demo-output

notebooks: $(STAMP)
	$(PY) tools/execute_notebooks.py

bench: $(STAMP)
	$(PY) benchmarks/http_hello.py
	$(PY) benchmarks/ws_echo.py
	$(PY) benchmarks/chat_load.py
	$(PY) benchmarks/wsgi_hello.py
	$(PY) benchmarks/tracer_overhead.py
	$(PY) benchmarks/sse_clients.py

fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=long $(PY) -m pytest tests/test_fuzz.py -p no:cacheprovider

clean:
	rm -rf $(VENV) demo-output .pytest_cache .hypothesis
