"""Inference speed, memory and bf16 accuracy of the named configs (``avrsp bench``).

    avrsp bench [--configs avrsp avrsp_v avrsp_tiny] [--batches 1 4 8] [--device auto]
                [--json FILE] [--merge FILE ...] [--write docs/performance.md] [--quick]

Measured in one run, on one machine:

* per config: parameters and GFLOPs per window (``avrsp info``'s meta-device count);
* windows/s at each batch for fp32, bf16 autocast and whole-model bf16, each with and
  without channels-last 3-D convolutions, and ``torch.compile`` of the default path
  where it compiles;
* the machine's fp32 and bf16 matrix-product peaks, and each mode's GFLOP/s as a
  fraction of its precision's peak;
* ``avrsp predict`` end to end on a generated 60 s video, against the model alone on
  the same windows (alternated over rounds), and the CPU time per frame of each thing
  ``predict`` does besides the model;
* peak memory of ``avrsp predict`` for a 10 s and a 60 s video (fresh processes);
* bf16 against fp32 maps of the built-in (trained) model on synthetic clips.

``--json`` keeps the raw figures; ``--merge`` adds another machine's JSON (a GPU run,
say) to the tables; ``--write`` renders everything as Markdown (docs/performance.md).
This is a benchmark, not a test: nothing here asserts, and it is never run by CI.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import avrsp
from avrsp.checkpoint import save_model, write_generated
from avrsp.config import ConfigError
from avrsp.info import measure
from avrsp.inference import (default_streams, in_streams, native_bf16, predict_frames, prepare, resolve_device,
                             resolve_precision)
from avrsp.models import to_channels_last_3d

from avrsp import bench_memory

#: mode → (weight dtype, autocast to bf16, channels-last 3-D)
MODES = {
    "fp32": (torch.float32, False, False),
    "fp32+cl": (torch.float32, False, True),
    "autocast": (torch.float32, True, False),
    "autocast+cl": (torch.float32, True, True),
    "bf16": (torch.bfloat16, False, False),
    "bf16+cl": (torch.bfloat16, False, True),
}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def machine(device: str) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    info = {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": device, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": native_bf16(device), "default_precision": resolve_precision("auto", device)}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    info["label"] = info.get("gpu", f"{cpu} ({os.cpu_count()} cores)")
    return info


def matmul_peak(device: str, dtype: torch.dtype, seconds: float = 2.0) -> float:
    """GFLOP/s of square matrix products, the largest that run a few times in ``seconds``."""
    n = 8192 if device.startswith("cuda") else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or reps < 3:
        a @ b
        reps += 1
        if reps % 10 == 0 or not device.startswith("cuda"):
            sync(device)
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def inputs(cfg, batch: int, device: str, dtype: torch.dtype, channels_last: bool):
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(batch, 3, cfg.frames, cfg.height, cfg.width, generator=g).mul_(2).sub_(1).to(device, dtype)
    if channels_last:
        clip = clip.contiguous(memory_format=torch.channels_last_3d)
    audio = torch.randn(batch, 1, cfg.audio_samples, generator=g).mul_(50).to(device, dtype) if cfg.audio else None
    return clip, audio


def timed(fn, device: str, repeats: int, min_seconds: float = 1.0, warm_up: bool = True) -> float:
    """Seconds per call: after one warm-up call, at least ``repeats`` calls and at least
    ``min_seconds`` in all (fast GPU calls are repeated until the clock can see them)."""
    if warm_up:
        fn()
    sync(device)
    calls, t0 = 0, time.perf_counter()
    while calls < repeats or time.perf_counter() - t0 < min_seconds:
        fn()
        calls += 1
        sync(device)
    return (time.perf_counter() - t0) / calls


def build(name: str, mode: str, device: str) -> torch.nn.Module:
    dtype, _, channels_last = MODES[mode]
    torch.manual_seed(0)
    model = avrsp.create_model(name).eval().to(device, dtype)
    return to_channels_last_3d(model) if channels_last else model


def throughput(name: str, batches: list[int], device: str, repeats: int, compile_: bool, log) -> list[dict]:
    """Windows/s of every mode at every batch; with ``compile_``, torch.compile of the
    default path at the largest batch (one compilation)."""
    cuda = device.startswith("cuda")

    def per_batch(model, mode: str, channels_last: bool, ctx=contextlib.nullcontext) -> list[dict]:
        dtype, out = next(model.parameters()).dtype, []
        for i, batch in enumerate(batches):
            clip, audio = inputs(model.config, batch, device, dtype, channels_last)

            def step():
                with torch.no_grad(), ctx():
                    model(clip, audio)

            # A CPU forward at paper size takes seconds: one warm-up per mode is enough there
            # (on CUDA each batch warms up: a new shape is a new graph capture too).
            sec = timed(step, device, repeats, warm_up=i == 0 or cuda)
            out.append({"config": name, "mode": mode, "batch": batch, "windows_per_s": batch / sec})
            log(f"  {name:<10} {mode:<12} batch {batch}: {batch / sec:8.2f} windows/s")
        return out

    rows = []
    for mode, (_, autocast, channels_last) in MODES.items():
        ctx = (lambda: torch.autocast(torch.device(device).type, torch.bfloat16)) if autocast \
            else contextlib.nullcontext
        rows += per_batch(build(name, mode, device), mode, channels_last, ctx)
    # The product's path (predict, evaluate): the inference graph in the precision auto
    # picks, and on CUDA also without the graphs it replays by default.
    precision = resolve_precision("auto", device)
    for graphs in (False, True) if cuda else (False,):
        rows += per_batch(prepare(avrsp.create_model(name), device, precision, graphs=graphs),
                          f"inference{'+graphs' if graphs else ''} ({precision})", not cuda)
    if compile_:
        label = f"compile ({precision}+cl)"
        try:
            model = torch.compile(prepare(avrsp.create_model(name), device, precision, graphs=False))
            dtype = next(model.parameters()).dtype
            for batch in batches[-1:]:
                clip, audio = inputs(model.config, batch, device, dtype, True)
                t0 = time.perf_counter()
                with torch.no_grad():
                    model(clip, audio)
                sync(device)
                compile_s = time.perf_counter() - t0

                def step():
                    with torch.no_grad():
                        model(clip, audio)

                sec = timed(step, device, repeats)
                rows.append({"config": name, "mode": label, "batch": batch, "windows_per_s": batch / sec,
                             "compile_s": compile_s})
                log(f"  {name:<10} {label:<12} batch {batch}: {batch / sec:8.2f} windows/s "
                    f"(first call {compile_s:.0f} s)")
        except Exception as e:  # reported in the table, not fatal: "where it works"
            rows.append({"config": name, "mode": label, "error": f"{type(e).__name__}: {str(e)[:200]}"})
            log(f"  {name:<10} {label}: failed ({type(e).__name__})")
    return rows


def synthetic_video(seconds: float, height: int, width: int, seed: int, kind: str = "relevant"):
    from avrsp.data.synth import SynthConfig, generate_video

    cfg = SynthConfig(videos=3, frames=int(seconds * 15), height=height, width=width, fps=15.0, seed=seed)
    return cfg, generate_video(cfg, 0, kind)


def accuracy(device: str, clips: int = 3, seconds: float = 4.0) -> dict:
    """bf16 vs fp32 maps of the built-in model on unseen synthetic videos (both kinds)."""
    from avrsp.checkpoint import load_model
    from avrsp.predict import default_checkpoint

    from avrsp.media import resize_rgb

    m32 = prepare(load_model(default_checkpoint()), device, "fp32")
    m16 = prepare(load_model(default_checkpoint()), device, "bf16")
    size = (m32.config.height, m32.config.width)
    diffs, ccs = [], []
    for i in range(clips):
        _, video = synthetic_video(seconds, 144, 256, seed=1000 + i, kind=("relevant", "music")[i % 2])
        frames = [resize_rgb(f, size) for f in video.frames]
        a = np.stack([m for _, m in predict_frames(m32, frames, len(frames), 15.0, video.audio, batch=4)])
        b = np.stack([m for _, m in predict_frames(m16, frames, len(frames), 15.0, video.audio, batch=4)])
        diffs.append(float(np.abs(a - b).max()))
        for x, y in zip(a, b):
            ccs.append(float(np.corrcoef(x.ravel(), y.ravel())[0, 1]))
    return {"videos": clips, "frames": len(ccs), "max_abs_diff": max(diffs), "cc_mean": float(np.mean(ccs)),
            "cc_min": float(np.min(ccs))}


def end_to_end(checkpoint: Path | None, device: str, seconds: float, batch: int, log, rounds: int = 3) -> dict:
    """``avrsp predict`` (maps + overlay video) on a generated video, against the model alone
    on as many windows of the same batch, precision and layout, run in as many streams as
    ``predict`` runs it (:func:`avrsp.inference.default_streams`), and in one.

    ``rounds`` rounds of (predict, maps only, model alone, model alone in one stream),
    alternated so that a shared machine's changing load falls on all alike: the frame
    rates are medians over rounds, the ratio (predict against the model in predict's
    streams) the median of each round's own ratio. Also the CPU time per frame of each
    thing ``predict`` does besides the model (:func:`output_costs`)."""
    from avrsp.data.synth import _write_mp4
    from avrsp.predict import Predictor, predict_to_folder

    predictor = Predictor(checkpoint, device=device, batch=batch)
    cfg = predictor.config
    dtype = next(predictor.model.parameters()).dtype
    clip, audio = inputs(cfg, batch, device, dtype, True)

    def forward(_=None):
        with torch.no_grad():  # grad mode is per thread
            predictor.model(clip, audio)

    streams = default_streams(predictor.model)

    def model_alone(passes: int, at_once: int) -> float:
        """Seconds per forward pass, ``at_once`` at a time as predict runs them, in one run
        of ``passes``, as ``predict`` runs one video's (a run's first and last passes
        leave a stream idle)."""
        t0 = time.perf_counter()
        for _ in in_streams(forward, range(passes), at_once):
            pass
        sync(device)
        return (time.perf_counter() - t0) / passes

    per_round = []
    with tempfile.TemporaryDirectory() as tmp:
        scfg, video = synthetic_video(seconds, 144, 256, seed=5)
        path = Path(tmp) / "long.mp4"
        _write_mp4(path, video, scfg)
        del video
        list(predictor.predict_video(path))  # warm-up
        for i in range(rounds):
            r = predict_to_folder(predictor, path, Path(tmp) / "out", progress=False)
            t0 = time.perf_counter()
            n_maps = sum(1 for _ in predictor.predict_video(path))
            maps_s = time.perf_counter() - t0
            calls = -(-r.frames // batch)
            if i == 0:
                model_alone(2 * streams, streams)  # warm-up
            model_s, one_s = model_alone(min(calls, 96), streams), model_alone(min(calls, 96), 1)
            per_round.append((r.frames / r.seconds, n_maps / maps_s, r.frames / (model_s * calls),
                              r.frames / (one_s * calls)))
        costs = output_costs(predictor, path)
    predict_fps, maps_fps, model_fps, one_fps = (float(np.median(x)) for x in zip(*per_round))
    out = {"model": cfg.name, "checkpoint": str(checkpoint or "built-in"), "precision": predictor.precision,
           "batch": batch, "frames": r.frames, "rounds": rounds, "predict_fps": predict_fps,
           "maps_only_fps": maps_fps, "model_fps": model_fps, "streams": streams, "model_one_stream_fps": one_fps,
           "ratios": [p / m for p, _, m, _ in per_round], "output_cpu_ms": costs,
           "cores": len(os.sched_getaffinity(0))}
    out["ratio"] = float(np.median(out["ratios"]))
    log(f"  predict {cfg.name}: {fps(out['predict_fps'])} frames/s end to end, {fps(out['maps_only_fps'])} maps only, "
        f"model alone {fps(out['model_fps'])} in {streams} stream(s) ({out['ratio']:.0%}, median of "
        f"{', '.join(f'{x:.0%}' for x in out['ratios'])}), model alone in one stream {fps(one_fps)}")
    log("  CPU ms per frame: " + ", ".join(f"{k} {v:.2f}" for k, v in costs.items()) +
        f"; bound on {out['cores']} cores: {e2e_bound(costs, out['cores']):.0%}")
    return out


def fps(rate: float) -> str:
    """A frame rate with two decimals below 10 frames/s (a paper-size model's 1.28 and
    1.24 are not both "1.3"), one above."""
    return f"{rate:.2f}" if rate < 10 else f"{rate:.1f}"


#: What ``predict`` does per frame besides the model, in the order of the report's columns.
OUTPUT_PARTS = ("decode at model size", "decode at video size", "map to video size", "PNG", "overlay",
                "overlay video")


def output_costs(predictor, path: Path) -> dict[str, float]:
    """CPU milliseconds per frame (the process's CPU time, so the decoder's and x264's own
    threads count) of each part of ``predict`` besides the model, each run alone on
    ``path``; and the model's own CPU and wall milliseconds per frame on frames already
    decoded. What the parts add up to, against the CPU time the model leaves its cores
    idle, is what the end-to-end ratio can reach on a machine whose cores the model uses."""
    from avrsp.media import iter_frames, probe, read_audio, resize_map, write_map_png
    from avrsp.predict import OverlayWriter, encoder_threads, overlay

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


def e2e_bound(costs: dict[str, float], cores: int) -> float:
    """The highest ``predict`` / model-alone ratio :func:`output_costs`'s figures allow on
    ``cores`` cores: a frame takes at least the model's own wall time, and at least all
    the CPU work of the frame (the model's and the outputs') spread over every core."""
    work = costs["model"] + sum(costs[k] for k in OUTPUT_PARTS)
    return costs["model wall"] / max(costs["model wall"], work / cores)


def graph_split(name: str, device: str, precision: str, repeats: int = 9) -> dict:
    """Batch 1: S3D's four blocks alone against the whole window, in the inference graph
    (``prepare``) and without folding BatchNorm. The two are timed in turn, ``repeats``
    pairs after a warm-up, so that a shared machine's changing load falls on both alike:
    times are medians, the ratio the median of the pairs' own ratios."""
    info = measure(avrsp.get_config(name))
    out = {"config": name, "precision": precision, "gflops_s3d": info.gflops["visual"],
           "gflops_whole": info.total_gflops}
    for label, fold in (("folded", True), ("unfolded", False)):
        # Without CUDA graphs: the blocks alone are not a forward pass that could replay one.
        model = prepare(avrsp.create_model(name), device, precision, fold=fold, graphs=False)
        dtype = next(model.parameters()).dtype
        clip, audio = inputs(model.config, 1, device, dtype, torch.device(device).type == "cpu")
        parts = {"s3d": lambda: model.visual(clip), "whole": lambda: model(clip, audio)}
        times: dict[str, list[float]] = {k: [] for k in parts}
        with torch.no_grad():
            for fn in parts.values():
                fn()
            for _ in range(repeats):
                for key, fn in parts.items():
                    sync(device)
                    t0 = time.perf_counter()
                    fn()
                    sync(device)
                    times[key].append(time.perf_counter() - t0)
        out[f"s3d_s_{label}"] = float(np.median(times["s3d"]))
        out[f"whole_s_{label}"] = float(np.median(times["whole"]))
        if fold:  # the target's ratio is the inference graph's
            out["ratios"] = [w / v for w, v in zip(times["whole"], times["s3d"])]
    out["ratio"] = float(np.median(out["ratios"]))
    out["rest_gflops_s"] = (out["gflops_whole"] - out["gflops_s3d"]) / (out["whole_s_folded"] - out["s3d_s_folded"])
    out["s3d_gflops_s"] = out["gflops_s3d"] / out["s3d_s_folded"]
    return out


def preview(device: str, ks: tuple[int, ...] = (2, 4, 8), videos: int = 3, seconds: float = 8.0,
            rounds: int = 3) -> dict:
    """``predict --every K`` against the exact protocol with the built-in model, on unseen
    synthetic videos of both kinds (144×256, 15 fps, sound): speed-up of the maps, and
    the CC between each preview map and the exact one. The videos go through one
    pipeline, as ``predict`` runs a list of videos (:meth:`Predictor.predict_videos`).
    The exact protocol and each K are timed in turn for ``rounds`` rounds; a speed-up is
    the median of its rounds' own."""
    from avrsp.data.synth import _write_mp4
    from avrsp.predict import Predictor

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(videos):
            scfg, video = synthetic_video(seconds, 144, 256, seed=77 + i, kind=("relevant", "music")[i % 2])
            paths.append(Path(tmp) / f"v{i}.mp4")
            _write_mp4(paths[-1], video, scfg)
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


def train_pipeline(device: str, log) -> dict:
    """The training data pipeline against the training step (``avrsp bench --train``):
    clips per second that one DataLoader worker assembles at paper size (32 frames,
    224×384, sound), from extracted JPEG frames at the datasets' 640×360 and from an
    MPEG-4 video (DHF1K's release layout), and the clips per second a training step of
    ``avrsp`` at batch 4 consumes on ``device``."""
    from PIL import Image

    from avrsp.data.datasets import ClipDataset, dhf1k_videos, stavis_videos
    from avrsp.data.synth import SynthConfig, write_dataset
    from avrsp.loss import SaliencyLoss

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synth"
        write_dataset(root, SynthConfig(videos=3, frames=96, height=360, width=640, seed=9))
        # DHF1K's release layout: the video as a file, decoded for every clip.
        release = Path(tmp) / "release"
        (release / "video").mkdir(parents=True)
        for d in sorted((root / "dhf1k" / "train").iterdir()) + sorted((root / "dhf1k" / "val").iterdir()):
            import av

            shutil.copytree(d / "maps", release / "annotation" / d.name / "maps")
            with av.open(str(release / "video" / f"{int(d.name):03d}.AVI"), "w") as c:
                st = c.add_stream("mpeg4", rate=15)
                st.width, st.height, st.pix_fmt = 640, 360, "yuv420p"
                for p in sorted((d / "images").iterdir()):
                    for pkt in st.encode(av.VideoFrame.from_ndarray(np.asarray(Image.open(p)), format="rgb24")):
                        c.mux(pkt)
                for pkt in st.encode(None):
                    c.mux(pkt)
        sources = {"jpeg frames 640×360": stavis_videos(root / "stavis", "SynthAV", "train", 1),
                   "video file 640×360": dhf1k_videos(release, "train")}
        for label, videos in sources.items():
            ds = ClipDataset(videos, 32, (224, 384), audio=label.startswith("jpeg"), clips_per_video=8, seed=0)
            ds[0]
            t0 = time.perf_counter()
            for i in range(len(ds)):
                ds[i]
            out[label] = len(ds) / (time.perf_counter() - t0)
            log(f"  data: {label}: {out[label]:.2f} clips/s per worker")
    model = avrsp.create_model("avrsp").to(device).train()
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    clip, audio = inputs(model.config, 4, device, torch.float32, False)
    target = torch.rand(4, 224, 384, device=device)
    loss = SaliencyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else \
            contextlib.nullcontext()
        with autocast:
            pred = model(clip, audio)
        loss(pred, target).backward()
        opt.step()

    seconds = timed(step, device, 2 if device == "cpu" else 10)
    out["train_clips_s"] = 4 / seconds
    out["workers_needed"] = out["train_clips_s"] / min(out["jpeg frames 640×360"], out["video file 640×360"])
    log(f"  train step (avrsp, batch 4, {'bf16 autocast' if device.startswith('cuda') else 'fp32'}): "
        f"{out['train_clips_s']:.3g} clips/s; workers to keep it fed: {workers_to_feed(out['workers_needed'])}")
    return out


def workers_to_feed(fraction: float) -> str:
    """Whole DataLoader workers for a step that needs ``fraction`` of one worker's clips,
    with the fraction: a CPU step needs a hundredth of one, which rounding would call 0."""
    return f"{max(1, math.ceil(fraction))} ({fraction:.2g} of one's output)"


def random_checkpoint(name: str, folder: Path) -> Path:
    torch.manual_seed(0)
    path = folder / f"{name}_random.safetensors"
    save_model(path, avrsp.create_model(name))
    return path


def run(args) -> dict:
    device = resolve_device(args.device)

    def log(line: str) -> None:  # progress, and the figures so far, in case a later stage fails
        print(line, file=sys.stderr, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))

    result = {"machine": machine(device), "command": "avrsp bench " + " ".join(args.argv),
              "date": datetime.date.today().isoformat(), "configs": {}, "throughput": [], "e2e": []}
    log(f"machine: {result['machine']['label']}, torch {torch.__version__}, default precision "
        f"{result['machine']['default_precision']}")
    result["peak_gflops"] = {"fp32": matmul_peak(device, torch.float32), "bf16": matmul_peak(device, torch.bfloat16)}
    log(f"  matmul peaks: fp32 {result['peak_gflops']['fp32']:.0f}, bf16 {result['peak_gflops']['bf16']:.0f} GFLOP/s")
    for name in args.configs:
        info = measure(avrsp.get_config(name))
        result["configs"][name] = {"params_m": info.total_params / 1e6, "gflops": info.total_gflops}
        result["throughput"] += throughput(name, args.batches, device, args.repeats, name in args.compile, log)
    if not args.quick:
        result["split"] = []
        for precision in ("fp32", "bf16"):  # the one the machine lacks natively too
            for name in [c for c in args.configs if c in ("avrsp", "avrsp_v")][:1]:
                row = graph_split(name, device, precision)
                result["split"].append(row)
                log(f"  {name} {precision}: S3D's blocks {row['s3d_s_folded']:.3f} s, whole window "
                    f"{row['whole_s_folded']:.3f} s ({row['ratio']:.2f}×; {row['whole_s_unfolded']:.3f} s unfolded)")
    result["preview"] = preview(device, videos=1 if args.quick else 3)
    for row in result["preview"]["rows"]:
        log(f"  --every {row['every']}: {row['speedup']:.2f}× the exact protocol, CC {row['cc_mean']:.3f} mean, "
            f"{row['cc_min']:.3f} min")
    if args.train:
        result["train"] = train_pipeline(device, log)
    result["accuracy"] = accuracy(device)
    log(f"  bf16 vs fp32 (built-in model): max |Δ| {result['accuracy']['max_abs_diff']:.3g}, "
        f"CC mean {result['accuracy']['cc_mean']:.4f} min {result['accuracy']['cc_min']:.4f}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, seconds in args.e2e_models:
            ckpt = None if name == "built-in" else random_checkpoint(name, Path(tmp))
            result["e2e"].append(end_to_end(ckpt, device, seconds, args.e2e_batch, log))
    if not args.no_memory:
        mem = bench_memory.measure(10.0, 60.0, 144, 256, ("--device", device))
        result["memory"] = mem
        log(f"  predict peak memory 60 s / 10 s: {mem['long']['peak_mib']:.0f} / {mem['short']['peak_mib']:.0f} MiB "
            f"= {mem['ratio']:.3f}")
    return result


# ------------------------------------------------------------------ report

def _gflops(result: dict, row: dict) -> float:
    return row["windows_per_s"] * result["configs"][row["config"]]["gflops"]


def _peak_for(mode: str) -> str:
    return "fp32" if "fp32" in mode else "bf16"


def targets(result: dict) -> list[tuple[str, str, str, str]]:
    """(what, target, measured, met) for the issue's targets, on this result's machine."""
    rows = []
    tp = [r for r in result["throughput"] if "error" not in r]
    paper = [c for c in ("avrsp", "avrsp_v") if c in result["configs"]] or list(result["configs"])[:1]
    for name in paper[:1]:
        by = {(r["mode"], r["batch"]): r["windows_per_s"] for r in tp if r["config"] == name}
        fp32 = max(v for (m, _), v in by.items() if m == "fp32")
        bf16 = max((v for (m, _), v in by.items() if "bf16" in m or "autocast" in m), default=0)
        rows.append((f"{name}: best bf16 path / fp32 eager (best batch each)", "≥ 3×", f"{bf16 / fp32:.2f}×",
                     "yes" if bf16 / fp32 >= 3 else "no"))
        graph = [r for r in tp if r["config"] == name and r["mode"].startswith("inference") and "bf16" in r["mode"]]
        if graph and result["machine"]["device"].startswith("cuda"):
            top = max(graph, key=lambda r: r["windows_per_s"])
            rows.append((f"{name}: inference graph in bf16, windows/s ({top['mode']}, batch {top['batch']})",
                         "≥ 300", f"{top['windows_per_s']:.1f}", "yes" if top["windows_per_s"] >= 300 else "no"))
        best = max((r for r in tp if r["config"] == name), key=lambda r: r["windows_per_s"])
        precision = _peak_for(best["mode"])
        peak = result["peak_gflops"][precision]
        frac = _gflops(result, best) / peak
        rows.append((f"{name}: fastest mode ({best['mode']}, batch {best['batch']}) / {precision} matmul peak",
                     "≥ 35 %", f"{frac:.0%} ({_gflops(result, best):.0f} of {peak:.0f} GFLOP/s)",
                     "yes" if frac >= 0.35 else "no"))
    for e in result["e2e"]:
        multi = e.get("streams", 1) > 1  # records from before the streams have neither figure
        streams = f", {e['streams']} streams" if multi else ""
        one = f"; against the model in one stream {e['predict_fps'] / e['model_one_stream_fps']:.0%}" if multi else ""
        rows.append((f"predict end to end / model alone ({e['model']}, {e['precision']}, batch {e['batch']}{streams})",
                     "≥ 90 %", f"{e['ratio']:.0%} ({fps(e['predict_fps'])} / {fps(e['model_fps'])} frames/s)" +
                     (f"; at most {e2e_bound(e['output_cpu_ms'], e['cores']):.0%} on {e['cores']} cores"
                      if "output_cpu_ms" in e else "") + one,
                     "yes" if e["ratio"] >= 0.9 else "no"))
    if "memory" in result:
        m = result["memory"]
        rows.append(("predict peak memory, 60 s video / 10 s video", "≤ 1.1×",
                     f"{m['ratio']:.3f} ({m['long']['peak_mib']:.0f} / {m['short']['peak_mib']:.0f} MiB)",
                     "yes" if m["ratio"] <= 1.1 else "no"))
    for row in result.get("split", []):
        rows.append((f"{row['config']} {row['precision']}, batch 1: whole window / S3D's four blocks alone",
                     "≤ 1.85×", f"{row['ratio']:.2f}× ({row['whole_s_folded']:.3f} / {row['s3d_s_folded']:.3f} s)",
                     "yes" if row["ratio"] <= 1.85 else "no"))
    for row in result.get("preview", {}).get("rows", []):
        if row["every"] == 4:
            rows.append(("predict --every 4 against the exact protocol: speed-up; CC (mean over frames)",
                         "≥ 3.5×; ≥ 0.95", f"{row['speedup']:.2f}×; {row['cc_mean']:.3f}",
                         "yes" if row["speedup"] >= 3.5 and row["cc_mean"] >= 0.95 else "no"))
    a = result["accuracy"]
    rows.append(("bf16 vs fp32 maps, built-in model (CC, mean / min over frames)", "≥ 0.99",
                 f"{a['cc_mean']:.4f} / {a['cc_min']:.4f} (largest difference {a['max_abs_diff']:.3f})",
                 "yes" if a["cc_min"] >= 0.99 else "no"))
    return rows


def markdown(results: list[dict]) -> str:
    lines = ["Written by `avrsp bench` (src/avrsp/bench.py); each machine's figures come "
             "from one run of the command shown for it, and ratios compare figures of the same run.", ""]
    lines += ["## Machines", "", "| Machine | Date | Command | torch | CPU capability | threads | native bf16 | "
              "default precision | fp32 matmul peak | bf16 matmul peak |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        m = r["machine"]
        lines.append(f"| {m['label']} | {r['date']} | `{r['command']}` | {m['torch']} | {m['cpu_capability']} | "
                     f"{m['threads']} | {'yes' if m['native_bf16'] else 'no'} | {m['default_precision']} | "
                     f"{r['peak_gflops']['fp32']:.0f} GFLOP/s | {r['peak_gflops']['bf16']:.0f} GFLOP/s |")
    lines += ["", "## Targets", "", "| Machine | What | Target | Measured | Met |", "|---|---|---|---|---|"]
    for r in results:
        for what, target, measured, met in targets(r):
            lines.append(f"| {r['machine']['label']} | {what} | {target} | {measured} | {met} |")
    lines += ["", "## Models", "", "| Config | Parameters | GFLOPs per window |", "|---|---|---|"]
    configs = {}
    for r in results:
        configs.update(r["configs"])
    for name, c in configs.items():
        lines.append(f"| {name} | {c['params_m']:.2f} M | {c['gflops']:.1f} |")
    batches = sorted({row["batch"] for r in results for row in r["throughput"] if "batch" in row})
    lines += ["", "## Throughput", "",
              "Windows per second (one window = one predicted frame). *cl*: 3-D convolutions channels-last. "
              "*autocast*: fp32 weights under `torch.autocast(bfloat16)`. *bf16*: every weight and activation "
              "bfloat16. *inference*: the inference graph `predict` runs (`prepare`: BatchNorm folded, the "
              "precision `auto` picks; on CUDA *+graphs* replays CUDA graphs, its default). "
              "*compile*: `torch.compile` of the inference graph (first-call time in brackets). "
              "*Peak*: the best batch's GFLOP/s over the matrix-product peak of the mode's precision.", "",
              "| Machine | Config | Mode | " + " | ".join(f"batch {b}" for b in batches) + " | GFLOP/s | Peak | "
              "× fp32 |", "|---|---|---|" + "---|" * (len(batches) + 3)]
    for r in results:
        label = r["machine"]["label"]
        for name in r["configs"]:
            rows = [x for x in r["throughput"] if x["config"] == name]
            base = max((x["windows_per_s"] for x in rows if x["mode"] == "fp32" and "error" not in x), default=None)
            for mode in dict.fromkeys(x["mode"] for x in rows):
                mrows = [x for x in rows if x["mode"] == mode]
                if "error" in mrows[0]:
                    lines.append(f"| {label} | {name} | {mode} | failed: {mrows[0]['error']} |"
                                 + " |" * (len(batches) + 2))
                    continue
                cells = []
                for b in batches:
                    x = next((x for x in mrows if x["batch"] == b), None)
                    cell = "" if x is None else f"{x['windows_per_s']:.2f}"
                    if x is not None and "compile_s" in x:
                        cell += f" ({x['compile_s']:.0f} s)"
                    cells.append(cell)
                best = max(mrows, key=lambda x: x["windows_per_s"])
                g = _gflops(r, best)
                peak = r["peak_gflops"][_peak_for(mode)]
                ratio = f"{best['windows_per_s'] / base:.2f}" if base else ""
                lines.append(f"| {label} | {name} | {mode} | " + " | ".join(cells) +
                             f" | {g:.1f} | {g / peak:.0%} | {ratio} |")
    lines += ["", "## End to end", "",
              "`avrsp predict` on a generated video (144×256, 15 fps, sound): maps as PNGs plus the overlay "
              "video; *maps only*: `Predictor.predict_video` without writing; *model alone*: the same number "
              "of forward passes on tensors already in memory, in as many streams (forward passes at once, "
              "`inference.in_streams`) as `predict` runs, and in one; the four alternate over 3 rounds (runs "
              "without a `rounds` record: one of each), frame rates are medians, the ratio the median round's "
              "ratio.", "",
              "| Machine | Model | Precision | Batch | Frames | Streams | predict (frames/s) | maps only | "
              "model alone | model alone, one stream | predict / model |", "|---|---|---|---|---|---|" + "---|" * 5]
    for r in results:
        for e in r["e2e"]:
            one = fps(e["model_one_stream_fps"]) if "model_one_stream_fps" in e else ""
            lines.append(f"| {r['machine']['label']} | {e['model']} ({e['checkpoint'].split('/')[-1]}) | "
                         f"{e['precision']} | {e['batch']} | {e['frames']} | {e.get('streams', 1)} | "
                         f"{fps(e['predict_fps'])} | {fps(e['maps_only_fps'])} | {fps(e['model_fps'])} | {one} | "
                         f"{e['ratio']:.0%} |")
    costs = [(r, e) for r in results for e in r["e2e"] if "output_cpu_ms" in e]
    if costs:
        lines += ["", "### What `predict` does besides the model", "",
                  "CPU milliseconds per frame (the process's CPU time, the decoder's and x264's threads included) of "
                  "each part run alone on the same video; *model*: its CPU and wall time per frame on frames already "
                  "decoded. *Bound*: the highest predict / model ratio these allow, a frame taking at least the "
                  "model's wall time and at least all its CPU work spread over every core.", "",
                  "| Machine | Model | " + " | ".join(OUTPUT_PARTS) + " | all outputs | model CPU | model wall | "
                  "cores | bound | measured |", "|---|---|" + "---|" * (len(OUTPUT_PARTS) + 6)]
        for r, e in costs:
            c = e["output_cpu_ms"]
            lines.append(f"| {r['machine']['label']} | {e['model']} | " +
                         " | ".join(f"{c[k]:.2f}" for k in OUTPUT_PARTS) +
                         f" | {sum(c[k] for k in OUTPUT_PARTS):.2f} | {c['model']:.2f} | {c['model wall']:.2f} | "
                         f"{e['cores']} | {e2e_bound(c, e['cores']):.0%} | {e['ratio']:.0%} |")
    lines += ["", "## Memory", ""]
    measured = [r for r in results if "memory" in r]
    if measured:
        lines += ["Peak resident memory (VmHWM) of `avrsp predict` with the built-in model, each video in a fresh "
                  "process.", "", "| Machine | 10 s video | 60 s video | ratio |", "|---|---|---|---|"]
    else:  # --quick and --no-memory skip it
        lines.append("Not measured in these runs (`--quick` and `--no-memory` skip it).")
    for r in measured:
        m = r["memory"]
        lines.append(f"| {r['machine']['label']} | {m['short']['peak_mib']:.0f} MiB | "
                     f"{m['long']['peak_mib']:.0f} MiB | {m['ratio']:.3f} |")
    splits = [(r, row) for r in results for row in r.get("split", [])]
    if splits:
        lines += ["", "## The neck and decoder against the backbone", "",
                  "Batch 1, paper size: S3D's four encoder blocks alone against the whole window, in the inference "
                  "graph (`prepare`: BatchNorm folded) and with BatchNorm left in, the two timed in turn, *pairs* "
                  "times (runs without a `ratios` record: 3 passes of each, one after the other); times are medians, "
                  "*whole / S3D* the median pair's ratio. *GFLOP/s*: the blocks' FLOPs over their time, and "
                  "everything else's FLOPs over the rest of the time.", "",
                  "| Machine | Config | Precision | pairs | S3D blocks | whole | whole / S3D | S3D GFLOP/s | "
                  "rest GFLOP/s | whole, BatchNorm not folded |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r, row in splits:
            lines.append(f"| {r['machine']['label']} | {row['config']} | {row['precision']} | "
                         f"{len(row['ratios']) if 'ratios' in row else '—'} | {row['s3d_s_folded']:.3f} s | "
                         f"{row['whole_s_folded']:.3f} s | {row['ratio']:.2f}× | "
                         f"{row['s3d_gflops_s']:.0f} | {row['rest_gflops_s']:.0f} | {row['whole_s_unfolded']:.3f} s |")
    previews = [r for r in results if "preview" in r]
    if previews:
        lines += ["", "## Preview: `predict --every K`", "",
                  "The built-in model on unseen synthetic videos of both kinds (144×256, 15 fps, sound): maps with "
                  "the model on every K-th frame and the frames between interpolated, against the exact protocol; "
                  "the two timed in turn over 3 rounds, the speed-up the median round's (runs without a `rounds` "
                  "record: one timing of each). The videos go through one pipeline, as `predict` runs a list of "
                  "videos (runs without a `pipelined` record: one video after the other).",
                  "", "| Machine | Frames | K | speed-up | CC mean | CC min |", "|---|---|---|---|---|---|"]
        for r in previews:
            for row in r["preview"]["rows"]:
                lines.append(f"| {r['machine']['label']} | {r['preview']['frames']} | {row['every']} | "
                             f"{row['speedup']:.2f}× | {row['cc_mean']:.3f} | {row['cc_min']:.3f} |")
    trains = [r for r in results if "train" in r]
    if trains:
        lines += ["", "## Training data pipeline (`avrsp bench --train`)", "",
                  "Clips per second one DataLoader worker assembles at paper size (32 frames at 224×384, map, "
                  "fixations; sound for the frames), against the clips per second one training step of `avrsp` "
                  "consumes (batch 4; bf16 autocast on CUDA, fp32 on the CPU).", "",
                  "| Machine | JPEG frames 640×360 | video file 640×360 | train step consumes | "
                  "workers to keep it fed |",
                  "|---|---|---|---|---|"]
        for r in trains:
            t = r["train"]
            lines.append(f"| {r['machine']['label']} | {t['jpeg frames 640×360']:.2f} | "
                         f"{t['video file 640×360']:.2f} | {t['train_clips_s']:.3g} | "
                         f"{workers_to_feed(t['workers_needed'])} |")
    lines += ["", "## bf16 against fp32", "",
              "The built-in model's maps in whole-model bf16 against fp32, every frame of "
              "unseen synthetic videos (relevant and music kinds, 144×256, 4 s each).", "",
              "| Machine | Videos | Frames | max abs difference | CC mean | CC min |", "|---|---|---|---|---|---|"]
    for r in results:
        a = r["accuracy"]
        lines.append(f"| {r['machine']['label']} | {a['videos']} | {a['frames']} | {a['max_abs_diff']:.4f} | "
                     f"{a['cc_mean']:.5f} | {a['cc_min']:.5f} |")
    return "\n".join(lines)


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="avrsp bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=["avrsp", "avrsp_v", "avrsp_tiny"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8])
    ap.add_argument("--repeats", type=int, default=1, help="timed forward passes per figure, after one warm-up")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", nargs="*", default=None, metavar="CONFIG",
                    help="configs to time under torch.compile (largest batch); default: avrsp on CUDA, none on "
                         "CPU, where compiling avrsp_tiny alone took 5 min (docs/performance.md)")
    ap.add_argument("--no-memory", action="store_true", help="skip the 10 s / 60 s memory measurement")
    ap.add_argument("--e2e-models", nargs="*", default=None, metavar="MODEL[:SECONDS]",
                    help="'built-in' and/or config names (random weights), each with its video's length where "
                         "--e2e-seconds would take too long (avrsp:2 on the CPU); default: built-in, plus avrsp on "
                         "CUDA")
    ap.add_argument("--e2e-seconds", type=float, default=60.0, help="the end-to-end video's length, by default")
    ap.add_argument("--e2e-batch", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="avrsp_tiny only, batch 1 and 4, 10 s video: a smoke run")
    ap.add_argument("--train", action="store_true",
                    help="also measure the training data pipeline against the training step")
    ap.add_argument("--json", metavar="FILE", help="write the raw figures here")
    ap.add_argument("--merge", nargs="*", default=[], metavar="FILE", help="other machines' --json files to include")
    ap.add_argument("--report-only", action="store_true", help="measure nothing: render the --merge files")
    ap.add_argument("--write", metavar="FILE", help="write the Markdown report here (e.g. docs/performance.md)")
    args = ap.parse_args(argv)
    args.argv = argv
    if args.quick:
        args.configs, args.batches, args.e2e_seconds, args.no_memory = ["avrsp_tiny"], [1, 4], 10.0, True
    if args.compile is None:
        args.compile = ["avrsp"] if resolve_device(args.device).startswith("cuda") else []
    if args.e2e_models is None:
        args.e2e_models = ["built-in"] + (["avrsp"] if resolve_device(args.device).startswith("cuda") else [])
    args.e2e_models = [e2e_model(spec, args.e2e_seconds) for spec in args.e2e_models]
    return args


def e2e_model(spec: str, seconds: float) -> tuple[str, float]:
    """``MODEL[:SECONDS]`` → (model, the video's length in seconds, ``seconds`` if not given)."""
    name, sep, length = spec.partition(":")
    try:
        value = float(length) if sep else seconds
    except ValueError:
        value = float("nan")
    if name not in ("built-in", *avrsp.list_models()) or not value > 0:
        raise ConfigError(f"bench: --e2e-models {spec!r}: expected MODEL or MODEL:SECONDS, MODEL 'built-in' or one "
                          f"of {', '.join(avrsp.list_models())} and SECONDS > 0")
    return name, value


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    merged = []
    for f in args.merge:
        try:
            merged.append(json.loads(Path(f).read_text()))
        except (OSError, ValueError) as e:
            raise ConfigError(f"{f}: cannot read benchmark figures ({e.__class__.__name__})") from None
    if args.report_only:
        if not merged:
            raise ConfigError("bench: --report-only needs --merge FILE ... (figures of earlier runs)")
        results = merged
    else:
        result = run(args)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
            print(f"figures: {args.json}", file=sys.stderr)
        results = [result] + merged
    text = markdown(results)
    print(text)
    if args.write:
        write_generated(Path(args.write), text, "avrsp bench", title="Inference performance")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
