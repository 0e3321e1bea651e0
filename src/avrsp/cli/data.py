"""``avrsp synth``, ``avrsp data check``, ``avrsp data from-gaze``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dataclasses

from ..config import ConfigError
from .common import add_dataclass_flags

def cmd_synth(args: argparse.Namespace) -> int:
    from ..data.synth import SynthConfig, write_dataset

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
    from ..data.check import check, format_problems, format_report
    from ..data.datasets import DataError

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
    from ..data.from_gaze import FromGazeConfig, build, viewer_summary
    from ..data.gaze import load_screen
    from ..data.recordings import read_recordings
    from ..predict import collect_videos

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


def add_synth(sub) -> None:
    from ..data.synth import SynthConfig

    p = sub.add_parser("synth", help="write a synthetic audio-visual saliency dataset",
                       description="Write a procedural dataset where gaze follows the sounding object "
                                   "('relevant' videos) or visual cues only ('music' videos, and with "
                                   "--silent-fraction 'silent' ones: music videos without their sound), in the "
                                   "STAViS and DHF1K layouts plus .mp4 files.")
    p.add_argument("root", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace a synthetic dataset already in ROOT")
    add_dataclass_flags(p, SynthConfig)
    p.set_defaults(func=cmd_synth)


def add_data(sub) -> None:
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
