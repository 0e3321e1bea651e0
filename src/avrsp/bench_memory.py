"""Peak memory of ``avrsp predict`` for a short and a long video: whether what
``predict`` holds grows with the video's length (benchmarks/targets.yaml bounds the ratio).

    python -m avrsp.bench_memory [--short 10] [--long 60] [--size 144x256]

Generates two synthetic videos with sound (``avrsp synth``'s renderer), then runs
``avrsp predict`` on each in a fresh process with the built-in model and reports the
process's peak resident set size, its wall time and frames/s. ``avrsp bench`` runs the
same measurement.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MAKE = """
import sys
from pathlib import Path
from avrsp.data.synth import SynthConfig, generate_video, write_mp4
seconds, h, w, fps = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), 15.0
cfg = SynthConfig(videos=3, frames=int(seconds * fps), height=h, width=w, fps=fps, seed=5)
write_mp4(Path(sys.argv[1]), generate_video(cfg, 0, "relevant"), cfg)
print(cfg.frames)
"""

# The peak is VmHWM, the high-water mark of this process's own address space: unlike
# ru_maxrss it does not carry over the RSS of the process that forked it.
RUN = """
import sys, time
from avrsp.cli import entry
t = time.time()
rc = entry(["predict", sys.argv[1], "--out", sys.argv[2], "--quiet", *sys.argv[3:]])
seconds = time.time() - t
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print({"rc": rc, "peak_mib": hwm / 1024, "seconds": seconds})
"""


def make_video(path: Path, seconds: float, height: int, width: int) -> int:
    out = subprocess.run([sys.executable, "-c", MAKE, str(path), str(seconds), str(height), str(width)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def measure(short: float = 10.0, long: float = 60.0, height: int = 144, width: int = 256,
            predict_args: tuple[str, ...] = ()) -> dict:
    """``{"short": {...}, "long": {...}, "ratio": long/short peak}`` for two fresh processes."""
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, seconds in (("short", short), ("long", long)):
            video = Path(tmp) / f"{label}.mp4"
            frames = make_video(video, seconds, height, width)
            proc = subprocess.run([sys.executable, "-c", RUN, str(video), str(Path(tmp) / label), *predict_args],
                                  capture_output=True, text=True)
            lines = proc.stdout.strip().splitlines()
            if proc.returncode != 0 or not lines:
                raise SystemExit(f"avrsp predict failed on the {label} video: {proc.stderr.strip()[-500:]}")
            r = ast.literal_eval(lines[-1])
            if r["rc"] != 0:
                raise SystemExit(f"avrsp predict failed on the {label} video (exit {r['rc']})")
            r.update(frames=frames, seconds_video=seconds)
            results[label] = r
    results["ratio"] = results["long"]["peak_mib"] / results["short"]["peak_mib"]
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--short", type=float, default=10.0)
    ap.add_argument("--long", type=float, default=60.0)
    ap.add_argument("--size", default="144x256")
    args = ap.parse_args()
    h, w = (int(x) for x in args.size.split("x"))
    results = measure(args.short, args.long, h, w)
    for label in ("short", "long"):
        r = results[label]
        print(f"{label:>5}: {r['seconds_video']:5.0f} s video, {r['frames']} frames at {h}×{w}: peak "
              f"{r['peak_mib']:.0f} MiB, {r['seconds']:.1f} s ({r['frames'] / r['seconds']:.1f} frames/s)")
    print(f"peak memory long/short: {results['ratio']:.3f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
