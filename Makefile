# asgi_lab: two commands for a newcomer (see README.md)
#   make lab    create .venv if missing, install everything, open JupyterLab on notebooks/
#   make test   the same bootstrap, then pytest over tests/ and (with nbval) notebooks/
# and a few more:
#   make demo   the headless main job: serve, trace and chart without a browser
#   make notebooks  execute every notebook in a clean kernel and store it with its outputs
#   make bench  the side-by-side benchmarks (prints tables), then re-renders the results pages
#   make docs   the docs site, offline, into docs/_build/html (open docs/_build/html/index.html)
#   make fuzz   the long property-based fuzzing run

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: lab test demo notebooks bench docs results fuzz clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[lab,test,bench,docs]'
	@touch $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

test: $(STAMP)
	$(PY) -m pytest tests notebooks --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider --durations=20

demo: $(STAMP)
	$(PY) -m asgi_lab demo --out demo-output

notebooks: $(STAMP)
	$(PY) tools/execute_notebooks.py

# Each benchmark writes its result into $(BENCH_OUT) first, and all are copied into
# benchmarks/results at the end: a result written there at once would change the tree,
# and every later benchmark would record its commit "with uncommitted changes".
BENCH_OUT := .bench-out
# wsgi_hello and sse_gc take 5 rounds: on a shared machine the rounds of one server spread
# widely (their min-max is in each result), and a median of 3 can rank close servers by chance.

bench: $(STAMP)
	mkdir -p $(BENCH_OUT)
	$(PY) benchmarks/http_hello.py --json $(BENCH_OUT)/http-hello.json
	$(PY) benchmarks/ws_echo.py --json $(BENCH_OUT)/ws-echo.json
	$(PY) benchmarks/chat_load.py --json $(BENCH_OUT)/chat-load.json
	$(PY) benchmarks/wsgi_hello.py --connections 16,50 --client wrk --rounds 5 --json $(BENCH_OUT)/wsgi-hello.json
	$(PY) benchmarks/wsgi_hello.py --connections 16,50 --client wrk --rounds 5 --pin 0 --json $(BENCH_OUT)/wsgi-hello-pinned.json
	$(PY) benchmarks/tracer_overhead.py --json $(BENCH_OUT)/tracer-overhead.json
	$(PY) benchmarks/sse_clients.py --json $(BENCH_OUT)/sse-clients.json
	$(PY) benchmarks/sse_gc.py --rounds 5 --json $(BENCH_OUT)/sse-gc.json
	$(PY) benchmarks/slow_clients.py --json $(BENCH_OUT)/slow-clients.json
	$(PY) benchmarks/gunicorn_workers.py --json $(BENCH_OUT)/gunicorn-workers.json
	$(PY) benchmarks/wsgi_per_request.py --json $(BENCH_OUT)/wsgi-per-request.json
	$(PY) benchmarks/request_path.py --json $(BENCH_OUT)/request-path.json
	cp $(BENCH_OUT)/*.json benchmarks/results/
	$(PY) tools/render_results.py

# docs and results use an existing .venv as it is (never reinstall a venv another checkout
# shares); it needs the docs extra, which the bootstrap above installs.
BOOTSTRAP := $(if $(wildcard $(STAMP)),,$(STAMP))

# The performance and reliability pages and the README's result blocks, from the result files.
results: $(BOOTSTRAP)
	$(PY) tools/render_results.py

# Sphinx + myst-nb + furo, offline; notebooks shown with their stored outputs (not executed).
# The doctree cache in docs/_build/doctrees makes a rebuild read only what changed.
docs: results $(BOOTSTRAP)
	$(PY) -m sphinx -b html -q -j auto -c docs -d docs/_build/doctrees . docs/_build/html
	@echo "docs/_build/html/index.html"

fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=long $(PY) -m pytest tests/test_fuzz.py -p no:cacheprovider

clean:
	rm -rf $(VENV) demo-output .pytest_cache .hypothesis docs/_build docs/_generated
