"""Model registry in the style of timm: ``register_model``, ``list_models``, ``create_model``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..config import ConfigError, read_yaml, replace
from .avrsp import AVRSP, AVRSPConfig

_REGISTRY: dict[str, Callable[[], AVRSPConfig]] = {}


def register_model(fn: Callable[[], AVRSPConfig]) -> Callable[[], AVRSPConfig]:
    """Register a function returning a config under the function's name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_config(name: str, **overrides: Any) -> AVRSPConfig:
    """The named config with ``overrides`` applied (keys and types checked)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model '{name}' (known: {', '.join(list_models())})")
    return replace(_REGISTRY[name](), overrides, where=f"model '{name}'")


def load_model_config(path: str | Path, **overrides: Any) -> AVRSPConfig:
    """A model config from YAML: ``model: <registered name>`` plus any field overrides."""
    data = read_yaml(path)
    name = data.pop("model", None)
    if not isinstance(name, str):
        raise ConfigError(f"{path}: needs 'model: <name>' with one of {', '.join(list_models())}")
    if name not in _REGISTRY:
        raise ConfigError(f"{path}: unknown model '{name}' (known: {', '.join(list_models())})")
    cfg = replace(_REGISTRY[name](), data, where=str(path))
    return replace(cfg, overrides, where="overrides")


def create_model(name: str | AVRSPConfig, **overrides: Any) -> AVRSP:
    """Build a network from a registered name (or a config), e.g.
    ``create_model("avrsp", fusion="bilinear")``."""
    cfg = name if isinstance(name, AVRSPConfig) else get_config(name)
    cfg = replace(cfg, overrides, where=f"model '{cfg.name}'") if overrides else cfg
    return AVRSP(cfg)


@register_model
def avrsp() -> AVRSPConfig:
    """The paper's audio-visual model, "Ours(AV)" of Tables I–II."""
    return AVRSPConfig(name="avrsp")


@register_model
def avrsp_v() -> AVRSPConfig:
    """The paper's visual-only model, "Ours(V)" of Tables I–II (stage-1 network)."""
    return AVRSPConfig(name="avrsp_v", audio=False)


@register_model
def avrsp_tiny() -> AVRSPConfig:
    """Same structure, ~1/4 S3D/SoundNet widths, 8 frames at 64×96: tests and CPU demos."""
    return AVRSPConfig(name="avrsp_tiny", frames=8, height=64, width=96, dims=(32, 16, 16, 8), heads=4,
                       fusion_layers=1, mlp_ratio=2, s3d_width=0.25, soundnet_width=0.25,
                       backbone_bn_momentum=0.1)
