"""The inference graph: :func:`prepare` turns a model into the one that predicts (eval mode,
BatchNorm folded, the precision's weights, the device's layout, fused operators), and
:class:`GraphedForward` replays its forward pass from CUDA graphs. The windows it runs on:
:mod:`avrsp.inference`."""

from __future__ import annotations

import threading
import warnings
from typing import Callable

import torch

from .config import ConfigError
from .models import AVRSP, to_channels_last_3d
from .models.neck import memory_format
from .runtime import resolve_device, resolve_precision


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
        # SoundNet and its waveform stay float32, weights unrounded: in bf16 they move faint
        # maps visibly, and a float32 SoundNet is a small share of the window's work
        # (docs/performance.md, bf16 accuracy).
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

    Why: at small batches kernel launches, not arithmetic, bound a GPU's pass
    (docs/performance.md); a replay launches every kernel of the pass
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


def uses_channels_last(model: torch.nn.Module) -> bool:
    """Whether ``model``'s 3-D convolutions are stored channels-last (see :func:`prepare`)."""
    conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv3d)), None)
    return conv is not None and memory_format(conv.weight) == torch.channels_last_3d
