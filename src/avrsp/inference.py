"""Sliding-window inference (REFERENCE §5): one T-frame window per frame, step 1, the
prediction for the window's last frame.

Frames T−1 … n−1 use the window that ends at them. Frames 0 … T−2 use the time-reversed
window that starts at them (frames k+T−1 … k, so its last frame is k), with the audio
excerpt reversed too. Where that window would run past the video's end (videos of fewer
than 2T−1 frames), the frame gets the window ending at it with frame 0 repeated before
the video's start, as training pads short clips; a video shorter than T frames gets only
such windows, so every frame has a map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

from .data.datasets import FrameSource
from .media import SOUNDNET_RATE, clip_audio, frame_span
from .models import AVRSP, to_channels_last_3d


@dataclass(frozen=True)
class Window:
    frame: int               # the frame predicted (0-based)
    indices: tuple[int, ...]  # frames fed to the model, oldest first
    reverse: bool            # a time-reversed window (audio reversed too)

    def audio(self, audio: np.ndarray | None, fps: float, frames: int, rate: int = SOUNDNET_RATE) -> np.ndarray:
        """SoundNet input for this window (REFERENCE §2)."""
        if self.reverse:
            start, end = frame_span(self.frame, self.frame + frames - 1, fps)
        else:
            start, end = frame_span(self.frame - frames + 1, self.frame, fps)
        return clip_audio(audio, rate, start, end, rate * frames // 10, reverse=self.reverse)


def window(k: int, frames: int, exists) -> Window:
    """The window that predicts frame ``k``; ``exists(i)`` tells whether frame i exists."""
    if k >= frames - 1:
        return Window(k, tuple(range(k - frames + 1, k + 1)), False)
    if exists(k + frames - 1):
        return Window(k, tuple(range(k + frames - 1, k - 1, -1)), True)
    return Window(k, tuple(max(j, 0) for j in range(k - frames + 1, k + 1)), False)


def windows(n: int, frames: int) -> Iterator[Window]:
    """The window of every frame of an ``n``-frame video."""
    for k in range(n):
        yield window(k, frames, lambda i: i < n)


class _FrameBuffer:
    """Frames of a stream kept only while a window may still need them (≤ 2T), read
    ahead on demand; the stream's length is learnt when it ends."""

    def __init__(self, stream: Iterable[np.ndarray]):
        self._it = iter(stream)
        self._frames: dict[int, np.ndarray] = {}
        self._next = 0
        self.length: int | None = None

    def exists(self, i: int) -> bool:
        while self.length is None and self._next <= i:
            try:
                self._frames[self._next] = next(self._it)
                self._next += 1
            except StopIteration:
                self.length = self._next
        return i < self._next

    def get(self, indices: Iterable[int]) -> list[np.ndarray]:
        indices = list(indices)
        if not self.exists(max(indices)):
            raise IndexError(f"frame {max(indices)} is past the end ({self.length} frames)")
        return [self._frames[i] for i in indices]

    def drop_before(self, k: int) -> None:
        for i in [i for i in self._frames if i < k]:
            del self._frames[i]


def prepare(model: AVRSP, device: str | torch.device = "cpu", precision: str = "fp32") -> AVRSP:
    """Move ``model`` to ``device`` in eval mode; ``bf16`` casts every weight to bfloat16 and
    stores 3-D convolutions channels-last."""
    model = model.eval().to(device)
    if precision == "bf16":
        model = to_channels_last_3d(model.to(torch.bfloat16))
    elif precision != "fp32":
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    return model


@torch.no_grad()
def predict_frames(model: AVRSP, frames: FrameSource | Iterable[np.ndarray], n: int | None, fps: float,
                   audio: np.ndarray | None, *, batch: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """``(k, map)`` for every frame k in order, each map float32 at the model's H×W, in (0, 1).

    ``frames`` is a FrameSource (read at the model's size) or an iterable of RGB frames
    already at the model's size; ``n`` may be None for a stream of unknown length.
    Memory holds at most 2T + batch frames, whatever the video's length.
    """
    cfg = model.config
    T, size = cfg.frames, (cfg.height, cfg.width)
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    channels_last = dtype == torch.bfloat16
    stream = frames.stream(size) if isinstance(frames, FrameSource) else frames
    buffer = _FrameBuffer(stream)
    exists = (lambda i: i < n) if n is not None else buffer.exists
    pending: list[Window] = []

    def run(ws: list[Window]) -> Iterator[tuple[int, np.ndarray]]:
        clips = np.stack([np.stack(buffer.get(w.indices)) for w in ws])           # B×T×H×W×3
        clip = torch.from_numpy(clips).to(device).permute(0, 4, 1, 2, 3).to(dtype).div_(127.5).sub_(1.0)
        if channels_last:
            clip = clip.contiguous(memory_format=torch.channels_last_3d)
        sound = None
        if cfg.audio:
            sound = torch.from_numpy(np.stack([w.audio(audio, fps, T) for w in ws]))[:, None].to(device, dtype)
        out = model(clip, sound).float().cpu().numpy()
        for w, m in zip(ws, out):
            yield w.frame, m

    k = 0
    while exists(k):
        pending.append(window(k, T, exists))
        if len(pending) == batch:
            yield from run(pending)
            buffer.drop_before(pending[-1].frame - T + 2)  # the next window starts no earlier
            pending = []
        k += 1
    if pending:
        yield from run(pending)
