"""``avrsp predict``, ``avrsp visualize``, ``avrsp serve``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ConfigError
from .common import add_runtime_args, model_file, runtime_from_args

def cmd_predict(args: argparse.Namespace) -> int:
    from ..distributed import process_device, setup_distributed
    from ..media import MediaError
    from ..predict import Predictor, built_in_notice, collect_videos, predict_to_folders

    videos = collect_videos(args.videos)
    device = process_device(args.device)  # under torchrun: this process's GPU, or its share of the CPU
    dist = setup_distributed(device)
    predictor = Predictor(model_file(args.checkpoint), every=args.every, runtime=runtime_from_args(args, str(device)))
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
    from ..data.datasets import read_map
    from ..prediction_folders import folder_frames
    from ..visualize import comparison_grid

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
        from ..checkpoint import load_model
        from ..inference import predict_frames

        model = load_model(model_file(args.checkpoint))
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
    from ..data.datasets import DataError, load_split

    try:
        return load_split(Path(data), dataset, part, split)
    except DataError:
        return []


def cmd_visualize_relevance(args: argparse.Namespace) -> int:
    from ..checkpoint import load_model
    from ..predict import default_checkpoint
    from ..visualize import clip_relevance, relevance_figure

    model = load_model(model_file(args.checkpoint) or default_checkpoint())
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
    from ..serve import serve

    if args.data is not None and not Path(args.data).is_dir():
        raise ConfigError(f"--data {args.data}: not a directory")
    serve(args.host, args.port, checkpoint=model_file(args.checkpoint),
          data=Path(args.data) if args.data else None, workdir=Path(args.workdir) if args.workdir else None,
          max_upload_mb=args.max_upload_mb, max_output_mb=args.max_output_mb, upload_timeout=args.upload_timeout,
          runtime=runtime_from_args(args))
    return 0


def add_predict(sub) -> None:
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
    add_runtime_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)


def add_visualize(sub) -> None:
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


def add_serve(sub) -> None:
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
    add_runtime_args(p)
    p.set_defaults(func=cmd_serve)
