"""What a model does with the sound on unseen synthetic videos: the figures of
docs/default_model.md and README's paragraph on the built-in model.

    .venv/bin/python benchmarks/default_model_claims.py [--checkpoint FILE] \
        [--out results/default_model/claims.json]

* **Relevant videos** (one disc sounds at a time; viewers look at it): the fraction of
  frames whose map peaks on the sounding disc with the sound and with silence, over the
  48 videos of seeds 6000–6007 (6 each, 40 frames at 144×256), paired on the same frames,
  and per seed. tests/test_predict.py holds the built-in model's bars on the same videos.
* **Videos whose sound says nothing about where viewers look** (5 each, seed 99): music
  below every disc tone, music in the tones' register, and off-screen tones (a palette
  tone whose disc is not in the picture). The measure is the CC of each frame's map made
  with the sound against with silence, averaged: 1 means the sound is discounted.

Each measure in fp32 and in bf16. The record holds the commit, the machine and the
checkpoint's SHA-256, so that a figure can be traced to the file it describes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from avrsp.ablate import code_commit, machine_label
from avrsp.checkpoint import atomic_write
from avrsp.data.synth import SynthConfig, generate_video, write_mp4
from avrsp.media import MediaWarning
from avrsp.predict import Predictor, default_checkpoint

BAR_SEEDS, BAR_VIDEOS = range(6000, 6008), 6
SIZE = dict(frames=40, height=144, width=256)
DISCOUNT = SynthConfig(videos=5, seed=99, **SIZE)
DISCOUNT_KINDS = {"music below the tones": ("music", "low"), "music in the tones' register": ("music", "tones"),
                  "off-screen tones": ("offscreen", "tones")}


def _maps(predictor: Predictor, path: Path) -> tuple[list, list]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MediaWarning)
        return list(predictor.predict_video(path)), list(predictor.predict_video(path, audio=False))


def measure(checkpoint: Path, precision: str, folder: Path) -> dict:
    predictor = Predictor(checkpoint, device="cpu", precision=precision)
    per_seed = {}
    for seed in BAR_SEEDS:
        cfg = SynthConfig(videos=BAR_VIDEOS, seed=seed, **SIZE)
        hits, frames = np.zeros(2), 0
        for i in range(BAR_VIDEOS):
            video = generate_video(cfg, i, "relevant")
            path = folder / f"relevant_{seed}_{i}.mp4"
            if not path.is_file():
                write_mp4(path, video, cfg)
            for j, maps in enumerate(_maps(predictor, path)):
                hits[j] += sum(video.peak_on_sounding_disc(k, m) for k, m in enumerate(maps))
            frames += video.maps.shape[0]
        per_seed[seed] = {"sound": hits[0] / frames, "silence": hits[1] / frames, "frames": frames}
    frames = sum(s["frames"] for s in per_seed.values())
    relevant = {w: sum(s[w] * s["frames"] for s in per_seed.values()) / frames for w in ("sound", "silence")}
    discount = {}
    for name, (kind, register) in DISCOUNT_KINDS.items():
        cfg = dataclasses.replace(DISCOUNT, music_register=register)
        ccs = []
        for i in range(cfg.videos):
            path = folder / f"{kind}_{register}_{i}.mp4"
            if not path.is_file():
                write_mp4(path, generate_video(cfg, i, kind), cfg)
            sound, silence = _maps(predictor, path)
            ccs += [float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) for a, b in zip(sound, silence)]
        discount[name] = {"cc_sound_vs_silence": float(np.mean(ccs)), "frames": len(ccs)}
    return {"relevant": {**relevant, "gain": relevant["sound"] - relevant["silence"], "frames": frames,
                         "per_seed": per_seed},
            "discount": discount}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="a model file (default: the built-in one)")
    parser.add_argument("--out", type=Path, default=Path("results/default_model/claims.json"))
    args = parser.parse_args()
    checkpoint = args.checkpoint or default_checkpoint()
    commit, started = code_commit(), time.time()  # the code as it is imported, before any edit
    with tempfile.TemporaryDirectory() as tmp:
        figures = {p: measure(checkpoint, p, Path(tmp)) for p in ("fp32", "bf16")}
    record = {"checkpoint": checkpoint.name, "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
              "commit": commit, "machine": machine_label("cpu"), "seconds": round(time.time() - started, 1),
              "videos": {"relevant_seeds": list(BAR_SEEDS), "relevant_per_seed": BAR_VIDEOS,
                         "discount": dataclasses.asdict(DISCOUNT) | {"kinds": DISCOUNT_KINDS}},
              "precisions": figures}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))
    for p, f in figures.items():
        r = f["relevant"]
        print(f"{p}: relevant hits {r['sound']:.3f} with the sound, {r['silence']:.3f} with silence "
              f"({100 * r['gain']:+.1f} points); " + "; ".join(
                  f"{k} CC {v['cc_sound_vs_silence']:.3f}" for k, v in f["discount"].items()))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
