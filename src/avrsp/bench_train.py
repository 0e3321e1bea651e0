"""The training data pipeline against the training step, for ``avrsp bench --train``:
whether DataLoader workers can keep a training step fed, on the machine that runs it."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import avrsp
from avrsp.bench_model import inputs, timed

#: The step's batch, as the paper configs train.
BATCH = 4


def train_pipeline(device: str, log) -> dict:
    """Clips per second that one DataLoader worker assembles at paper size (32 frames,
    224×384, sound), from extracted JPEG frames at the datasets' 640×360 and from an
    MPEG-4 video (DHF1K's release layout), and the clips per second a training step of
    ``avrsp`` at batch 4 consumes on ``device``; ``workers_needed`` is the second over
    the slower of the first two."""
    from avrsp.data.clips import ClipDataset
    from avrsp.data.datasets import dhf1k_videos, stavis_videos
    from avrsp.data.synth import SynthConfig, write_dataset

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synth"
        write_dataset(root, SynthConfig(videos=3, frames=96, height=360, width=640, seed=9))
        release = _as_release(root / "dhf1k", Path(tmp) / "release")
        sources = {"jpeg frames 640×360": stavis_videos(root / "stavis", "SynthAV", "train", 1),
                   "video file 640×360": dhf1k_videos(release, "train")}
        for label, videos in sources.items():
            ds = ClipDataset(videos, 32, (224, 384), audio=label.startswith("jpeg"), clips_per_video=8, seed=0)
            ds[0]
            t0 = time.perf_counter()
            for i in range(len(ds)):
                ds[i]
            out[label] = len(ds) / (time.perf_counter() - t0)
            log(f"  data: {label}: {out[label]:.2f} clips/s per worker")
    out["train_clips_s"] = train_step_clips_s(device)
    out["workers_needed"] = out["train_clips_s"] / min(out["jpeg frames 640×360"], out["video file 640×360"])
    log(f"  train step (avrsp, batch {BATCH}, {'bf16 autocast' if device.startswith('cuda') else 'fp32'}): "
        f"{out['train_clips_s']:.3g} clips/s, {out['workers_needed']:.2g} of one worker's clips")
    return out


def _as_release(frames_layout: Path, release: Path) -> Path:
    """The DHF1K frames layout under ``frames_layout`` rewritten as the dataset's release
    layout under ``release``: each video an MPEG-4 file, decoded for every clip."""
    import av
    from PIL import Image

    (release / "video").mkdir(parents=True)
    for d in sorted((frames_layout / "train").iterdir()) + sorted((frames_layout / "val").iterdir()):
        shutil.copytree(d / "maps", release / "annotation" / d.name / "maps")
        with av.open(str(release / "video" / f"{int(d.name):03d}.AVI"), "w") as c:
            st = c.add_stream("mpeg4", rate=15)
            st.width, st.height, st.pix_fmt = 640, 360, "yuv420p"
            for p in sorted((d / "images").iterdir()):
                for pkt in st.encode(av.VideoFrame.from_ndarray(np.asarray(Image.open(p)), format="rgb24")):
                    c.mux(pkt)
            for pkt in st.encode(None):
                c.mux(pkt)
    return release


def train_step_clips_s(device: str) -> float:
    """Clips per second one training step of ``avrsp`` consumes (AdamW, the saliency loss;
    bf16 autocast on CUDA, fp32 on the CPU, as training runs there)."""
    from avrsp.loss import SaliencyLoss

    model = avrsp.create_model("avrsp").to(device).train()
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    clip, audio = inputs(model.config, BATCH, device, torch.float32, False)
    target = torch.rand(BATCH, 224, 384, device=device)
    loss = SaliencyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else \
            contextlib.nullcontext()
        with autocast:
            pred = model(clip, audio)
        loss(pred, target).backward()
        opt.step()

    return BATCH / timed(step, device, 2 if device == "cpu" else 10)
