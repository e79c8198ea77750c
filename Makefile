# Entry points for a fresh machine: `make demo`, `make demo-vit` and `make test` (CI runs `make test`).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install data test demo demo-vit lint

$(BIN)/python:
	$(PY) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'

# Real offline data: Fashion-MNIST from Debian (needs root or sudo; skipped when already present).
data:
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || \
	  ( (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || \
	    (sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist) )

test: install data
	$(BIN)/python -m pytest -q tests

lint: install
	$(BIN)/ruff check vitkd scripts tests

demo: install data
	$(BIN)/accelerate launch --num_processes 1 scripts/distill.py --recipe recipes/quickstart_teacher.yaml --resume
	$(BIN)/accelerate launch --num_processes 1 scripts/distill.py --recipe recipes/quickstart.yaml --resume
	$(BIN)/accelerate launch --num_processes 1 scripts/distill.py --recipe recipes/quickstart_student_alone.yaml --resume
	$(BIN)/python scripts/make_table.py runs/quickstart runs/quickstart_student_alone

# A ViT distilled from the quickstart CNN teacher vs the same ViT alone, 2 seeds each (Fashion-MNIST, CPU-sized).
demo-vit: install data
	$(BIN)/accelerate launch --num_processes 1 scripts/distill.py --recipe recipes/quickstart_teacher.yaml --resume
	for seed in 0 1; do \
	  $(BIN)/accelerate launch --num_processes 1 scripts/distill.py --recipe recipes/demo_vit/vit_alone.yaml --resume --set train.seed=$$seed && \
	  $(BIN)/accelerate launch --num_processes 1 scripts/distill.py --recipe recipes/demo_vit/vit_distilled.yaml --resume --set train.seed=$$seed || exit 1; \
	done
	$(BIN)/python scripts/make_table.py runs/demo_vit/alone runs/demo_vit/distilled
