# Two entry points (README): `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test clean default-model demo-clip ablations bench

setup: $(VENV)/.installed

# torch==2.13.0 goes in first so that resolving the package pulls no other torch build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,export,serve,gaze]'
	touch $@

# The README's main job: the built-in model on the bundled clip, offline.
demo: setup
	$(BIN)/avrsp predict src/avrsp/assets/demo.mp4 --out runs/demo --side-by-side
	@echo "outputs: runs/demo/demo/demo_saliency.mp4 (overlay video with sound) and runs/demo/demo/maps/ (one PNG per frame)"

# How the shipped assets were made (docs/default_model.md); each rewrites src/avrsp/assets/.
# The built-in model is the fusion study's full model (RAVF) of training seed 0: the
# study's data, audio front-end, stage 1 and two-part stage 2 (docs/results.md).
# The built-in model (docs/default_model.md): the fusion study's recipe for RAVF, seed 0,
# with a longer stage 2, scored on the study's development set and measured on the videos
# of docs/default_model.md; the package's file is the model this writes, copied by hand.
default-model: setup
	$(BIN)/avrsp ablate --config configs/studies/default_model.yaml
	$(BIN)/python benchmarks/default_model_claims.py --checkpoint runs/default_model/runs/ravf/seed0/all/best.safetensors \
		--out runs/default_model/claims.json

demo-clip: setup
	$(BIN)/avrsp synth runs/demo-src --videos 3 --frames 96 --height 144 --width 256 --seed 7 --relevant-fraction 1 --overwrite
	cp runs/demo-src/videos/synth_000_relevant.mp4 src/avrsp/assets/demo.mp4

# The fusion study (docs/results.md; 27 runs, about 7 hours on 2 CPU cores from scratch: each
# run's record holds its seconds; resumable, so it can run in parts), scored on its test set, and the inference benchmark (docs/performance.md, with the
# recorded GPU run merged in).
ablations: setup
	$(BIN)/avrsp ablate --config configs/studies/fusion.yaml score_set=test jobs=2

# The CPU record's own command, then docs/performance.md's tables from every committed
# record (the GPU's included) and benchmarks/targets.yaml.
bench: setup
	$(BIN)/avrsp bench --configs avrsp avrsp_tiny --batches 1 4 --train --e2e-models built-in avrsp:2 \
		--json benchmarks/results/cpu.json
	$(BIN)/python benchmarks/report.py --write docs/performance.md

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
