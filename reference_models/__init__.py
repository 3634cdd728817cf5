"""reference_models: the papers' full systems built from rislayers, with data and tools.

Build any registered system by name::

    from reference_models import build_model, list_models
    model = build_model("lavt_sadlr_tiny")

and plug a part of your own into it by name (:func:`register_part`)::

    model = build_model("lavt_tiny", neck="my_neck")
"""


def _require_models_extra() -> None:
    # The wheel ships reference_models beside rislayers, but only rislayers' torch and einops
    # are base requirements: without the extra, say which to install instead of failing deep
    # inside the first missing import. find_spec looks the packages up without importing them.
    from importlib.util import find_spec

    needed = {"torchvision": "torchvision", "timm": "timm", "open_clip": "open_clip_torch", "transformers": "transformers",
              "safetensors": "safetensors", "PIL": "pillow", "tqdm": "tqdm", "numpy": "numpy", "matplotlib": "matplotlib"}
    missing = []
    for module, distribution in needed.items():
        try:
            found = find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(distribution)
    if missing:
        raise ImportError(
            f"reference_models needs the 'models' extra (missing: {', '.join(missing)}): "
            'pip install "rislayers[models]" (from a clone of the repository: pip install ".[models]")'
        )


_require_models_extra()

from .base import RISModel, SegmentationOutput
from .config import ModelConfig, PartConfig
from .registry import build_model, get_config, list_models, register_part, unregister_part
from .segmenter import Segmenter

__all__ = [
    "RISModel", "SegmentationOutput", "ModelConfig", "PartConfig", "build_model", "get_config", "list_models",
    "register_part", "unregister_part", "Segmenter",
]
