"""Time the full metric set on one 224×384 frame (issue target: well under 20 ms).

    .venv/bin/python benchmarks/bench_metrics.py [--repeats 50]

Prints the median time per metric and for ``score_frame`` (all six metrics, the
prediction resized once), with and without STAViS post-processing, and with the
ground truth at 2× the prediction's size (the resize path).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from avrsp import metrics


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    h, w = 224, 384
    pred = metrics.stavis_postprocess(rng.random((h, w)))
    density = metrics.stavis_postprocess(rng.random((h, w)) ** 8)
    fix = rng.random((h, w)) > 0.995           # ~430 fixations
    other = rng.random((h, w)) > 0.99
    big = (2 * h, 2 * w)
    density_big = metrics.imresize(density, big)
    fix_big = metrics.imresize(fix.astype(float), big) > 0.5
    other_big = metrics.imresize(other.astype(float), big) > 0.5
    cases = {
        "cc": lambda: metrics.cc(pred, density),
        "sim": lambda: metrics.sim(pred, density),
        "kld": lambda: metrics.kld(pred, density),
        "nss": lambda: metrics.nss(pred, fix),
        "auc_judd": lambda: metrics.auc_judd(pred, fix, seed=0),
        "auc_shuffled (100 splits)": lambda: metrics.auc_shuffled(pred, fix, other, seed=0),
        "auc_borji (100 splits)": lambda: metrics.auc_borji(pred, fix, seed=0),
        "score_frame: all six": lambda: metrics.score_frame(pred, density, fix, other),
        "score_frame + STAViS post-processing": lambda: metrics.score_frame(pred, density, fix, other,
                                                                            postprocess=True),
        f"score_frame, ground truth {big[0]}×{big[1]} (resize)": lambda: metrics.score_frame(
            pred, density_big, fix_big, other_big),
    }
    print(f"metrics on a {h}×{w} frame, {int(fix.sum())} fixations; median of {args.repeats} runs")
    for name, fn in cases.items():
        print(f"  {name:<44} {median_ms(fn, args.repeats):7.2f} ms")


if __name__ == "__main__":
    main()
