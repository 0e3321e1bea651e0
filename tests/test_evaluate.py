import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import avrsp
import avrsp.evaluate as ev
from avrsp.checkpoint import CheckpointError, load_model, save_model
from avrsp.cli import main
from avrsp.data.datasets import stavis_videos
from avrsp.data.synth import SynthConfig, write_dataset
from avrsp.graph import prepare
from avrsp.inference import predict_frames, windows
from avrsp.media import clip_audio, frame_span

CFG = SynthConfig(videos=3, frames=14, height=64, width=96, fps=15.0, seed=1)
T = 8  # avrsp_tiny's window


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaldata")
    write_dataset(root / "synth", CFG)
    return root / "synth"


def structured_model(seed=0):
    """avrsp_tiny with BatchNorm statistics from one batch, so its eval-mode maps vary
    (an untrained model's are flat to ~1e-5)."""
    torch.manual_seed(seed)
    model = avrsp.create_model("avrsp_tiny")
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    with torch.no_grad():
        model.train()(torch.rand(4, 3, T, 64, 96) * 2 - 1, torch.randn(4, 1, 17640) * 50)
    return model.eval()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_model(path, structured_model())
    return path


# ------------------------------------------------------------------ windows

def test_windows_reverse_the_first_frames_and_their_audio():
    ws = list(windows(20, T))
    assert [w.frame for w in ws] == list(range(20))
    assert ws[0].indices == tuple(range(7, -1, -1)) and ws[0].reverse
    assert ws[T - 2].indices == tuple(range(2 * T - 3, T - 3, -1))
    assert ws[T - 1].indices == tuple(range(T)) and not ws[T - 1].reverse
    assert all(w.indices[-1] == w.frame for w in ws)  # the prediction is for the last frame
    audio = np.random.default_rng(0).random(22050 * 2).astype(np.float32)
    forward = clip_audio(audio, 22050, *frame_span(0, T - 1, 15.0), 17640)
    # The reversed excerpt is the forward one backwards (each centred in its buffer): to
    # float32 rounding of samples up to SoundNet's 256 (~1.5e-5), since the Hanning
    # window's values are not bit-symmetric.
    np.testing.assert_allclose(np.trim_zeros(ws[0].audio(audio, 15.0, T)), np.trim_zeros(forward)[::-1], atol=1e-4)
    # Shorter than T: every frame still gets a window ending at it.
    short = list(windows(3, T))
    assert [w.indices[-1] for w in short] == [0, 1, 2] and short[0].indices == (0,) * T
    # Between T and 2T−2 frames: a reversed window is used only where it fits in the video.
    for n in range(T, 2 * T):
        ws = list(windows(n, T))
        assert all(0 <= i < n for w in ws for i in w.indices), n
        assert [w.reverse for w in ws[:T - 1]] == [k + T - 1 < n for k in range(T - 1)]
        assert all(w.indices[-1] == w.frame and len(w.indices) == T for w in ws)


def test_predict_frames_equals_direct_model_calls(data, ckpt):
    model = load_model(ckpt)
    video = stavis_videos(data / "stavis", "SynthAV", "test", 1)[0]
    got = dict(predict_frames(model, video.frames, len(video), video.fps, video.audio, batch=3))
    assert sorted(got) == list(range(len(video)))
    from avrsp.data.clips import to_model_frames

    for w in (list(windows(len(video), T))[1], list(windows(len(video), T))[-1]):
        clip = to_model_frames(video.frames.read(list(w.indices)), (64, 96))[None]
        audio = torch.from_numpy(w.audio(video.audio, video.fps, T))[None, None]
        with torch.no_grad():
            want = model(clip, audio)[0].numpy()
        # Maps in (0, 1): batches of 3 against 1, and the streams' thread counts, sum the
        # float32 convolutions in other orders (~1e-6 on the logits, by CPU); a wrong window
        # or sound moves these maps by orders of magnitude more.
        np.testing.assert_allclose(got[w.frame], want, atol=1e-5)


# ------------------------------------------------------------------ model files

def test_model_file_round_trip_and_bad_files(tmp_path):
    model = structured_model(1)
    save_model(tmp_path / "m.safetensors", model)
    again = load_model(tmp_path / "m.safetensors")
    assert again.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k   # stored and read, no arithmetic: bit for bit
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    for name, message in [("junk", "not a safetensors model file"), ("foreign", "without an avrsp model config"),
                          ("absent", "no such file")]:
        with pytest.raises(CheckpointError, match=message) as e:
            load_model(tmp_path / f"{name}.safetensors")
        assert f"{name}.safetensors" in str(e.value)


# ------------------------------------------------------------------ averaging and NaN frames

def test_per_video_then_over_videos():
    def record(video, values):
        rows = [{m: v for m in ev.METRICS} for v in values]
        return {**ev.summarise(video, rows), "dataset": "D", "split": "1"}

    # Video a: 4 frames at 1.0; video b: 1 frame at 0.0 and a NaN frame.
    records = [record("a", [1.0] * 4), record("b", [0.0, math.nan])]
    (row,) = ev.aggregate(records)
    # Means of a few exact values, exact in float64.
    assert row["cc"] == 0.5                 # (1.0 + 0.0) / 2 videos
    assert row["cc_frame_avg"] == 4 / 5     # DHF1K-style frame mean
    assert (row["videos"], row["frames"], row["left_out"], row["cc_frames"]) == (2, 6, 1, 5)


def test_evaluate_writes_tables_and_leaves_out_what_a_frame_lacks(data, ckpt, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(data, root)
    video = stavis_videos(root / "stavis", "SynthAV", "test", 1)[0]
    ann = root / "stavis" / "annotations" / "SynthAV" / video.name
    (ann / "fixMap_00003.mat").unlink()                                          # missing fixations
    Image.fromarray(np.zeros((64, 96), np.uint8)).save(ann / "maps" / "eyeMap_00005.jpg")  # all-zero map
    (ann / "fixMap_00007.mat").unlink()                                          # frame 7 has neither
    Image.fromarray(np.zeros((64, 96), np.uint8)).save(ann / "maps" / "eyeMap_00007.jpg")
    out = tmp_path / "out"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(root / "stavis"), "--dataset", "SynthAV",
                 "--split", "1", "--out", str(out), "--quiet"]) == 0
    report = (out / "report.md").read_text()
    assert "| Method | SynthAV SIM↑ | SynthAV CC↑ | SynthAV NSS↑ | SynthAV AUC-J↑ |" in report
    assert "Post-processing: STAViS" in report
    rows = list(csv.DictReader(open(out / "per_video.csv")))
    assert len(rows) == 1 and rows[0]["video"] == video.name
    n = len(video)
    # Missing fixations cost only the fixation metrics, an all-zero map only the map metrics
    # (not SIM 0 and KL 0 in the averages); frame 7 counts for nothing.
    assert (int(rows[0]["left_out"]), int(rows[0]["no_density"]), int(rows[0]["no_fixations"])) == (1, 2, 2)
    assert int(rows[0]["cc_frames"]) == int(rows[0]["sim_frames"]) == int(rows[0]["kld_frames"]) == n - 2
    assert int(rows[0]["nss_frames"]) == int(rows[0]["auc_j_frames"]) == n - 2
    per_frame = json.loads((out / "videos" / "SynthAV" / "1" / f"{video.name}.json").read_text())["per_frame"]
    assert per_frame["nss"][2] is None and per_frame["cc"][2] is not None
    assert per_frame["sim"][4] is None and per_frame["kld"][4] is None and per_frame["nss"][4] is not None
    assert all(per_frame[m][6] is None for m in per_frame)
    # The video's mean is the mean of the frames used: float64 means of the same values,
    # perhaps summed in another order (~1e-15); absolute, as a CC can lie near 0.
    for m in ("cc", "sim", "kld", "nss"):
        assert float(rows[0][m]) == pytest.approx(np.mean([x for x in per_frame[m] if x is not None]), abs=1e-12)
    results = json.loads((out / "results.json").read_text())
    kinds = {d["kind"] for d in results["datasets"]}
    assert "all" in kinds and kinds & {"relevant", "music"}  # split by video kind for synthetic data
    assert not list((out / "cache").rglob("*.npy"))           # the prediction cache is cleared


def test_two_runs_evaluate_into_their_own_folders_and_a_failed_start_blocks_nothing(data, tmp_path, monkeypatch,
                                                                                     capsys):
    """Every run saves best.safetensors: the default --out names the run. A run's folder is
    accepted for its best model; a bad --checkpoint fails before anything is written, so
    the corrected command runs; an imported backbone file is told where it belongs."""
    import shutil

    from avrsp.weights import save_imported

    monkeypatch.chdir(tmp_path)
    for name, seed in (("first", 1), ("second", 2)):
        run = tmp_path / "runs" / "train" / name
        run.mkdir(parents=True)
        (run / "config.yaml").write_text("model: avrsp_tiny\n")
        save_model(run / "best.safetensors", structured_model(seed))
    common = ["--data", str(data / "stavis"), "--dataset", "SynthAV", "--split", "1", "--quiet"]
    assert main(["evaluate", "--checkpoint", "runs/train/first/best.safetensors", *common]) == 0
    assert main(["evaluate", "--checkpoint", "runs/train/second", *common]) == 0
    assert "runs/train/second is a training run's folder: using its best.safetensors" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "runs" / "eval").iterdir()) == [
        "first-best_SynthAV_1", "second-best_SynthAV_1"]
    # A file that is not a model: one line, exit 2, and no folder the retry would trip on.
    shutil.copy(tmp_path / "runs" / "train" / "first" / "config.yaml", tmp_path / "runs" / "train" / "bad.safetensors")
    save_imported(tmp_path / "s3d.safetensors", {"w": torch.zeros(1)}, {"kind": "s3d"})
    for bad, message in (("runs/train/bad.safetensors", "not a safetensors model file"),
                         ("s3d.safetensors", "backbone weights from 'avrsp weights import', not a whole model; "
                                             "train from them (init.s3d=")):
        assert main(["evaluate", "--checkpoint", bad, *common, "--out", "runs/eval/retry"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not (tmp_path / "runs" / "eval" / "retry").exists()
    assert main(["evaluate", "--checkpoint", "runs/train/first", *common, "--out", "runs/eval/retry"]) == 0
    # A taken folder says what to do.
    assert main(["evaluate", "--checkpoint", "runs/train/second", *common, "--out", "runs/eval/retry"]) == 2
    assert "pass another --out, or remove" in capsys.readouterr().err


def test_evaluate_resumes_and_reuses_predictions(data, ckpt, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = ["evaluate", "--checkpoint", str(ckpt), "--data", str(data / "stavis"), "--dataset", "SynthAV",
            "--split", "1", "--out", str(out), "--batch", "1", "--quiet"]
    assert main(args) == 0
    first = (out / "per_video.csv").read_text()
    # A finished run: nothing is predicted again. (Reports compared as text: the same model
    # on the same machine, batch and threads computes the same bits.)
    monkeypatch.setattr("avrsp.checkpoint.load_model", lambda *a, **k: pytest.fail("model loaded again"))
    assert main(args) == 0 and (out / "per_video.csv").read_text() == first
    # Killed after predicting, before scoring: the predictions on disk are reused.
    video = next(iter((out / "videos" / "SynthAV" / "1").glob("*.json")))
    preds = np.stack([m for _, m in predict_frames(prepare(load_model(ckpt)), *(
        lambda v: (v.frames, len(v), v.fps, v.audio))(stavis_videos(data / "stavis", "SynthAV", "test", 1)[0]))])
    cache = out / "cache" / "SynthAV" / "1" / f"{video.stem}.npy"
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, preds)
    video.unlink()
    assert main(args) == 0 and (out / "per_video.csv").read_text() == first


def _evaluation(tmp_path, videos: int, frames: int, seed: int, split: str, batch: int):
    """A synthetic dataset, a model file, and the evaluate arguments common to a test's runs."""
    root = tmp_path / "synth"
    write_dataset(root, SynthConfig(videos=videos, frames=frames, height=64, width=96, fps=15.0, seed=seed))
    ckpt = tmp_path / "m.safetensors"
    save_model(ckpt, structured_model(seed))
    checkpoints = [str(ckpt)] * (3 if split == "all" else 1)
    return ckpt, ["--checkpoint", *checkpoints, "--data", str(root / "stavis"), "--dataset", "SynthAV", "--split",
                  split, "--batch", str(batch), "--precision", "fp32", "--quiet"]


def _kill_after_first_video(command: list[str], out, env) -> None:
    """Start ``command`` (in its own process group), SIGKILL the whole group as soon as one
    video's scores are on disk, and check that it was killed part-way."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list((out / "videos").rglob("*.json")):
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the evaluation ended before it could be killed"
    assert list((out / "videos").rglob("*.json")) and not (out / "report.md").exists()


def test_a_killed_evaluation_resumes_to_the_same_report(tmp_path, capsys):
    """A real SIGKILL mid-run, then the same command: the report is the uninterrupted
    run's, byte for byte. Settings that change the results are refused on resume."""
    import os
    import sys

    ckpt, common = _evaluation(tmp_path, videos=12, frames=24, seed=2, split="1", batch=1)
    assert main(["evaluate", *common, "--out", str(tmp_path / "ref")]) == 0
    out = tmp_path / "killed"
    _kill_after_first_video([sys.executable, "-m", "avrsp", "evaluate", *common, "--out", str(out)], out,
                            {**os.environ, "PYTHONUNBUFFERED": "1"})
    assert len(list((out / "videos").rglob("*.json"))) < 4
    assert main(["evaluate", *common, "--out", str(out)]) == 0
    # Byte for byte: both runs predict with the same kernels, batch, precision and threads.
    for name in ("report.md", "per_video.csv", "per_dataset.csv", "per_frame.csv"):
        assert (out / name).read_text() == (tmp_path / "ref" / name).read_text(), name
    # Resuming with a setting that changes the results would mix two evaluations: refused.
    other = tmp_path / "other.safetensors"
    save_model(other, structured_model(3))
    capsys.readouterr()
    for extra, setting in ((["--no-postprocess"], "postprocess"), (["--save-maps"], "save_maps"),
                           (["--seed", "1"], "seed")):
        assert main(["evaluate", *common, "--out", str(out), *extra]) == 2
        assert setting in capsys.readouterr().err, setting
    changed = [a if a != str(ckpt) else str(other) for a in common]
    assert main(["evaluate", *changed, "--out", str(out)]) == 2
    assert "checkpoints" in capsys.readouterr().err
    bf16 = [a if a != "fp32" else "bf16" for a in common]
    assert main(["evaluate", *bf16, "--out", str(out)]) == 2
    assert "precision" in capsys.readouterr().err


def test_three_fold_protocol_pools_every_video(data, ckpt):
    items = ev.plan(data / "stavis", "SynthAV", "all", [ckpt] * 3)
    assert sorted(i.video.name for i in items) == sorted(json.loads((data / "synth.json").read_text())["videos"][i]
                                                         ["name"] for i in range(3))
    assert {i.split for i in items} == {"1", "2", "3"}
    with pytest.raises(ev.EvalError, match="one per split"):
        ev.plan(data / "stavis", "SynthAV", "all", [ckpt])


def test_score_a_folder_of_predictions(data, tmp_path, capsys):
    videos = stavis_videos(data / "stavis", "SynthAV", "test", 2)
    pred_dir = tmp_path / "preds"
    for v in videos:  # "predict" the ground truth itself, at half resolution
        d = pred_dir / v.name
        d.mkdir(parents=True)
        for k in range(len(v)):
            m = (v.saliency_map(k) * 255).astype(np.uint8)
            Image.fromarray(m).resize((48, 32)).save(d / f"{v.name}_{k + 1:03d}.png")
    out = tmp_path / "score"
    assert main(["score", str(pred_dir), "--data", str(data / "stavis"), "--dataset", "SynthAV", "--split", "2",
                 "--out", str(out), "--no-postprocess", "--quiet"]) == 0
    row = next(csv.DictReader(open(out / "per_dataset.csv")))
    # The ground truth at half size, scored against itself: bicubic shrinking and growing
    # blur it a little, far from float rounding; these are floors for a correct pairing.
    assert float(row["cc"]) > 0.9 and float(row["nss"]) > 2
    assert main(["score", str(tmp_path / "nowhere"), "--data", str(data / "stavis"), "--dataset", "SynthAV"]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["score", str(empty), "--data", str(data / "stavis"), "--dataset", "SynthAV", "--quiet"]) == 2
    assert "no predictions for SynthAV/" in capsys.readouterr().err


# ------------------------------------------------------------------ audio/video alignment, with clicks

def click_track(n_frames, fps, click_frame, rate=22050):
    """Silence with a one-sample click at the centre of frame ``click_frame`` (0-based):
    aperiodic, so a window cut one frame early or late cannot contain it at the same place."""
    audio = np.zeros(int((n_frames + 2) / fps * rate), np.float32)
    audio[round(click_frame / fps * rate)] = 1.0
    return audio


def click_position(k_click, lo, hi, fps, length, reverse, rate=22050, time=None):
    """Where the click must be in the buffer of a window over frames lo..hi (docs/data.md,
    written out): the excerpt [lo − ½, hi + ½] frame periods, clamped to the track, centred,
    reversed for reversed windows."""
    t = (lambda i: i / fps) if time is None else time
    a = max(round((t(lo) - 0.5 / fps) * rate), 0)
    b = round((t(hi) + 0.5 / fps) * rate)
    c = round(t(k_click) * rate)
    offset = (length - (b - a)) // 2
    return offset + (b - 1 - c if reverse else c - a)


@pytest.mark.parametrize("fps", [15.0, 29.97, 25.0])
def test_every_window_hears_its_own_frames(fps):
    """The click sounds at frame 9: every window that holds frame 9 has it exactly where
    frame 9's sound belongs (one sample of rounding), the others are silent. A cut one
    frame early or late would put it 1/fps away, or drop it."""
    n, k_click, length = 40, 9, 17640
    audio = click_track(n, fps, k_click)
    for w in windows(n, T):
        buf = w.audio(audio, fps, T)
        lo, hi = min(w.indices), max(w.indices)
        if lo <= k_click <= hi:
            assert abs(int(np.argmax(np.abs(buf))) - click_position(k_click, lo, hi, fps, length, w.reverse)) <= 1
            assert np.abs(buf).max() > 0
        elif hi < k_click - 1 or lo > k_click + 1:  # (neighbours own the edge of the click's frame period)
            assert not buf.any(), w


def test_variable_frame_rate_windows_follow_the_timestamps():
    """A stream whose frames carry timestamps (VFR): each window's sound is cut around its
    frames' real times, not around k/fps."""
    from avrsp.inference import _batches

    times = np.cumsum([0.0] + [0.04 if i % 3 else 0.12 for i in range(29)])  # irregular gaps
    fps = len(times) / (times[-1] + 0.04)
    k_click = 17
    audio = np.zeros(int((times[-1] + 1) * 22050), np.float32)
    audio[round(times[k_click] * 22050)] = 1.0
    frames = [(np.zeros((8, 8, 3), np.uint8), float(t)) for t in times]
    checked = 0
    for ws, _, _, sound in _batches(iter(frames), None, T, fps, audio, 4, True):
        for w, buf in zip(ws, sound):
            lo, hi = min(w.indices), max(w.indices)
            if lo <= k_click <= hi:
                want = click_position(k_click, lo, hi, fps, 17640, w.reverse, time=lambda i: times[i])
                assert abs(int(np.argmax(np.abs(buf))) - want) <= 1
                checked += 1
    assert checked >= T


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args, tmp_path, timeout=300):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                           "127.0.0.1", "--master_port", str(_free_port()), "-m", "avrsp", *args],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path)


def test_two_processes_shard_predict_and_evaluate_into_what_one_writes(tmp_path):
    """torchrun -m avrsp evaluate / predict with 2 CPU processes: each takes its share of
    the videos, and the folder holds what one process writes (issue 19); a sharded run
    killed part-way resumes to the same report."""
    import os
    import subprocess
    import sys

    ckpt, common = _evaluation(tmp_path, videos=9, frames=12, seed=3, split="all", batch=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "avrsp", "evaluate", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = _torchrun(["evaluate", *common, "--out", str(tmp_path / "two")], tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("# Evaluation of") == 1  # rank 0 reports, for every video
    # Byte for byte: every process runs the same kernels with one thread (OMP_NUM_THREADS=1).
    for name in ("report.md", "per_video.csv", "per_dataset.csv", "per_frame.csv"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text(), name
    killed = tmp_path / "killed"
    _kill_after_first_video([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                             "127.0.0.1", "--master_port", str(_free_port()), "-m", "avrsp", "evaluate", *common,
                             "--out", str(killed)], killed, env)
    again = _torchrun(["evaluate", *common, "--out", str(killed)], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (killed / "report.md").read_text() == (tmp_path / "one" / "report.md").read_text()
    # predict: the two processes' folders together are one process's.
    videos = sorted((tmp_path / "synth" / "videos").glob("*.mp4"))[:3]
    args = ["predict", *map(str, videos), "--checkpoint", str(ckpt), "--precision", "fp32", "--no-video", "--quiet"]
    one = subprocess.run([sys.executable, "-m", "avrsp", *args, "--out", str(tmp_path / "p1")], capture_output=True,
                         text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = _torchrun([*args, "--out", str(tmp_path / "p2")], tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    files = sorted(p.relative_to(tmp_path / "p1") for p in (tmp_path / "p1").rglob("*.png"))
    assert len(files) == 36
    assert files == sorted(p.relative_to(tmp_path / "p2") for p in (tmp_path / "p2").rglob("*.png"))
    assert all((tmp_path / "p1" / f).read_bytes() == (tmp_path / "p2" / f).read_bytes() for f in files)
