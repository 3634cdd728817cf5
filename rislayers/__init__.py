"""rislayers: plug-in layers for referring image segmentation.

Standalone :class:`torch.nn.Module` s from three papers (SADLR, ASDA, S2RM), with the
shape checks, pooling helpers, losses and metrics they share. Depends on torch and einops
only.
"""

from . import functional, losses, metrics, norms
from .aggregator import PublishedScaleWiseAggregator, ScaleWiseAggregator
from .aligner import (
    AlignerOutput,
    DualBranchAligner,
    PublishedDualBranchAligner,
    PublishedSingleBranchAligner,
    PublishedVisualOnlyAligner,
    SingleBranchAligner,
    VisualOnlyAligner,
)
from .casg import CASGDecoder, CASGStage
from .concat_fusion import ConcatProjectFusion
from .coparser import SpatialRecurrentCoparser
from .fpn import FPNDecoder
from .losses import DeepSupervisionLoss, dice_loss, sigmoid_focal_loss
from .metrics import GRESMetrics, RISMetrics
from .pixel_word import LanguageGate, PixelWordAttention
from .refiner import DynamicQueryRefiner, RefinerOutput
from .selector import AdaptiveLayerSelector, SelectionOutput
from .shapes import PaddingMaskWarning, ShapeError, check_shape, set_shape_checks
from .tile_concat import TileConcatFusion

__version__ = "0.1.0"

__all__ = [
    "DynamicQueryRefiner",
    "RefinerOutput",
    "PixelWordAttention",
    "LanguageGate",
    "AdaptiveLayerSelector",
    "SelectionOutput",
    "ScaleWiseAggregator",
    "PublishedScaleWiseAggregator",
    "DualBranchAligner",
    "PublishedDualBranchAligner",
    "SingleBranchAligner",
    "PublishedSingleBranchAligner",
    "VisualOnlyAligner",
    "PublishedVisualOnlyAligner",
    "AlignerOutput",
    "ConcatProjectFusion",
    "SpatialRecurrentCoparser",
    "CASGStage",
    "CASGDecoder",
    "TileConcatFusion",
    "FPNDecoder",
    "ShapeError",
    "PaddingMaskWarning",
    "check_shape",
    "set_shape_checks",
    "functional",
    "norms",
    "losses",
    "metrics",
    "dice_loss",
    "sigmoid_focal_loss",
    "DeepSupervisionLoss",
    "RISMetrics",
    "GRESMetrics",
]
