"""`avrsp bench` (the package's measurements and their record) and benchmarks/report.py
(docs/performance.md's tables from the committed records). Nothing here measures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@pytest.fixture(scope="module")
def report(benchmark_script):
    return benchmark_script("report")


@pytest.fixture(scope="module")
def targets(report):
    return report.load_targets(ROOT / "benchmarks" / "targets.yaml")


def _records(*names):
    return [json.loads((RESULTS / f"{name}.json").read_text()) for name in names]


def test_the_performance_page_shows_the_committed_records(report, targets):
    """docs/performance.md's tables are the render of benchmarks/results/*.json: a record
    changed without `make bench` re-rendering the page, or a page edited by hand between
    the markers, fails here."""
    page = (ROOT / "docs" / "performance.md").read_text()
    begin, end = f"<!-- {report.TAG}: begin -->", f"<!-- {report.TAG}: end -->"
    assert page.count(begin) == 1 and page.count(end) == 1
    committed = page.split(begin)[1].split(end)[0].strip()
    records = report.records_in(sorted(RESULTS.glob("*.json")))
    assert committed == report.render(records, targets).strip()
    lines = committed.splitlines()
    for i, line in enumerate(lines):  # every table's separator and rows have its header's columns
        if line.startswith("|---"):
            width = lines[i - 1].count("|")
            assert line.count("|") == width, lines[i - 1]
            j = i + 1
            while j < len(lines) and lines[j].startswith("|"):
                assert lines[j].count("|") - lines[j].count("\\|") == width, lines[j]
                j += 1


def test_the_gpu_throughput_target_is_the_inference_graphs_best_bf16_row(report, targets):
    gpu, cpu = _records("h200", "cpu")

    def graph_rows(record, rows):
        record = {**record, "throughput": record["throughput"] + [
            {"config": "avrsp", "mode": mode, "batch": b, "windows_per_s": w} for mode, b, w in rows]}
        return [t[1:] for t in report.target_rows(record, targets) if "inference graph" in t[1]]

    met = graph_rows(gpu, [("inference (bf16)", 8, 240.0), ("inference+graphs (bf16)", 4, 310.0),
                           ("inference+graphs (bf16)", 8, 305.0), ("bf16", 8, 400.0)])
    assert met == [["avrsp: inference graph in bf16, best batch", "≥ 300 windows/s",
                    "310.0 windows/s (inference+graphs (bf16), batch 4)", "yes"]]
    assert graph_rows(gpu, [("inference+graphs (bf16)", 8, 299.0)])[0][-1] == "no"
    assert graph_rows(gpu, [("inference (fp32)", 8, 400.0)])[0][-2:] == ["not in this record", "—"]
    assert graph_rows(cpu, [("inference (bf16)", 4, 400.0)]) == []  # a CUDA target
    # The CPU record has the graph split, and its target is retired there.
    assert cpu["split"] and not [t for t in report.target_rows(cpu, targets) if "S3D" in t[1]]


def test_a_bad_targets_file_names_the_entry_and_the_key(report, tmp_path):
    path = tmp_path / "targets.yaml"
    for entry, message in (("{measure: e2e_ratio, what: x, at_least: 0.9, devices: [tpu]}", "devices"),
                           ("{measure: e2e_rate, what: x, at_least: 0.9}", "measure 'e2e_rate'"),
                           ("{measure: e2e_ratio, what: x, at_least: 0.9, at_most: 2}", "not both"),
                           ("{measure: e2e_ratio, what: x, at_least: 0.9, bound: 2}", "unknown keys bound")):
        path.write_text(f"- {{measure: bf16_cc, what: ok, at_least: 0.99}}\n- {entry}\n")
        with pytest.raises(SystemExit, match=f"{path}: target 2: .*{message}"):
            report.load_targets(path)


def test_workers_to_feed_never_rounds_a_needed_worker_away(report):
    assert report.workers_to_feed(0.011).startswith("1 (0.011 ")  # a CPU step: one worker, a hundredth of its output
    assert report.workers_to_feed(3.2).startswith("4 (3.2 ")
    assert report.workers_to_feed(2.0).startswith("2 (2 ")


def test_e2e_bound_is_the_model_time_or_all_the_work_spread_over_the_cores(report):
    from avrsp.bench_predict import OUTPUT_PARTS

    outputs = dict.fromkeys(OUTPUT_PARTS, 0.5)   # 3 ms of output work per frame
    # The model's two threads occupy both cores for its 10 ms: the 3 ms come on top, halved.
    assert report.e2e_bound({**outputs, "model": 20.0, "model wall": 10.0}, 2) == pytest.approx(10 / 11.5)  # float64 rounding
    # A model that leaves a core idle half its time hides the outputs there entirely.
    assert report.e2e_bound({**outputs, "model": 15.0, "model wall": 10.0}, 2) == 1.0
    assert report.e2e_bound({**outputs, "model": 20.0, "model wall": 10.0}, 4) == 1.0


def test_each_end_to_end_model_can_have_its_own_video_length():
    """A paper-size model on the CPU needs a shorter video than the built-in one
    (`--e2e-models built-in avrsp:2`); a malformed length is one line naming the entry."""
    from avrsp.bench import parse
    from avrsp.config import ConfigError

    args = parse(["--device", "cpu", "--e2e-seconds", "30", "--e2e-models", "built-in", "avrsp:2.5"])
    assert args.e2e_models == [("built-in", 30.0), ("avrsp", 2.5)]
    for bad in ("avrsp:", "avrsp:two", "avrsp:0", ":3", "avrps:2"):
        with pytest.raises(ConfigError, match=f"--e2e-models '{bad}'"):
            parse(["--device", "cpu", "--e2e-models", bad])


def test_bench_runs_from_the_installed_package(tmp_path):
    """`avrsp bench` lives in the package and reads nothing of the source tree, so it runs
    from any folder; a bad request is one line, before anything is measured."""
    proc = subprocess.run([sys.executable, "-m", "avrsp", "bench", "--e2e-models", "avrps"], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--e2e-models 'avrps'" in proc.stderr, \
        proc.stderr
