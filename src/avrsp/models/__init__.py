from .avrsp import AVRSP, AVRSPConfig, PAIR_LEVELS, has_relevance, to_channels_last_3d
from .fusion import FUSIONS, register_fusion
from .registry import create_model, get_config, list_models, load_model_config, register_model

__all__ = ["AVRSP", "AVRSPConfig", "FUSIONS", "PAIR_LEVELS", "create_model", "get_config", "has_relevance",
           "list_models", "load_model_config", "register_fusion", "register_model", "to_channels_last_3d"]
