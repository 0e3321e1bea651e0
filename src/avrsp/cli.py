"""The ``avrsp`` command line. Every subcommand reports bad input in one line and exits 2."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from pathlib import Path
from typing import Sequence

from . import __version__
from .config import ConfigError, parse_overrides, to_dict


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="model config YAML ('model: <name>' plus fields)")
    p.add_argument("--set", metavar="KEY=VALUE", nargs="+", default=[], dest="overrides",
                   help="override config fields, e.g. --set fusion=bilinear num_pairs=2")


def _model_config(name: str | None, args: argparse.Namespace):
    from .models import get_config, load_model_config

    overrides = parse_overrides(args.overrides)
    if args.config:
        if name is not None:
            raise ConfigError("give a model name or --config, not both")
        return load_model_config(args.config, **overrides)
    return get_config(name, **overrides)


def _model_file(path: str | None) -> Path | None:
    """A --checkpoint argument as a model file, read and checked before any output is
    written; a training run's folder gives its best model, and says so."""
    from .checkpoint import model_file, read_metadata

    if path is None:
        return None
    file = model_file(path)
    read_metadata(file)
    if Path(path).is_dir():
        print(f"avrsp: {path} is a training run's folder: using its {file.name}", file=sys.stderr)
    return file


def _eval_name(checkpoint: Path) -> str:
    """The default output name of an evaluation of ``checkpoint``: a run's model files all
    have the same names (best.safetensors), so the run's folder names them."""
    if (checkpoint.parent / "config.yaml").is_file():
        return f"{checkpoint.parent.name}-{checkpoint.stem}"
    return checkpoint.stem


def cmd_info(args: argparse.Namespace) -> int:
    from .info import measure
    from .models import list_models
    from .models.avrsp import describe

    if args.config or args.model:
        names = [args.model] if args.model else [None]
    else:
        names = list_models()
    infos = [measure(_model_config(n, args)) for n in names]
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


def cmd_synth(args: argparse.Namespace) -> int:
    from .data.synth import SynthConfig, write_dataset

    fields = {f.name for f in dataclasses.fields(SynthConfig)}
    cfg = SynthConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    try:
        cfg.validate()
    except ValueError as e:
        raise ConfigError(f"synth: {e}") from None
    root = Path(args.root)

    def progress(done: int, total: int) -> None:
        print(f"\rwriting videos: {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    try:
        meta = write_dataset(root, cfg, overwrite=args.overwrite, progress=progress)
    except FileExistsError as e:
        raise ConfigError(str(e)) from None
    kinds = [v["kind"] for v in meta["videos"]]
    labels = {"relevant": "relevant audio", "mixed": "relevant audio under music", "offscreen": "off-screen tones",
              "music": "background music", "silent": "without sound"}
    counts = ", ".join(f"{kinds.count(k)} {label}" for k, label in labels.items() if k in kinds)
    print(f"{root}: {len(kinds)} videos ({counts}), {cfg.frames} frames at {cfg.height}×{cfg.width}, {cfg.fps:g} fps")
    print(f"  STAViS layout: {root / 'stavis'} (database {meta['db']}, fold lists 1–3)")
    if cfg.dhf1k:
        print(f"  DHF1K layout:  {root / 'dhf1k'} (train/, val/)")
    if cfg.mp4:
        print(f"  videos:        {root / 'videos'} (.mp4{', with sound unless silent' if 'silent' in kinds else ' with sound'})")
    print(f"  metadata:      {root / 'synth.json'}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from .data.check import check, format_problems, format_report
    from .data.datasets import DataError

    try:
        result = check(args.root)
    except DataError as e:
        print(f"avrsp: error: {e}", file=sys.stderr)
        return 1
    print(format_report(result.found))
    if not args.quiet:
        for line in format_problems(result):
            print(f"problem: {line}")
        for m in result.warnings:
            print(f"problem: {m}")
        for m in result.notes:
            print(f"note: {m}")
    for folder, r in result.unusable:
        print(f"avrsp: error: {folder}: {r.dataset} split {r.split} {r.part} has no usable video", file=sys.stderr)
    n = result.problem_count
    if n == 0:
        print("no problems found")
        return 0
    videos = sum(1 for _, s in result.videos if s.problems)
    print(f"{n} problem(s) found" + (f", in {videos} video(s)" if videos else "")
          + (" (run without --quiet to name them)" if args.quiet else ""))
    return 1


def cmd_data_from_gaze(args: argparse.Namespace) -> int:
    from .data.from_gaze import FromGazeConfig, build, viewer_summary
    from .data.gaze import load_screen, read_recordings
    from .predict import collect_videos

    screen = load_screen(args.screen, resolution=args.resolution, size_cm=args.screen_cm,
                         distance_cm=args.distance_cm, video_rect=args.video_rect)
    cfg = FromGazeConfig(db=args.db, blur=args.blur, per_frame=args.per_frame, time_origin=args.time_origin,
                         layouts=("stavis", "dhf1k") if args.layout == "both" else (args.layout,), jobs=args.jobs)
    cfg.validate()
    videos = collect_videos(args.videos)
    recordings = read_recordings(args.gaze, time_unit=args.time_unit, onset=args.onset, eye=args.eye)

    def progress(done: int, total: int) -> None:
        print(f"\rconverting videos: {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    out = Path(args.out)
    meta = build(videos, recordings, screen, out, cfg, time_unit=args.time_unit, overwrite=args.overwrite,
                 progress=None if args.quiet else progress)
    frames = sum(v["frames"] for v in meta["videos"])
    empty = sum(v["frames_without_gaze"] for v in meta["videos"])
    print(f"{out}: {len(meta['videos'])} videos, {frames} frames, {len(viewer_summary(meta))} viewer(s); "
          f"maps: {meta['blur']['description']}; per frame: {meta['per_frame']}")
    if empty:
        print(f"  {empty} frame(s) without any gaze: all-zero maps, never training targets, left out of evaluation")
    print(f"\n{'viewer':<16} {'samples':>9} {'kept':>9} {'invalid':>8} {'off screen':>10} {'off video':>9} "
          f"{'outside':>8}" + (f" {'no fixation':>11}" if meta["per_frame"] == "fixations" else "")
          + f" {'frames w/o gaze':>15}")
    for viewer, d in viewer_summary(meta):
        print(f"{viewer:<16} {d.samples:>9} {d.kept:>9} {d.invalid:>8} {d.off_screen:>10} {d.off_video:>9} "
              f"{d.outside:>8}" + (f" {d.not_fixation:>11}" if meta["per_frame"] == "fixations" else "")
              + f" {d.frames_without_gaze:>15}")
    print("(outside: before the first frame appeared or after the last one ended; per video and viewer in "
          f"{out / 'gaze.json'})")
    if "stavis" in cfg.layouts:
        print(f"\n  STAViS layout: {out / 'stavis'} (database {cfg.db}, fold lists 1–3)")
    if "dhf1k" in cfg.layouts:
        print(f"  DHF1K layout:  {out / 'dhf1k'} (train/, val/)")
    return 0


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
    from .evaluate import aggregate, video_kinds, write_reports

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
    from .distributed import process_device, setup_distributed
    from .evaluate import default_postprocess, plan_or_fail, run_evaluation
    from .inference import resolve_precision

    device = process_device(args.device)  # under torchrun: this process's GPU, or its share of the CPU
    dist = setup_distributed(device)
    args.device = str(device)
    args.precision = resolve_precision(args.precision, args.device)
    if args.checkpoint:
        checkpoints = [_model_file(c) for c in args.checkpoint]
        args.split_resolved = args.split or ("all" if len(checkpoints) == 3 else "1")
    else:  # as predict does: the built-in model, one copy per split the protocol needs
        from .predict import built_in_notice, default_checkpoint

        args.split_resolved = args.split or "1"
        checkpoints = [default_checkpoint()] * (3 if args.split_resolved == "all" else 1)
        if dist.main:
            print(built_in_notice(), file=sys.stderr)
    items = plan_or_fail(Path(args.data), args.dataset, args.split_resolved, checkpoints)
    postprocess = default_postprocess(args.dataset) if args.postprocess is None else args.postprocess
    out = Path(args.out or f"runs/eval/{_eval_name(checkpoints[0])}_{args.dataset}_{args.split_resolved}")
    settings = {"data": str(Path(args.data).resolve()), "dataset": args.dataset, "split": args.split_resolved,
                "precision": args.precision}
    records = run_evaluation(items, out, settings=settings, postprocess=postprocess, batch=args.batch,
                             streams=args.streams, graphs=args.cuda_graphs,
                             device=args.device, precision=args.precision, save_maps=args.save_maps,
                             seed=args.seed, progress=not args.quiet, figure=args.figure and dist.main, dist=dist)
    if not dist.main:  # the reports are rank 0's, from every process's records
        return 0
    return _finish_eval(args, items, records, checkpoints[0].stem, postprocess, out)


def cmd_score(args: argparse.Namespace) -> int:
    from .evaluate import EvalError, default_postprocess, plan_or_fail, read_predictions, score_folder

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


def cmd_train(args: argparse.Namespace) -> int:
    from .train import load_train_config, train

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


def cmd_predict(args: argparse.Namespace) -> int:
    from .distributed import process_device, setup_distributed
    from .media import MediaError
    from .predict import Predictor, built_in_notice, collect_videos, predict_to_folders

    videos = collect_videos(args.videos)
    if args.every < 1:
        raise ConfigError(f"--every {args.every}: must be 1 (every frame) or more")
    device = process_device(args.device)  # under torchrun: this process's GPU, or its share of the CPU
    dist = setup_distributed(device)
    predictor = Predictor(_model_file(args.checkpoint), device=str(device), precision=args.precision, batch=args.batch,
                          every=args.every, streams=args.streams, graphs=args.cuda_graphs)
    if args.checkpoint is None and dist.main:
        print(built_in_notice(), file=sys.stderr)
    if args.every > 1 and dist.main:
        print(f"preview: the model runs on one frame in {args.every}, the maps between are interpolated "
              f"(--every 1, the default, is the exact protocol)", file=sys.stderr)
    out = Path(args.out)
    names = [v.stem for v in videos]
    failed = 0
    mine = dist.shard(videos)  # under torchrun each process predicts its share; the outputs are per video
    # One folder per video; videos sharing a name get their parent's name too.
    targets = [out / (v.stem if names.count(v.stem) == 1 else f"{v.parent.name}_{v.stem}") for v in mine]
    results = predict_to_folders(predictor, mine, targets, npz=args.npz, side_by_side=args.side_by_side,
                                 overlay_video=not args.no_video, progress=not args.quiet)
    partial = 0
    for (video, result), target in zip(results, targets, strict=True):
        if isinstance(result, MediaError):  # this video only: the others are still predicted
            print(f"avrsp: error: {result}", file=sys.stderr)
            failed += 1
            partial += target.with_name(f"{target.name}.partial").is_dir()
            continue
        target = result.out
        fps = result.frames / max(result.seconds, 1e-9)
        print(f"{video}: {result.frames} frames in {result.seconds:.1f} s ({fps:.1f} frames/s) → {target}/")
        print(f"  maps: {target / 'maps'}/%05d.png" + (f", {target / 'maps.npz'}" if args.npz else ""))
        if not args.no_video:
            print(f"  overlay video: {target / (video.stem + '_saliency.mp4')}")
    if failed:
        if len(mine) > 1:  # one video's own line says it all
            kept = f"; the outputs of {partial} of them are kept in <name>.partial/ folders" if partial else ""
            print(f"avrsp: error: {failed} of {len(mine)} videos failed{kept}", file=sys.stderr)
        return 2
    dist.barrier()
    return 0


def cmd_visualize_grid(args: argparse.Namespace) -> int:
    from .data.datasets import read_map
    from .evaluate import folder_frames
    from .visualize import comparison_grid

    videos = [v for part in ("test", "train", "val") for v in _try_split(args.data, args.dataset, part, args.split)
              if v.name == args.video]
    if not videos:
        raise ConfigError(f"{args.data}: no video '{args.video}' in {args.dataset} split {args.split}")
    video = videos[0]
    ks = [k - 1 for k in args.frames]
    if any(not 0 <= k < len(video) for k in ks):
        raise ConfigError(f"--frames: {video.name} has frames 1–{len(video)}")
    columns: dict[str, list] = {"Ground truth": [video.saliency_map(k) for k in ks]}
    if args.checkpoint:
        from .checkpoint import load_model
        from .inference import predict_frames

        model = load_model(_model_file(args.checkpoint))
        maps = {k: m for k, m in predict_frames(model, video.frames, len(video), video.fps,
                                                 video.audio if model.config.audio else None) if k in ks}
        columns[Path(args.checkpoint).stem] = [maps[k] for k in ks]
    for item in args.pred:
        label, sep, folder = item.partition("=")
        if not sep:
            raise ConfigError(f"--pred: expected LABEL=DIR, got {item!r}")
        root = Path(folder)
        d = next((x for x in (root / video.dataset / video.name, root / video.name, root) if x.is_dir()), None)
        if d is None:
            raise ConfigError(f"--pred {label}: {root} is not a directory")
        files = folder_frames(d, len(video))
        columns[label] = [read_map(files[k]) if k in files else None for k in ks]
    path = comparison_grid([video.frame(k) for k in ks], columns, Path(args.out),
                           row_labels=[f"frame {k + 1}" for k in ks], fixations=[video.fixations(k) for k in ks])
    print(f"written: {path}")
    return 0


def _try_split(data, dataset, part, split):
    from .data.datasets import DataError, load_split

    try:
        return load_split(Path(data), dataset, part, split)
    except DataError:
        return []


def cmd_visualize_relevance(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .predict import default_checkpoint
    from .visualize import clip_relevance, relevance_figure

    model = load_model(_model_file(args.checkpoint) or default_checkpoint())
    video = Path(args.video)
    rows = {}
    frame, sal, ret_a, ret_v = clip_relevance(model, video, args.frame - 1)
    rows["its own sound"] = (sal, ret_a, ret_v)
    if args.other_audio:
        _, sal2, ret_a2, ret_v2 = clip_relevance(model, video, args.frame - 1, Path(args.other_audio))
        rows[f"sound of {Path(args.other_audio).name}"] = (sal2, ret_a2, ret_v2)
    path = relevance_figure(frame, rows, Path(args.out))
    print(f"written: {path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import serve

    if args.data is not None and not Path(args.data).is_dir():
        raise ConfigError(f"--data {args.data}: not a directory")
    serve(args.host, args.port, checkpoint=_model_file(args.checkpoint),
          data=Path(args.data) if args.data else None, workdir=Path(args.workdir) if args.workdir else None,
          max_upload_mb=args.max_upload_mb, max_output_mb=args.max_output_mb, upload_timeout=args.upload_timeout,
          device=args.device, precision=args.precision, batch=args.batch,
          streams=args.streams, graphs=args.cuda_graphs)
    return 0


def cmd_weights_import(args: argparse.Namespace) -> int:
    from .weights import NORMALIZATION, import_weights, save_imported

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
    from .checkpoint import load_model
    from .weights import export_onnx, export_torch

    if not (args.onnx or args.torch_export):
        raise ConfigError("export: give --onnx FILE and/or --torch-export FILE")
    model = load_model(_model_file(args.checkpoint))
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


def cmd_ablate(args: argparse.Namespace) -> int:
    from .ablate import StudyConfig, run_study
    from .ablate_report import report
    from .config import from_dict, read_yaml, replace

    from .train import config_file

    study = (from_dict(StudyConfig, read_yaml(config_file(args.config)), where=args.config) if args.config
             else StudyConfig())
    study = replace(study, parse_overrides(args.overrides))
    if not args.report_only:
        run_study(study, log=lambda s: print(s, file=sys.stderr, flush=True))
    command = " ".join(["avrsp ablate", *(["--config", args.config] if args.config else []), *args.overrides])
    path = report(study, Path(args.write), command=command)
    print(f"written: {path}")
    return 0


def cmd_bench(argv: list[str]) -> int:
    """``avrsp bench ARGS``: every argument belongs to the benchmark's own parser."""
    from .bench import main as bench_main

    return bench_main(argv)


def _at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number ≥ 1")
    return int(text)


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, default=None, help="windows per forward pass (default: 8 on CUDA, 4 on CPU)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 on CUDA and on CPUs with AMX or AVX-512 BF16, else fp32")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--streams", type=_at_least_one, default=None, metavar="N",
                   help="forward passes at once, sharing the CPU threads (default: 2 on a CPU with 2 threads or "
                        "more, 1 on CUDA; each holds its own activations)")
    p.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                   help="replay each batch's forward pass from a CUDA graph (default: off until checked on a GPU; "
                        "an error without CUDA)")


def _add_dataclass_flags(p: argparse.ArgumentParser, cls: type) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avrsp", description="Relevance-guided audio-visual video saliency.")
    parser.add_argument("--version", action="version", version=f"avrsp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="parameters and GFLOPs per window of the named models",
                       description="Parameters and GFLOPs per window of each registered model, or of one "
                                   "model by component.")
    p.add_argument("model", nargs="?", help="a registered model name (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_model_args(p)
    p.set_defaults(func=cmd_info)

    from .data.synth import SynthConfig
    from .weights import ONNX_MIN_OPSET

    p = sub.add_parser("synth", help="write a synthetic audio-visual saliency dataset",
                       description="Write a procedural dataset where gaze follows the sounding object "
                                   "('relevant' videos) or visual cues only ('music' videos, and with "
                                   "--silent-fraction 'silent' ones: music videos without their sound), in the "
                                   "STAViS and DHF1K layouts plus .mp4 files.")
    p.add_argument("root", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace a synthetic dataset already in ROOT")
    _add_dataclass_flags(p, SynthConfig)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("train", help="train a model from a config (the paper's two-stage recipe)",
                       description="Train from a YAML config (a file, or one shipped with avrsp by name), "
                                   "overriding any key with key=value "
                                   "(e.g. epochs=5 data.root=runs/synth/stavis model.fusion=mbt). Resume a "
                                   "killed run with --resume RUN_DIR. Scale out with torchrun.")
    from .train import shipped_configs

    p.add_argument("--config", metavar="FILE|NAME",
                   help="a YAML file, or the name of a config shipped with avrsp: "
                        + ", ".join(n for n in shipped_configs() if "/" not in n) + ", ablations/…")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="saliency maps and an overlay video for any video file(s)",
                       description="A map per frame at the video's resolution (8-bit PNG, .npz on request) and "
                                   "a heatmap-overlay MP4 with the original sound. Without --checkpoint the "
                                   "built-in model is used (trained on synthetic data only).")
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files and/or folders of videos")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (one sub-folder per video)")
    p.add_argument("--checkpoint", metavar="FILE", help="an avrsp model file (default: the built-in model)")
    p.add_argument("--npz", action="store_true", help="also write float maps to maps.npz")
    p.add_argument("--side-by-side", action="store_true", help="overlay video shows the original beside it")
    p.add_argument("--no-video", action="store_true", help="maps only, no overlay video")
    p.add_argument("--every", type=int, default=1, metavar="K",
                   help="preview: run the model on every K-th frame and interpolate the maps between (up to K× "
                        "faster; default 1, the exact protocol)")
    _add_runtime_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="run model files over a dataset with the paper's test protocol",
                       description="Sliding windows of the model's clip length (32 frames for the paper's model, "
                                   "8 for avrsp_tiny; reversed for the first frames), every frame "
                                   "scored with the MIT benchmark metrics, averaged per video then over videos. "
                                   "Resumes from --out.")
    p.add_argument("--checkpoint", nargs="+", metavar="FILE",
                   help="model file(s); three (splits 1, 2, 3 in order) for --split all "
                        "(default: the built-in model, trained on synthetic data only)")
    _eval_common(p)
    _add_runtime_args(p)
    p.add_argument("--save-maps", action="store_true",
                   help="also write 8-bit PNG predictions as maps/<dataset>/<video>/eyeMap_%%05d.png")
    p.add_argument("--figure", action="store_true",
                   help="add a Fig. 5-style grid (frame, ground truth, prediction) of the first videos to the report")
    p.set_defaults(func=cmd_evaluate)

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

    p = sub.add_parser("visualize", help="figures: Fig. 5-style grids, Fig. 6-style relevance maps")
    vis = p.add_subparsers(dest="vis_command", required=True, metavar="FIGURE")
    q = vis.add_parser("grid", help="frames, ground truth and several models' maps side by side (Fig. 5)")
    q.add_argument("--data", required=True, metavar="ROOT")
    q.add_argument("--dataset", required=True)
    q.add_argument("--split", type=int, default=1)
    q.add_argument("--video", required=True)
    q.add_argument("--frames", type=int, nargs="+", required=True, metavar="N", help="1-based frame numbers")
    q.add_argument("--checkpoint", metavar="FILE", help="also predict with this model file")
    q.add_argument("--pred", nargs="*", default=[], metavar="LABEL=DIR",
                   help="other models' maps (PRED_DIR layout of 'avrsp score')")
    q.add_argument("--out", required=True, metavar="FILE.png")
    q.set_defaults(func=cmd_visualize_grid)
    q = vis.add_parser("relevance", help="Ret_A / Ret_V of RAVF for one clip (Fig. 6)")
    q.add_argument("video", metavar="VIDEO")
    q.add_argument("--frame", type=int, required=True, metavar="N", help="1-based frame the clip predicts")
    q.add_argument("--checkpoint", metavar="FILE", help="default: the built-in model")
    q.add_argument("--other-audio", metavar="FILE", help="a second row with this file's sound (e.g. unrelated music)")
    q.add_argument("--out", required=True, metavar="FILE.png")
    q.set_defaults(func=cmd_visualize_relevance)

    p = sub.add_parser("serve", help="a local web page to look at saliency frame by frame (the serve extra)",
                       description="Upload a video (or use the demo clip), play it with its saliency, scrub to any "
                                   "frame and see the map and RAVF's Ret_A/Ret_V, download the maps; with --data, "
                                   "score a dataset's test videos frame by frame. docs/serve.md.")
    p.add_argument("--checkpoint", metavar="FILE", help="an avrsp model file (default: the built-in model)")
    p.add_argument("--data", metavar="ROOT",
                   help="a dataset folder (STAViS layout or DHF1K) to browse with ground truth")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=500.0, help="largest accepted upload (default 500 MB)")
    p.add_argument("--max-output-mb", type=float, default=2000.0,
                   help="most one job may write (videos, frames, maps); a job past it fails (default 2000 MB)")
    p.add_argument("--upload-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="drop an upload that sends nothing for this long (default 30)")
    p.add_argument("--workdir", metavar="DIR",
                   help="where jobs are kept (default: a temporary folder, removed on exit)")
    _add_runtime_args(p)
    p.set_defaults(func=cmd_serve)

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

    # Listed for `avrsp --help`; main() hands `avrsp bench ...` to the script's own parser.
    sub.add_parser("bench", help="inference speed, memory and bf16 accuracy (docs/performance.md); "
                                 "'avrsp bench --help' for its options")

    p = sub.add_parser("data", help="dataset tools")
    data = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = data.add_parser("check", help="videos, frames, missing files, all-zero maps and audio rates per split; "
                                      "names every problem file and exits 1 if there is one",
                        description="Per dataset, split and part: videos, frames, missing/unreadable/all-zero "
                                    "files and audio rates; then each problem file, named (the first few per video "
                                    "and a count). Exit status 0 when nothing is wrong, 1 otherwise.")
    q.add_argument("root", help="a dataset folder (or a folder holding several)")
    q.add_argument("--quiet", action="store_true", help="the summary table and the problem count only")
    q.set_defaults(func=cmd_data_check)
    q = data.add_parser("from-gaze", help="videos and their viewers' gaze recordings → a dataset in the STAViS and "
                                          "DHF1K layouts (frames, sound, fixations, density maps, fold lists)",
                        description="Turn an eye-tracking study (videos and gaze recordings: the plain CSV of "
                                    "docs/datasets.md, EyeLink .edf or .asc) into a dataset that 'avrsp data check', "
                                    "train, evaluate and serve read as they read the published ones. Prints what "
                                    "was dropped per viewer. docs/datasets.md, 'Your own eye-tracking data'.")
    q.add_argument("--videos", nargs="+", required=True, metavar="PATH", help="video files and/or folders of videos")
    q.add_argument("--gaze", nargs="+", required=True, metavar="PATH",
                   help="recordings (.csv, .edf, .asc) and/or folders of them")
    q.add_argument("--out", required=True, metavar="ROOT", help="output folder (stavis/, dhf1k/, gaze.json)")
    q.add_argument("--screen", metavar="FILE", help="screen description, YAML or JSON: resolution, size_cm, "
                                                    "distance_cm, video_rect, videos")
    q.add_argument("--resolution", metavar="WxH", help="the screen's resolution in pixels (the gaze coordinates)")
    q.add_argument("--screen-cm", metavar="WxH", help="the screen's visible width and height in cm")
    q.add_argument("--distance-cm", type=float, metavar="D", help="viewing distance in cm")
    q.add_argument("--video-rect", metavar="RECT",
                   help="where the videos were shown: fit (default: scaled to fit, centred), native (own size, "
                        "centred), stretch, or LEFT,TOP,WIDTH,HEIGHT in screen pixels")
    q.add_argument("--time-unit", choices=("s", "ms"), default="s", help="the CSV's time column (default s)")
    q.add_argument("--time-origin", choices=("first-frame", "media"), default="first-frame",
                   help="time 0 is when the first frame appeared (default), or the video's own clock (media: "
                        "presentation timestamps, for a video whose first frame is not at 0 s)")
    q.add_argument("--onset", metavar="REGEX",
                   help="tracker files: the message marking a video's onset; its group names the video "
                        "(e.g. 'VIDEO_ONSET (\\S+)')")
    q.add_argument("--eye", choices=("mean", "left", "right"), default="mean",
                   help="binocular recordings: one eye, or the mean of the valid eyes (default)")
    q.add_argument("--per-frame", choices=("median", "samples", "fixations"), default="median",
                   help="each viewer's point per frame: the median of its samples in the frame (default), every "
                        "sample, or the median of its samples in detected fixations and pursuits (remodnav)")
    q.add_argument("--blur", default="dhf1k", metavar="SPEC",
                   help="density maps' Gaussian: dhf1k (default: 30 px FWHM per 640 px of width), <sigma>px "
                        "(video pixels) or <sigma>deg (visual angle; needs --screen-cm and --distance-cm)")
    q.add_argument("--db", default="Gaze", help="STAViS database name (default Gaze)")
    q.add_argument("--layout", choices=("both", "stavis", "dhf1k"), default="both")
    q.add_argument("--jobs", type=int, default=1, metavar="N", help="videos converted at once (processes)")
    q.add_argument("--overwrite", action="store_true", help="replace a from-gaze dataset already in ROOT")
    q.add_argument("--quiet", action="store_true", help="no progress line")
    q.set_defaults(func=cmd_data_from_gaze)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"avrsp: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    from .checkpoint import CheckpointError
    from .data.datasets import DataError
    from .evaluate import EvalError
    from .media import MediaError
    from .train import TrainingError
    from .weights import WeightsError

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
    own, whose allocator keeps the memory it frees (:func:`avrsp.inference.keep_freed_memory`)."""
    from .inference import keep_freed_memory

    keep_freed_memory()
    return main(argv)


if __name__ == "__main__":
    sys.exit(entry())
