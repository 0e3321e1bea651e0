from .avrsp import AVRSP, AVRSPConfig, PAIR_LEVELS, to_channels_last_3d
from .fusion import FUSIONS
from .registry import create_model, get_config, list_models, load_model_config, register_model

__all__ = ["AVRSP", "AVRSPConfig", "FUSIONS", "PAIR_LEVELS", "create_model", "get_config", "list_models",
           "load_model_config", "register_model", "to_channels_last_3d"]
