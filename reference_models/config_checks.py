"""What each :class:`~reference_models.config.ModelConfig` field may hold.

:func:`check_model_config` runs when a config is built (``__post_init__``): every value
against its type and choices, the sequences against their shapes, and the options of one
architecture's parts against the parts that are built, so a typo or an option that would
silently change nothing fails at once with a one-line error naming the field.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import ModelConfig

__all__ = ["ARCHITECTURES", "PLUGINS", "VISION_ENCODERS", "TEXT_ENCODERS", "check_model_config"]

ARCHITECTURES = ("lavt", "vlt", "lts", "asda", "s2rm")
PLUGINS = (None, "sadlr")
VISION_ENCODERS = ("swin", "clip")
TEXT_ENCODERS = ("bert", "clip")


_POSITIVE_INTS = (
    "image_size", "swin_embed_dim", "swin_window", "clip_width", "clip_layers", "clip_heads", "clip_patch",
    "clip_embed_dim", "text_dim", "text_layers", "text_heads", "text_intermediate", "vocab_size", "max_words",
    "decoder_dim", "num_queries", "transformer_layers", "refiner_iters", "refiner_repeats", "aligner_masks",
)


_SWITCHES = (
    "coparser_shift", "coparser_balance", "casg_language", "casg_channel", "casg_spatial",
    "aligner_word_mask", "aligner_output_bias", "pwam_norm_affine", "decoder_align_corners", "lavt_last_gate",
)


def _is_int(value: Any, *, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# The fields that take one of a few names, and those names.
_CHOICES = {
    "architecture": ARCHITECTURES,
    "plugin": PLUGINS,
    "vision_encoder": VISION_ENCODERS,
    "text_encoder": TEXT_ENCODERS,
    "refiner_update": ("sum", "replace"),
    "refiner_pooling": ("hard", "soft"),
    "selector_gradient": ("straight_through", "soft", "none"),
    "norm": ("batch", "group"),
    "tokenizer": ("bert", "clip", "word"),
    "clip_activation": ("gelu", "quick_gelu"),
    "s2rm_fusion": ("coparser", "tile_concat", "pwam"),
    "s2rm_decoder": ("casg", "fpn"),
    "coparser_implementation": ("gemm", "shift"),
    "casg_activation": ("tanh", "sigmoid"),
    "asda_selection": ("adaptive", "fixed", "top"),
    "asda_fusion": ("sfa", "concat"),
    "asda_aggregator": ("paper", "published"),
    "asda_loss": ("focal_dice", "bce_dice"),
    "selector_head": ("linear", "mlp", "conv"),
    "selector_text": ("sentence", "layer_eos"),
    "aligner_branches": ("dual", "single", "visual"),
    "aligner_blocks": ("pre_norm", "published"),
    "head_loss": ("dice", "weighted_ce"),
    "vlt_response": ("modulate", "spatial"),
    "swin_windows": ("timm", "segmentation"),
}


def check_model_config(config: ModelConfig) -> None:
    """Raise a one-line ``ValueError`` naming the first field of ``config`` that is wrong.

    Args:
        config: the config being built (``ModelConfig.__post_init__`` calls this).

    Raises:
        ValueError: ``"<field>: expected ...; got ..."``.

    Example:
        >>> from reference_models import ModelConfig
        >>> ModelConfig(norm="layer")
        Traceback (most recent call last):
        ...
        ValueError: norm: expected one of ('batch', 'group'); got 'layer'
    """
    _check_values(config)
    _check_sequences(config)
    _check_s2rm(config)
    _check_asda_and_lavt(config)
    if config.plugin == "sadlr" and len(config.loss_weights) != config.refiner_iters:
        raise ValueError(
            f"loss_weights: expected one weight per refiner iteration ({config.refiner_iters}); "
            f"got {config.loss_weights}"
        )


def _check_values(config: ModelConfig) -> None:
    """The scalar fields: names from their choices, positive integers, switches, numbers."""
    for key, allowed in _CHOICES.items():
        value = getattr(config, key)
        if value not in allowed:
            raise ValueError(f"{key}: expected one of {allowed}; got {value!r}")
    for key in _POSITIVE_INTS:
        if not _is_int(getattr(config, key), minimum=1):
            raise ValueError(f"{key}: expected a positive integer; got {getattr(config, key)!r}")
    for key in _SWITCHES:
        if not isinstance(getattr(config, key), bool):
            raise ValueError(f"{key}: expected true or false; got {getattr(config, key)!r}")
    for key, upper in (("drop_path", 1.0), ("text_dropout", 1.0), ("focal_weight", None)):
        value = getattr(config, key)
        if not _is_number(value) or value < 0 or (upper is not None and value >= upper):
            bound = f"in [0, {upper:g})" if upper is not None else ">= 0"
            raise ValueError(f"{key}: expected a number {bound}; got {value!r}")


def _check_sequences(config: ModelConfig) -> None:
    """The list fields: their element types and lengths."""
    for key, example in (("swin_depths", "[2, 2, 6, 2]"), ("swin_heads", "[3, 6, 12, 24]"), ("refiner_hidden", "[128, 512]")):
        value = getattr(config, key)
        if not isinstance(value, tuple) or not value or not all(_is_int(v, minimum=1) for v in value):
            raise ValueError(f"{key}: expected a list of positive integers, e.g. {example}; got {value!r}")
    if len(config.swin_depths) != len(config.swin_heads):
        raise ValueError(
            f"swin_depths, swin_heads: expected one depth and one head count per Swin stage; got "
            f"{len(config.swin_depths)} depths {config.swin_depths} and {len(config.swin_heads)} head counts {config.swin_heads}"
        )
    if not isinstance(config.loss_weights, tuple) or not all(_is_number(v) and v >= 0 for v in config.loss_weights):
        raise ValueError(f"loss_weights: expected a list of non-negative numbers; got {config.loss_weights!r}")
    if not isinstance(config.selector_layers, tuple) or not all(
        isinstance(pair, tuple) and len(pair) == 2 and all(_is_int(v, minimum=1) for v in pair) and pair[0] <= pair[1]
        for pair in config.selector_layers
    ):
        raise ValueError(
            f"selector_layers: expected [start, end] layer ranges (1-based, start <= end), e.g. "
            f"[[4, 6], [7, 9]]; got {config.selector_layers!r}"
        )


def _check_asda_and_lavt(config: ModelConfig) -> None:
    """The ASDA ablation fields (Tables 2 and 5) and the published codes' switches."""
    layers = config.asda_fixed_layers
    if not (isinstance(layers, tuple) and len(layers) == 2 and all(_is_int(v, minimum=1) for v in layers)):
        raise ValueError(f"asda_fixed_layers: expected two 1-based ViT layers [low, mid], e.g. [6, 9]; got {layers!r}")
    if config.architecture != "lavt":
        for key in ("decoder_align_corners", "lavt_last_gate"):
            if getattr(config, key):
                raise ValueError(f"{key}: only LAVT reads it; got true with architecture={config.architecture!r}")
    if config.asda_selection == "top" and config.asda_fusion == "sfa":
        raise ValueError(
            "asda_fusion: the scale-wise aggregator needs the low and mid layers, which "
            "asda_selection='top' does not pick; expected 'concat' with 'top'; got 'sfa'"
        )
    if config.asda_aggregator != "paper" and config.asda_fusion != "sfa":
        raise ValueError(f"asda_aggregator: only used with asda_fusion='sfa'; got {config.asda_aggregator!r} with {config.asda_fusion!r}")
    if config.architecture == "asda":
        _check_asda_layers(config)

def _check_asda_layers(config: ModelConfig) -> None:
    """ASDA's layer choices against the encoders' depths, and options of parts not built."""
    if config.asda_selection == "fixed" and max(config.asda_fixed_layers) > config.clip_layers:
        raise ValueError(
            f"asda_fixed_layers: expected ViT layers within 1..clip_layers={config.clip_layers}; got {config.asda_fixed_layers!r}"
        )
    # An option of a selection that is not built would silently change nothing.
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    needs = {"selector_head": "adaptive", "selector_text": "adaptive", "selector_gradient": "adaptive", "asda_fixed_layers": "fixed"}
    for key, selection in needs.items():
        if config.asda_selection != selection and getattr(config, key) != defaults[key]:
            raise ValueError(
                f"{key}: only used with asda_selection={selection!r}, but asda_selection={config.asda_selection!r}; got {getattr(config, key)!r}"
            )
    if config.aligner_branches == "visual" and not config.aligner_word_mask:
        raise ValueError("aligner_word_mask: the aligner reads no words with aligner_branches='visual'; got false")
    if config.selector_text != "layer_eos":
        return
    if config.text_encoder != "clip":
        raise ValueError(f"selector_text: 'layer_eos' reads the CLIP text tower's layers; expected text_encoder='clip'; got {config.text_encoder!r}")
    deepest = max(end for _, end in config.selector_layers)
    if config.text_layers < deepest:
        raise ValueError(
            f"selector_text: 'layer_eos' pairs ViT layer i with text layer i, so text_layers must reach the "
            f"deepest candidate layer {deepest}; got text_layers={config.text_layers}"
        )

def _check_s2rm(config: ModelConfig) -> None:
    """The S2RM ablation fields (Tables IV-VII)."""
    directions = config.coparser_directions
    if (
        not isinstance(directions, tuple)
        or not directions
        or len(set(directions)) != len(directions)
        or not all(d in ("l2v", "v2l") for d in directions)
    ):
        raise ValueError(
            f"coparser_directions: expected a non-empty list of distinct names from ['l2v', 'v2l'], "
            f"e.g. ['v2l']; got {directions!r}"
        )
    if not _is_int(config.casg_stages, minimum=0) or config.casg_stages > 3:
        raise ValueError(f"casg_stages: expected an integer from 0 to 3 (attention-guided stages kept); got {config.casg_stages!r}")
    if config.architecture != "s2rm":
        return
    # An ablation of a block that is not built would silently change nothing.
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    unused = {"coparser_": ("s2rm_fusion", config.s2rm_fusion != "coparser"), "casg_": ("s2rm_decoder", config.s2rm_decoder != "casg")}
    for prefix, (owner, absent) in unused.items():
        changed = [k for k in defaults if k.startswith(prefix) and getattr(config, k) != defaults[k]]
        if absent and changed:
            raise ValueError(
                f"{changed[0]}: only used with the {prefix.rstrip('_')} block, but {owner}={getattr(config, owner)!r}; "
                f"got {getattr(config, changed[0])!r}"
            )

