"""Sliding-window inference: one T-frame window per frame, step 1, the prediction for the
window's last frame (the windows themselves: ``avrsp.windows``); the inference graph
(:func:`prepare`, :class:`GraphedForward`) and the model's inputs for a batch of windows.
Where and how it runs (device, precision, batch, streams, threads): ``avrsp.runtime``.
"""

from __future__ import annotations

import threading
import warnings
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from .config import ConfigError
from .data.datasets import FrameSource
from .media import resize_map
from .models import AVRSP, has_relevance, to_channels_last_3d
from .models.neck import memory_format
from .runtime import default_streams, in_streams, prefetch, resolve_device, resolve_precision
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


def prepare(model: AVRSP, device: str | torch.device = "cpu", precision: str = "auto", *,
            fold: bool = True, graphs: bool | None = None) -> AVRSP:
    """The inference graph of ``model``, on ``device`` in eval mode; ``model`` itself is not
    changed. Every BatchNorm is folded into the convolution before it (``fold``,
    models/fold.py: exact in float32); ``bf16`` then casts every weight to bfloat16
    (``auto`` picks it where the hardware has it), all but SoundNet's, which stays float32
    as its waveform does. On the CPU, 3-D convolution weights are
    stored channels-last, and :func:`predict_frames` then feeds channels-last clips: the
    faster layout there, and the slower one on an H200 (docs/performance.md); and each
    ReLU that follows a 3-D convolution is computed inside it (``fold`` too,
    :func:`avrsp.models.fold.fuse_relu`: the same values), and S3D's stride-1 max pooling
    one axis at a time (:class:`avrsp.models.fold.SeparableMaxPool3d`: the same values,
    bit for bit). On CUDA, ``graphs=True`` replays the forward pass from CUDA graphs
    (:class:`GraphedForward`); off by default until a run on a GPU has checked real
    captures (docs/predict.md). ``fold=False`` gives the plain graph, for
    comparison. Not for training: the folded model has no BatchNorm left to train."""
    import copy

    from .models.fold import fold_batchnorm, fuse_relu, separate_max_pools

    device = resolve_device(str(device))
    precision = resolve_precision(precision, device)
    kind = torch.device(device).type
    if graphs and kind != "cuda":
        raise ConfigError(f"CUDA graphs need a CUDA device, not '{device}'")
    model = copy.deepcopy(model).eval()
    if fold:
        fold_batchnorm(model)
    model = model.to(device)
    if precision == "bf16":
        # SoundNet and its waveform stay float32, weights unrounded: in bf16 they moved a
        # faint map to CC 0.985 against fp32, and float32 costs 0.2 % of the paper-size
        # window (docs/performance.md, bf16 accuracy).
        for name, part in model.named_children():
            if name != "audio_net":
                part.to(torch.bfloat16)
    if kind != "cpu":
        if kind == "cuda" and graphs:
            model.forward = GraphedForward(model.forward)  # the instance's: a model's type and attributes stay
        return model
    model = to_channels_last_3d(model)
    if fold:
        fuse_relu(model)
        separate_max_pools(model)
    return model


class GraphedForward:
    """A model's ``forward(clip, audio)`` replayed from CUDA graphs, :func:`prepare`'s
    default on CUDA. The first call with a new input shape (all but the batch) runs the
    forward pass eagerly on a copy of its inputs, captures it as a graph with those
    copies as its inputs, and replays it; later calls of that shape copy their inputs
    into the graph's, replay it and return a copy of its output. A smaller batch (a
    video's last) is padded into the captured one, whose windows the model computes
    independently in eval mode, so its maps are the same; a larger one is captured anew
    and replaces it. Calls with gradients on run eagerly, and so does
    ``forward_with_relevance``, which does not go through ``forward``. Calls from several threads (``--streams`` > 1 on
    CUDA) take turns: a graph has one set of inputs and outputs.

    Why: the H200 ran the paper-size network at 5 % of its bf16 peak, launches dominating
    at small batches (docs/performance.md); a replay launches every kernel of the pass
    without Python between them. Each capture is checked against the eager pass on the
    same inputs; one that fails or disagrees is reported once (RuntimeWarning) and that
    shape then runs eagerly.

    ``capture(fn, inputs) → (replay, output, expected)`` records ``fn(*inputs)``:
    :func:`_capture_cuda` on a GPU; tests pass a stand-in that runs on the CPU."""

    def __init__(self, forward: Callable, capture: Callable | None = None):
        self.eager = forward
        self.capture = capture or _capture_cuda
        self.graphs: dict[tuple, tuple] = {}  # shape key → (batch, inputs, replay, output)
        self.refused: set[tuple] = set()
        self.lock = threading.Lock()

    def __call__(self, clip: torch.Tensor, audio: torch.Tensor | None = None):
        if torch.is_grad_enabled():
            return self.eager(clip, audio)
        with self.lock:
            return self._replayed(clip, audio)

    def _replayed(self, clip: torch.Tensor, audio: torch.Tensor | None) -> torch.Tensor:
        key = (tuple(clip.shape[1:]), clip.dtype, clip.device,
               None if audio is None else (tuple(audio.shape[1:]), audio.dtype))
        if key in self.refused:
            return self.eager(clip, audio)
        b = clip.shape[0]
        entry = self.graphs.get(key)
        if entry is None or entry[0] < b:
            inputs = [clip.clone(memory_format=torch.preserve_format)]
            if audio is not None:
                inputs.append(audio.clone(memory_format=torch.preserve_format))
            try:
                replay, out, expected = self.capture(self.eager, inputs)
                replay()
                if not torch.allclose(out.float(), expected.float(), rtol=0.0, atol=1e-3):
                    raise RuntimeError("its replay disagrees with the eager forward pass")
            except RuntimeError as e:
                warnings.warn(f"CUDA graph of the forward pass for inputs {tuple(clip.shape)}: "
                              f"{str(e).splitlines()[0]}; running that shape eagerly", RuntimeWarning, stacklevel=3)
                self.refused.add(key)
                self.graphs.pop(key, None)
                return self.eager(clip, audio)
            entry = self.graphs[key] = (b, inputs, replay, out)
            return out.clone()
        _, inputs, replay, out = entry
        inputs[0][:b].copy_(clip)
        if audio is not None:
            inputs[1][:b].copy_(audio)
        replay()
        return out[:b].clone()


def _capture_cuda(fn: Callable, inputs: list[torch.Tensor]):
    """``fn(*inputs)`` captured as a CUDA graph: (replay, its output, the eager output).
    Warm-up and capture run on one side stream (libraries set up their handles on the
    stream they are first used on, which must not happen during a capture); the
    capture only forbids CUDA calls that would break it from this thread, since the
    decoding threads never call CUDA."""
    stream = torch.cuda.Stream(device=inputs[0].device)
    stream.wait_stream(torch.cuda.current_stream(inputs[0].device))
    with torch.cuda.stream(stream):
        for _ in range(2):
            expected = fn(*inputs)
    torch.cuda.current_stream(inputs[0].device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
        out = fn(*inputs)
    return graph.replay, out, expected


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


def uses_channels_last(model: torch.nn.Module) -> bool:
    """Whether ``model``'s 3-D convolutions are stored channels-last (see :func:`prepare`)."""
    conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv3d)), None)
    return conv is not None and memory_format(conv.weight) == torch.channels_last_3d


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
    if every < 1:
        raise ValueError(f"every must be ≥ 1, got {every}")
    computed = ((k, m) for k, m, _, _ in _maps(model, frames, n, fps, audio, batch, every, size, streams, False))
    yield from (interpolate_between(computed) if every > 1 else computed)


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
