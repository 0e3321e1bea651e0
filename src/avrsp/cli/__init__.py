"""The ``avrsp`` command line. Every subcommand reports bad input in one line and exits 2.

One module per family of subcommands (``models``, ``data``, ``train``, ``predict``,
``evaluate``), each with its ``cmd_*`` functions and the ``add_*`` functions that declare
their parsers; helpers they share are in ``common``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Sequence

from .. import __version__
from ..config import ConfigError
from . import data, evaluate, models, predict, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avrsp", description="Relevance-guided audio-visual video saliency.")
    parser.add_argument("--version", action="version", version=f"avrsp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (models.add_info, data.add_synth, train.add_train, predict.add_predict, evaluate.add_evaluate,
                evaluate.add_score, predict.add_visualize, predict.add_serve, models.add_weights, models.add_export,
                train.add_ablate):
        add(sub)
    # Listed for `avrsp --help`; main() hands `avrsp bench ...` to the benchmark's own parser.
    sub.add_parser("bench", help="inference speed, memory and bf16 accuracy (docs/performance.md); "
                                 "'avrsp bench --help' for its options")
    data.add_data(sub)
    return parser


def cmd_bench(argv: list[str]) -> int:
    """``avrsp bench ARGS``: every argument belongs to the benchmark's own parser."""
    from ..bench import main as bench_main

    return bench_main(argv)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"avrsp: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    from ..checkpoint import CheckpointError
    from ..data.datasets import DataError
    from ..evaluate import EvalError
    from ..media import MediaError
    from ..train import TrainingError
    from ..weights import WeightsError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        try:
            return cmd_bench(argv[1:])
        except ConfigError as e:
            print(f"avrsp: error: {e}", file=sys.stderr)
            return 2
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may follow options (`train --config f.yaml --quiet epochs=3`),
    # which argparse alone would reject once the positional list has been consumed.
    if extra and args.command in ("train", "ablate") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    with warnings.catch_warnings():  # the one-line format only while this command runs
        warnings.showwarning = _one_line_warning
        try:
            return args.func(args)
        except (ConfigError, DataError, MediaError, CheckpointError, EvalError, WeightsError, TrainingError) as e:
            print(f"avrsp: error: {e}", file=sys.stderr)
            return 2


def entry(argv: Sequence[str] | None = None) -> int:
    """The ``avrsp`` command (and ``python -m avrsp``): :func:`main` in a process of its
    own, whose allocator keeps the memory it frees (:func:`avrsp.runtime.keep_freed_memory`)."""
    from ..runtime import keep_freed_memory

    keep_freed_memory()
    return main(argv)
