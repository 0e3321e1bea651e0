"""Where a forward pass spends its time (docs/performance.md).

    python benchmarks/profile_inference.py [--config avrsp] [--batch 8] [--precision bf16]
                                           [--device auto] [--rows 12] [--out FILE]
                                           [--convolutions] [--size H W]

Random weights (the time does not depend on them), the default inference layout of the
device (``avrsp.graph.prepare``), the allocator setting of the ``avrsp`` command
(``keep_freed_memory``: without it every large activation is faulted in afresh from zeroed
pages, and the profile would time the kernel's page faults inside the operators that touch
them). By default: one warm-up pass, then the top operators of one profiled pass by self
time. ``--convolutions``: every convolution of
the window timed inside the whole forward pass (2 warm-ups, median of 5 passes), its
GFLOP and GFLOP/s, and S3D's four blocks against everything after them, each timed
within the same passes: convolution time, GFLOP/s, and the time left to the other
operators, the split the issue-19 ratio is made of.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

import avrsp
from avrsp.graph import prepare, uses_channels_last
from avrsp.runtime import keep_freed_memory, resolve_device
from avrsp.models.fold import ConvReLU


def convolution_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Each convolution of ``model`` once: a :class:`ConvReLU` stands for the convolution
    it holds, which it may call as a module of its own."""
    inner = {id(m.conv) for m in model.modules() if isinstance(m, ConvReLU)}
    return {name: m for name, m in model.named_modules()
            if isinstance(m, ConvReLU) or (isinstance(m, nn.modules.conv._ConvNd) and id(m) not in inner)}


def _conv(module: nn.Module) -> nn.Module:
    """The convolution a :class:`ConvReLU` holds, or ``module`` itself."""
    return module.conv if isinstance(module, ConvReLU) else module


def _clocked(module: nn.Module, done: Callable) -> list:
    """Hooks that call ``done(seconds, module, inputs, output)`` after each call of ``module``."""
    started: list[float] = []
    pre = module.register_forward_pre_hook(lambda _m, _inp: started.append(time.perf_counter()))
    post = module.register_forward_hook(lambda m, inp, out: done(time.perf_counter() - started.pop(), m, inp, out))
    return [pre, post]


def convolution_flops(conv: nn.Module, out: torch.Tensor) -> int:
    """2 × multiply-accumulates of one call that produced ``out``, PyTorch's FLOP count."""
    conv = _conv(conv)
    return 2 * out.numel() * (conv.in_channels // conv.groups) * conv.weight[0, 0].numel()


def convolution_table(model: nn.Module, clip: torch.Tensor, audio: torch.Tensor | None,
                      passes: int = 5, warmup: int = 2) -> tuple[list[dict], dict[str, dict]]:
    """Per convolution (median over ``passes`` whole forward passes, each timed inside
    the pass by forward hooks, so on the CPU only): name, part (``s3d`` for S3D's four
    blocks, ``rest`` for everything after them), input shape, kernel, ms, GFLOP. Per
    part: its time within the pass (the blocks' from their own hook, the rest's the
    pass less the blocks), the convolutions' time and GFLOP, and the time left to the
    other operators. Convolutions called as functions rather than modules (LIP's
    window sums, :func:`avrsp.models.neck.box_sum3`) count among the other operators."""
    convs = convolution_modules(model)
    calls: dict[str, list[tuple[float, int, tuple, tuple]]] = {n: [] for n in convs}
    blocks: list[float] = []
    whole: list[float] = []
    hooks = _clocked(model.visual, lambda seconds, *_: blocks.append(seconds))
    for name, m in convs.items():
        hooks += _clocked(m, lambda seconds, m, inp, out, name=name: calls[name].append(
            (seconds, convolution_flops(m, out), tuple(inp[0].shape), tuple(_conv(m).weight.shape))))
    try:
        with torch.no_grad():
            for i in range(warmup + passes):
                if i == warmup:
                    for v in (*calls.values(), blocks):
                        v.clear()
                t0 = time.perf_counter()
                model(clip, audio)
                whole.append(time.perf_counter() - t0)
    finally:
        for h in hooks:
            h.remove()
    whole = whole[warmup:]
    rows = []
    for name, v in calls.items():
        if not v:
            continue
        k = len(v) // passes   # a module called k times a pass: its calls add up within a pass
        ms = statistics.median(sum(c[0] for c in v[i * k:(i + 1) * k]) for i in range(passes)) * 1e3
        rows.append({"name": name, "part": "s3d" if name.startswith("visual.") else "rest", "input": v[0][2],
                     "weight": v[0][3], "ms": ms, "gflop": sum(c[1] for c in v[:k]) / 1e9})
    pass_ms = {"s3d": statistics.median(blocks) * 1e3,
               "rest": statistics.median(w - b for w, b in zip(whole, blocks)) * 1e3}
    parts = {}
    for part in ("s3d", "rest"):
        conv_ms = sum(r["ms"] for r in rows if r["part"] == part)
        gflop = sum(r["gflop"] for r in rows if r["part"] == part)
        parts[part] = {"pass_ms": pass_ms[part], "conv_ms": conv_ms, "conv_gflop": gflop,
                       "other_ms": pass_ms[part] - conv_ms}
    return rows, parts


def format_convolutions(rows: list[dict], parts: dict[str, dict], limit: int) -> str:
    lines = ["| part | pass ms | convolutions ms | convolution GFLOP | GFLOP/s of convolution time | other operators ms |",
             "|---|---|---|---|---|---|"]
    for part, label in (("s3d", "S3D's four blocks"), ("rest", "everything after them")):
        p = parts[part]
        lines.append(f"| {label} | {p['pass_ms']:.1f} | {p['conv_ms']:.1f} | {p['conv_gflop']:.1f} | "
                     f"{p['conv_gflop'] / p['conv_ms'] * 1e3:.0f} | {p['other_ms']:.1f} |")
    lines += ["", "| convolution | part | input | weight | ms | GFLOP | GFLOP/s |", "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["ms"])[:limit]:
        lines.append(f"| {r['name']} | {r['part']} | {'×'.join(map(str, r['input']))} | "
                     f"{'×'.join(map(str, r['weight']))} | {r['ms']:.2f} | {r['gflop']:.2f} | "
                     f"{r['gflop'] / r['ms'] * 1e3:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="avrsp")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rows", type=int, default=12)
    ap.add_argument("--out", help="also write the table here")
    ap.add_argument("--convolutions", action="store_true", help="time every convolution (CPU)")
    ap.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="frame size (default: the config's)")
    args = ap.parse_args()
    keep_freed_memory()
    device = resolve_device(args.device)
    if args.convolutions and device != "cpu":
        ap.error("--convolutions times convolutions with the CPU's clock; use --device cpu")
    model = prepare(avrsp.create_model(args.config), device, args.precision)
    cfg, dtype = model.config, next(model.parameters()).dtype
    h, w = args.size or (cfg.height, cfg.width)
    clip = torch.rand(args.batch, 3, cfg.frames, h, w, device=device).mul(2).sub(1).to(dtype)
    if uses_channels_last(model):
        clip = clip.contiguous(memory_format=torch.channels_last_3d)
    audio = torch.randn(args.batch, 1, cfg.audio_samples, device=device).to(dtype) if cfg.audio else None
    title = f"{args.config}, batch {args.batch}, {h}×{w}, {dtype}, {device}, channels-last {uses_channels_last(model)}"
    if args.convolutions:
        table = format_convolutions(*convolution_table(model, clip, audio), args.rows)
    else:
        table = profile_table(model, clip, audio, device, args.rows)
    print(title)
    print(table)
    if args.out:
        Path(args.out).write_text(title + "\n" + table)


def profile_table(model: nn.Module, clip: torch.Tensor, audio: torch.Tensor | None, device: str, rows: int) -> str:
    """The top operators of one profiled pass by self time, after one warm-up pass."""
    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.no_grad():
        model(clip, audio)
        if cuda:
            torch.cuda.synchronize()
        with profile(activities=activities) as prof:
            model(clip, audio)
            if cuda:
                torch.cuda.synchronize()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=40)


if __name__ == "__main__":
    main()
