"""The network alone, for ``avrsp bench``: windows/s of each mode, the machine's
matrix-product peaks, and S3D's blocks against the whole window (the graph split).

Every figure here is a forward pass on tensors already in memory; what ``predict``
adds around it is :mod:`avrsp.bench_predict`'s.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch

import avrsp
from avrsp.info import measure
from avrsp.graph import prepare
from avrsp.runtime import resolve_precision
from avrsp.models import to_channels_last_3d

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
    """A seeded random clip (and waveform, for a config with sound) of ``batch`` windows."""
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
    """Config ``name`` as built (no inference graph), seeded random weights, in ``mode``."""
    dtype, _, channels_last = MODES[mode]
    torch.manual_seed(0)
    model = avrsp.create_model(name).eval().to(device, dtype)
    return to_channels_last_3d(model) if channels_last else model


def throughput(name: str, batches: list[int], device: str, repeats: int, compile_: bool, log) -> list[dict]:
    """Windows/s of every mode at every batch, then of the inference graph ``predict``
    runs; with ``compile_``, torch.compile of that graph at the largest batch."""
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
    # picks, and on CUDA also with the CUDA graphs `--cuda-graphs` replays.
    precision = resolve_precision("auto", device)
    for graphs in (False, True) if cuda else (False,):
        rows += per_batch(prepare(avrsp.create_model(name), device, precision, graphs=graphs),
                          f"inference{'+graphs' if graphs else ''} ({precision})", not cuda)
    if compile_:
        rows.append(compiled(name, batches[-1], device, precision, repeats, log))
    return rows


def compiled(name: str, batch: int, device: str, precision: str, repeats: int, log) -> dict:
    """Windows/s of ``torch.compile`` of the inference graph at ``batch``, and its first
    call's seconds (the compilation); a failure is recorded, not raised: the table
    reports where compiling works."""
    label = f"compile ({precision}+cl)"
    try:
        model = torch.compile(prepare(avrsp.create_model(name), device, precision, graphs=False))
        clip, audio = inputs(model.config, batch, device, next(model.parameters()).dtype, True)

        def step():
            with torch.no_grad():
                model(clip, audio)

        t0 = time.perf_counter()
        step()
        sync(device)
        compile_s = time.perf_counter() - t0
        sec = timed(step, device, repeats)
    except Exception as e:
        log(f"  {name:<10} {label}: failed ({type(e).__name__})")
        return {"config": name, "mode": label, "error": f"{type(e).__name__}: {str(e)[:200]}"}
    log(f"  {name:<10} {label:<12} batch {batch}: {batch / sec:8.2f} windows/s (first call {compile_s:.0f} s)")
    return {"config": name, "mode": label, "batch": batch, "windows_per_s": batch / sec, "compile_s": compile_s}


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
        times = _in_turn(parts, device, repeats)
        out[f"s3d_s_{label}"] = float(np.median(times["s3d"]))
        out[f"whole_s_{label}"] = float(np.median(times["whole"]))
        if fold:  # the ratio that matters is the inference graph's
            out["ratios"] = [w / v for w, v in zip(times["whole"], times["s3d"])]
    out["ratio"] = float(np.median(out["ratios"]))
    out["rest_gflops_s"] = (out["gflops_whole"] - out["gflops_s3d"]) / (out["whole_s_folded"] - out["s3d_s_folded"])
    out["s3d_gflops_s"] = out["gflops_s3d"] / out["s3d_s_folded"]
    return out


def _in_turn(parts: dict, device: str, repeats: int) -> dict[str, list[float]]:
    """Seconds of each of ``parts``' calls, the parts called in turn ``repeats`` times
    after one warm-up call of each."""
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
    return times
