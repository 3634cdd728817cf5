"""The part configs of each architecture: LAVT's, VLT's, LTS's, S2RM's and ASDA's own parts.

Each holds only what its part reads (see :mod:`reference_models.config.parts` for the base
class, the encoders and the heads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from . import checks
from .parts import PartConfig

__all__ = [
    "PwamFusionConfig", "LavtDecoderConfig", "OwnDecoderConfig", "QueryTransformerConfig", "LocateConfig",
    "CoparserConfig", "TileConcatConfig", "PwamNeckConfig", "CasgConfig", "FpnConfig",
    "AdaptiveSelectorConfig", "FixedLayersConfig", "TopLayerConfig", "ScaleWiseConfig", "ConcatFusionConfig",
    "AlignerConfig", "AsdaLossConfig",
]


# -- LAVT, VLT, LTS -------------------------------------------------------------------------
@dataclass(frozen=True)
class PwamFusionConfig(PartConfig):
    """LAVT's pixel-word attention and language gate after every Swin stage.

    Args:
        norm_affine: learnable scale and shift in PWAM's instance norms (``False``: LAVT's code).
        last_gate: build the last stage's language gate, whose output nothing reads (``True``
            only to hold the weights of LAVT's releases).
    """

    kind: ClassVar[str] = "pwam"
    flat_names: ClassVar[dict[str, str]] = {"norm_affine": "pwam_norm_affine", "last_gate": "lavt_last_gate"}
    norm_affine: bool = True
    last_gate: bool = False

    def check(self) -> None:
        checks.switch("norm_affine", self.norm_affine)
        checks.switch("last_gate", self.last_gate)


@dataclass(frozen=True)
class LavtDecoderConfig(PartConfig):
    """LAVT's top-down decoder.

    Args:
        dim: its width, the stride-4 map the head reads (LAVT: 512).
        align_corners: ``align_corners=True`` in its and the final bilinear resizes (LAVT's code).
    """

    kind: ClassVar[str] = "lavt"
    flat_names: ClassVar[dict[str, str]] = {"dim": "decoder_dim", "align_corners": "decoder_align_corners"}
    dim: int = 512
    align_corners: bool = False

    def check(self) -> None:
        checks.count("dim", self.dim, limit="width")
        checks.switch("align_corners", self.align_corners)


@dataclass(frozen=True)
class OwnDecoderConfig(PartConfig):
    """A baseline's own decoder (VLT's, LTS's), at the width its other parts set; no options."""

    kind: ClassVar[str] = "own"


@dataclass(frozen=True)
class QueryTransformerConfig(PartConfig):
    """VLT's query generation and balance and its transformer.

    Args:
        dim: the width of VLT's transformer, of its own decoder and of the map the head reads.
        num_queries: generated queries.
        layers: transformer depth.
        response: how the weighted answers reach the decoder: ``"spatial"`` (VLT's released
            code: per-query response maps at stride 16) or ``"modulate"`` (our first reading:
            their mean modulates the stride-32 tokens).
    """

    kind: ClassVar[str] = "vlt"
    flat_names: ClassVar[dict[str, str]] = {
        "dim": "decoder_dim", "num_queries": "num_queries", "layers": "transformer_layers", "response": "vlt_response",
    }
    dim: int = 512
    num_queries: int = 16
    layers: int = 2
    response: str = "spatial"

    def check(self) -> None:
        checks.count("dim", self.dim, limit="width")
        checks.count("num_queries", self.num_queries, limit="small")
        checks.count("layers", self.layers, limit="depth")
        checks.choice("response", self.response, ("modulate", "spatial"))


@dataclass(frozen=True)
class LocateConfig(PartConfig):
    """LTS's locate step (its visual-textual transformer).

    Args:
        dim: the width of the cross-modal map, the transformer, LTS's own decoder and the map
            the head reads.
        layers: transformer depth.
    """

    kind: ClassVar[str] = "lts"
    flat_names: ClassVar[dict[str, str]] = {"dim": "decoder_dim", "layers": "transformer_layers"}
    dim: int = 512
    layers: int = 2

    def check(self) -> None:
        checks.count("dim", self.dim, limit="width")
        checks.count("layers", self.layers, limit="depth")


# -- S2RM -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CoparserConfig(PartConfig):
    """S2RM's :class:`~rislayers.SpatialRecurrentCoparser` on the stride-32 map.

    Args:
        pos_dim: position channels.
        directions: coparsing directions kept, from ``("l2v", "v2l")`` (Table IV's "-l2v" is
            ``("v2l",)``).
        shift: the generator's recurrent shift (``False``: Table IV's "-Shift").
        balance: the Eq. 9-10 gates (``False``: "-Balance").
        implementation: ``"gemm"`` or ``"shift"`` (the literal roll-and-concat); same function.
    """

    kind: ClassVar[str] = "coparser"
    flat_names: ClassVar[dict[str, str]] = {
        "pos_dim": "s2rm_pos_dim", "directions": "coparser_directions", "shift": "coparser_shift",
        "balance": "coparser_balance", "implementation": "coparser_implementation",
    }
    pos_dim: int = 8
    directions: tuple[str, ...] = ("l2v", "v2l")
    shift: bool = True
    balance: bool = True
    implementation: str = "gemm"

    def check(self) -> None:
        checks.count("pos_dim", self.pos_dim, limit="width")
        d = self.directions
        if not isinstance(d, tuple) or not d or len(set(d)) != len(d) or not all(x in ("l2v", "v2l") for x in d):
            raise ValueError(f"directions: expected a non-empty list of distinct names from ['l2v', 'v2l'], e.g. ['v2l']; got {d!r}")
        checks.switch("shift", self.shift)
        checks.switch("balance", self.balance)
        checks.choice("implementation", self.implementation, ("gemm", "shift"))


@dataclass(frozen=True)
class TileConcatConfig(PartConfig):
    """Table IV's "W. Tile & Concat." baseline (:class:`~rislayers.TileConcatFusion`); no options."""

    kind: ClassVar[str] = "tile_concat"


@dataclass(frozen=True)
class PwamNeckConfig(PartConfig):
    """Table VII's LAVT fusion on the stride-32 map (:class:`~rislayers.PixelWordAttention`).

    Args:
        norm_affine: learnable scale and shift in its instance norms (``False``: LAVT's code).
    """

    kind: ClassVar[str] = "pwam"
    flat_names: ClassVar[dict[str, str]] = {"norm_affine": "pwam_norm_affine"}
    norm_affine: bool = True

    def check(self) -> None:
        checks.switch("norm_affine", self.norm_affine)


@dataclass(frozen=True)
class CasgConfig(PartConfig):
    """S2RM's :class:`~rislayers.CASGDecoder`.

    Args:
        language: the sentence in its attentions (``False``: Table V's "-Lang.").
        channel: channel attention (``False``: "-Cha.").
        spatial: spatial attention (``False``: "-Spa.").
        activation: attention activation, ``"tanh"`` or ``"sigmoid"`` ("Sig.").
        stages: attention-guided stages kept, 0 to 3, removed coarsest first (Table VI).
    """

    kind: ClassVar[str] = "casg"
    flat_names: ClassVar[dict[str, str]] = {
        "language": "casg_language", "channel": "casg_channel", "spatial": "casg_spatial",
        "activation": "casg_activation", "stages": "casg_stages",
    }
    language: bool = True
    channel: bool = True
    spatial: bool = True
    activation: str = "tanh"
    stages: int = 3

    def check(self) -> None:
        for name in ("language", "channel", "spatial"):
            checks.switch(name, getattr(self, name))
        checks.choice("activation", self.activation, ("tanh", "sigmoid"))
        if not isinstance(self.stages, int) or isinstance(self.stages, bool) or not 0 <= self.stages <= 3:
            raise ValueError(f"stages: expected an integer from 0 to 3 (attention-guided stages kept); got {self.stages!r}")


@dataclass(frozen=True)
class FpnConfig(PartConfig):
    """Tables IV and VII's baseline decoder (:class:`~rislayers.FPNDecoder`); no options."""

    kind: ClassVar[str] = "fpn"


# -- ASDA -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AdaptiveSelectorConfig(PartConfig):
    """ASDA's adaptive layer selection (AFS, :class:`~rislayers.AdaptiveLayerSelector`).

    Args:
        layers: the low and mid candidate groups (1-based, inclusive ranges).
        gradient: ``"straight_through"``, ``"soft"`` or ``"none"`` (the released code).
        head: the scoring network, ``"linear"``, ``"mlp"`` or ``"conv"`` (Table 5).
        text: scored against ``"sentence"`` (``f_E``, the paper) or ``"layer_eos"`` (the released
            code: the CLIP text tower's [EOS] at the layer of the same depth).
    """

    kind: ClassVar[str] = "adaptive"
    flat_names: ClassVar[dict[str, str]] = {
        "layers": "selector_layers", "gradient": "selector_gradient", "head": "selector_head", "text": "selector_text",
    }
    layers: tuple[tuple[int, int], ...] = ((4, 6), (7, 9))
    gradient: str = "straight_through"
    head: str = "linear"
    text: str = "sentence"

    def check(self) -> None:
        layers = self.layers
        if not isinstance(layers, tuple) or not all(
            isinstance(p, tuple) and len(p) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 256 for v in p)
            and p[0] <= p[1]
            for p in layers
        ):
            raise ValueError(f"layers: expected [start, end] layer ranges (1-based, start <= end), e.g. [[4, 6], [7, 9]]; got {layers!r}")
        checks.choice("gradient", self.gradient, ("straight_through", "soft", "none"))
        checks.choice("head", self.head, ("linear", "mlp", "conv"))
        checks.choice("text", self.text, ("sentence", "layer_eos"))


@dataclass(frozen=True)
class FixedLayersConfig(PartConfig):
    """Fixed low and mid ViT layers (CRIS's hand-picked ones: ASDA Table 2 (b)).

    Args:
        layers: the low and mid layers (1-based).
    """

    kind: ClassVar[str] = "fixed"
    flat_names: ClassVar[dict[str, str]] = {"layers": "asda_fixed_layers"}
    layers: tuple[int, ...] = (6, 9)

    def check(self) -> None:
        checks.counts("layers", self.layers, limit="depth", example="[6, 9]", length=2)


@dataclass(frozen=True)
class TopLayerConfig(PartConfig):
    """The last ViT layer alone (ASDA Table 2 (a)); no options."""

    kind: ClassVar[str] = "top"


@dataclass(frozen=True)
class ScaleWiseConfig(PartConfig):
    """ASDA's scale-wise aggregator (SFA, Eq. 4-5).

    Args:
        reading: ``"paper"`` (:class:`~rislayers.ScaleWiseAggregator`, 32 channels) or
            ``"published"`` (:class:`~rislayers.PublishedScaleWiseAggregator`, at the aligner's width).
    """

    kind: ClassVar[str] = "sfa"
    flat_names: ClassVar[dict[str, str]] = {"reading": "asda_aggregator"}
    reading: str = "paper"

    def check(self) -> None:
        checks.choice("reading", self.reading, ("paper", "published"))


@dataclass(frozen=True)
class ConcatFusionConfig(PartConfig):
    """CRIS's concatenate-and-project fusion (ASDA Table 2 (a)-(c)); no options."""

    kind: ClassVar[str] = "concat"


@dataclass(frozen=True)
class AlignerConfig(PartConfig):
    """ASDA's word-guided dual-branch aligner (WGDA): ASDA's own, or the decoder of LAVT, VLT or LTS.

    As a baseline's decoder (``decoder=aligner``) it reads one map and the words: the map the
    baseline's own decoder starts from, its coarsest multimodal one after the neck (LAVT's
    stride-32 map, VLT's modulated stride-32 map, LTS's located stride-16 map with its
    localization channel), brought to ``dim`` channels by a 1x1 convolution, and its
    coarse-to-fine branch upsamples it to stride 4 like the other decoders' maps. With the
    classifier as the head, its word-guided mask assembly is the prediction (no 1x1
    classifier; its logit takes the classifier's loss). With SADLR's refiner as the head, the
    refiner reads its decoded map, as on ASDA, and ``masks``, ``branches``, ``word_mask`` and
    ``output_bias`` are not read. VLT's ``response="spatial"`` gives it no such map: refused.

    Args:
        dim: its width.
        masks: mask bases ``N_c``.
        layers: self-attention depth ``n``.
        branches: ``"dual"`` (the paper), ``"single"`` (Table 2 (e)) or ``"visual"`` (no words).
        word_mask: honour the word padding mask (``False``: the released code).
        blocks: ``"pre_norm"`` (the design) or ``"published"`` (the released post-norm blocks).
        output_bias: a learned offset on the combined logit (``False``: Eq. 10 as written).
    """

    kind: ClassVar[str] = "aligner"
    flat_names: ClassVar[dict[str, str]] = {
        "dim": "decoder_dim", "masks": "aligner_masks", "layers": "transformer_layers", "branches": "aligner_branches",
        "word_mask": "aligner_word_mask", "blocks": "aligner_blocks", "output_bias": "aligner_output_bias",
    }
    dim: int = 512
    masks: int = 32
    layers: int = 2
    branches: str = "dual"
    word_mask: bool = True
    blocks: str = "pre_norm"
    output_bias: bool = True

    def check(self) -> None:
        checks.count("dim", self.dim, limit="width")
        checks.count("masks", self.masks, limit="small")
        checks.count("layers", self.layers, limit="depth")
        checks.choice("branches", self.branches, ("dual", "single", "visual"))
        checks.switch("word_mask", self.word_mask)
        checks.choice("blocks", self.blocks, ("pre_norm", "published"))
        checks.switch("output_bias", self.output_bias)
        if self.branches == "visual" and not self.word_mask:
            raise ValueError("word_mask: the aligner reads no words with branches='visual'; got false")


@dataclass(frozen=True)
class AsdaLossConfig(PartConfig):
    """ASDA's loss on the aligner's logit.

    Args:
        loss: ``"focal_dice"`` (the paper) or ``"bce_dice"`` (the released code's focal loss at
            ``alpha=-1, gamma=0``, i.e. binary cross-entropy, plus Dice).
        focal_weight: the pixel loss's weight beside Dice.
    """

    kind: ClassVar[str] = "asda"
    flat_names: ClassVar[dict[str, str]] = {"loss": "asda_loss", "focal_weight": "focal_weight"}
    loss: str = "focal_dice"
    focal_weight: float = 1.0

    def check(self) -> None:
        checks.choice("loss", self.loss, ("focal_dice", "bce_dice"))
        checks.number("focal_weight", self.focal_weight)
