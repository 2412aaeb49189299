# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test setup clean

$(BIN)/.installed: requirements.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	touch $@

setup: $(BIN)/.installed

# a short SimCLR run on the embedded demo set (real CIFAR-10 images), a few minutes on a CPU
demo: setup
	$(BIN)/python train_simclr.py --dataset demo --subset 2000 --epochs 5 --batch-size 128 \
		--warmup-epochs 1 --linear-epochs 5 --record demo_2_quick --overwrite
	@echo "CSV logs: results/demo_2_quick_seed1339_pretrain.csv, results/demo_2_quick_seed1339_linear.csv"

test: setup
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) .pytest_cache
