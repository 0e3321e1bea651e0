"""avrsp: relevance-guided audio-visual video saliency prediction (AVRSP).

    >>> import avrsp
    >>> model = avrsp.create_model("avrsp")            # Ours(AV); "avrsp_v" is Ours(V)
    >>> saliency = model(clip, audio)                  # B×3×T×H×W, B×1×L → B×H×W
    >>> maps = avrsp.Predictor().predict_video("clip.mp4")   # any video, lazily
"""

from .config import ConfigError
from .loss import SaliencyLoss
from .models import AVRSP, AVRSPConfig, create_model, get_config, list_models, load_model_config, register_model

__version__ = "0.1.0"

__all__ = ["AVRSP", "AVRSPConfig", "ConfigError", "Predictor", "Runtime", "SaliencyLoss", "create_model",
           "get_config", "list_models", "load_model_config", "register_model", "__version__"]


def __getattr__(name: str):
    # Predictor pulls in PyAV and Pillow; import it only when asked for.
    if name == "Predictor":
        from .predict import Predictor

        return Predictor
    if name == "Runtime":
        from .runtime import Runtime

        return Runtime
    raise AttributeError(f"module 'avrsp' has no attribute {name!r}")
