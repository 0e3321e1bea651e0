"""Import the community's pretrained backbone weights (docs/datasets.md), and export ours.

Supported files:

| kind | layout | keys |
|---|---|---|
| s3d | ``S3D_kinetics400.pt`` (TASED-Net, ViNet) | ``base.<i>.…`` + ``fc.0.*``, maybe under ``module.`` |
| s3d | torchvision ``s3d`` | ``features.<i>.…`` (nested Sequentials) + ``classifier.1.*`` |
| soundnet | ``soundnet8_final.pth`` | ``conv{1..7}.*``, ``batchnorm{1..7}.*`` (+ unused ``conv8_*``), kernels (K, 1) |
| soundnet | STAViS ``soundnet8.pth`` | an ``nn.Sequential``: ``<index>.*``, kernels (1, K) |

Files are read without executing code: safetensors, or ``torch.load(weights_only=True)``;
a pickle that needs more than tensors is refused. The result is a state dict in our
layout (``S3DBackbone`` / ``SoundNet8``), checked key by key and shape by shape, with
the input normalisation it expects recorded in the file's metadata.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import warnings
from pathlib import Path

import torch

from .checkpoint import atomic_write, describe_mismatch

#: Input conventions of the S3D sources (docs/datasets.md): the model always receives RGB in
#: [-1, 1] and converts to what its backbone was trained with (AVRSPConfig.visual_norm).
NORMALIZATION = {
    "minus_one_one": {"description": "RGB scaled to [-1, 1] (S3D_kinetics400.pt)"},
    "kinetics_mean_std": {"description": "torchvision's Kinetics-400 mean/std on RGB in [0, 1]",
                          "mean": [0.43216, 0.394666, 0.37645], "std": [0.22803, 0.22145, 0.216989]},
}


class WeightsError(Exception):
    """A weight file that cannot be imported; the message names the file and the cause."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a weight file, without running any code from it."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:
            raise WeightsError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        text = str(e)
        if "weights_only" in text or "Unsupported global" in text or "WeightsUnpickler" in text:
            raise WeightsError(f"{path}: refused: the file needs to run pickled code to load (only plain tensors "
                               f"are read); convert it to a plain state dict or safetensors where you trust it") \
                from None
        raise WeightsError(f"{path}: not a PyTorch weight file ({text.splitlines()[0] if text else type(e).__name__})") \
            from None
    for key in ("state_dict", "model", "model_state_dict"):  # common wrappers around the state dict
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    return dict(obj)


# ------------------------------------------------------------------ S3D

_SEP = {"0.0": "conv_s", "0.1": "bn_s", "1.0": "conv_t", "1.1": "bn_t"}   # TemporalSeparableConv
_BASIC = {"0": "conv", "1": "bn"}                                        # Conv3dNormActivation


def _tv_s3d_key(key: str) -> str | None:
    """torchvision ``features.…`` key → our ``base.…`` key (None for the classifier)."""
    if not key.startswith("features."):
        return None
    _, index, rest = key.split(".", 2)
    m = re.fullmatch(r"(\d\.\d)\.(.+)", rest)
    if m and m.group(1) in _SEP:                                     # TemporalSeparableConv at 0, 3
        return f"base.{index}.{_SEP[m.group(1)]}.{m.group(2)}"
    m = re.fullmatch(r"([01])\.(.+)", rest)
    if m:                                                            # Conv3dNormActivation at 2
        return f"base.{index}.{_BASIC[m.group(1)]}.{m.group(2)}"
    m = re.fullmatch(r"branch0\.([01])\.(.+)", rest)
    if m:
        return f"base.{index}.branch0.0.{_BASIC[m.group(1)]}.{m.group(2)}"
    m = re.fullmatch(r"branch([12])\.0\.([01])\.(.+)", rest)
    if m:
        return f"base.{index}.branch{m.group(1)}.0.{_BASIC[m.group(2)]}.{m.group(3)}"
    m = re.fullmatch(r"branch([12])\.1\.(\d\.\d)\.(.+)", rest)
    if m and m.group(2) in _SEP:
        return f"base.{index}.branch{m.group(1)}.1.{_SEP[m.group(2)]}.{m.group(3)}"
    m = re.fullmatch(r"branch3\.1\.([01])\.(.+)", rest)
    if m:
        return f"base.{index}.branch3.1.{_BASIC[m.group(1)]}.{m.group(2)}"
    raise WeightsError(f"unexpected torchvision S3D key '{key}'")


def convert_s3d(sd: dict[str, torch.Tensor], path: str = "file") -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """(our state dict, layout name, dropped keys)."""
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    if any(k.startswith("base.") for k in sd):
        ours = {k: v for k, v in sd.items() if k.startswith("base.")}
        return ours, "S3D_kinetics400.pt", sorted(k for k in sd if not k.startswith("base."))
    if any(k.startswith("features.") for k in sd):
        ours, dropped = {}, []
        for k, v in sd.items():
            new = _tv_s3d_key(k)
            if new is None:
                dropped.append(k)
            else:
                ours[new] = v
        return ours, "torchvision s3d", sorted(dropped)
    raise WeightsError(f"{path}: not an S3D weight file (no 'base.*' or 'features.*' keys; it has e.g. "
                       f"{', '.join(list(sd)[:3])})")


# ------------------------------------------------------------------ SoundNet8

def convert_soundnet(sd: dict[str, torch.Tensor], path: str = "file") -> tuple[dict[str, torch.Tensor], str, list[str]]:
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    if "conv1.weight" in sd:
        keep = re.compile(r"(conv[1-7]|batchnorm[1-7])\.")
        ours = {k: v for k, v in sd.items() if keep.match(k)}
        return ours, "soundnet8_final.pth", sorted(k for k in sd if not keep.match(k))
    indexed = {}
    for k, v in sd.items():
        m = re.fullmatch(r"(\d+)\.(.+)", k)
        if not m:
            break
        indexed.setdefault(int(m.group(1)), {})[m.group(2)] = v
    else:
        # An nn.Sequential: the i-th 4-D weight is conv i, the BatchNorm after it batchnorm i.
        ours, conv = {}, 0
        for index in sorted(indexed):
            params = indexed[index]
            if "weight" in params and params["weight"].dim() == 4:
                conv += 1
                for name, v in params.items():
                    ours[f"conv{conv}.{name}"] = v.transpose(2, 3).contiguous() if name == "weight" else v
            elif "running_mean" in params and conv:
                for name, v in params.items():
                    ours[f"batchnorm{conv}.{name}"] = v
        if conv:
            return ours, "STAViS soundnet8.pth", []
    raise WeightsError(f"{path}: not a SoundNet8 weight file (no 'conv1.weight' and not an nn.Sequential of convs; "
                       f"it has e.g. {', '.join(list(sd)[:3])})")


# ------------------------------------------------------------------ checking and writing

def check_against(ours: dict[str, torch.Tensor], module: torch.nn.Module, path: str) -> None:
    """Every tensor the backbone has, of the right shape, and nothing else."""
    mismatch = describe_mismatch(ours, module.state_dict())
    if mismatch:
        raise WeightsError(f"{path}: does not fit the published backbone: {mismatch}")


def import_weights(kind: str, path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict in our layout, metadata) for ``kind`` = s3d or soundnet."""
    from .models.s3d import S3DBackbone
    from .models.soundnet import SoundNet8

    sd = read_state_dict(path)
    if kind == "s3d":
        ours, layout, dropped = convert_s3d(sd, str(path))
        with torch.device("meta"):
            check_against(ours, S3DBackbone(), str(path))
        norm = "kinetics_mean_std" if layout == "torchvision s3d" else "minus_one_one"
    elif kind == "soundnet":
        ours, layout, dropped = convert_soundnet(sd, str(path))
        with torch.device("meta"):
            check_against(ours, SoundNet8(), str(path))
        norm = "soundnet_22050_pm256"
    else:
        raise WeightsError(f"unknown kind '{kind}' (s3d, soundnet)")
    meta = {"kind": kind, "layout": layout, "source": Path(path).name, "normalization": norm,
            "dropped": dropped}
    return {k: v.float().contiguous() for k, v in ours.items()}, meta


def save_imported(path: str | Path, state: dict[str, torch.Tensor], meta: dict) -> None:
    from safetensors.torch import save_file

    atomic_write(Path(path), lambda tmp: save_file(state, str(tmp), metadata={"avrsp_import": json.dumps(meta)}))


def imported_metadata(path: str | Path) -> dict:
    """The metadata ``avrsp weights import`` stored, or {} for other files."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {}).get("avrsp_import", "{}"))
    except Exception:
        return {}


# ------------------------------------------------------------------ export

class _Exportable(torch.nn.Module):
    """Two positional inputs, one output: what ONNX and torch.export expect."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, clip, audio=None):
        return self.model(clip, audio)


def example_inputs(model, batch: int = 1) -> tuple[torch.Tensor, ...]:
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(batch, 3, cfg.frames, cfg.height, cfg.width, generator=g) * 2 - 1
    if not cfg.audio:
        return (clip,)
    return clip, torch.randn(batch, 1, cfg.audio_samples, generator=g) * 50


#: The lowest ONNX opset PyTorch's exporter writes. Asking it for less makes it convert
#: the graph down, which fails for this model (a traceback, then opset 18 anyway).
ONNX_MIN_OPSET = 18


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter logs and warns about things that are not ours (torchvision's missing
    operators, deprecations inside torch); the user sees our one-line summary instead."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch._export", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def onnx_opset(path: str | Path) -> int:
    """The default-domain opset an ONNX file declares."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


#: ONNX keeps a model in one protobuf only below 2 GB; larger weights go to a data file.
ONNX_INLINE_LIMIT = 1.8e9


def export_onnx(model, path: str | Path, opset: int = ONNX_MIN_OPSET) -> dict:
    """Export ``model`` (batch 1 at its configured window) to ONNX at ``opset`` (≥ 18) and
    check ONNX Runtime against PyTorch on a random window; returns {"max_abs_diff",
    "inputs", "opset", "files"}, the opset read back from the written file and the files
    written.

    The weights go inside the ``.onnx`` file, so that it can be copied alone; only a model
    too large for one protobuf (2 GB) gets its weights in ``<path>.data`` beside it, the
    name ONNX Runtime looks for. Both are written under their final names in a temporary
    folder beside ``path`` and moved into place, the data file first."""
    import shutil
    import tempfile

    import numpy as np
    import onnxruntime as ort

    if opset < ONNX_MIN_OPSET:
        raise WeightsError(f"--opset {opset}: PyTorch's ONNX exporter writes opset {ONNX_MIN_OPSET} or newer")
    model = model.eval()
    inputs = example_inputs(model)
    names = ["clip", "audio"][:len(inputs)]
    path = Path(path)
    inline = sum(t.numel() * t.element_size() for t in model.state_dict().values()) < ONNX_INLINE_LIMIT
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        with _quiet_exporter():
            torch.onnx.export(_Exportable(model).eval(), inputs, str(Path(tmp) / path.name), opset_version=opset,
                              dynamo=True, external_data=not inline, input_names=names, output_names=["saliency"],
                              verbose=False)
        written = sorted(Path(tmp).iterdir(), key=lambda f: f.name == path.name)  # the .onnx last
        for f in written:
            shutil.move(str(f), path.parent / f.name)
    files = [path.parent / f.name for f in written]
    with torch.no_grad():
        ref = model(*inputs).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0]
    return {"max_abs_diff": float(np.abs(out - ref).max()), "inputs": names, "opset": onnx_opset(path),
            "files": files}


def export_torch(model, path: str | Path) -> dict:
    """``torch.export`` program (batch 1 at the configured window), saved as .pt2."""
    model = model.eval()
    inputs = example_inputs(model)
    with _quiet_exporter():
        program = torch.export.export(_Exportable(model).eval(), inputs)
    atomic_write(Path(path), lambda tmp: torch.export.save(program, str(tmp)))
    with torch.no_grad():
        diff = (torch.export.load(str(path)).module()(*inputs) - model(*inputs)).abs().max().item()
    return {"max_abs_diff": diff}
