"""``avrsp train`` and ``avrsp ablate``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ConfigError, parse_overrides

def cmd_train(args: argparse.Namespace) -> int:
    from ..train import load_train_config, train

    overrides = parse_overrides(args.overrides)
    if args.resume:
        run = Path(args.resume)
        if args.config:
            raise ConfigError("give --config or --resume RUN, not both (a run resumes with its own config.yaml)")
        cfg = load_train_config(run / "config.yaml", overrides)
        if Path(cfg.out).resolve() != run.resolve():
            cfg = load_train_config(run / "config.yaml", {**overrides, "out": str(run)})
    elif args.config:
        cfg = load_train_config(args.config, overrides)
    else:
        raise ConfigError("train needs --config FILE or a shipped config's NAME (e.g. --config stage1_dhf1k) "
                          "or --resume RUN")
    train(cfg, resume=bool(args.resume), progress=not args.quiet)
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from ..ablate import StudyConfig, run_study
    from ..ablate_report import report
    from ..config import from_dict, read_yaml, replace

    from ..train import config_file

    study = (from_dict(StudyConfig, read_yaml(config_file(args.config)), where=args.config) if args.config
             else StudyConfig())
    study = replace(study, parse_overrides(args.overrides))
    if not args.report_only:
        run_study(study, log=lambda s: print(s, file=sys.stderr, flush=True))
    command = " ".join(["avrsp ablate", *(["--config", args.config] if args.config else []), *args.overrides])
    path = report(study, Path(args.write), command=command)
    print(f"written: {path}")
    return 0


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model from a config (the paper's two-stage recipe)",
                       description="Train from a YAML config (a file, or one shipped with avrsp by name), "
                                   "overriding any key with key=value "
                                   "(e.g. epochs=5 data.root=runs/synth/stavis model.fusion=mbt). Resume a "
                                   "killed run with --resume RUN_DIR. Scale out with torchrun.")
    from ..train import shipped_configs

    p.add_argument("--config", metavar="FILE|NAME",
                   help="a YAML file, or the name of a config shipped with avrsp: "
                        + ", ".join(n for n in shipped_configs() if "/" not in n) + ", ablations/…")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def add_ablate(sub) -> None:
    p = sub.add_parser("ablate", help="the fusion study (Tables III and V, Fig. 6) on synthetic data",
                       description="Train each row of the fusion study (Table V's fusions, Table III's audio rows, "
                                   "controls) with several seeds on `avrsp synth` data where relevance needs the "
                                   "pictures, score each on unseen videos with and without its sound, write one "
                                   "record per run and docs/results.md from the records. Resumes. "
                                   "configs/studies/fusion.yaml is the study docs/results.md reports.")
    p.add_argument("--config", metavar="FILE|NAME", help="a study config (studies/fusion, shipped with avrsp)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. seeds=[0,1] rows=[ravf,add] jobs=2")
    p.add_argument("--report-only", action="store_true", help="only rewrite the report from the records")
    p.add_argument("--write", default="docs/results.md", metavar="FILE", help="the report (default docs/results.md)")
    p.set_defaults(func=cmd_ablate)
