"""An exact evaluation fixture (issue 21): small datasets in every layout, prediction
folders of every kind, and the values `evaluate` and `score` must report, computed here
without `avrsp.evaluate`: the ground truth is read straight from the files, the windows
of the test protocol are written out by hand, and each number comes from the metric
functions alone, on the frames the protocol should use. A protocol that pairs a
prediction with the wrong frame, averages a frame that should be left out, or reads a
file name off by one gives other numbers, and these tests fail."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import loadmat, savemat

import avrsp
from avrsp import metrics
from avrsp.checkpoint import load_model, save_model
from avrsp.cli import main
from avrsp.data.synth import SynthConfig, write_dataset
from avrsp.graph import prepare
from avrsp.inference import model_inputs
from avrsp.runtime import default_streams, in_streams
from avrsp.media import SOUNDNET_RATE, clip_audio, read_audio, resize_rgb

CFG = SynthConfig(videos=6, frames=12, height=48, width=64, fps=15.0, seed=11)
T = 8            # avrsp_tiny's window
SEED = 0         # evaluate's and score's --seed
DB = "SynthAV"


# ------------------------------------------------------------------ the fixture on disk

@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    """The data, with its faults, and the names of the videos that carry them."""
    root = tmp_path_factory.mktemp("exact")
    meta = write_dataset(root / "synth", CFG)
    stavis = root / "synth" / "stavis"
    fold1 = [v["name"] for v in meta["videos"] if v["test_fold"] == 1]
    faulty, short = fold1
    ann = stavis / "annotations" / DB / faulty
    Image.fromarray(np.zeros((CFG.height, CFG.width), np.uint8)).save(ann / "maps" / "eyeMap_00004.jpg")  # all zero
    data = (ann / "maps" / "eyeMap_00006.jpg").read_bytes()
    (ann / "maps" / "eyeMap_00006.jpg").write_bytes(data[: len(data) // 3])                               # corrupt
    (ann / "fixMap_00008.mat").unlink()                                                                   # missing
    savemat(ann / "fixMap_00009.mat", {"eyeMap": np.zeros((CFG.height, CFG.width), np.uint8)})          # no fixation
    for k in range(6, CFG.frames + 1):                              # shorter than a window: 5 frames
        (stavis / "video_frames" / DB / short / f"img_{k:05d}.jpg").unlink()
    # DIEM's fixed split: two of the videos again, under DIEM's name and list files.
    diem = [v["name"] for v in meta["videos"] if v["test_fold"] == 2]
    for sub in ("video_frames", "annotations", "video_audio"):
        for name in diem:
            shutil.copytree(stavis / sub / DB / name, stavis / sub / "DIEM" / name)
    lists = stavis / "fold_lists"
    (lists / "DIEM_list_test_fps.txt").write_text("".join(f"{n} {CFG.frames} {CFG.fps:g}\n" for n in diem))
    (lists / "DIEM_list_train_fps.txt").write_text(f"{fold1[0]} {CFG.frames} {CFG.fps:g}\n")
    torch.manual_seed(3)
    model = avrsp.create_model("avrsp_tiny")
    for m in model.modules():  # BatchNorm statistics from one batch, so the maps have structure
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    with torch.no_grad():
        model.train()(torch.rand(4, 3, T, 64, 96) * 2 - 1, torch.randn(4, 1, 17640) * 50)
    save_model(root / "tiny.safetensors", model.eval())
    return {"root": root, "stavis": stavis, "dhf1k": root / "synth" / "dhf1k", "meta": meta, "faulty": faulty,
            "short": short, "diem": diem, "model": root / "tiny.safetensors"}


# ------------------------------------------------------------------ the ground truth, read independently

def frame_files(stavis: Path, db: str, name: str) -> list[Path]:
    files = []
    while (stavis / "video_frames" / db / name / f"img_{len(files) + 1:05d}.jpg").is_file():
        files.append(stavis / "video_frames" / db / name / f"img_{len(files) + 1:05d}.jpg")
    return files


def ground_truth(stavis: Path, db: str, name: str, n: int):
    """Per frame (density or None, fixations or None): None where the file is missing,
    unreadable, all zero or without a fixation."""
    out = []
    for k in range(1, n + 1):
        try:
            # 8-bit levels / 255 in float32, as a map file is read (then scored in float64)
            density = np.asarray(Image.open(stavis / "annotations" / db / name / "maps" / f"eyeMap_{k:05d}.jpg")
                                 .convert("L"), np.float32) / np.float32(255)
        except OSError:
            density = None
        if density is not None and not density.any():
            density = None
        path = stavis / "annotations" / db / name / f"fixMap_{k:05d}.mat"
        fix = loadmat(path)["eyeMap"] > 0 if path.is_file() else None
        if fix is not None and not fix.any():
            fix = None
        out.append((density, fix))
    return out


def expected_scores(gt, preds, *, postprocess: bool) -> dict[str, list[float]]:
    """Per-frame values from the metric functions alone; NaN where the protocol leaves a
    metric out. sAUC's negatives: the fixations of the frames the documented rule picks
    (10 other frames with fixations, generator seeded by (seed, k))."""
    with_fix = [k for k, (_, f) in enumerate(gt) if f is not None]
    out = {m: [] for m in metrics.METRICS}
    for k, ((density, fix), pred) in enumerate(zip(gt, preds)):
        row = {m: math.nan for m in metrics.METRICS}
        if pred is not None:
            p = metrics.stavis_postprocess(pred) if postprocess else np.asarray(pred, np.float64)
            if density is not None:
                row.update(sim=metrics.sim(p, density), cc=metrics.cc(p, density), kld=metrics.kld(p, density))
            if fix is not None:
                others = [j for j in with_fix if j != k]
                picked = np.random.default_rng([SEED, k]).choice(others, min(10, len(others)), replace=False)
                other = np.zeros_like(fix)
                for j in picked:
                    other |= gt[j][1]
                row.update(nss=metrics.nss(p, fix), auc_j=metrics.auc_judd(p, fix, seed=SEED + k),
                           sauc=metrics.auc_shuffled(p, fix, other, seed=SEED + k) if len(picked) else math.nan)
        for m in metrics.METRICS:
            out[m].append(row[m])
    return out


def video_mean(values: list[float]) -> float:
    v = np.array(values, np.float64)
    return float(v[np.isfinite(v)].mean()) if np.isfinite(v).any() else math.nan


def check_record(record: dict, expected: dict[str, list[float]]) -> None:
    """The maps here and in the report come from the same kernels, batch (1) and threads on
    one machine, so they are the same float32 values whatever the CPU, and the metrics run
    the same float64 code on them: only means may sum in another order. Hence 1e-9
    relative, and 1e-12 absolute for values near 0 (a CC can be); a frame paired with the
    wrong map or window is off by far more."""
    for m in metrics.METRICS:
        got = [math.nan if x is None else x for x in record["per_frame"][m]]
        np.testing.assert_allclose(got, expected[m], rtol=1e-9, atol=1e-12, err_msg=f"{record['video']} {m}")
        want = video_mean(expected[m])
        assert (math.isnan(want) and math.isnan(record["mean"][m])) or \
            record["mean"][m] == pytest.approx(want, rel=1e-9, abs=1e-12), m
        assert record["used"][m] == int(np.isfinite(expected[m]).sum()), m


def records(out: Path) -> dict[str, dict]:
    """What a report says of each video: results.json's means and counts, per_frame.csv's
    per-frame values (an empty cell is a metric left out)."""
    import csv

    videos = {v["video"]: {**v, "per_frame": {m: [] for m in metrics.METRICS}}
              for v in json.loads((out / "results.json").read_text())["videos"]}
    for row in csv.DictReader(open(out / "per_frame.csv")):
        v = videos[row["video"]]
        assert int(row["frame"]) == len(v["per_frame"]["cc"]) + 1          # 1-based, in order
        for m in metrics.METRICS:
            v["per_frame"][m].append(float(row[m]) if row[m] else None)
    return videos


def check_dataset(out: Path, dataset: str, per_video: dict[str, dict[str, list[float]]]) -> None:
    row = next(r for r in json.loads((out / "results.json").read_text())["datasets"]
               if r["dataset"] == dataset and r["kind"] == "all")
    for m in metrics.METRICS:
        means = [video_mean(e[m]) for e in per_video.values()]
        want = float(np.nanmean(means)) if np.isfinite(means).any() else math.nan
        assert row[m] == pytest.approx(want, rel=1e-9, abs=1e-12), (dataset, m)   # as check_record
        assert row[f"{m}_frames"] == sum(int(np.isfinite(e[m]).sum()) for e in per_video.values())


# ------------------------------------------------------------------ score: prediction folders

def gt_image(stavis: Path, db: str, name: str, k: int) -> np.ndarray | None:
    try:
        return np.asarray(Image.open(stavis / "annotations" / db / name / "maps" / f"eyeMap_{k:05d}.jpg").convert("L"))
    except OSError:
        return np.zeros((CFG.height, CFG.width), np.uint8)  # a corrupt ground truth: predict zeros there


def write_predictions(folder: Path, stavis: Path, videos: list[str], *, first: int, shift: int = 0,
                      pattern: str = "eyeMap_{:05d}.png") -> dict[str, list[np.ndarray | None]]:
    """Each video's ground truth as its prediction (frame k's file holds frame k+shift's map),
    with one missing file, one corrupt file and one all-zero prediction in the first video.
    Returns what each frame's prediction is (None: none usable)."""
    preds = {}
    for i, name in enumerate(videos):
        n = len(frame_files(stavis, DB, name))
        d = folder / name
        d.mkdir(parents=True)
        preds[name] = []
        for k in range(n):
            src = min(k + shift, n - 1)
            img = gt_image(stavis, DB, name, src + 1)
            path = d / pattern.format(k + first)
            if i == 0 and k == 9:
                preds[name].append(None)                 # missing
                continue
            if i == 0 and k == 10:
                path.write_bytes(b"\x89PNG broken")      # corrupt
                preds[name].append(None)
                continue
            if i == 0 and k == 2:
                img = np.zeros_like(img)                 # all zero
            Image.fromarray(img).save(path)
            preds[name].append((img.astype(np.float32) / np.float32(255)).astype(np.float64))
    return preds


@pytest.mark.parametrize("first, pattern", [(1, "eyeMap_{:05d}.png"), (0, "frame_{:04d}.png")],
                         ids=["1-based", "0-based"])
def test_score_matches_the_fixture_exactly(fixture, tmp_path, capsys, first, pattern):
    stavis = fixture["stavis"]
    videos = sorted(v["name"] for v in fixture["meta"]["videos"])
    preds = write_predictions(tmp_path / "preds", stavis, videos, first=first, pattern=pattern)
    out = tmp_path / "score"
    assert main(["score", str(tmp_path / "preds"), "--data", str(stavis), "--dataset", DB, "--split", "all",
                 "--out", str(out), "--no-postprocess", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"file numbers start at {first} (inferred)" in err
    assert "missing predictions: 1 frame(s)" in err and "cannot read map" in err and "Traceback" not in err
    got = records(out)
    assert sorted(got) == videos                     # 3-fold pooling: every video once
    expected = {}
    for name in videos:
        gt = ground_truth(stavis, DB, name, len(frame_files(stavis, DB, name)))
        expected[name] = expected_scores(gt, preds[name], postprocess=False)
        record = got[name]
        check_record(record, expected[name])
        # The ground truth scored as its own prediction: every usable frame has CC = SIM = 1
        # and KL = 0 exactly, which a prediction shifted by one frame cannot reach (to
        # float64 rounding; KL's eps terms, 2.2e-16 per pixel at most, sum to below 1e-9).
        for k, ((density, _), pred) in enumerate(zip(gt, preds[name])):
            if density is not None and pred is not None and pred.any():
                assert record["per_frame"]["cc"][k] == pytest.approx(1.0, abs=1e-12)
                assert record["per_frame"]["sim"][k] == pytest.approx(1.0, abs=1e-12)
                assert record["per_frame"]["kld"][k] == pytest.approx(0.0, abs=1e-9)
    check_dataset(out, DB, expected)
    faulty = got[fixture["faulty"]]
    assert (faulty["no_density"], faulty["no_fixations"]) == (2, 2)


def test_a_shifted_folder_scores_what_it_holds(fixture, tmp_path):
    """Frame k's file holding frame k+1's map: the report must say so (CC < 1), and match
    the fixture computed on those pairs."""
    stavis = fixture["stavis"]
    videos = sorted(v["name"] for v in fixture["meta"]["videos"] if v["test_fold"] == 3)
    preds = write_predictions(tmp_path / "preds", stavis, videos, first=1, shift=1)
    out = tmp_path / "score"
    assert main(["score", str(tmp_path / "preds"), "--data", str(stavis), "--dataset", DB, "--split", "3",
                 "--out", str(out), "--no-postprocess", "--quiet"]) == 0
    got = records(out)
    for name in videos:
        gt = ground_truth(stavis, DB, name, len(frame_files(stavis, DB, name)))
        check_record(got[name], expected_scores(gt, preds[name], postprocess=False))
        assert got[name]["mean"]["cc"] < 0.99


def test_score_refuses_what_it_cannot_read_unambiguously(fixture, tmp_path, capsys):
    stavis = fixture["stavis"]
    videos = [v["name"] for v in fixture["meta"]["videos"] if v["test_fold"] == 2]
    args = ["--data", str(stavis), "--dataset", DB, "--split", "2", "--quiet", "--no-postprocess"]
    # Numbers 1…n−1 only: 1-based without its last frame, or 0-based without its first?
    for name in videos:
        (tmp_path / "amb" / name).mkdir(parents=True)
        for k in range(1, CFG.frames):
            Image.fromarray(gt_image(stavis, DB, name, k)).save(tmp_path / "amb" / name / f"{k:04d}.png")
    assert main(["score", str(tmp_path / "amb"), *args, "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err
    assert "cannot tell whether file numbers start at 0 or 1" in err and "eyeMap_00001.png" in err
    assert err.count("\n") == 1 and not (tmp_path / "o1").exists()
    # --first-frame settles it; --strict turns the missing frame into an error.
    assert main(["score", str(tmp_path / "amb"), *args, "--out", str(tmp_path / "o2"), "--first-frame", "1"]) == 0
    assert "missing predictions: 2 frame(s)" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "amb"), *args, "--out", str(tmp_path / "o3"), "--first-frame", "1",
                 "--strict"]) == 2
    assert "2 frame(s) have no prediction" in capsys.readouterr().err
    # Two files for one frame: an error naming both, never directory order.
    shutil.copytree(tmp_path / "amb", tmp_path / "dup")
    Image.fromarray(gt_image(stavis, DB, videos[0], 3)).save(tmp_path / "dup" / videos[0] / "0003.jpg")
    assert main(["score", str(tmp_path / "dup"), *args, "--out", str(tmp_path / "o4"), "--first-frame", "1"]) == 2
    err = capsys.readouterr().err
    assert "0003.jpg and 0003.png" in err or "0003.png and 0003.jpg" in err


# ------------------------------------------------------------------ evaluate: a model over every layout

def window(k: int, n: int) -> tuple[list[int], bool]:
    """The test protocol's windows written out: the window ending at k; for the first T−1 frames the
    reversed window starting at k where the video is long enough; else frame 0 repeated."""
    if k >= T - 1:
        return list(range(k - T + 1, k + 1)), False
    if k + T - 1 < n:
        return list(range(k + T - 1, k - 1, -1)), True
    return [max(j, 0) for j in range(k - T + 1, k + 1)], False


def model_predictions(model, frames: list[np.ndarray], audio, fps: float) -> list[np.ndarray]:
    """One forward pass per window, run in evaluate's streams (so with as many CPU threads
    each: float32 sums depend on the thread count, and the check is to 1e-9)."""
    n = len(frames)
    small = np.stack([resize_rgb(f, (64, 96)) for f in frames])

    def predict(k: int) -> np.ndarray:
        idx, reverse = window(k, n)
        lo, hi = (min(idx), max(idx)) if reverse else (idx[0], idx[-1])
        # The window's frames own [first − ½, last + ½] frame periods of the track.
        sound = clip_audio(audio, SOUNDNET_RATE, (lo - 0.5) / fps, (hi + 0.5) / fps, SOUNDNET_RATE * T // 10,
                           reverse=reverse)
        with torch.no_grad():
            m = model(*model_inputs(model, small[idx], np.arange(T)[None], sound[None]))
        return m[0].float().numpy().astype(np.float64)

    return list(in_streams(predict, range(n), default_streams(model)))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_evaluate_matches_the_fixture_exactly(fixture, tmp_path, precision):
    stavis, model_file = fixture["stavis"], fixture["model"]
    model = prepare(load_model(model_file), "cpu", precision)
    cases = [("SynthAV", "1", stavis, DB, [fixture["faulty"], fixture["short"]]),
             ("DIEM", "1", stavis, "DIEM", fixture["diem"])]
    for dataset, split, data, db, videos in cases:
        out = tmp_path / dataset
        assert main(["evaluate", "--checkpoint", str(model_file), "--data", str(data), "--dataset", dataset,
                     "--split", split, "--out", str(out), "--batch", "1", "--precision", precision, "--quiet"]) == 0
        got = records(out)
        assert sorted(got) == sorted(videos)
        expected = {}
        for name in videos:
            files = frame_files(stavis, db, name)
            frames = [np.asarray(Image.open(p).convert("RGB")) for p in files]
            audio = read_audio(stavis / "video_audio" / db / name / f"{name}.wav")
            preds = model_predictions(model, frames, audio, CFG.fps)
            expected[name] = expected_scores(ground_truth(stavis, db, name, len(files)), preds, postprocess=True)
            check_record(got[name], expected[name])
        check_dataset(out, dataset, expected)
    assert records(tmp_path / "SynthAV")[fixture["short"]]["frames"] == 5


def test_evaluate_dhf1k_validation_matches_the_fixture(fixture, tmp_path):
    """DHF1K: the validation split of the ViNet layout, PNG maps and fixations, no
    post-processing, the frame average reported beside the video average."""
    dhf1k, model_file = fixture["dhf1k"], fixture["model"]
    out = tmp_path / "dhf1k"
    assert main(["evaluate", "--checkpoint", str(model_file), "--data", str(dhf1k), "--dataset", "DHF1K",
                 "--out", str(out), "--batch", "1", "--precision", "fp32", "--quiet"]) == 0
    model = prepare(load_model(model_file), "cpu", "fp32")
    got = records(out)
    expected = {}
    for d in sorted((dhf1k / "val").iterdir()):
        frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((d / "images").glob("*.png"))]
        preds = model_predictions(model, frames, None, 30.0)   # DHF1K is silent and read at 30 fps
        gt = []
        for k in range(1, len(frames) + 1):
            density = np.asarray(Image.open(d / "maps" / f"{k:04d}.png").convert("L"), np.float32) / np.float32(255)
            fix = np.asarray(Image.open(d / "fixation" / f"{k:04d}.png").convert("L")) > 0
            gt.append((density if density.any() else None, fix if fix.any() else None))
        expected[d.name] = expected_scores(gt, preds, postprocess=False)
        check_record(got[d.name], expected[d.name])
    check_dataset(out, "DHF1K", expected)
    row = next(r for r in json.loads((out / "results.json").read_text())["datasets"] if r["kind"] == "all")
    frames = np.concatenate([np.array(e["cc"]) for e in expected.values()])
    assert row["cc_frame_avg"] == pytest.approx(float(np.nanmean(frames)), rel=1e-9, abs=1e-12)   # as check_record
