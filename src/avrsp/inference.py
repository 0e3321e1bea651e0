"""Sliding-window inference: one T-frame window per frame, step 1, the prediction for the
window's last frame (the windows themselves: ``avrsp.windows``), and the model's inputs
for a batch of windows. The model it runs is :func:`avrsp.graph.prepare`'s; where and how
it runs (device, precision, batch, streams, threads): ``avrsp.runtime``.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch

from .config import ConfigError
from .data.datasets import FrameSource
from .graph import uses_channels_last
from .media import resize_map
from .models import AVRSP, has_relevance
from .runtime import default_streams, in_streams, prefetch
from .windows import Window, window, windows  # noqa: F401 - re-exported: the protocol's windows


class _FrameBuffer:
    """Frames of a stream kept only while a window may still need them (≤ 2T), read
    ahead on demand; the stream's length is learnt when it ends. Stream items are RGB
    frames, or (frame, timestamp in seconds) pairs."""

    def __init__(self, stream: Iterable):
        self._it = iter(stream)
        self._frames: dict[int, np.ndarray] = {}
        self._times: dict[int, float | None] = {}
        self._next = 0
        self.length: int | None = None

    def exists(self, i: int) -> bool:
        while self.length is None and self._next <= i:
            try:
                item = next(self._it)
            except StopIteration:
                self.length = self._next
                break
            frame, t = item if isinstance(item, tuple) else (item, None)
            self._frames[self._next], self._times[self._next] = frame, t
            self._next += 1
        return i < self._next

    def get(self, indices: Iterable[int]) -> list[np.ndarray]:
        indices = list(indices)
        if not self.exists(max(indices)):
            raise IndexError(f"frame {max(indices)} is past the end ({self.length} frames)")
        return [self._frames[i] for i in indices]

    def time(self, i: int) -> float | None:
        return self._times.get(i)

    def drop_before(self, k: int) -> None:
        for i in [i for i in self._frames if i < k]:
            del self._frames[i]
            del self._times[i]


def _batches(frames: Iterable[np.ndarray], n: int | None, T: int, fps: float, audio: np.ndarray | None,
             batch: int, with_audio: bool, every: int = 1
             ) -> Iterator[tuple[list[Window], np.ndarray, np.ndarray, np.ndarray | None]]:
    """``(windows, frames U×H×W×3 uint8, index B×T into them, SoundNet inputs B×L or None)``
    in frame order. Consecutive windows share all but one frame, so a batch carries the
    T + B − 1 distinct frames once and the index that gathers each window from them.
    ``every`` > 1 keeps the windows of every ``every``-th frame and of the last frame."""
    buffer = _FrameBuffer(frames)
    exists = (lambda i: i < n) if n is not None else buffer.exists
    pending: list[Window] = []
    k = 0
    while True:
        more = exists(k)
        if more:
            if k % every == 0 or not exists(k + 1):
                pending.append(window(k, T, exists))
            k += 1
        if pending and (len(pending) == batch or not more):
            needed = sorted({i for w in pending for i in w.indices})
            pos = {i: j for j, i in enumerate(needed)}
            index = np.array([[pos[i] for i in w.indices] for w in pending], dtype=np.int64)
            sound = np.stack([w.audio(audio, fps, T, time=buffer.time) for w in pending]) if with_audio else None
            yield pending, np.stack(buffer.get(needed)), index, sound
            buffer.drop_before(pending[-1].frame - T + 2)  # the next window starts no earlier
            pending = []
        if not more:
            return


@torch.no_grad()
def predict_frames(model: AVRSP, frames: FrameSource | Iterable[np.ndarray], n: int | None, fps: float,
                   audio: np.ndarray | None, *, batch: int = 1, every: int = 1,
                   size: tuple[int, int] | None = None, streams: int | None = None
                   ) -> Iterator[tuple[int, np.ndarray]]:
    """``(k, map)`` for every frame k in order, each map float32 in (0, 1) at the model's
    H×W, or resized to ``size`` = (height, width) (bilinear, :func:`avrsp.media.resize_map`).

    ``every`` = K > 1 is the preview mode: the model runs on the windows of every K-th
    frame and of the last one, and the maps between are interpolated linearly
    (:func:`interpolate_between`). The exact protocol (K = 1) is what ``evaluate`` uses.
    Both resizing and interpolating are linear, so the preview resizes only the maps it
    computes and interpolates at ``size``.

    ``frames`` is a FrameSource (read at the model's size) or an iterable of RGB frames
    already at the model's size, or of (frame, timestamp) pairs, whose timestamps then
    place each window's sound (variable frame rate video); ``n`` may be None for a
    stream of unknown length.
    A background thread (:func:`prefetch`) decodes the frames and assembles each batch
    (its distinct frames, once, and the audio excerpts) while the model runs on the
    previous one; ``streams`` batches run through the model at once (:func:`in_streams`;
    None: :func:`default_streams`). Memory holds at most 2T + batch frames, two
    assembled batches and streams + 1 in the model, whatever the video's length.
    """
    check_every(every)
    computed = ((k, m) for k, m, _, _ in _maps(model, frames, n, fps, audio, batch, every, size, streams, False))
    yield from (interpolate_between(computed) if every > 1 else computed)


def check_every(every: int) -> None:
    """The preview's one check (``Predictor``, :func:`predict_frames`): K ≥ 1."""
    if every < 1:
        raise ConfigError(f"--every {every}: must be 1 (every frame) or more")


def _maps(model, frames, n, fps, audio, batch: int, every: int, size, streams: int | None, relevance: bool
          ) -> Iterator[tuple[int, np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """``(k, map, ret_a, ret_v)`` of every frame the model runs on (see :func:`predict_frames`)."""
    yield from raising(maps_of_videos(model, [(frames, n, fps, audio, size)], batch, every, streams, relevance))


def raising(tagged: Iterable[tuple[int, tuple | Exception]]) -> Iterator[tuple]:
    """The rows of :func:`maps_of_videos`' ``(v, row)`` pairs, a video's error raised where it comes."""
    for _, row in tagged:
        if isinstance(row, BaseException):
            raise row
        yield row


def maps_of_videos(model: AVRSP, videos: Iterable, batch: int = 1, every: int = 1, streams: int | None = None,
                   relevance: bool = False) -> Iterator[tuple[int, tuple | Exception]]:
    """``(v, (k, map, ret_a, ret_v))`` for every frame the model runs on, video after video,
    as :func:`predict_frames` (and with ``relevance``, :func:`predict_frames_with_relevance`)
    computes them; no interpolation. Each of ``videos`` is ``(frames, n, fps, audio, size)``
    as those take them, or an exception standing for a video that could not be opened;
    ``videos`` is read by the background thread, so a generator that opens each video
    lazily opens the next one while the model runs.

    The videos share one pipeline: the next video's frames are decoded and batched while
    this one's last batches run, so a list of short videos pays the pipeline's start and
    end once, not once per video (the first batch waiting for the file to be opened and
    its frames decoded; one stream idle while the other runs the last batch;
    docs/performance.md). A batch holds one video's windows only, so each video's maps
    are the ones it gets on its own. A video that fails (opening it, or its frames part-way)
    gives ``(v, error)`` after the rows it had, once; the next video follows."""
    cfg = model.config
    ravf = relevance and has_relevance(cfg)

    def batches():  # on the prefetch thread
        for v, video in enumerate(videos):
            if isinstance(video, BaseException):
                yield v, None, video
                continue
            try:
                frames, n, fps, audio, size = video
                stream = frames.stream((cfg.height, cfg.width)) if isinstance(frames, FrameSource) else frames
                for item in _batches(stream, n, cfg.frames, fps, audio, batch, cfg.audio, every):
                    yield v, size, item
            except Exception as e:  # this video's: raised where its rows are read
                yield v, None, e

    def run(tagged):  # on a stream's own thread, which resizes its maps too
        v, size, item = tagged
        if isinstance(item, BaseException):
            return v, [item]
        ws, unique, index, sound = item
        with torch.no_grad():  # grad mode is per thread
            clip, wave = model_inputs(model, unique, index, sound)
            if ravf:
                out, rel = model.forward_with_relevance(clip, wave)
                ret = [rel[-1][key].float().mean(dim=(1, 2, 3)).cpu().numpy() for key in ("ret_a", "ret_v")]
            else:
                out, ret = model(clip, wave), [[None] * len(ws)] * 2
            out = out.float().cpu().numpy()
        return v, [(w.frame, m if size is None else resize_map(m, size), a, r) for w, m, a, r in zip(ws, out, *ret)]

    items = prefetch(batches(), 2)
    for v, rows in in_streams(run, items, default_streams(model) if streams is None else streams):
        for row in rows:
            yield v, row


def interpolate_between(maps: Iterable[tuple[int, np.ndarray]]) -> Iterator[tuple[int, np.ndarray]]:
    """Every frame's map from the maps of some frames (in order, the first and last frame
    among them): frames between two computed ones get the linear blend of the two."""
    previous = None
    for k, m in maps:
        if previous is not None:
            k0, m0 = previous
            for j in range(k0 + 1, k):
                t = (j - k0) / (k - k0)
                yield j, ((1 - t) * m0 + t * m).astype(np.float32)
        yield k, m
        previous = (k, m)


@torch.no_grad()
def predict_frames_with_relevance(model: AVRSP, frames: FrameSource | Iterable[np.ndarray], n: int | None,
                                  fps: float, audio: np.ndarray | None, *, batch: int = 1,
                                  size: tuple[int, int] | None = None, streams: int | None = None
                                  ) -> Iterator[tuple[int, np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """:func:`predict_frames`, plus RAVF's Ret_A and Ret_V of each frame's window (Fig. 6):
    ``(k, map, ret_a, ret_v)``, the Ret maps of the last RAVF block averaged over heads,
    audio tokens and time, float32 on X⁰'s H×W grid; None for models without RAVF.
    ``size`` resizes the maps (not the Ret maps) and ``streams`` is as there."""
    yield from _maps(model, frames, n, fps, audio, batch, 1, size, streams, True)


def model_inputs(model: AVRSP, unique: np.ndarray, index: np.ndarray,
                 sound: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The model's (clip, audio) for a batch: ``unique`` U×H×W×3 uint8 frames at the
    model's size, ``index`` B×T into them, ``sound`` B×L SoundNet inputs or None.

    Every inference path goes through here, so the same frames give the same maps in
    any precision: pixels are scaled to [-1, 1] in float32 and then cast once to the
    model's dtype, in the memory layout its convolutions are stored in. The waveform
    stays float32; the model casts it to its SoundNet's dtype."""
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    x = torch.from_numpy(unique).to(device).float().div_(127.5).sub_(1.0).to(dtype)   # U×H×W×3
    # B×T×H×W×3 permuted to B×3×T×H×W is channels-last in memory already.
    clip = x[torch.from_numpy(index).to(device)].permute(0, 4, 1, 2, 3)
    layout = torch.channels_last_3d if uses_channels_last(model) else torch.contiguous_format
    wave = torch.from_numpy(sound)[:, None].to(device, torch.float32) if sound is not None else None
    return clip.contiguous(memory_format=layout), wave
