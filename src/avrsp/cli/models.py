"""``avrsp info``, ``avrsp weights import``, ``avrsp export``."""

from __future__ import annotations

import argparse
import json
import sys

from ..config import ConfigError, to_dict
from .common import add_model_args, model_config, model_file

def cmd_info(args: argparse.Namespace) -> int:
    from ..info import measure
    from ..models import list_models
    from ..models.avrsp import describe

    if args.config or args.model:
        names = [args.model] if args.model else [None]
    else:
        names = list_models()
    infos = [measure(model_config(n, args)) for n in names]
    if args.json:
        print(json.dumps([{"config": to_dict(i.config), "params": i.params, "gflops": i.gflops,
                           "total_params": i.total_params, "total_gflops": i.total_gflops} for i in infos],
                          indent=2))
        return 0
    if len(infos) > 1:
        print(f"{'model':<12} {'params':>9} {'GFLOPs/window':>14}  {'window':<22} switches")
        for i in infos:
            c = i.config
            window = f"{c.frames}×{c.height}×{c.width}" + (f" + {c.audio_samples} smp" if c.audio else "")
            print(f"{c.name:<12} {i.total_params / 1e6:>8.2f}M {i.total_gflops:>14.1f}  {window:<22} {describe(c)}")
        print("\n'avrsp info NAME' shows one model by component.")
        return 0
    info = infos[0]
    c = info.config
    print(f"{c.name}: {describe(c)}")
    print(f"window: {c.frames} frames × {c.height}×{c.width}" +
          (f", audio {c.audio_samples} samples at {c.sample_rate} Hz" if c.audio else ", no audio"))
    print(f"\n{'component':<12} {'params':>12} {'GFLOPs':>9}")
    for name in info.params:
        print(f"{name:<12} {info.params[name]:>12,} {info.gflops[name]:>9.2f}")
    print(f"{'total':<12} {info.total_params:>12,} {info.total_gflops:>9.2f}")
    print("\nGFLOPs per window = 2 × multiply-accumulates of convolutions and matrix products.")
    return 0


def cmd_weights_import(args: argparse.Namespace) -> int:
    from ..weights import NORMALIZATION, import_weights, save_imported

    state, meta = import_weights(args.kind, args.file)
    save_imported(args.output, state, meta)
    print(f"{args.file}: {meta['layout']} layout, {len(state)} tensors → {args.output}")
    if meta["dropped"]:
        print(f"  not used by the backbone: {len(meta['dropped'])} tensor(s) ({', '.join(meta['dropped'][:4])}"
              f"{', …' if len(meta['dropped']) > 4 else ''})")
    if args.kind == "s3d":
        print(f"  input normalisation: {NORMALIZATION[meta['normalization']]['description']} "
              f"(train with model.visual_norm={meta['normalization']} init.s3d={args.output})")
    else:
        print(f"  input: 22 050 Hz mono in [-256, 256] (train with init.soundnet={args.output})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..checkpoint import load_model
    from ..weights import export_onnx, export_torch

    if not (args.onnx or args.torch_export):
        raise ConfigError("export: give --onnx FILE and/or --torch-export FILE")
    model = load_model(model_file(args.checkpoint))
    cfg = model.config
    shape = f"clip 1×3×{cfg.frames}×{cfg.height}×{cfg.width}" + (f", audio 1×1×{cfg.audio_samples}" if cfg.audio else "")
    if args.onnx:
        r = export_onnx(model, args.onnx, args.opset)
        print(f"{args.onnx}: ONNX opset {r['opset']}, inputs {shape}; ONNX Runtime vs PyTorch max |Δ| "
              f"{r['max_abs_diff']:.2e}")
        if r["max_abs_diff"] > args.tolerance:
            print(f"avrsp: error: the ONNX model differs from PyTorch by more than {args.tolerance}", file=sys.stderr)
            return 1
    if args.torch_export:
        r = export_torch(model, args.torch_export)
        print(f"{args.torch_export}: torch.export program, inputs {shape}; max |Δ| {r['max_abs_diff']:.2e}")
    return 0


def add_info(sub) -> None:
    p = sub.add_parser("info", help="parameters and GFLOPs per window of the named models",
                       description="Parameters and GFLOPs per window of each registered model, or of one "
                                   "model by component.")
    p.add_argument("model", nargs="?", help="a registered model name (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_model_args(p)
    p.set_defaults(func=cmd_info)


def add_weights(sub) -> None:
    p = sub.add_parser("weights", help="import published backbone weights")
    w = p.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    q = w.add_parser("import", help="S3D (Kinetics .pt or torchvision) / SoundNet8 (.pth) → our layout, safetensors",
                     description="Reads the file without executing code (safetensors or weights-only torch.load), "
                                 "maps it onto our backbone, checks every key and shape, records the input "
                                 "normalisation.")
    q.add_argument("--kind", required=True, choices=("s3d", "soundnet"))
    q.add_argument("file", metavar="FILE")
    q.add_argument("-o", "--output", required=True, metavar="OUT.safetensors")
    q.set_defaults(func=cmd_weights_import)


def add_export(sub) -> None:
    from ..weights import ONNX_MIN_OPSET

    p = sub.add_parser("export", help="export a model file to ONNX and/or torch.export",
                       description="Batch 1 at the model's window size. The ONNX file is checked against PyTorch "
                                   "with ONNX Runtime on a random window.")
    p.add_argument("checkpoint", metavar="MODEL.safetensors")
    p.add_argument("--onnx", metavar="OUT.onnx")
    p.add_argument("--opset", type=int, default=ONNX_MIN_OPSET,
                   help=f"ONNX opset ≥ {ONNX_MIN_OPSET} (default: {ONNX_MIN_OPSET}, the lowest PyTorch's "
                        f"exporter writes)")
    p.add_argument("--torch-export", metavar="OUT.pt2")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted |ONNX − PyTorch| (default 1e-4)")
    p.set_defaults(func=cmd_export)
