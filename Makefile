# Quick start: `make serve` (set-up + demo model on first run + API on the in-memory store), `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= artifacts/demo
EXTRAS ?= serve,train,dev

.PHONY: setup test lint format serve demo-model demo bench lock clean

setup: $(VENV)/.installed

# torch is installed first, pinned to 2.13.0: a bare `torch` would pull a CUDA build. On the development
# machine pip finds the CPU wheel on disk; elsewhere run `make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu`.
TORCH_INDEX ?=
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),) torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

test: setup
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pip_audit -r constraints.txt --no-deps --disable-pip --progress-spinner off

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# Builds the demo artifact (simulator data -> teacher -> distilled student -> ONNX) once.
demo-model: setup
	@if [ -f $(DEMO_DIR)/artifact/model.onnx ]; then echo "demo model present: $(DEMO_DIR)/artifact"; \
	else echo "no model yet: building the demo model into $(DEMO_DIR) (first run only) ..."; \
	$(PY) -m training.distill --demo --output-dir $(DEMO_DIR); fi

serve: demo-model
	KT_MODEL_DIR=$${KT_MODEL_DIR:-$(DEMO_DIR)/artifact} $(PY) -m service

# Long: quality trains 4 models on the Riiid sample, on Statics, on 500 and 2,000 simulated learners and on the
# simulator with retries (the medium-data stand-in), then a large SAINT+ teacher for the simulator distillation;
# soak runs 5 minutes. Each writes its docs/benchmarks.md section.
bench: setup
	$(PY) -m bench.loader_bench
	$(PY) -m bench.quality --datasets riiid
	$(PY) -m bench.quality --datasets statics --section quality-statics
	$(PY) -m bench.quality --datasets sim --learners 500,2000 --section quality-sim
	$(PY) -m bench.quality --datasets retry --learners 1700 --models logistic,dkt,saint_plus --section quality-retry
	$(PY) -m training.train --train-file bench/out/quality/sim2000/split/history.csv \
	  --questions-file bench/out/quality/sim2000/questions.csv --model saint_plus \
	  --d-model 256 --layers 3 --heads 8 --epochs 6 --report-to none --output-dir bench/out/teachers/sim_large
	$(PY) -m bench.distill_bench --dataset sim --teacher bench/out/teachers/sim_large --epochs 15
	$(PY) -m bench.distill_bench --dataset riiid --teacher bench/out/quality/riiid/saint_plus
	$(PY) -m bench.time_encoding
	$(PY) -m bench.serve_bench
	$(PY) -m bench.idle_gap
	$(PY) -m bench.soak

DEMO_URL ?= http://127.0.0.1:8000
DEMO_LEARNERS ?= 100
# Replays fresh simulator traffic through the running service (`make serve` in another shell) and
# prints the online AUC. Seed 0 + default bank = the demo model's question bank (distill --demo, --seed 0).
demo: setup
	@if [ ! -f $(DEMO_DIR)/replay/split/eval.csv ]; then \
	  $(PY) -m training.simulate --learners $(DEMO_LEARNERS) --seed 0 --out $(DEMO_DIR)/replay/sim > /dev/null && \
	  $(PY) -m training.split_csv --train-file $(DEMO_DIR)/replay/sim/train.csv --eval-fraction 0.2 --out $(DEMO_DIR)/replay/split > /dev/null; fi
	$(PY) -m training.replay --url $(DEMO_URL) \
	  --history-file $(DEMO_DIR)/replay/split/history.csv \
	  --eval-file $(DEMO_DIR)/replay/split/eval.csv \
	  --questions-file $(DEMO_DIR)/replay/sim/questions.csv \
	  $(if $(KT_API_KEY),--api-key $(KT_API_KEY),)

# onnxruntime-gpu is not installed here (it replaces onnxruntime in the gpu extra), so it is pinned by hand.
ORT_GPU_VERSION ?= 1.31.1
lock: setup
	{ echo "# Pinned versions for reproducible installs (pip install -c constraints.txt ...). Regenerate with \`make lock\`."; \
	  $(PY) -m pip freeze --exclude-editable | sed 's/+cpu//'; \
	  echo "# not installed here (gpu extra, runtime-gpu image); built for CUDA 13 + cuDNN 9"; \
	  echo "onnxruntime-gpu==$(ORT_GPU_VERSION)"; } > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
