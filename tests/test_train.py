import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import avrsp
from avrsp.checkpoint import load_model, save_model
from avrsp.config import ConfigError
from avrsp.data.synth import SynthConfig, write_dataset
from avrsp.models import AVRSP
from avrsp.train import load_train_config, train

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("train") / "synth"
    write_dataset(root, SynthConfig(videos=12, frames=24, height=64, width=96, seed=2))
    return root / "stavis"


def tiny_cfg(data, out, **overrides):
    return load_train_config(CONFIGS / "synth_tiny.yaml",
                             {"data.root": str(data), "out": str(out), "workers": 0, "log_images": 2, **overrides})


def val_losses(run):
    return [float(r["val_loss"]) for r in csv.DictReader(open(run / "metrics.csv"))]


def test_a_short_run_lowers_the_validation_loss(synth, tmp_path):
    run = train(tiny_cfg(synth, tmp_path / "run", epochs=4), progress=False, log=lambda *a: None)
    losses = val_losses(run)
    assert len(losses) == 5                    # epoch 0 (the untrained start) + 4 epochs
    assert min(losses[1:]) < losses[0] - 0.15  # measured here: 1.99 → 1.60 after 4 epochs
    assert (run / "best.safetensors").is_file() and (run / "images" / "epoch_004.png").is_file()
    assert any((run / "tb").iterdir())
    model = load_model(run / "best.safetensors")  # a model file predict/evaluate can use alone
    assert model.config == avrsp.get_config("avrsp_tiny")


def _weights(path):
    return load_file(str(path))


def test_kill_then_resume_is_bit_identical(synth, tmp_path):
    """With dropout on, so that the resumed run must also draw the same random numbers:
    a loader that took its workers' seed from torch's global RNG drew once more after a
    mid-epoch restore than the uninterrupted run did, and the masks (and weights) parted."""
    common = {"epochs": 3, "steps_per_epoch": 4, "checkpoint_every": 1, "deterministic": True, "log_images": 0,
              "model.dropout": 0.2}
    reference = train(tiny_cfg(synth, tmp_path / "ref", **common), progress=False, log=lambda *a: None)
    assert not torch.are_deterministic_algorithms_enabled()  # for that run only: the caller's setting is back

    run = tmp_path / "killed"
    args = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in common.items()]
    proc = subprocess.Popen([sys.executable, "-m", "avrsp", "train", "--config", str(CONFIGS / "synth_tiny.yaml"),
                             f"data.root={synth}", f"out={run}", "workers=0", "--quiet", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = run / "ckpt" / "latest.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and json.loads(latest.read_text())["step"] >= 5:
            break  # mid-way through epoch 2
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = json.loads(latest.read_text())["step"]
    assert killed_at < 12
    train(load_train_config(run / "config.yaml"), resume=True, progress=False, log=lambda *a: None)
    a, b = _weights(reference / "last.safetensors"), _weights(run / "last.safetensors")
    assert a.keys() == b.keys()
    # Bit for bit: both runs use the same kernels, thread count and deterministic algorithms,
    # so every sum rounds alike; a resume that skipped, repeated or re-drew anything parts them.
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    assert [r["epoch"] for r in csv.DictReader(open(run / "metrics.csv"))] == ["0", "1", "2", "3"]


def _train_cli(config, out, *overrides, timeout=240):
    return subprocess.run([sys.executable, "-m", "avrsp", "train", "--config", str(config), f"out={out}", "--quiet",
                           *overrides], capture_output=True, text=True, timeout=timeout)


#: The settings that decide how the loader runs: its processes, the loaders beside the
#: training one (precise BatchNorm, the image grid that decodes in the main process
#: between epochs), and how batches and checkpoints are cut.
LOADER_KEYS = ("workers", "log_images", "precise_bn", "accumulate", "batch_size", "checkpoint_every")


def _loader_settings(path):
    cfg = load_train_config(path)
    # Sized down so that each pass is short: 2 precise-BN batches, a checkpoint mid-epoch.
    return (cfg.workers, min(cfg.log_images, 2), min(cfg.precise_bn, 2), cfg.accumulate, min(cfg.batch_size, 4),
            min(cfg.checkpoint_every, 1))


@pytest.fixture(scope="module")
def synth_to_resize(tmp_path_factory):
    """Frames larger than the tiny model's 64×96, so that every clip is resized by
    FFmpeg's scaler, as with `avrsp synth`'s default 144×256."""
    root = tmp_path_factory.mktemp("train") / "synth"
    write_dataset(root, SynthConfig(videos=9, frames=16, height=72, width=128, seed=3))
    return root / "stavis"


def test_every_shipped_configs_loader_settings_train_past_epoch_two(synth_to_resize, tmp_path):
    """The README's command hung at epoch 2: workers forked after the image grid had
    started FFmpeg's threaded scaler in the main process. Each distinct loader setting of
    every file in configs/ runs 3 epochs on the tiny model, in a process that a hang
    turns into a failure (timeout)."""
    settings = {}
    for path in sorted(CONFIGS.rglob("*.yaml")):
        if path.parent.name != "studies":
            settings.setdefault(_loader_settings(path), []).append(path.name)
    assert len(settings) >= 2 and any(s[0] >= 1 and s[1] >= 1 for s in settings)
    for i, (values, names) in enumerate(sorted(settings.items())):
        overrides = [f"{k}={v}" for k, v in zip(LOADER_KEYS, values)]
        run = tmp_path / f"run{i}"
        try:
            # A hang is forever; a loaded machine takes a minute or two.
            proc = _train_cli(CONFIGS / "synth_tiny.yaml", run, f"data.root={synth_to_resize}", "epochs=3",
                              "steps_per_epoch=3", *overrides, timeout=600)
        except subprocess.TimeoutExpired:
            pytest.fail(f"training with the loader settings of {names} ({overrides}) hung")
        assert proc.returncode == 0, (names, proc.stderr[-2000:])
        assert [r["epoch"] for r in csv.DictReader(open(run / "metrics.csv"))] == ["0", "1", "2", "3"], names
        if values[1]:
            assert (run / "images" / "epoch_003.png").is_file()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
def test_a_stalled_worker_ends_the_run_with_one_line_and_the_run_resumes(synth, tmp_path):
    """A frame file that is a named pipe blocks the worker that opens it forever, as a
    hung network drive or a deadlocked decoder would. The run must stop within
    worker_timeout with one line naming the epoch and how to resume, keep the steps done,
    and resume to the end once the file is back."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth, data)
    name = (data / "fold_lists" / "SynthAV_list_train_1_fps.txt").read_text().split()[0]
    frames = sorted((data / "video_frames" / "SynthAV" / name).glob("img_*.jpg"))
    kept = tmp_path / "kept"
    kept.mkdir()
    for f in frames:
        f.rename(kept / f.name)
        os.mkfifo(f)
    run = tmp_path / "run"
    t0 = time.time()
    # The first batch's wait includes the worker's start (a fresh interpreter): 20 s leave a
    # loaded machine room for that.
    proc = _train_cli(CONFIGS / "synth_tiny.yaml", run, f"data.root={data}", "epochs=2", "steps_per_epoch=6",
                      "workers=1", "worker_timeout=20", "precise_bn=0", "log_images=1", timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("avrsp: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "epoch 1/2: no batch from the data loader's workers in 20 s" in errors[0]
    assert f"'avrsp train --resume {run}' continues it" in errors[0]
    assert time.time() - t0 < 240
    saved = json.loads((run / "ckpt" / "latest.json").read_text())
    assert saved["epoch"] == 0 and f"saved at step {saved['step']}:" in errors[0]
    for f in frames:
        f.unlink()
        (kept / f.name).rename(f)
    proc = subprocess.run([sys.executable, "-m", "avrsp", "train", "--resume", str(run), "--quiet"],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((run / "ckpt" / "latest.json").read_text())["step"] == 12
    # Resuming a finished run says there is nothing to do.
    proc = subprocess.run([sys.executable, "-m", "avrsp", "train", "--resume", str(run), "--quiet"],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0 and "all 2 epochs are done, nothing to train" in proc.stdout, proc.stdout


def test_an_installed_avrsp_trains_from_a_shipped_config_by_name(synth, tmp_path):
    """The configs travel inside the package: a wheel built from the clone, unpacked
    elsewhere, trains from `--config synth_tiny` in a folder that holds no clone."""
    import zipfile

    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "wheel"), str(REPO)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel, = (tmp_path / "wheel").glob("avrsp-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert {"avrsp/configs/stage1_dhf1k.yaml", "avrsp/configs/studies/fusion.yaml",
                "avrsp/configs/ablations/table5_ravf.yaml"} <= set(names)
        z.extractall(tmp_path / "site")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    proc = subprocess.run([sys.executable, "-m", "avrsp", "train", "--config", "synth_tiny", f"data.root={synth}",
                           "out=run", "epochs=1", "steps_per_epoch=1", "workers=0", "log_images=0", "precise_bn=0",
                           "--quiet"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (elsewhere / "run" / "best.safetensors").is_file()
    probe = subprocess.run([sys.executable, "-c", "import avrsp.train as t; print(t.config_file('stage1_dhf1k'))"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip().startswith(str(tmp_path / "site"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_under_torchrun_match_one_process(synth, tmp_path):
    # The reference: one process accumulating over the same two halves of each global batch
    # that the two ranks take (BatchNorm sees the same per-process batches). Both use one
    # thread per process: with another thread count, float sums round differently, and
    # Adam's first ±lr steps turn near-zero gradients of either sign into different
    # weights (measured: 0.4 % of elements after one step, most after three).
    common = ["epochs=1", "steps_per_epoch=3", "precise_bn=0", "log_images=0", "deterministic=true", "workers=0",
              "batch_size=2", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = ["-m", "avrsp", "train", "--config", str(CONFIGS / "synth_tiny.yaml"), f"data.root={synth}", *common]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    proc = subprocess.run([sys.executable, *base, f"out={single}", "accumulate=2"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *base, f"out={ddp}"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]  # includes the per-epoch check that ranks agree
    assert "global batch 4" in proc.stdout and proc.stdout.count("training avrsp_tiny") == 1  # rank 0 logs
    a, b = _weights(single / "last.safetensors"), _weights(ddp / "last.safetensors")
    params = [k for k in a if "running" not in k and "num_batches" not in k]  # DDP keeps rank 0's BN buffers
    for k in params:
        # The same per-process batches and one thread each; halving the summed gradients
        # (DDP) and summing the halved ones (accumulation) round alike, as dividing by 2
        # rounds nothing: equal weights by the arithmetic. 1e-6 allows no other order of
        # sums, which Adam's first ±lr steps would magnify far beyond it.
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    assert not torch.equal(a[params[0]], AVRSP(avrsp.get_config("avrsp_tiny")).state_dict()[params[0]])


@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.rglob("*.yaml") if p.parent.name != "studies"),
                         ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_parses_and_builds(path):
    cfg = load_train_config(path)
    cfg.validate()
    with torch.device("meta"):
        model = AVRSP(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0
    if "table5_" in path.name and "visual" not in path.name:
        assert cfg.model.fusion == path.stem.split("_", 1)[1] and cfg.model.audio
    if path.name.startswith("table4_"):
        assert cfg.model.num_pairs == int(path.stem[-1])


@pytest.mark.parametrize("overrides, message", [
    ({"optim.lrr": 1.0}, "unknown key 'optim.lrr'"),
    ({"epochs": "ten"}, "epochs: expected an integer"),
    ({"model.fusion": "sum"}, "'sum' is not one of"),
    ({"init.freeze": ["encoder"]}, "unknown part"),
])
def test_bad_configs_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(CONFIGS / "synth_tiny.yaml", overrides)


def test_bad_paths_and_settings_fail_before_any_work(synth, tmp_path):
    with pytest.raises(ConfigError, match="data.root: '/no/such/dir' is not a directory"):
        train(tiny_cfg("/no/such/dir", tmp_path / "a"), progress=False)
    assert not (tmp_path / "a").exists()
    with pytest.raises(ConfigError, match="bf16 training runs on CUDA only"):
        train(tiny_cfg(synth, tmp_path / "b", precision="bf16", device="cpu"), progress=False)
    with pytest.raises(ConfigError, match="init.s3d: '/no/s3d.safetensors' is not a file"):
        train(tiny_cfg(synth, tmp_path / "c", **{"init.s3d": "/no/s3d.safetensors"}), progress=False)
    assert not (tmp_path / "c" / "ckpt").exists()
    run = train(tiny_cfg(synth, tmp_path / "d", epochs=1, steps_per_epoch=1, precise_bn=0, log_images=0),
                progress=False, log=lambda *a: None)
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        train(tiny_cfg(synth, run, epochs=1), progress=False)


def test_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: synth_tiny.yaml\nepochz: 3\n")
    (tmp_path / "synth_tiny.yaml").write_text((CONFIGS / "synth_tiny.yaml").read_text())
    proc = subprocess.run([sys.executable, "-m", "avrsp", "train", "--config", str(bad)], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "unknown key 'epochz'" in proc.stderr and "Traceback" not in proc.stderr


def test_initialisation_and_freezing(synth, tmp_path):
    # Stage 2 from stage 1: a visual-only model file initialises every visual part.
    stage1 = avrsp.create_model("avrsp_tiny", audio=False)
    save_model(tmp_path / "stage1.safetensors", stage1)
    # A backbone file in our S3D layout (what `avrsp weights import` writes).
    torch.manual_seed(5)
    s3d = avrsp.create_model("avrsp_tiny").visual.state_dict()
    save_file({k: v.contiguous() for k, v in s3d.items()}, str(tmp_path / "s3d.safetensors"))
    messages = []
    cfg = tiny_cfg(synth, tmp_path / "run", epochs=1, steps_per_epoch=2, precise_bn=0, log_images=0, **{
        "init.model": str(tmp_path / "stage1.safetensors"), "init.s3d": str(tmp_path / "s3d.safetensors"),
        "init.freeze": ["visual"]})
    run = train(cfg, progress=False, log=messages.append)
    assert any("newly initialised: audio_net, audio_proj, fusion" in m for m in messages)
    trained = load_model(run / "last.safetensors")
    for k, v in s3d.items():  # the S3D backbone: loaded, then frozen (BatchNorm statistics too), never rounded
        assert torch.equal(trained.visual.state_dict()[k], v), k
    assert not torch.equal(trained.decoder.head.weight, stage1.decoder.head.weight)  # the rest trained


def test_stage_two_refuses_a_stage_one_normalised_otherwise(synth, tmp_path):
    """A stage 1 trained on torchvision's S3D (its mean/std) handed to a stage 2 that feeds
    [-1, 1] frames would train on wrongly normalised frames without a word: refused."""
    save_model(tmp_path / "stage1.safetensors", avrsp.create_model("avrsp_tiny", audio=False,
                                                                   visual_norm="kinetics_mean_std"))
    cfg = tiny_cfg(synth, tmp_path / "run", epochs=1, **{"init.model": str(tmp_path / "stage1.safetensors")})
    with pytest.raises(ConfigError, match="trained with model.visual_norm=kinetics_mean_std but this run has "
                                          "minus_one_one; set model.visual_norm=kinetics_mean_std"):
        train(cfg, progress=False)
    assert not (tmp_path / "run" / "ckpt").exists()


def test_each_process_gets_its_own_gpu_or_a_clear_error(monkeypatch):
    """torchrun with 2 processes on a 1-GPU machine: rank 1 must not be sent to a cuda:1 that
    does not exist; with enough GPUs each local rank gets its own."""
    from avrsp.distributed import process_device

    used = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", used.append)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    for gpus, rank in ((1, 0), (1, 1)):
        monkeypatch.setattr(torch.cuda, "device_count", lambda gpus=gpus: gpus)
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        with pytest.raises(ConfigError, match="2 processes on this machine but 1 GPU"):
            process_device("cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for rank in (0, 1):
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        assert process_device("cuda") == torch.device("cuda", rank)
    assert used == [torch.device("cuda", 0), torch.device("cuda", 1)]
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert process_device("cpu") == torch.device("cpu")


def test_validation_reports_the_benchmark_metrics(synth, tmp_path):
    """`val_cc` is what `avrsp evaluate` would give for those frames: the prediction resized
    to the full-resolution ground truth with MATLAB's imresize, post-processed for the
    audio-visual datasets, left out where the frame has no usable ground truth."""
    from avrsp import metrics
    from avrsp.data.clips import ClipDataset
    from avrsp.data.datasets import stavis_videos
    from avrsp.loss import SaliencyLoss
    from avrsp.data.loader import collate
    from avrsp.distributed import Dist
    from avrsp.validation import validate

    torch.manual_seed(0)
    model = avrsp.create_model("avrsp_tiny").eval()
    videos = stavis_videos(synth, "SynthAV", "test", 1)
    ds = ClipDataset(videos, 8, (64, 96), clips_per_video=2, seed=4)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate)
    got = validate(model, loader, SaliencyLoss(), torch.device("cpu"), contextlib.nullcontext, Dist(),
                   {(v.dataset, v.name): v for v in videos})
    want = {m: [] for m in ("sim", "cc", "kld", "nss", "auc_j")}
    losses = []
    for i in range(len(ds)):
        item = ds[i]
        video = next(v for v in videos if v.name == item["video"])
        with torch.no_grad():
            pred = model(item["clip"][None], item["audio"][None])
        losses.append(SaliencyLoss()(pred, item["map"][None]).item())
        p = imresize_post(pred[0].numpy(), video.saliency_map(item["frame"]).shape)
        want["sim"].append(metrics.sim(p, video.saliency_map(item["frame"])))
        want["cc"].append(metrics.cc(p, video.saliency_map(item["frame"])))
        want["kld"].append(metrics.kld(p, video.saliency_map(item["frame"])))
        want["nss"].append(metrics.nss(p, video.fixations(item["frame"])))
        want["auc_j"].append(metrics.auc_judd(p, video.fixations(item["frame"]), seed=item["frame"]))
    # Batched and single forwards sum in other orders (by CPU: ATen's kernels differ), so
    # the maps differ by float32 rounding, ~1e-7 of their range. Every metric moves by that
    # much times its own scale: absolute tolerances on each metric's scale, since a CC or
    # a loss term near zero makes any relative tolerance meaningless. NSS divides by the
    # map's standard deviation (a z-score, values up to ~10); AUC-J's ranks can reorder
    # pixels within rounding of each other, a few pixels of ~1e4, below 1e-4.
    assert got["loss"] == pytest.approx(np.mean(losses), abs=1e-5)
    for m, values in want.items():
        assert got[m] == pytest.approx(np.mean(values), abs={"nss": 1e-4, "auc_j": 1e-4}.get(m, 1e-5)), m


def imresize_post(pred, shape):
    from avrsp import metrics

    return metrics.imresize(metrics.stavis_postprocess(pred), shape)


def test_the_paper_stage1_config_trains_and_validates_like_evaluate(tmp_path):
    """configs/stage1_dhf1k.yaml on a DHF1K-layout folder made by avrsp synth (shrunk to the
    tiny network so that it runs in seconds): a few steps, precise BatchNorm before the
    validation, and the validation's metrics are evaluate's (no post-processing for DHF1K)."""
    root = tmp_path / "synth"
    write_dataset(root, SynthConfig(videos=6, frames=12, height=64, width=96, seed=8))
    tiny = {f"model.{k}": v for k, v in {"frames": 8, "height": 64, "width": 96, "s3d_width": 0.25,
                                         "dims": [32, 16, 16, 8], "backbone_bn_momentum": 0.1}.items()}
    cfg = load_train_config(CONFIGS / "stage1_dhf1k.yaml", {
        "data.root": str(root / "dhf1k"), "init.s3d": "", "epochs": 1, "steps_per_epoch": 2, "batch_size": 2,
        "precise_bn": 2, "workers": 0, "log_images": 0, "out": str(tmp_path / "run"), **tiny})
    assert cfg.precise_bn == 2 and cfg.data.val == "dhf1k_val" and cfg.model.name == "avrsp_v"
    assert load_train_config(CONFIGS / "stage1_dhf1k.yaml").precise_bn == 200  # the paper config recomputes them
    train(cfg, progress=False, log=lambda *a: None)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    for m in ("val_sim", "val_cc", "val_kld", "val_nss", "val_auc_j"):
        assert np.isfinite(float(rows[1][m])), m


def test_fixed_bn_keeps_soundnets_statistics(synth, tmp_path):
    """init.fixed_bn: [audio_net] (the stage-2 configs): SoundNet's running statistics stay
    as loaded through training and precise BatchNorm, while its weights train."""
    cfg = tiny_cfg(synth, tmp_path / "run", epochs=1, steps_per_epoch=3, precise_bn=2, **{"init.fixed_bn": ["audio_net"]})
    torch.manual_seed(0)
    start = avrsp.create_model("avrsp_tiny").audio_net.state_dict()
    model = load_model(train(cfg, progress=False, log=lambda *a: None) / "last.safetensors")
    after = model.audio_net.state_dict()
    stats = [k for k in start if "running_" in k]
    assert stats and all(torch.equal(after[k], start[k]) for k in stats)
    assert not torch.equal(after["conv1.weight"], start["conv1.weight"])         # the weights did train
    other = model.decoder.block0[1].running_mean
    assert not torch.equal(other, torch.zeros_like(other))                         # other BatchNorms did move
    with pytest.raises(ConfigError, match="init.fixed_bn: unknown part"):
        tiny_cfg(synth, tmp_path / "x", **{"init.fixed_bn": ["soundnet"]})
