"""Peak memory of ``avrsp predict`` for a short and a long video (issue target: the 60 s
video needs no more than 1.1× the memory of the 10 s one).

    .venv/bin/python benchmarks/bench_predict_memory.py [--short 10] [--long 60] [--size 144x256]

Generates two synthetic videos with sound (``avrsp synth``'s renderer), then runs
``avrsp predict`` on each in a fresh process with the built-in model and reports the
process's peak resident set size (``ru_maxrss``), its wall time and frames/s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# The parent imports nothing heavy and generates nothing itself: on Linux a child's
# ru_maxrss can start from the RSS of the process it was forked from.
MAKE = """
import sys
from pathlib import Path
from avrsp.data.synth import SynthConfig, _write_mp4, generate_video
seconds, h, w, fps = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), 15.0
cfg = SynthConfig(videos=3, frames=int(seconds * fps), height=h, width=w, fps=fps, seed=5)
_write_mp4(Path(sys.argv[1]), generate_video(cfg, 0, "relevant"), cfg)
print(cfg.frames)
"""

RUN = """
import resource, sys, time
from avrsp.cli import main
t = time.time()
rc = main(["predict", sys.argv[1], "--out", sys.argv[2], "--quiet"])
print({"rc": rc, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": time.time() - t})
"""


def make_video(path: Path, seconds: float, height: int, width: int) -> int:
    out = subprocess.run([sys.executable, "-c", MAKE, str(path), str(seconds), str(height), str(width)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--short", type=float, default=10.0)
    ap.add_argument("--long", type=float, default=60.0)
    ap.add_argument("--size", default="144x256")
    args = ap.parse_args()
    h, w = (int(x) for x in args.size.split("x"))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, seconds in (("short", args.short), ("long", args.long)):
            video = Path(tmp) / f"{label}.mp4"
            frames = make_video(video, seconds, h, w)
            out = subprocess.run([sys.executable, "-c", RUN, str(video), str(Path(tmp) / label)],
                                 capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            r = eval(out, {})  # the dict printed by RUN
            if r["rc"] != 0:
                raise SystemExit(f"avrsp predict failed on the {label} video (exit {r['rc']})")
            r.update(frames=frames, seconds_video=seconds)
            results[label] = r
            print(f"{label:>5}: {seconds:5.0f} s video, {frames} frames at {h}×{w}: peak {r['peak_mib']:.0f} MiB, "
                  f"{r['seconds']:.1f} s ({frames / r['seconds']:.1f} frames/s)")
    ratio = results["long"]["peak_mib"] / results["short"]["peak_mib"]
    print(f"peak memory long/short: {ratio:.3f} (target ≤ 1.10)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
