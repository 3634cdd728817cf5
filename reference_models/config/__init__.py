"""The model configuration, composed of one small frozen config per part.

:class:`ModelConfig` is the core every model reads; :class:`LavtConfig`, :class:`VltConfig`,
:class:`LtsConfig`, :class:`S2rmConfig` and :class:`AsdaConfig` add each architecture's
parts. ``ModelConfig.create(architecture, **options)`` and ``config.replace(**options)``
take the flat names of before (``refiner_iters=2``), dotted names (``refiner.iters=2``) and
slot choices (``head=sadlr``).
"""

from __future__ import annotations

from .baselines import (
    AdaptiveSelectorConfig, AlignerConfig, AsdaLossConfig, CasgConfig, ConcatFusionConfig, CoparserConfig,
    FixedLayersConfig, FpnConfig, LavtDecoderConfig, LocateConfig, OwnDecoderConfig, PwamFusionConfig, PwamNeckConfig,
    QueryTransformerConfig, ScaleWiseConfig, TileConcatConfig, TopLayerConfig,
)
from .flat import LEGACY_DEFAULTS, from_flat, parse_overrides, to_flat
from .model import ARCHITECTURES, CONFIG_CLASSES, AsdaConfig, LavtConfig, LtsConfig, ModelConfig, S2rmConfig, VltConfig
from .parts import (
    BertConfig, ClassifierHeadConfig, ClipTextConfig, ClipVisionConfig, PartConfig, RefinerHeadConfig, SwinConfig,
)

__all__ = [
    "ModelConfig", "LavtConfig", "VltConfig", "LtsConfig", "S2rmConfig", "AsdaConfig", "CONFIG_CLASSES", "ARCHITECTURES",
    "PartConfig", "SwinConfig", "ClipVisionConfig", "BertConfig", "ClipTextConfig", "ClassifierHeadConfig",
    "RefinerHeadConfig", "PwamFusionConfig", "LavtDecoderConfig", "OwnDecoderConfig", "QueryTransformerConfig",
    "LocateConfig", "CoparserConfig", "TileConcatConfig", "PwamNeckConfig", "CasgConfig", "FpnConfig",
    "AdaptiveSelectorConfig", "FixedLayersConfig", "TopLayerConfig", "ScaleWiseConfig", "ConcatFusionConfig",
    "AlignerConfig", "AsdaLossConfig", "parse_overrides", "from_flat", "to_flat", "LEGACY_DEFAULTS",
]
