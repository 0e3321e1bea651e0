"""Helpers the subcommands share: model configs from names or files, model files from --checkpoint, runtime and dataclass flags."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ..config import ConfigError, parse_overrides

def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="model config YAML ('model: <name>' plus fields)")
    p.add_argument("--set", metavar="KEY=VALUE", nargs="+", default=[], dest="overrides",
                   help="override config fields, e.g. --set fusion=bilinear num_pairs=2")


def model_config(name: str | None, args: argparse.Namespace):
    from ..models import get_config, load_model_config

    overrides = parse_overrides(args.overrides)
    if args.config:
        if name is not None:
            raise ConfigError("give a model name or --config, not both")
        return load_model_config(args.config, **overrides)
    return get_config(name, **overrides)


def model_file(path: str | None) -> Path | None:
    """A --checkpoint argument as a model file, read and checked before any output is
    written; a training run's folder gives its best model, and says so."""
    from ..checkpoint import model_file, read_metadata

    if path is None:
        return None
    file = model_file(path)
    read_metadata(file)
    if Path(path).is_dir():
        print(f"avrsp: {path} is a training run's folder: using its {file.name}", file=sys.stderr)
    return file


def at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number ≥ 1")
    return int(text)


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, default=None, help="windows per forward pass (default: 8 on CUDA, 4 on CPU)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 on CUDA and on CPUs with AMX or AVX-512 BF16, else fp32")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--streams", type=at_least_one, default=None, metavar="N",
                   help="forward passes at once, sharing the CPU threads (default: 2 on a CPU with 2 threads or "
                        "more, 1 on CUDA; each holds its own activations)")
    p.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                   help="replay each batch's forward pass from a CUDA graph (default: off until checked on a GPU; "
                        "an error without CUDA)")


def runtime_from_args(args: argparse.Namespace, device: str | None = None):
    """The :class:`avrsp.runtime.Runtime` of ``add_runtime_args``' flags, resolved (``device``:
    this process's device under torchrun, in place of ``--device``)."""
    from ..runtime import Runtime

    return Runtime(device or args.device, args.precision, args.batch, args.streams, args.cuda_graphs).resolve()


def add_dataclass_flags(p: argparse.ArgumentParser, cls: type) -> None:
    """One --flag per field of a flat dataclass, typed by its default: --name/--no-name for
    a bool, the listed values for a Literal."""
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(f.default, bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                           help=f"default {'on' if f.default else 'off'}")
        elif typing.get_origin(hints[f.name]) is typing.Literal:
            p.add_argument(flag, dest=f.name, choices=typing.get_args(hints[f.name]), default=None,
                           help=f"default {f.default}")
        else:
            p.add_argument(flag, dest=f.name, type=type(f.default), default=None,
                           metavar=type(f.default).__name__.upper(), help=f"default {f.default}")
