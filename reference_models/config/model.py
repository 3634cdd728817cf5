"""The composed model configuration: a small core and one part config per slot.

:class:`ModelConfig` holds what every model reads (its name, image size, norm, vision and
text encoders, and its head); one subclass per architecture adds the slots of its own parts
(:class:`LavtConfig`'s ``fusion`` and ``decoder``, :class:`AsdaConfig`'s ``selector``,
``aggregator``, ``aligner`` and ``loss`` ...). ``config.json`` shows that nesting, and loading
dispatches on ``architecture`` and on each part's ``kind``, as Hugging Face's configs do on
``model_type``. Flat names of before (``refiner_iters``) are read by :mod:`.flat`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from . import checks
from .baselines import (
    AdaptiveSelectorConfig, AlignerConfig, AsdaLossConfig, CasgConfig, ConcatFusionConfig, CoparserConfig,
    FixedLayersConfig, FpnConfig, LavtDecoderConfig, LocateConfig, OwnDecoderConfig, PwamFusionConfig, PwamNeckConfig,
    QueryTransformerConfig, ScaleWiseConfig, TileConcatConfig, TopLayerConfig,
)
from .parts import (
    BertConfig, ClassifierHeadConfig, ClipTextConfig, ClipVisionConfig, PartConfig, RefinerHeadConfig, SwinConfig,
    TEXT_PARTS, VISION_PARTS,
)

__all__ = [
    "ModelConfig", "LavtConfig", "VltConfig", "LtsConfig", "S2rmConfig", "AsdaConfig", "CONFIG_CLASSES", "ARCHITECTURES",
    "unknown_kind_hint",
]

#: The deepest nesting a ``config.json`` may have (the core, a part, a list of layer ranges).
MAX_DEPTH = 4
#: What a kind no slot knows may be, a part of the user's own whose module is not imported.
UNKNOWN_KIND_HINT = "if it is a part of your own, import the module that registers it first (--import MODULE)"

# Parts of the users' own, by (architecture, slot): reference_models.register_part adds them
# (all_slots appends them to the slot's options).
_USER_PARTS: dict[tuple[str, str], tuple[type[PartConfig], ...]] = {}


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """What every reference model reads; a subclass per architecture adds its parts.

    Build one by name with :func:`~reference_models.build_model` or from flat or dotted
    options with :meth:`create`; change one with :meth:`replace`.

    Args:
        name: the registry name it was built from.
        image_size: square input size in pixels.
        norm: the convolution norm of every part: ``"batch"`` (the papers) or ``"group"``
            (per-sample statistics: tiny per-GPU batches, exact DDP parity on the CPU).
        vision: the image encoder (:class:`~reference_models.config.SwinConfig` or
            :class:`~reference_models.config.ClipVisionConfig`).
        text: the text encoder and its tokenizer (:class:`~reference_models.config.BertConfig`
            or :class:`~reference_models.config.ClipTextConfig`).
        head: what turns the decoded map into logits (the 1x1 classifier, SADLR's refiner, or
            None where the decoder predicts itself).

    Example:
        >>> from reference_models import get_config
        >>> config = get_config("lavt_sadlr_tiny")
        >>> config.architecture, config.head.kind, config.head.iters
        ('lavt', 'sadlr', 3)
        >>> config.replace(refiner_iters=2, loss_weights=[0.5, 0.5]).head.iters
        2
    """

    architecture: ClassVar[str] = ""
    #: For each slot, the part classes it may hold (None where the slot may be empty).
    slots: ClassVar[dict[str, tuple[type[PartConfig] | None, ...]]] = {}

    name: str = "custom"
    image_size: int = 480
    norm: str = "batch"
    vision: SwinConfig | ClipVisionConfig = field(default_factory=SwinConfig)
    text: BertConfig | ClipTextConfig = field(default_factory=BertConfig)
    head: ClassifierHeadConfig | RefinerHeadConfig | None = None

    def __post_init__(self) -> None:
        if type(self) is ModelConfig:
            raise TypeError("ModelConfig: build one of its architectures (ModelConfig.create(architecture=...))")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name: expected a non-empty string; got {self.name!r}")
        checks.count("image_size", self.image_size, limit="image")
        checks.choice("norm", self.norm, ("batch", "group"))
        for slot, options in self.all_slots().items():
            part = getattr(self, slot)
            allowed = tuple(o for o in options if o is not None)
            if part is None and None in options:
                continue
            if not isinstance(part, allowed):
                kinds = [o.kind if o is not None else None for o in options]
                raise ValueError(f"{slot}: expected a part of kind {kinds} for {self.architecture}; got {part!r}")
        self.check_parts()

    def check_parts(self) -> None:
        """Checks across parts (each part checks its own values)."""

    @classmethod
    def all_slots(cls) -> dict[str, tuple[type[PartConfig] | None, ...]]:
        """For every slot (the encoders first), the part classes it may hold, users' own included."""
        return cls._with_user_parts({"vision": VISION_PARTS, "text": TEXT_PARTS, **cls.slots})

    @classmethod
    def _with_user_parts(cls, slots: dict[str, tuple]) -> dict[str, tuple]:
        return {slot: options + _USER_PARTS.get((cls.architecture, slot), ()) for slot, options in slots.items()}

    def parts(self) -> dict[str, PartConfig | None]:
        """``{slot: part}`` for every slot, the encoders first."""
        return {slot: getattr(self, slot) for slot in self.all_slots()}

    # -- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The nested, JSON-ready dict that ``config.json`` holds."""
        core = {"name": self.name, "architecture": self.architecture, "image_size": self.image_size, "norm": self.norm}
        return {**core, **{slot: None if part is None else part.to_dict() for slot, part in self.parts().items()}}

    @classmethod
    def from_dict(cls, data: Any) -> ModelConfig:
        """Rebuild a config from :meth:`to_dict` output or from a flat config of before.

        A flat config (``config.json`` written before the composition) is read through
        :func:`~reference_models.config.flat.from_flat`, with the values its fields had when it
        was saved; its fields that its model did not read are dropped, as they changed nothing.
        """
        from .flat import from_flat, is_flat

        if not isinstance(data, dict):
            raise ValueError(f"config: expected a JSON object of config fields; got {type(data).__name__}")
        _check_depth(data)
        if is_flat(data):
            return from_flat(data, saved=True)
        return _from_nested(data)

    def save(self, path: str | Path) -> None:
        """Write the config as indented JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        """Read a config written by :meth:`save` (or a flat one of before), with a one-line error for a bad file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no model config here (expected config.json)") from None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
            raise ValueError(f"{path}: not valid JSON ({str(err)[:200]})") from None
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    # -- building and changing --------------------------------------------------------------
    @staticmethod
    def create(architecture: str = "lavt", **options: Any) -> ModelConfig:
        """A config of ``architecture`` from flat names (``refiner_iters=2``) or dotted ones.

        Options start from the architecture's defaults (:class:`AsdaConfig`'s CLIP encoders,
        say); an option that no part of the resulting model reads is refused.

        Example:
            >>> ModelConfig.create("s2rm", s2rm_decoder="fpn").decoder
            FpnConfig()
        """
        if architecture not in CONFIG_CLASSES:
            raise ValueError(f"architecture: expected one of {tuple(CONFIG_CLASSES)}; got {architecture!r}")
        return CONFIG_CLASSES[architecture]().replace(**options)

    def replace(self, **overrides: Any) -> ModelConfig:
        """A copy with some options changed, by flat (``refiner_iters``) or dotted (``head.iters``) names.

        An option that no part of the resulting model reads raises ``ValueError`` naming the
        parts that read it.
        """
        from .flat import apply_overrides, from_flat, keep_user_parts, to_flat

        from ..registry import registered_preset

        flat, dotted = _split(overrides)
        # a part chosen by name on a registered model takes that model's sizes (the tiny
        # refiner on lavt_tiny), so lavt_tiny with head=sadlr is lavt_sadlr_tiny
        preset = registered_preset(self.name)
        choices = {k: v for k, v in dotted.items() if "." not in k}
        core = {k: flat.pop(k) for k in ("name", "image_size", "norm") if k in flat}
        # the options of the parts already there first (VLT's reading, which CASG needs),
        # then the chosen parts, then the options only a chosen part reads (refiner_iters)
        # (read only when flat names are given: parts that hold different values under one flat
        # name, set by dotted names, have no flat form, and loading such a config gives none)
        present = set(to_flat(self)) if flat else set()
        config = self
        for batch in ({k: v for k, v in flat.items() if k in present}, None, {k: v for k, v in flat.items() if k not in present}):
            if batch is None:
                config = apply_overrides(config, choices, preset=preset)
            elif batch:
                rebuilt = from_flat({**preset, **to_flat(config), **batch}, given=set(batch))
                config = keep_user_parts(config, rebuilt, set(batch))
        if core:
            config = dataclasses.replace(config, **core)
        return apply_overrides(config, {k: v for k, v in dotted.items() if "." in k})


def _split(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Flat names apart from dotted names and slot choices (``head=sadlr``)."""
    from .flat import LEGACY_DEFAULTS, SLOT_NAMES, _near_misses

    dotted = {k: v for k, v in options.items() if "." in k or k in SLOT_NAMES}
    unknown = sorted(k for k in options if k not in dotted and k not in LEGACY_DEFAULTS)
    if unknown:
        raise ValueError(
            f"overrides: unknown config keys {_near_misses(unknown)}; valid keys are the flat names "
            f"{sorted(LEGACY_DEFAULTS)}, the slots {list(SLOT_NAMES)} and slot.field"
        )
    return {k: v for k, v in options.items() if k not in dotted}, dotted


def _check_depth(value: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"config: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for item in value.values():
            _check_depth(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_depth(item, depth + 1)


def _from_nested(data: dict[str, Any]) -> ModelConfig:
    architecture = data.get("architecture")
    if architecture not in CONFIG_CLASSES:
        raise ValueError(f"architecture: expected one of {tuple(CONFIG_CLASSES)}; got {architecture!r}")
    cls = CONFIG_CLASSES[architecture]
    slots = cls.all_slots()
    known = {"name", "architecture", "image_size", "norm", *slots}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"config: unknown keys {unknown} for a {architecture} model; valid keys are {sorted(known)}")
    values: dict[str, Any] = {k: data[k] for k in ("name", "image_size", "norm") if k in data}
    for slot, options in slots.items():
        if slot in data:
            values[slot] = part_from_dict(data[slot], options, where=slot)
    return cls(**values)


def unknown_kind_hint(kind: Any, slot: str) -> str:
    """What the message refusing ``kind`` in ``slot`` adds: where a part of one's own of that kind
    goes, or that its module must be imported (empty for a value that is no kind).

    Args:
        kind: the refused value.
        slot: the slot it was given for.

    Example:
        >>> unknown_kind_hint("gated_neck", "neck")
        '; if it is a part of your own, import the module that registers it first (--import MODULE)'
        >>> unknown_kind_hint("aligner", "decoder")  # ours, where it does not go: nothing to add
        ''
    """
    ours = {o.kind for cls in CONFIG_CLASSES.values() for options in cls.slots.values() for o in options if o is not None}
    if not isinstance(kind, str) or kind in ours:  # one of ours, on a model it does not fit
        return ""
    fits = [architecture for (architecture, where), options in _USER_PARTS.items() if where == slot and any(o.kind == kind for o in options)]
    if fits:
        return f"; {kind!r} is a {slot} of your own that goes on {', '.join(fits)} only"
    return "; " + UNKNOWN_KIND_HINT


def part_from_dict(data: Any, options: tuple[type[PartConfig] | None, ...], *, where: str) -> PartConfig | None:
    """The part a ``config.json`` entry describes, by its ``kind``."""
    if data is None and None in options:
        return None
    by_kind = {o.kind: o for o in options if o is not None}
    if data is None:
        raise ValueError(f"{where}: expected a part of kind {sorted(by_kind)}; this slot cannot be empty")
    if not isinstance(data, dict) or data.get("kind") not in by_kind:
        got = data.get("kind") if isinstance(data, dict) else data
        raise ValueError(f"{where}: expected a part with \"kind\" one of {sorted(by_kind)}; got {got!r}{unknown_kind_hint(got, where)}")
    values = {k: v for k, v in data.items() if k != "kind"}
    try:
        return by_kind[data["kind"]].from_values(values, where=where)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}.{err}" if not str(err).startswith(where) else str(err)) from None


_SADLR_HEADS = (ClassifierHeadConfig, RefinerHeadConfig)
#: The necks any Swin baseline can take on its coarsest map (None: none).
_NECKS = (None, CoparserConfig, TileConcatConfig, PwamNeckConfig)
_NECK_TYPE = CoparserConfig | TileConcatConfig | PwamNeckConfig | None
#: VLT's and LTS's decoders: their own, a pyramid one, or ASDA's aligner on the coarse map.
_PLUG_IN_DECODERS = (OwnDecoderConfig, CasgConfig, FpnConfig, AlignerConfig)
_DECODER_TYPE = OwnDecoderConfig | CasgConfig | FpnConfig | AlignerConfig


@dataclass(frozen=True, kw_only=True)
class LavtConfig(ModelConfig):
    """LAVT: language fused into every Swin stage, its top-down decoder, a head.

    Args:
        name: the registry name it was built from.
        image_size: square input size in pixels.
        norm: ``"batch"`` or ``"group"``, every part's convolution norm.
        vision: the image encoder's part.
        text: the text encoder's part.
        fusion: the pixel-word attention and gates inside the backbone.
        neck: a plug-in on the stride-32 multimodal map (coparser, tile_concat, pwam), or None.
        decoder: LAVT's own decoder, a plug-in one over its four maps (casg, fpn), or ASDA's
            aligner over the stride-32 multimodal map and the words (aligner).
        head: the 1x1 classifier or SADLR's refiner.
    """

    architecture: ClassVar[str] = "lavt"
    slots: ClassVar[dict[str, tuple]] = {
        "fusion": (PwamFusionConfig,), "neck": _NECKS, "decoder": (LavtDecoderConfig, CasgConfig, FpnConfig, AlignerConfig),
        "head": _SADLR_HEADS,
    }
    fusion: PwamFusionConfig = field(default_factory=PwamFusionConfig)
    neck: _NECK_TYPE = None
    decoder: LavtDecoderConfig | CasgConfig | FpnConfig | AlignerConfig = field(default_factory=LavtDecoderConfig)
    head: ClassifierHeadConfig | RefinerHeadConfig = field(default_factory=ClassifierHeadConfig)


@dataclass(frozen=True, kw_only=True)
class VltConfig(ModelConfig):
    """VLT: query generation and balance, a transformer, its decoder, a head.

    Args:
        name: the registry name it was built from.
        image_size: square input size in pixels.
        norm: ``"batch"`` or ``"group"``, every part's convolution norm.
        vision: the image encoder's part.
        text: the text encoder's part.
        neck: a plug-in on the Swin stride-32 map (coparser, tile_concat, pwam), or None.
        query: the query generation, balance and transformer.
        decoder: VLT's own decoder, a plug-in one (casg, fpn) over the Swin maps and the
            modulated stride-32 map, or ASDA's aligner over that modulated map and the words
            (the plug-ins with the ``modulate`` reading only).
        head: the 1x1 classifier or SADLR's refiner.
    """

    architecture: ClassVar[str] = "vlt"
    slots: ClassVar[dict[str, tuple]] = {
        "neck": _NECKS, "query": (QueryTransformerConfig,), "decoder": _PLUG_IN_DECODERS, "head": _SADLR_HEADS,
    }
    neck: _NECK_TYPE = None
    query: QueryTransformerConfig = field(default_factory=QueryTransformerConfig)
    decoder: _DECODER_TYPE = field(default_factory=OwnDecoderConfig)

    def check_parts(self) -> None:
        if self.query.response == "spatial" and not isinstance(self.decoder, OwnDecoderConfig):
            reads = "the modulated stride-32 map and the words" if isinstance(self.decoder, AlignerConfig) else "a pyramid of four maps"
            raise ValueError(
                f"decoder: {self.decoder.kind} reads {reads}, but query.response='spatial' hands the "
                "decoder per-query response maps alone; use vlt_response=modulate (query.response) with it"
            )
    head: ClassifierHeadConfig | RefinerHeadConfig = field(default_factory=ClassifierHeadConfig)


@dataclass(frozen=True, kw_only=True)
class LtsConfig(ModelConfig):
    """LTS: locate, then segment; its decoder and a head.

    Args:
        name: the registry name it was built from.
        image_size: square input size in pixels.
        norm: ``"batch"`` or ``"group"``, every part's convolution norm.
        vision: the image encoder's part.
        text: the text encoder's part.
        neck: a plug-in on the Swin stride-32 map (coparser, tile_concat, pwam), or None.
        locate: the locate step (its width and transformer).
        decoder: LTS's own segmenting decoder, a plug-in one (casg, fpn) over the Swin maps
            of strides 4, 8 and 32 and, at stride 16, the located map with its localization,
            or ASDA's aligner over that located map and the words (aligner).
        head: the 1x1 classifier or SADLR's refiner.
    """

    architecture: ClassVar[str] = "lts"
    slots: ClassVar[dict[str, tuple]] = {
        "neck": _NECKS, "locate": (LocateConfig,), "decoder": _PLUG_IN_DECODERS, "head": _SADLR_HEADS,
    }
    neck: _NECK_TYPE = None
    locate: LocateConfig = field(default_factory=LocateConfig)
    decoder: _DECODER_TYPE = field(default_factory=OwnDecoderConfig)
    head: ClassifierHeadConfig | RefinerHeadConfig = field(default_factory=ClassifierHeadConfig)


@dataclass(frozen=True, kw_only=True)
class S2rmConfig(ModelConfig):
    """S2RM: a fusion (neck) on the stride-32 map, CASG or FPN, optionally SADLR's head.

    With no head, the decoder's own classifier predicts.

    Args:
        name: the registry name it was built from.
        image_size: square input size in pixels.
        norm: ``"batch"`` or ``"group"``, every part's convolution norm.
        vision: the image encoder's part.
        text: the text encoder's part.
        neck: the coparser, or Table IV/VII's tile_concat or pwam.
        decoder: CASG, or Table IV/VII's FPN.
        head: None, or SADLR's refiner.
    """

    architecture: ClassVar[str] = "s2rm"
    slots: ClassVar[dict[str, tuple]] = {
        "neck": (CoparserConfig, TileConcatConfig, PwamNeckConfig), "decoder": (CasgConfig, FpnConfig),
        "head": (None, RefinerHeadConfig),
    }
    neck: CoparserConfig | TileConcatConfig | PwamNeckConfig = field(default_factory=CoparserConfig)
    decoder: CasgConfig | FpnConfig = field(default_factory=CasgConfig)


@dataclass(frozen=True, kw_only=True)
class AsdaConfig(ModelConfig):
    """ASDA: layer selection, aggregation and the dual-branch aligner on a CLIP ViT.

    The aligner predicts; with SADLR's refiner as its head, the refiner reads the aligner's
    decoded map (:meth:`~rislayers.DualBranchAligner.decode`) in place of the mask bases and
    their word-guided coefficients, and trains with the head's loss: the aligner's ``masks``,
    ``branches``, ``word_mask`` and ``output_bias`` and the ``loss`` part are then not read
    (given by flat name with ``plugin=sadlr``, they are refused).

    Args:
        name: the registry name it was built from.
        image_size: square input size in pixels.
        norm: ``"batch"`` or ``"group"``, every part's convolution norm.
        vision: the image encoder's part.
        text: the text encoder's part.
        selector: adaptive (AFS), fixed or top layers.
        aggregator: the scale-wise aggregator (SFA) or the concat fusion.
        aligner: the word-guided dual-branch aligner.
        loss: the pixel loss beside Dice (the aligner's prediction).
        head: None, or SADLR's refiner.
    """

    architecture: ClassVar[str] = "asda"
    slots: ClassVar[dict[str, tuple]] = {
        "selector": (AdaptiveSelectorConfig, FixedLayersConfig, TopLayerConfig),
        "aggregator": (ScaleWiseConfig, ConcatFusionConfig), "aligner": (AlignerConfig,), "loss": (AsdaLossConfig,),
        "head": (None, RefinerHeadConfig),
    }
    vision: ClipVisionConfig = field(default_factory=ClipVisionConfig)
    text: ClipTextConfig | BertConfig = field(default_factory=ClipTextConfig)
    selector: AdaptiveSelectorConfig | FixedLayersConfig | TopLayerConfig = field(default_factory=AdaptiveSelectorConfig)
    aggregator: ScaleWiseConfig | ConcatFusionConfig = field(default_factory=ScaleWiseConfig)
    aligner: AlignerConfig = field(default_factory=AlignerConfig)
    loss: AsdaLossConfig = field(default_factory=AsdaLossConfig)

    @classmethod
    def all_slots(cls) -> dict[str, tuple]:
        return cls._with_user_parts({"vision": (ClipVisionConfig,), "text": TEXT_PARTS, **cls.slots})

    def check_parts(self) -> None:
        selector, depth = self.selector, self.vision.layers
        if isinstance(selector, TopLayerConfig) and isinstance(self.aggregator, ScaleWiseConfig):
            raise ValueError(
                "asda_fusion: the scale-wise aggregator needs the low and mid layers, which "
                "asda_selection='top' does not pick; expected 'concat' with 'top'; got 'sfa'"
            )
        if isinstance(selector, FixedLayersConfig) and max(selector.layers) > depth:
            raise ValueError(f"asda_fixed_layers: expected ViT layers within 1..clip_layers={depth}; got {selector.layers!r}")
        if not isinstance(selector, AdaptiveSelectorConfig):
            return
        if len(selector.layers) != 2 or not all(end <= depth for _, end in selector.layers):
            raise ValueError(
                f"selector_layers: expected two 1-based inclusive ranges (low, mid) within 1..clip_layers={depth}, "
                f"e.g. ((4, 6), (7, 9)); got {selector.layers!r}"
            )
        if selector.text != "layer_eos":
            return
        if not isinstance(self.text, ClipTextConfig):
            raise ValueError(f"selector_text: 'layer_eos' reads the CLIP text tower's layers; expected text_encoder='clip'; got {self.text.kind!r}")
        deepest = max(end for _, end in selector.layers)
        if self.text.layers < deepest:
            raise ValueError(
                f"selector_text: 'layer_eos' pairs ViT layer i with text layer i, so text_layers must reach the "
                f"deepest candidate layer {deepest}; got text_layers={self.text.layers}"
            )


CONFIG_CLASSES: dict[str, type[ModelConfig]] = {
    cls.architecture: cls for cls in (LavtConfig, VltConfig, LtsConfig, AsdaConfig, S2rmConfig)
}
ARCHITECTURES = tuple(CONFIG_CLASSES)
