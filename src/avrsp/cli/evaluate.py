"""``avrsp evaluate`` and ``avrsp score``: the paper's test protocol."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ConfigError
from .common import add_runtime_args, model_file, runtime_from_args

def _eval_name(checkpoint: Path) -> str:
    """The default output name of an evaluation of ``checkpoint``: a run's model files all
    have the same names (best.safetensors), so the run's folder names them."""
    if (checkpoint.parent / "config.yaml").is_file():
        return f"{checkpoint.parent.name}-{checkpoint.stem}"
    return checkpoint.stem


def _eval_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="ROOT", help="dataset root (STAViS layout or DHF1K)")
    p.add_argument("--dataset", required=True, help="DHF1K, a STAViS database (e.g. DIEM), or 'stavis' for all")
    p.add_argument("--split", default=None, help="1, 2, 3, or 'all' (3-fold protocol; DIEM's fixed split "
                                                 "scored by each split's model); default: 1, or all with 3 models")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/eval/<name>)")
    post = p.add_mutually_exclusive_group()
    post.add_argument("--postprocess", dest="postprocess", action="store_true", default=None,
                      help="STAViS post-processing (scale to [0,1], Gaussian σ=2); default on except DHF1K")
    post.add_argument("--no-postprocess", dest="postprocess", action="store_false")
    p.add_argument("--seed", type=int, default=0, help="seed of AUC-J's jitter and sAUC's negatives")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _finish_eval(args, items, records, model_name: str, postprocess: bool, out: Path) -> int:
    from ..evaluate import aggregate, video_kinds, write_reports

    rows = aggregate(records, video_kinds(Path(args.data)))
    # DHF1K has one fixed validation split, whatever --split says.
    protocol = (f"{args.dataset}, validation set" if args.dataset.upper() == "DHF1K"
                else f"{args.dataset}, split {args.split_resolved}")
    report = write_reports(out, records, rows, model=model_name, protocol=protocol, postprocess=postprocess)
    print(report.read_text())
    print(f"written: {report}, {out / 'per_video.csv'}, {out / 'per_dataset.csv'}, {out / 'per_frame.csv'}, "
          f"{out / 'results.json'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..distributed import process_device, setup_distributed
    from ..evaluate import default_postprocess, plan_or_fail, run_evaluation

    device = process_device(args.device)  # under torchrun: this process's GPU, or its share of the CPU
    dist = setup_distributed(device)
    runtime = runtime_from_args(args, str(device))
    if args.checkpoint:
        checkpoints = [model_file(c) for c in args.checkpoint]
        args.split_resolved = args.split or ("all" if len(checkpoints) == 3 else "1")
    else:  # as predict does: the built-in model, one copy per split the protocol needs
        from ..predict import built_in_notice, default_checkpoint

        args.split_resolved = args.split or "1"
        checkpoints = [default_checkpoint()] * (3 if args.split_resolved == "all" else 1)
        if dist.main:
            print(built_in_notice(), file=sys.stderr)
    items = plan_or_fail(Path(args.data), args.dataset, args.split_resolved, checkpoints)
    postprocess = default_postprocess(args.dataset) if args.postprocess is None else args.postprocess
    out = Path(args.out or f"runs/eval/{_eval_name(checkpoints[0])}_{args.dataset}_{args.split_resolved}")
    settings = {"data": str(Path(args.data).resolve()), "dataset": args.dataset, "split": args.split_resolved,
                "precision": runtime.precision}
    records = run_evaluation(items, out, settings=settings, postprocess=postprocess, runtime=runtime,
                             save_maps=args.save_maps, seed=args.seed, progress=not args.quiet, figure=args.figure and dist.main, dist=dist)
    if not dist.main:  # the reports are rank 0's, from every process's records
        return 0
    return _finish_eval(args, items, records, checkpoints[0].stem, postprocess, out)


def cmd_score(args: argparse.Namespace) -> int:
    from ..evaluate import EvalError, default_postprocess, plan_or_fail
    from ..prediction_folders import read_predictions, score_folder

    args.split_resolved = args.split or "1"
    n_models = 3 if args.split_resolved == "all" else 1
    items = plan_or_fail(Path(args.data), args.dataset, args.split_resolved, [None] * n_models)
    postprocess = default_postprocess(args.dataset) if args.postprocess is None else args.postprocess
    pred_dir = Path(args.pred_dir)
    if not pred_dir.is_dir():
        raise ConfigError(f"{pred_dir}: not a directory")
    index = read_predictions(pred_dir, items, args.first_frame)
    for line in index.summary():
        print(f"avrsp: {line}", file=sys.stderr)
    if args.strict and index.missing:
        key, k = index.missing[0]
        raise EvalError(f"{pred_dir}: {len(index.missing)} frame(s) have no prediction, e.g. {key} frame {k + 1} "
                        f"(--strict)")
    records = score_folder(index, items, postprocess=postprocess, seed=args.seed, progress=not args.quiet)
    out = Path(args.out or f"runs/score/{pred_dir.name}_{args.dataset}_{args.split_resolved}")
    return _finish_eval(args, items, records, pred_dir.name, postprocess, out)


def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="run model files over a dataset with the paper's test protocol",
                       description="Sliding windows of the model's clip length (32 frames for the paper's model, "
                                   "8 for avrsp_tiny; reversed for the first frames), every frame "
                                   "scored with the MIT benchmark metrics, averaged per video then over videos. "
                                   "Resumes from --out.")
    p.add_argument("--checkpoint", nargs="+", metavar="FILE",
                   help="model file(s); three (splits 1, 2, 3 in order) for --split all "
                        "(default: the built-in model, trained on synthetic data only)")
    _eval_common(p)
    add_runtime_args(p)
    p.add_argument("--save-maps", action="store_true",
                   help="also write 8-bit PNG predictions as maps/<dataset>/<video>/eyeMap_%%05d.png")
    p.add_argument("--figure", action="store_true",
                   help="add a Fig. 5-style grid (frame, ground truth, prediction) of the first videos to the report")
    p.set_defaults(func=cmd_evaluate)


def add_score(sub) -> None:
    p = sub.add_parser("score", help="score a folder of predicted maps against a dataset",
                       description="PRED_DIR/[<dataset>/]<video>/<...N>.png, N the frame number (the last number in "
                                   "the name; from 1 or from 0, inferred when the files say which); scored and "
                                   "averaged exactly as 'avrsp evaluate' does.")
    p.add_argument("pred_dir", metavar="PRED_DIR")
    _eval_common(p)
    p.add_argument("--first-frame", type=int, choices=(0, 1), default=None,
                   help="the number of a video's first frame in the file names (default: inferred; an error when "
                        "the files do not tell)")
    p.add_argument("--strict", action="store_true", help="a frame without a prediction is an error, not left out")
    p.set_defaults(func=cmd_score)
