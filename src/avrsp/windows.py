"""The windows of the test protocol (docs/evaluation.md), and of training clips.

One T-frame window per predicted frame, step 1, the prediction for the window's last
frame. Frames T−1 … n−1 use the window that ends at them. Frames 0 … T−2 use the
time-reversed window that starts at them (frames k+T−1 … k, so its last frame is k),
with the audio excerpt reversed too. Where that window would run past the video's end
(videos of fewer than 2T−1 frames), the frame gets the window ending at it with frame 0
repeated before the video's start; a video shorter than T frames gets only such windows,
so every frame has a map. Training clips (``ClipDataset``) use the same windows, so the
model never sees a clip or a sound cut that the test protocol would not give it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from .media import SOUNDNET_RATE, clip_audio, frame_span


@dataclass(frozen=True)
class Window:
    frame: int               # the frame predicted (0-based)
    indices: tuple[int, ...]  # frames fed to the model, oldest first
    reverse: bool            # a time-reversed window (audio reversed too)

    def audio(self, audio: np.ndarray | None, fps: float, frames: int, rate: int = SOUNDNET_RATE,
              time: Callable[[int], float | None] | None = None) -> np.ndarray:
        """SoundNet input for this window (docs/data.md): the sound of its frames, from the
        first one's start to the last one's end, clamped to the track.

        Frame i is centred at ``time(i)`` seconds when given (its timestamp: variable
        frame rate video keeps its sync), else at i/fps, and owns 1/fps seconds around
        it. A window that repeats frame 0 before the video's start gets the sound from the
        track's start (the clamp makes that the same as the frames it stands for)."""
        lo, hi = min(self.indices), max(self.indices)
        t_lo = time(lo) if time is not None else None
        t_hi = time(hi) if time is not None else None
        start, end = frame_span(lo, hi, fps)
        if t_lo is not None and t_hi is not None:
            start, end = t_lo - 0.5 / fps, t_hi + 0.5 / fps
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
