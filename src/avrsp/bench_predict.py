"""``predict`` around the network, for ``avrsp bench``: end to end against the model
alone, the CPU cost of each thing ``predict`` does besides the model, the preview's
speed-up and agreement (``--every K``), and bf16 against fp32 maps.

All on generated videos (``avrsp synth``'s renderer, 144×256 at 15 fps, with sound)
that the built-in model never saw.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from avrsp.bench_model import inputs, sync
from avrsp.graph import prepare
from avrsp.inference import predict_frames
from avrsp.runtime import default_streams, in_streams

FPS = 15.0


def synthetic_video(seconds: float, height: int, width: int, seed: int, kind: str = "relevant"):
    """(its SynthConfig, the video) of ``seconds`` at 15 fps."""
    from avrsp.data.synth import SynthConfig, generate_video

    cfg = SynthConfig(videos=3, frames=int(seconds * FPS), height=height, width=width, fps=FPS, seed=seed)
    return cfg, generate_video(cfg, 0, kind)


def write_video(path: Path, seconds: float, seed: int, kind: str = "relevant") -> Path:
    """A generated 144×256 video with sound, as an MP4 file at ``path``."""
    from avrsp.data.synth import write_mp4

    cfg, video = synthetic_video(seconds, 144, 256, seed=seed, kind=kind)
    write_mp4(path, video, cfg)
    return path


def accuracy(device: str, clips: int = 3, seconds: float = 4.0) -> dict:
    """bf16 vs fp32 maps of the built-in model on unseen synthetic videos (both kinds)."""
    from avrsp.checkpoint import load_model
    from avrsp.media import resize_rgb
    from avrsp.predict import default_checkpoint

    m32 = prepare(load_model(default_checkpoint()), device, "fp32")
    m16 = prepare(load_model(default_checkpoint()), device, "bf16")
    size = (m32.config.height, m32.config.width)
    diffs, ccs = [], []
    for i in range(clips):
        _, video = synthetic_video(seconds, 144, 256, seed=1000 + i, kind=("relevant", "music")[i % 2])
        frames = [resize_rgb(f, size) for f in video.frames]
        a = np.stack([m for _, m in predict_frames(m32, frames, len(frames), FPS, video.audio, batch=4)])
        b = np.stack([m for _, m in predict_frames(m16, frames, len(frames), FPS, video.audio, batch=4)])
        diffs.append(float(np.abs(a - b).max()))
        for x, y in zip(a, b):
            ccs.append(float(np.corrcoef(x.ravel(), y.ravel())[0, 1]))
    return {"videos": clips, "frames": len(ccs), "max_abs_diff": max(diffs), "cc_mean": float(np.mean(ccs)),
            "cc_min": float(np.min(ccs))}


def end_to_end(checkpoint: Path | None, device: str, seconds: float, batch: int, rounds: int = 3) -> dict:
    """``avrsp predict`` (maps + overlay video) on a generated video, against the model alone
    on as many windows of the same batch, precision and layout, run in as many streams as
    ``predict`` runs it (:func:`avrsp.runtime.default_streams`), and in one.

    ``rounds`` rounds of (predict, maps only, model alone, model alone in one stream),
    alternated so that a shared machine's changing load falls on all alike: the frame
    rates are medians over rounds, the ratio (predict against the model in predict's
    streams) the median of each round's own ratio. Also the CPU time per frame of each
    thing ``predict`` does besides the model (:func:`output_costs`)."""
    from avrsp.predict import Predictor, predict_to_folder

    predictor = Predictor(checkpoint, device=device, batch=batch)
    model_alone = _model_alone(predictor, device)
    streams = default_streams(predictor.model)
    per_round = []
    with tempfile.TemporaryDirectory() as tmp:
        path = write_video(Path(tmp) / "long.mp4", seconds, seed=5)
        list(predictor.predict_video(path))  # warm-up
        model_alone(2 * streams, streams)
        for _ in range(rounds):
            r = predict_to_folder(predictor, path, Path(tmp) / "out", progress=False)
            t0 = time.perf_counter()
            n_maps = sum(1 for _ in predictor.predict_video(path))
            maps_s = time.perf_counter() - t0
            calls = -(-r.frames // batch)
            # One run of up to 96 passes, as predict runs one video's: a short run pays
            # its streams' idle start and end on few passes.
            model_s, one_s = model_alone(min(calls, 96), streams), model_alone(min(calls, 96), 1)
            per_round.append((r.frames / r.seconds, n_maps / maps_s, r.frames / (model_s * calls),
                              r.frames / (one_s * calls)))
        costs = output_costs(predictor, path)
    predict_fps, maps_fps, model_fps, one_fps = (float(np.median(x)) for x in zip(*per_round))
    ratios = [p / m for p, _, m, _ in per_round]
    return {"model": predictor.config.name, "checkpoint": str(checkpoint or "built-in"),
            "precision": predictor.precision, "batch": batch, "frames": r.frames, "rounds": rounds,
            "predict_fps": predict_fps, "maps_only_fps": maps_fps, "model_fps": model_fps, "streams": streams,
            "model_one_stream_fps": one_fps, "ratios": ratios, "output_cpu_ms": costs,
            "cores": len(os.sched_getaffinity(0)), "ratio": float(np.median(ratios))}


def _model_alone(predictor, device: str):
    """``seconds(passes, at_once)``: seconds per forward pass of ``predictor``'s model on one
    batch already in memory, ``at_once`` passes at a time as ``predict`` runs them."""
    clip, audio = inputs(predictor.config, predictor.batch, device, next(predictor.model.parameters()).dtype, True)

    def forward(_=None):
        with torch.no_grad():  # grad mode is per thread
            predictor.model(clip, audio)

    def seconds(passes: int, at_once: int) -> float:
        t0 = time.perf_counter()
        for _ in in_streams(forward, range(passes), at_once):
            pass
        sync(device)
        return (time.perf_counter() - t0) / passes

    return seconds


#: What ``predict`` does per frame besides the model, in the order of the record's keys.
OUTPUT_PARTS = ("decode at model size", "decode at video size", "map to video size", "PNG", "overlay",
                "overlay video")


def output_costs(predictor, path: Path) -> dict[str, float]:
    """CPU milliseconds per frame (the process's CPU time, so the decoder's and x264's own
    threads count) of each part of ``predict`` besides the model, each run alone on
    ``path``; and the model's own CPU and wall milliseconds per frame on frames already
    decoded. What the parts add up to, against the CPU time the model leaves its cores
    idle, is what the end-to-end ratio can reach on a machine whose cores the model uses."""
    from avrsp.media import (OverlayWriter, encoder_threads, iter_frames, overlay, probe, read_audio, resize_map,
                             write_map_png)

    cfg = predictor.config
    size, fps = (cfg.height, cfg.width), probe(path).fps or 25.0
    frames = [f for f, _ in iter_frames(path)]
    small = [f for f, _ in iter_frames(path, size=size)]
    sound = read_audio(path) if cfg.audio else None
    n, out = len(frames), {}

    def timed_part(name: str, fn):
        """``fn()``, its CPU milliseconds per frame recorded under ``name``."""
        t0 = time.process_time()
        result = fn()
        out[name] = (time.process_time() - t0) / n * 1e3
        return result

    def encode(folder: str) -> None:
        w = OverlayWriter(Path(folder) / "o.mp4", path, fps, frames[0].shape[1], frames[0].shape[0],
                          threads=encoder_threads(predictor.device))
        for h in heat:
            w.add(h)
        w.close()

    t0 = time.perf_counter()
    maps = timed_part("model", lambda: [m for _, m in predict_frames(predictor.model, small, n, fps, sound,
                                                                      batch=predictor.batch)])
    wall = (time.perf_counter() - t0) / n * 1e3
    timed_part("decode at model size", lambda: sum(1 for _ in iter_frames(path, size=size)))
    timed_part("decode at video size", lambda: sum(1 for _ in iter_frames(path)))
    big = timed_part("map to video size", lambda: [resize_map(m, frames[0].shape[:2]) for m in maps])
    heat = timed_part("overlay", lambda: [overlay(f, m) for f, m in zip(frames, big)])
    with tempfile.TemporaryDirectory() as tmp:
        timed_part("PNG", lambda: [write_map_png(Path(tmp) / f"{k}.png", m) for k, m in enumerate(big)])
        timed_part("overlay video", lambda: encode(tmp))
    out["model wall"] = wall
    return {k: out[k] for k in (*OUTPUT_PARTS, "model", "model wall")}


def preview(device: str, ks: tuple[int, ...] = (2, 4, 8), videos: int = 3, seconds: float = 8.0,
            rounds: int = 3) -> dict:
    """``predict --every K`` against the exact protocol with the built-in model, on unseen
    synthetic videos of both kinds: speed-up of the maps, and the CC between each
    preview map and the exact one. The videos go through one pipeline, as ``predict``
    runs a list of videos (:meth:`Predictor.predict_videos`). The exact protocol and
    each K are timed in turn for ``rounds`` rounds; a speed-up is the median of its
    rounds' own."""
    from avrsp.predict import Predictor

    with tempfile.TemporaryDirectory() as tmp:
        paths = [write_video(Path(tmp) / f"v{i}.mp4", seconds, seed=77 + i, kind=("relevant", "music")[i % 2])
                 for i in range(videos)]
        predictors = {k: Predictor(device=device, every=k) for k in (1, *ks)}
        for predictor in predictors.values():
            list(predictor.predict_video(paths[0]))  # warm-up
        times: dict[int, list[float]] = {k: [] for k in predictors}
        maps: dict[int, list] = {}
        for _ in range(rounds):
            for k, predictor in predictors.items():
                t0 = time.perf_counter()
                maps[k] = [list(ms) for _, ms in predictor.predict_videos(paths)]   # deterministic: any round's
                times[k].append(time.perf_counter() - t0)
    rows = []
    for k in ks:
        ccs = [float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
               for va, vb in zip(maps[1], maps[k]) for a, b in zip(va, vb)]
        speedups = [e / t for e, t in zip(times[1], times[k])]
        rows.append({"every": k, "speedup": float(np.median(speedups)), "speedups": speedups,
                     "cc_mean": float(np.mean(ccs)), "cc_min": float(np.min(ccs))})
    frames = sum(len(v) for v in maps[1])
    return {"videos": videos, "frames": frames, "exact_fps": frames / float(np.median(times[1])), "rounds": rounds,
            "pipelined": True, "rows": rows}
