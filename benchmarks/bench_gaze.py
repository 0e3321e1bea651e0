"""Time `avrsp data from-gaze` on a synthetic eye-tracking study (docs/datasets.md, "Your own
eye-tracking data"): by default the one-hour study of the issue, 20 viewers × 30 videos ×
1 min at 250 Hz, 640×360 at 30 fps with sound, both layouts written.

    nice -n 10 .venv/bin/python benchmarks/bench_gaze.py [--videos 30] [--jobs 2]

One video and one CSV (20 viewers' samples, with blinks and noise) are generated and
copied under each video's name, so the inputs cost little to make and every video costs
the same to convert. Prints the conversion's wall time (reading the CSVs included), the
time per frame, and what a study of ``--study-videos`` videos would take at that rate.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_video(path: Path, seconds: float, fps: int, size: tuple[int, int]) -> None:
    """A moving gradient with a 440 Hz tone, H.264 + AAC."""
    h, w = size
    n = int(seconds * fps)
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "23"}
        a_s = out.add_stream("aac", rate=44100)
        a_s.layout = "mono"
        for k in range(n):
            img = np.stack([(xx + 3 * k) % 256, (yy + 2 * k) % 256, (xx + yy + k) % 256], -1).astype(np.uint8)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        t = np.arange(int(seconds * 44100)) / 44100
        frame = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None],
                                           format="fltp", layout="mono")
        frame.sample_rate = 44100
        for p in [*a_s.encode(frame), *a_s.encode(None)]:
            out.mux(p)


def write_gaze(path: Path, seconds: float, viewers: int, rate: float, screen: tuple[int, int], seed: int = 0) -> int:
    """``viewers`` recordings: fixations of 200–400 ms at random points, noise of 0.5 px, a
    blink every few seconds; the plain CSV of docs/datasets.md. Returns the sample count."""
    rng = np.random.default_rng(seed)
    lines = ["viewer,time,x,y,valid"]
    for v in range(viewers):
        t = np.arange(-0.1, seconds + 0.1, 1 / rate)
        fix_id = np.cumsum(rng.uniform(size=len(t)) < 1 / (0.3 * rate))
        cx, cy = rng.uniform(0, screen[0], fix_id[-1] + 1), rng.uniform(0, screen[1], fix_id[-1] + 1)
        x = cx[fix_id] + rng.normal(0, 0.5, len(t))
        y = cy[fix_id] + rng.normal(0, 0.5, len(t))
        valid = np.ones(len(t), bool)
        for onset in rng.uniform(t[0], t[-1], int(seconds / 4)):
            valid[(t >= onset) & (t < onset + 0.15)] = False
        lines += [f"v{v:02d},{a:.4f},{b:.2f},{c:.2f},1" if ok else f"v{v:02d},{a:.4f},,,0"
                  for a, b, c, ok in zip(t, x, y, valid)]
    path.write_text("\n".join(lines) + "\n")
    return len(lines) - 1


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=30, help="videos converted (default 30: the whole study)")
    ap.add_argument("--study-videos", type=int, default=30, help="videos of the study the figure is scaled to")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--size", default="640x360", help="WxH of the videos")
    ap.add_argument("--viewers", type=int, default=20)
    ap.add_argument("--rate", type=float, default=250.0)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--layout", choices=("both", "stavis", "dhf1k"), default="both")
    ap.add_argument("--workdir", help="where the inputs and the dataset go (default: a temporary folder, removed)")
    args = ap.parse_args()
    from avrsp.data.from_gaze import FromGazeConfig, build
    from avrsp.data.gaze import Screen
    from avrsp.data.recordings import read_recordings

    w, h = (int(v) for v in args.size.split("x"))
    screen = (1920, 1080)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_gaze_"))
    try:
        (work / "videos").mkdir(parents=True, exist_ok=True)
        (work / "gaze").mkdir(exist_ok=True)
        t = time.perf_counter()
        write_video(work / "videos" / "v000.mp4", args.seconds, args.fps, (h, w))
        samples = write_gaze(work / "gaze" / "v000.csv", args.seconds, args.viewers, args.rate, screen)
        for i in range(1, args.videos):
            shutil.copy(work / "videos" / "v000.mp4", work / "videos" / f"v{i:03d}.mp4")
            shutil.copy(work / "gaze" / "v000.csv", work / "gaze" / f"v{i:03d}.csv")
        print(f"inputs: {args.videos} × {args.seconds:g} s of {w}×{h} at {args.fps} fps, {args.viewers} viewers at "
              f"{args.rate:g} Hz ({samples * args.videos:,} samples), made in {time.perf_counter() - t:.0f} s")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        t = time.perf_counter()
        recs = read_recordings([work / "gaze"])
        t_read = time.perf_counter() - t
        cfg = FromGazeConfig(blur="dhf1k", jobs=args.jobs,
                             layouts=("stavis", "dhf1k") if args.layout == "both" else (args.layout,))
        meta = build(sorted((work / "videos").iterdir()), recs, Screen(*screen), work / "out", cfg)
        total = time.perf_counter() - t
        frames = sum(v["frames"] for v in meta["videos"])
        per_video = total / args.videos
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores ({cpu_name()}), "
              f"load average {load:.1f} at the start; {args.jobs} job(s), layouts: {args.layout}")
        print(f"from-gaze: {total:.0f} s for {args.videos} videos, {frames} frames ({1000 * total / frames:.1f} ms a "
              f"frame; reading the CSVs {t_read:.0f} s)")
        print(f"a study of {args.study_videos} such videos: {per_video * args.study_videos / 60:.1f} min")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
