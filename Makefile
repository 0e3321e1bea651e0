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
	$(BIN)/python -m pip install --quiet -e '.[test,export,serve]'
	touch $@

# The README's main job: the built-in model on the bundled clip, offline.
demo: setup
	$(BIN)/avrsp predict src/avrsp/assets/demo.mp4 --out runs/demo --side-by-side
	@echo "outputs: runs/demo/demo/demo_saliency.mp4 (overlay video with sound) and runs/demo/demo/maps/ (one PNG per frame)"

# How the shipped assets were made (docs/default_model.md); each rewrites src/avrsp/assets/.
# default-model on 2 CPU cores: relevant-only data 24 min (5.3 GB), stage 1 11 min,
# stage 2 44 min; data with music videos too 24 min (5.3 GB), stage 3 12 min, stage 4 about 20 min;
# the same videos with half the music ones silent about 24 min, stage 5 about 14 min.
default-model: setup
	$(BIN)/avrsp synth runs/default-data --videos 3000 --frames 16 --height 144 --width 256 --relevant-fraction 1 --seed 0 --overwrite
	$(BIN)/python benchmarks/audio_binding.py --pitch-probe --videos 100 --steps 300 --save runs/default-data/soundnet_probe.safetensors
	$(BIN)/avrsp train --config configs/default_model_stage1.yaml
	$(BIN)/avrsp train --config configs/default_model.yaml
	$(BIN)/avrsp synth runs/default-data-both --videos 3000 --frames 16 --height 144 --width 256 --relevant-fraction 0.5 --seed 0 --overwrite
	$(BIN)/avrsp train --config configs/default_model_music.yaml
	$(BIN)/avrsp train --config configs/default_model_probe.yaml
	$(BIN)/avrsp synth runs/default-data-silent --videos 3000 --frames 16 --height 144 --width 256 --relevant-fraction 0.5 --silent-fraction 0.5 --seed 0 --overwrite
	$(BIN)/avrsp train --config configs/default_model_silent.yaml
	cp runs/train/default_model_silent/best.safetensors src/avrsp/assets/avrsp_tiny_synth.safetensors

demo-clip: setup
	$(BIN)/avrsp synth runs/demo-src --videos 3 --frames 96 --height 144 --width 256 --seed 7 --relevant-fraction 1 --overwrite
	cp runs/demo-src/videos/synth_000_relevant.mp4 src/avrsp/assets/demo.mp4

# The reduced ablation study (docs/results.md; about 3 hours on 2 CPU cores) and the
# inference benchmark (docs/performance.md, with the recorded GPU run merged in).
ablations: setup
	$(BIN)/avrsp ablate

bench: setup
	$(BIN)/avrsp bench --merge benchmarks/results/h200.json --json benchmarks/results/cpu.json --write docs/performance.md

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
