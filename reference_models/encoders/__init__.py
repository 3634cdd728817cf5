"""Image and text encoders of the reference models: timm Swin, open_clip ViT/text, HF BERT.

Every encoder builds offline from a config and loads weights only from local files, and
states its contract: a vision encoder its ``out_channels``, ``strides``, ``pixel_mean`` and
``pixel_std`` (read through :func:`pixel_statistics`), a text encoder its ``out_dim`` (word
features) and ``sentence_dim``.
"""

from .bert import BertTextEncoder
from .clip import ClipTextEncoder, ClipVisionEncoder
from .pixels import pixel_statistics
from .swin import SwinEncoder
from .text import TextFeatures

__all__ = ["SwinEncoder", "ClipVisionEncoder", "ClipTextEncoder", "BertTextEncoder", "TextFeatures", "pixel_statistics"]
