"""Image and text encoders of the reference models: timm Swin, open_clip ViT/text, HF BERT.

Every encoder builds offline from a config and loads weights only from local files.
"""

from .bert import BertTextEncoder
from .clip import ClipTextEncoder, ClipVisionEncoder
from .swin import SwinEncoder
from .text import TextFeatures

__all__ = ["SwinEncoder", "ClipVisionEncoder", "ClipTextEncoder", "BertTextEncoder", "TextFeatures"]
