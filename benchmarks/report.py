"""docs/performance.md's tables, rendered from the committed ``avrsp bench`` records.

    python benchmarks/report.py [RECORD ...] [--targets benchmarks/targets.yaml]
                                [--write docs/performance.md]

RECORD: ``avrsp bench --json`` files; by default every ``benchmarks/results/*.json`` in
name order, one machine each. Without ``--write`` the tables go to standard output;
with it, between the file's ``<!-- benchmarks/report.py: begin/end -->`` markers, the
hand-written text around them kept. Tables only: what each column means is the page's
own text. A figure a record lacks is a dash, and a table no record has a figure for is
left out. tests/test_bench.py checks that the committed page is this script's render
of the committed records.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
TAG = "benchmarks/report.py"
MISSING = "—"


def records_in(paths: list[Path]) -> list[dict]:
    out = []
    for path in paths:
        try:
            out.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as e:
            raise SystemExit(f"{path}: cannot read benchmark figures ({e.__class__.__name__})") from None
    return out


# ------------------------------------------------------------------ formats

def fps(rate: float) -> str:
    """A frame rate with two decimals below 10 frames/s (a paper-size model's 1.28 and
    1.24 are not both "1.3"), one above."""
    return f"{rate:.2f}" if rate < 10 else f"{rate:.1f}"


def workers_to_feed(fraction: float) -> str:
    """Whole DataLoader workers for a step that needs ``fraction`` of one worker's clips,
    with the fraction: a CPU step needs a hundredth of one, which rounding would call 0."""
    return f"{max(1, math.ceil(fraction))} ({fraction:.2g} of one's output)"


def e2e_bound(costs: dict[str, float], cores: int) -> float:
    """The highest ``predict`` / model-alone ratio an ``output_cpu_ms`` record allows on
    ``cores`` cores: a frame takes at least the model's own wall time, and at least all
    the CPU work of the frame (the model's and the outputs') spread over every core."""
    work = sum(v for k, v in costs.items() if k != "model wall")
    return costs["model wall"] / max(costs["model wall"], work / cores)


def output_parts(costs: dict[str, float]) -> list[str]:
    """What ``predict`` does besides the model, in the record's order."""
    return [k for k in costs if k not in ("model", "model wall")]


def get(row: dict, key: str, fmt=str) -> str:
    return fmt(row[key]) if key in row else MISSING


def table(header: list[str], rows: list[list]) -> list[str]:
    """A Markdown table; a ``|`` inside a cell is escaped."""
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
    return [line(header), "|" + "---|" * len(header)] + [line(r) for r in rows]


def _peak_for(mode: str) -> str:
    return "fp32" if "fp32" in mode else "bf16"


def _gflops(record: dict, row: dict) -> float:
    return row["windows_per_s"] * record["configs"][row["config"]]["gflops"]


# ------------------------------------------------------------------ targets

def _paper_rows(record: dict) -> tuple[str | None, list[dict]]:
    """The first paper-size config of the record and its throughput rows that ran."""
    name = next((c for c in ("avrsp", "avrsp_v") if c in record["configs"]), None)
    return name, [r for r in record["throughput"] if r["config"] == name and "error" not in r]


def bf16_speedup(record: dict):
    name, rows = _paper_rows(record)
    fp32 = [r for r in rows if r["mode"] == "fp32"]
    bf16 = [r for r in rows if "bf16" in r["mode"] or "autocast" in r["mode"]]
    if fp32 and bf16:
        f, b = (max(x, key=lambda r: r["windows_per_s"]) for x in (fp32, bf16))
        yield name, b["windows_per_s"] / f["windows_per_s"], \
            f"({b['mode']}, batch {b['batch']}: {b['windows_per_s']:.2f} against {f['windows_per_s']:.2f} windows/s)"


def graph_windows_per_s(record: dict):
    name, rows = _paper_rows(record)
    graph = [r for r in rows if r["mode"].startswith("inference") and "bf16" in r["mode"]]
    if graph:
        top = max(graph, key=lambda r: r["windows_per_s"])
        yield name, top["windows_per_s"], f"({top['mode']}, batch {top['batch']})"


def peak_fraction(record: dict):
    name, rows = _paper_rows(record)
    if rows:
        best = max(rows, key=lambda r: r["windows_per_s"])
        precision = _peak_for(best["mode"])
        g, peak = _gflops(record, best), record["peak_gflops"][precision]
        yield name, g / peak, f"({best['mode']}, batch {best['batch']}: {g:.0f} of {peak:.0f} GFLOP/s)"


def e2e_ratio(record: dict):
    for e in record["e2e"]:
        streams = f"{e['streams']} stream{'s' if e['streams'] > 1 else ''}"
        yield (f"{e['model']}, {e['precision']}, batch {e['batch']}, {streams}", e["ratio"],
               f"({fps(e['predict_fps'])} / {fps(e['model_fps'])} frames/s)")


def memory_ratio(record: dict):
    if "memory" in record:
        m = record["memory"]
        yield "", m["ratio"], f"({m['long']['peak_mib']:.0f} / {m['short']['peak_mib']:.0f} MiB)"


def whole_over_s3d(record: dict):
    for row in record.get("split", []):
        yield (f"{row['config']} {row['precision']}, batch 1", row["ratio"],
               f"({row['whole_s_folded']:.3f} / {row['s3d_s_folded']:.3f} s)")


def _preview_row(record: dict, every: int):
    return [r for r in record.get("preview", {}).get("rows", []) if r["every"] == every]


def preview_speedup(record: dict, every: int):
    for row in _preview_row(record, every):
        yield "", row["speedup"], f"(rounds {', '.join(f'{s:.2f}' for s in row['speedups'])})"


def preview_cc(record: dict, every: int):
    for row in _preview_row(record, every):
        yield "", row["cc_mean"], f"(lowest frame {row['cc_min']:.3f})"


def bf16_cc(record: dict):
    a = record["accuracy"]
    yield "", a["cc_min"], f"(mean {a['cc_mean']:.5f}, largest difference {a['max_abs_diff']:.4f})"


#: Each yields (subject, figure, detail) for every reading a record has of it.
MEASURES = {f.__name__: f for f in (bf16_speedup, graph_windows_per_s, peak_fraction, e2e_ratio, memory_ratio,
                                    whole_over_s3d, preview_speedup, preview_cc, bf16_cc)}
#: unit → (a figure, a bound) as the Targets table writes them
UNITS = {"×": (lambda v: f"{v:.2f}×", lambda v: f"{v:g}×"), "%": (lambda v: f"{v:.0%}", lambda v: f"{v:.0%}"),
         "windows/s": (lambda v: f"{v:.1f} windows/s", lambda v: f"{v:g} windows/s"),
         None: (lambda v: f"{v:.4g}", lambda v: f"{v:g}")}
DEVICES = ("cpu", "cuda")


def load_targets(path: Path) -> list[dict]:
    """benchmarks/targets.yaml, every entry checked: an error names the file, the entry and the key."""
    entries = yaml.safe_load(Path(path).read_text())
    if not isinstance(entries, list):
        raise SystemExit(f"{path}: expected a list of targets")
    for i, t in enumerate(entries):
        problem = _target_problem(t)
        if problem:
            raise SystemExit(f"{path}: target {i + 1}: {problem}")
        t.setdefault("devices", list(DEVICES))
        t.setdefault("args", {})
    return entries


def _target_problem(t) -> str | None:
    keys = {"measure", "what", "at_least", "at_most", "unit", "devices", "args"}
    if not isinstance(t, dict):
        return f"expected a mapping, not {t!r}"
    if set(t) - keys:
        return f"unknown keys {', '.join(sorted(set(t) - keys))}"
    if t.get("measure") not in MEASURES:
        return f"measure {t.get('measure')!r} is not one of {', '.join(MEASURES)}"
    if not isinstance(t.get("what"), str):
        return "'what' must be text"
    if ("at_least" in t) == ("at_most" in t) or not isinstance(t.get("at_least", t.get("at_most")), (int, float)):
        return "needs a number as at_least or as at_most, not both"
    if t.get("unit") not in UNITS:
        return f"unit {t['unit']!r} is not one of {', '.join(u for u in UNITS if u)}"
    if not set(t.get("devices", DEVICES)) <= set(DEVICES):
        return f"devices must be among {', '.join(DEVICES)}"
    if not isinstance(t.get("args", {}), dict):
        return "args must be a mapping"
    return None


def target_rows(record: dict, targets: list[dict]) -> list[list[str]]:
    """Machine, what, target, measured, met: each reading of each target that applies
    to the record's device; a target with no reading in the record says so."""
    label, device, out = record["machine"]["label"], record["machine"]["device"].split(":")[0], []
    for t in targets:
        if device not in t["devices"]:
            continue
        show, limit = UNITS[t.get("unit")]
        bound = f"≥ {limit(t['at_least'])}" if "at_least" in t else f"≤ {limit(t['at_most'])}"
        readings = list(MEASURES[t["measure"]](record, **t["args"]))
        if not readings:
            out.append([label, t["what"], bound, "not in this record", MISSING])
        for subject, value, detail in readings:
            met = value >= t["at_least"] if "at_least" in t else value <= t["at_most"]
            what = f"{subject}: {t['what']}" if subject else t["what"]
            out.append([label, what, bound, f"{show(value)} {detail}", "yes" if met else "no"])
    return out


# ------------------------------------------------------------------ tables

def machines(records: list[dict]) -> list[str]:
    return table(["Machine", "Date", "Command", "torch", "CPU capability", "threads", "native bf16",
                  "default precision", "fp32 matmul peak", "bf16 matmul peak"],
                 [[r["machine"]["label"], r["date"], f"`{r['command']}`", r["machine"]["torch"],
                   r["machine"]["cpu_capability"], r["machine"]["threads"],
                   "yes" if r["machine"]["native_bf16"] else "no", r["machine"]["default_precision"],
                   f"{r['peak_gflops']['fp32']:.0f} GFLOP/s", f"{r['peak_gflops']['bf16']:.0f} GFLOP/s"]
                  for r in records])


def models(records: list[dict]) -> list[str]:
    return table(["Machine", "Config", "Parameters", "GFLOPs per window"],
                 [[r["machine"]["label"], name, f"{c['params_m']:.2f} M", f"{c['gflops']:.1f}"]
                  for r in records for name, c in r["configs"].items()])


def throughput(records: list[dict]) -> list[str]:
    batches = sorted({row["batch"] for r in records for row in r["throughput"] if "batch" in row})
    rows = []
    for r in records:
        for name in r["configs"]:
            mine = [x for x in r["throughput"] if x["config"] == name]
            base = max((x["windows_per_s"] for x in mine if x["mode"] == "fp32"), default=None)
            for mode in dict.fromkeys(x["mode"] for x in mine):
                rows.append(_throughput_row(r, name, mode, [x for x in mine if x["mode"] == mode], batches, base))
    return table(["Machine", "Config", "Mode", *(f"batch {b}" for b in batches), "GFLOP/s", "Peak", "× fp32"], rows)


def _throughput_row(record: dict, name: str, mode: str, rows: list[dict], batches: list[int], base) -> list[str]:
    head = [record["machine"]["label"], name, mode]
    if "error" in rows[0]:
        return head + [f"failed: {rows[0]['error']}"] + [""] * (len(batches) + 2)
    cells = []
    for b in batches:
        x = next((x for x in rows if x["batch"] == b), None)
        cells.append("" if x is None else f"{x['windows_per_s']:.2f}" +
                     (f" ({x['compile_s']:.0f} s)" if "compile_s" in x else ""))
    best = max(rows, key=lambda x: x["windows_per_s"])
    g, peak = _gflops(record, best), record["peak_gflops"][_peak_for(mode)]
    return head + cells + [f"{g:.1f}", f"{g / peak:.0%}", f"{best['windows_per_s'] / base:.2f}" if base else ""]


def end_to_end(records: list[dict]) -> list[str]:
    return table(["Machine", "Model", "Precision", "Batch", "Frames", "Streams", "Rounds", "predict (frames/s)",
                  "maps only", "model alone", "model alone, one stream", "predict / model"],
                 [[r["machine"]["label"], f"{e['model']} ({e['checkpoint'].split('/')[-1]})", e["precision"],
                   e["batch"], e["frames"], e["streams"], e["rounds"], fps(e["predict_fps"]),
                   fps(e["maps_only_fps"]), fps(e["model_fps"]), get(e, "model_one_stream_fps", fps),
                   f"{e['ratio']:.0%}"] for r in records for e in r["e2e"]])


def output_costs(records: list[dict]) -> list[str]:
    costs = [(r, e) for r in records for e in r["e2e"] if "output_cpu_ms" in e]
    if not costs:
        return []
    parts = output_parts(costs[0][1]["output_cpu_ms"])
    rows = []
    for r, e in costs:
        c = e["output_cpu_ms"]
        rows.append([r["machine"]["label"], e["model"], *(f"{c[k]:.2f}" for k in parts),
                     f"{sum(c[k] for k in parts):.2f}", f"{c['model']:.2f}", f"{c['model wall']:.2f}", e["cores"],
                     f"{e2e_bound(c, e['cores']):.0%}", f"{e['ratio']:.0%}"])
    return table(["Machine", "Model", *parts, "all outputs", "model CPU", "model wall", "cores", "bound",
                  "measured"], rows)


def memory(records: list[dict]) -> list[str]:
    return table(["Machine", "10 s video", "60 s video", "ratio"],
                 [[r["machine"]["label"], f"{r['memory']['short']['peak_mib']:.0f} MiB",
                   f"{r['memory']['long']['peak_mib']:.0f} MiB", f"{r['memory']['ratio']:.3f}"]
                  for r in records if "memory" in r])


def split(records: list[dict]) -> list[str]:
    return table(["Machine", "Config", "Precision", "pairs", "S3D blocks", "whole", "whole / S3D",
                  "S3D GFLOP/s", "rest GFLOP/s", "whole, fold=False"],
                 [[r["machine"]["label"], s["config"], s["precision"], len(s["ratios"]),
                   f"{s['s3d_s_folded']:.3f} s", f"{s['whole_s_folded']:.3f} s", f"{s['ratio']:.2f}×",
                   f"{s['s3d_gflops_s']:.0f}", f"{s['rest_gflops_s']:.0f}", f"{s['whole_s_unfolded']:.3f} s"]
                  for r in records for s in r.get("split", [])])


def preview(records: list[dict]) -> list[str]:
    return table(["Machine", "Videos", "Frames", "Rounds", "K", "speed-up", "CC mean", "CC min"],
                 [[r["machine"]["label"], r["preview"]["videos"], r["preview"]["frames"], r["preview"]["rounds"],
                   p["every"], f"{p['speedup']:.2f}×", f"{p['cc_mean']:.3f}", f"{p['cc_min']:.3f}"]
                  for r in records if "preview" in r for p in r["preview"]["rows"]])


def train(records: list[dict]) -> list[str]:
    return table(["Machine", "JPEG frames 640×360", "video file 640×360", "train step consumes",
                  "workers to keep it fed"],
                 [[r["machine"]["label"], f"{r['train']['jpeg frames 640×360']:.2f}",
                   f"{r['train']['video file 640×360']:.2f}", f"{r['train']['train_clips_s']:.3g}",
                   workers_to_feed(r["train"]["workers_needed"])] for r in records if "train" in r])


def accuracy(records: list[dict]) -> list[str]:
    return table(["Machine", "Videos", "Frames", "max abs difference", "CC mean", "CC min"],
                 [[r["machine"]["label"], r["accuracy"]["videos"], r["accuracy"]["frames"],
                   f"{r['accuracy']['max_abs_diff']:.4f}", f"{r['accuracy']['cc_mean']:.5f}",
                   f"{r['accuracy']['cc_min']:.5f}"] for r in records])


def render(records: list[dict], targets: list[dict]) -> str:
    """Every table under its heading, in the page's order; a table without rows is left out."""
    sections = [("Machines", machines(records)),
                ("Targets", table(["Machine", "What", "Target", "Measured", "Met"],
                                  [row for r in records for row in target_rows(r, targets)])),
                ("Models", models(records)), ("Throughput", throughput(records)),
                ("End to end", end_to_end(records)), ("What predict does besides the model", output_costs(records)),
                ("Memory", memory(records)), ("The neck and decoder against the backbone", split(records)),
                ("Preview: predict --every K", preview(records)), ("Training data pipeline", train(records)),
                ("bf16 against fp32", accuracy(records))]
    lines = []
    for heading, rows in sections:
        if len(rows) > 2:
            lines += [f"### {heading}", "", *rows, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("records", nargs="*", type=Path, help="avrsp bench --json files (default: results/*.json)")
    ap.add_argument("--targets", type=Path, default=HERE / "targets.yaml")
    ap.add_argument("--write", type=Path, metavar="FILE", help="Markdown file with the report's markers")
    args = ap.parse_args(argv)
    text = render(records_in(args.records or sorted((HERE / "results").glob("*.json"))), load_targets(args.targets))
    if args.write:
        from avrsp.checkpoint import write_generated

        write_generated(args.write, text, TAG, title="Inference performance")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
