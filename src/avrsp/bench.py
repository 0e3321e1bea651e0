"""Inference speed, memory and bf16 accuracy of the named configs (``avrsp bench``).

    avrsp bench [--configs avrsp avrsp_v avrsp_tiny] [--batches 1 4 8] [--device auto]
                [--train] [--json FILE] [--quick]

Measured in one run, on one machine, and written as one JSON record (``--json FILE``,
else standard output; progress goes to standard error):

* per config: parameters and GFLOPs per window (``avrsp info``'s meta-device count);
* windows/s at each batch for fp32, bf16 autocast and whole-model bf16, each with and
  without channels-last 3-D convolutions, the inference graph ``predict`` runs, and
  ``torch.compile`` of that graph where asked (:mod:`avrsp.bench_model`);
* the machine's fp32 and bf16 matrix-product peaks;
* at paper size, batch 1: S3D's four blocks against the whole window (the graph split);
* ``avrsp predict`` end to end on a generated video, against the model alone on the
  same windows, and the CPU time per frame of each thing ``predict`` does besides the
  model; the preview's speed-up and agreement; bf16 against fp32 maps of the built-in
  model (:mod:`avrsp.bench_predict`);
* peak memory of ``avrsp predict`` for a 10 s and a 60 s video (fresh processes,
  :mod:`avrsp.bench_memory`);
* with ``--train``, the training data pipeline against the training step
  (:mod:`avrsp.bench_train`).

The record holds figures only. ``benchmarks/report.py`` in the source tree renders the
committed records (``benchmarks/results/*.json``) as docs/performance.md's tables and
checks them against the targets in ``benchmarks/targets.yaml``. This is a benchmark, not
a test: nothing here asserts, and CI never runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

import avrsp
from avrsp import bench_memory, bench_model, bench_predict
from avrsp.checkpoint import save_model
from avrsp.config import ConfigError
from avrsp.info import measure
from avrsp.runtime import native_bf16, resolve_device, resolve_precision


def machine(device: str) -> dict:
    """What a record was measured on; ``label`` names it in tables."""
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


def random_checkpoint(name: str, folder: Path) -> Path:
    """Config ``name`` with seeded random weights, as a model file ``predict`` can load."""
    torch.manual_seed(0)
    path = folder / f"{name}_random.safetensors"
    save_model(path, avrsp.create_model(name))
    return path


def run(args) -> dict:
    """The record: every measurement ``args`` asks for, in order, the figures so far
    written to ``--json`` after each line of progress (a later stage may fail)."""
    device = resolve_device(args.device)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))

    result = {"machine": machine(device), "command": "avrsp bench " + " ".join(args.argv),
              "date": datetime.date.today().isoformat(), "configs": {}, "throughput": [], "e2e": []}
    log(f"machine: {result['machine']['label']}, torch {torch.__version__}, default precision "
        f"{result['machine']['default_precision']}")
    result["peak_gflops"] = {p: bench_model.matmul_peak(device, dtype)
                             for p, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    log(f"  matmul peaks: fp32 {result['peak_gflops']['fp32']:.0f}, bf16 {result['peak_gflops']['bf16']:.0f} GFLOP/s")
    for name in args.configs:
        info = measure(avrsp.get_config(name))
        result["configs"][name] = {"params_m": info.total_params / 1e6, "gflops": info.total_gflops}
        result["throughput"] += bench_model.throughput(name, args.batches, device, args.repeats,
                                                       name in args.compile, log)
    if not args.quick:
        result["split"] = graph_splits(args.configs, device, log)
    result["preview"] = bench_predict.preview(device, videos=1 if args.quick else 3)
    for row in result["preview"]["rows"]:
        log(f"  --every {row['every']}: {row['speedup']:.2f}× the exact protocol, CC {row['cc_mean']:.3f} mean, "
            f"{row['cc_min']:.3f} min")
    if args.train:
        from avrsp.bench_train import train_pipeline

        result["train"] = train_pipeline(device, log)
    a = result["accuracy"] = bench_predict.accuracy(device)
    log(f"  bf16 vs fp32 (built-in model): max |Δ| {a['max_abs_diff']:.3g}, CC mean {a['cc_mean']:.4f} "
        f"min {a['cc_min']:.4f}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, seconds in args.e2e_models:
            ckpt = None if name == "built-in" else random_checkpoint(name, Path(tmp))
            e = bench_predict.end_to_end(ckpt, device, seconds, args.e2e_batch)
            result["e2e"].append(e)
            log(f"  predict {e['model']}: {e['predict_fps']:.3g} frames/s end to end, {e['maps_only_fps']:.3g} maps "
                f"only, model alone {e['model_fps']:.3g} in {e['streams']} stream(s) ({e['ratio']:.0%}), "
                f"{e['model_one_stream_fps']:.3g} in one")
    if not args.no_memory:
        m = result["memory"] = bench_memory.measure(10.0, 60.0, 144, 256, ("--device", device))
        log(f"  predict peak memory 60 s / 10 s: {m['long']['peak_mib']:.0f} / {m['short']['peak_mib']:.0f} MiB "
            f"= {m['ratio']:.3f}")
    return result


def graph_splits(configs: list[str], device: str, log) -> list[dict]:
    """The graph split of the first paper-size config asked for, in fp32 and in bf16 (the
    precision a machine lacks natively too)."""
    rows = []
    for precision in ("fp32", "bf16"):
        for name in [c for c in configs if c in ("avrsp", "avrsp_v")][:1]:
            row = bench_model.graph_split(name, device, precision)
            rows.append(row)
            log(f"  {name} {precision}: S3D's blocks {row['s3d_s_folded']:.3f} s, whole window "
                f"{row['whole_s_folded']:.3f} s ({row['ratio']:.2f}×; {row['whole_s_unfolded']:.3f} s unfolded)")
    return rows


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="avrsp bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=["avrsp", "avrsp_v", "avrsp_tiny"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8])
    ap.add_argument("--repeats", type=int, default=1, help="timed forward passes per figure, after one warm-up")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", nargs="*", default=None, metavar="CONFIG",
                    help="configs to time under torch.compile (largest batch); default: avrsp on CUDA, none on "
                         "the CPU, where it is off by default (docs/performance.md)")
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
    ap.add_argument("--json", metavar="FILE", help="write the record here (default: standard output)")
    args = ap.parse_args(argv)
    args.argv = argv
    if args.quick:
        args.configs, args.batches, args.e2e_seconds, args.no_memory = ["avrsp_tiny"], [1, 4], 10.0, True
    cuda = resolve_device(args.device).startswith("cuda")
    if args.compile is None:
        args.compile = ["avrsp"] if cuda else []
    if args.e2e_models is None:
        args.e2e_models = ["built-in"] + (["avrsp"] if cuda else [])
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
    record = json.dumps(run(args), indent=1)
    if args.json:
        Path(args.json).write_text(record)
        print(f"figures: {args.json}", file=sys.stderr)
    else:
        print(record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
