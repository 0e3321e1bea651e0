"""What ``keep_freed_memory`` (the ``avrsp`` command's allocator setting) changes: forward
passes with and without it, each in a fresh process, alternated (docs/performance.md).

    python benchmarks/allocator.py [--rounds 3] [--cases avrsp:bf16:1:1 avrsp:bf16:4:2 ...]

A case is ``config:precision:batch:streams[:passes]`` (timed passes per process,
``--passes`` where not given). Per pass: seconds, minor page faults and
kernel CPU seconds; per process: the peak resident memory (VmHWM). Random weights, the
inference graph (``avrsp.graph.prepare``), one warm-up pass per stream first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np

ONE = """
import json, resource, sys, time
from avrsp.runtime import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "kept" else False
import torch, avrsp
from avrsp.bench_model import inputs
from avrsp.graph import prepare
from avrsp.runtime import in_streams
name, precision, batch, streams, passes = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
model = prepare(avrsp.create_model(name), "cpu", precision)
clip, audio = inputs(model.config, batch, "cpu", next(model.parameters()).dtype, True)

def forward(_=None):
    with torch.no_grad():
        model(clip, audio)

for _ in in_streams(forward, range(streams), streams):
    pass
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in in_streams(forward, range(passes), streams):
    pass
seconds, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"kept": kept, "s": seconds / passes, "faults": (r1.ru_minflt - r0.ru_minflt) / passes,
                  "kernel_s": (r1.ru_stime - r0.ru_stime) / passes, "peak_mib": hwm / 1024}))
"""


def run(mode: str, case: str, passes: int) -> dict:
    fields = case.split(":")
    out = subprocess.run([sys.executable, "-c", ONE, mode, *fields[:4], fields[4] if len(fields) > 4 else str(passes)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--passes", type=int, default=4, help="timed passes per process")
    ap.add_argument("--cases", nargs="+", default=["avrsp:bf16:1:1", "avrsp:fp32:1:1", "avrsp:bf16:4:2",
                                                   "avrsp:fp32:4:2", "avrsp_tiny:bf16:4:2:96"])
    args = ap.parse_args()
    print("| case | allocator | s per pass | page faults per pass | kernel s per pass | peak MiB | speed-up (rounds) |")
    print("|---|---|---|---|---|---|---|")
    for case in args.cases:
        got: dict[str, list[dict]] = {"default": [], "kept": []}
        for _ in range(args.rounds):
            for mode in got:
                got[mode].append(run(mode, case, args.passes))
        for mode, rows in got.items():
            med = {k: float(np.median([r[k] for r in rows])) for k in ("s", "faults", "kernel_s", "peak_mib")}
            ups = "" if mode == "default" else " ".join(
                f"{d['s'] / k['s']:.2f}" for d, k in zip(got["default"], rows))
            print(f"| {case} | {mode} | {med['s']:.3f} | {med['faults']:.0f} | {med['kernel_s']:.3f} | "
                  f"{med['peak_mib']:.0f} | {ups} |", flush=True)


if __name__ == "__main__":
    main()
