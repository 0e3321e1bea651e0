"""Figures: Fig. 5-style comparison grids and Fig. 6-style Ret_A / Ret_V maps."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .checkpoint import atomic_write


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    plt = _plt()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120,
                                               bbox_inches="tight"))
    plt.close(fig)


def _norm(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def comparison_grid(frames: Sequence[np.ndarray], columns: dict[str, Sequence[np.ndarray | None]],
                    path: Path, *, row_labels: Sequence[str] | None = None,
                    fixations: Sequence[np.ndarray | None] | None = None) -> Path:
    """Fig. 5 layout: one row per frame; the frame (with fixations as dots when given),
    then one column per map (ground truth, ours, other models). A missing map is a blank
    panel."""
    plt = _plt()
    names = ["Frame", *columns]
    fig, axes = plt.subplots(len(frames), len(names), figsize=(2.6 * len(names), 1.7 * len(frames)),
                             squeeze=False)
    for r, frame in enumerate(frames):
        h, w = frame.shape[:2]
        axes[r, 0].imshow(frame)
        if fixations is not None and fixations[r] is not None:
            ys, xs = np.nonzero(fixations[r])
            axes[r, 0].scatter(xs * w / fixations[r].shape[1], ys * h / fixations[r].shape[0], s=4, c="red")
        for c, maps in enumerate(columns.values(), start=1):
            m = maps[r]
            if m is not None:
                axes[r, c].imshow(_norm(m), cmap="gray", vmin=0, vmax=1)
        if row_labels:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=8)
    for c, name in enumerate(names):
        axes[0, c].set_title(name, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, path)
    return path


def relevance_maps(relevance: list[dict], frame_shape: tuple[int, int], block: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Ret_A and Ret_V of one RAVF block averaged over heads, audio tokens and time,
    upsampled to ``frame_shape``: the Fig. 6 view of where vision and sound agree."""
    from .media import resize_map

    maps = relevance[block]
    out = []
    for key in ("ret_a", "ret_v"):
        # heads, audio tokens, time: as inference.predict_frames_with_relevance
        m = maps[key][0].float().mean(dim=(0, 1, 2)).cpu().numpy()
        out.append(resize_map(m.astype(np.float32), frame_shape))
    return out[0], out[1]


def relevance_figure(frame: np.ndarray, rows: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                     path: Path) -> Path:
    """Fig. 6 layout: per audio condition, the frame with the predicted saliency, Ret_A and
    Ret_V. Ret maps share one colour scale across conditions, so brighter means more
    relevant, comparably between rows."""
    plt = _plt()
    from .media import overlay

    all_ret = np.concatenate([np.concatenate([a.ravel(), v.ravel()]) for _, a, v in rows.values()])
    lo, hi = float(all_ret.min()), float(all_ret.max())
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 2.0 * len(rows)), squeeze=False)
    for r, (label, (sal, ret_a, ret_v)) in enumerate(rows.items()):
        axes[r, 0].imshow(overlay(frame, sal))
        axes[r, 0].set_ylabel(label, fontsize=9)
        for c, m in ((1, ret_a), (2, ret_v)):
            axes[r, c].imshow(m, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
    for c, title in enumerate(("Saliency", "Ret_A (visual → audio)", "Ret_V (audio → visual)")):
        axes[0, c].set_title(title, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, path)
    return path


def clip_relevance(model, video: Path, frame: int, audio_source: Path | None = None):
    """Saliency and Ret maps for the window predicting ``frame`` of ``video`` (0-based), with
    the video's own sound or the sound of ``audio_source`` (e.g. unrelated music)."""
    import torch

    from .data.clips import to_model_frames
    from .data.datasets import VideoFileFrames
    from .inference import window
    from .media import probe, read_audio

    info = probe(video)
    src = VideoFileFrames(video)
    n = len(src)
    if not 0 <= frame < n:
        raise ValueError(f"{video}: frame {frame + 1} is outside 1–{n}")
    cfg = model.config
    w = window(frame, cfg.frames, lambda i: i < n)
    frames = src.read(list(w.indices))
    clip = to_model_frames(frames, (cfg.height, cfg.width))[None]
    sound = read_audio(audio_source or video, warn=False)
    audio = torch.from_numpy(w.audio(sound, info.fps or 25.0, cfg.frames))[None, None]
    with torch.no_grad():
        sal, relevance = model.forward_with_relevance(clip, audio)
    if relevance is None:
        raise ValueError("the model has no RAVF fusion: relevance maps exist only for fusion=ravf")
    shape = frames[-1].shape[:2]
    from .media import resize_map

    ret_a, ret_v = relevance_maps(relevance, shape)
    return frames[-1], resize_map(sal[0].numpy(), shape), ret_a, ret_v
