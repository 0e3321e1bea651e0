"""Where a forward pass spends its time: the top operators by self time (docs/performance.md).

    python benchmarks/profile_inference.py [--config avrsp] [--batch 8] [--precision bf16]
                                           [--device auto] [--rows 12] [--out FILE]

Random weights (the time does not depend on them), the default inference layout of the
device (``avrsp.inference.prepare``), one warm-up pass, then one profiled pass.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import avrsp
from avrsp.inference import prepare, resolve_device, uses_channels_last


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="avrsp")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rows", type=int, default=12)
    ap.add_argument("--out", help="also write the table here")
    args = ap.parse_args()
    device = resolve_device(args.device)
    model = prepare(avrsp.create_model(args.config), device, args.precision)
    cfg, dtype = model.config, next(model.parameters()).dtype
    clip = torch.rand(args.batch, 3, cfg.frames, cfg.height, cfg.width, device=device).mul(2).sub(1).to(dtype)
    if uses_channels_last(model):
        clip = clip.contiguous(memory_format=torch.channels_last_3d)
    audio = torch.randn(args.batch, 1, cfg.audio_samples, device=device).to(dtype) if cfg.audio else None
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
    title = f"{args.config}, batch {args.batch}, {dtype}, {device}, channels-last {uses_channels_last(model)}"
    table = prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=40)
    print(title)
    print(table)
    if args.out:
        Path(args.out).write_text(title + "\n" + table)


if __name__ == "__main__":
    main()
