"""reference_models: the papers' full systems built from rislayers, with data and tools.

Build any registered system by name::

    from reference_models import build_model, list_models
    model = build_model("lavt_sadlr_tiny")
"""

from .base import RISModel, SegmentationOutput
from .config import ModelConfig
from .registry import build_model, get_config, list_models

__all__ = ["RISModel", "SegmentationOutput", "ModelConfig", "build_model", "get_config", "list_models"]
