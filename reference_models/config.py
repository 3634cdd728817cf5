"""Frozen model configurations, serialisable to JSON.

One flat dataclass describes every reference model: the baseline architecture, the
plug-in on top of it, the encoders and their sizes, and the plug-ins' options. Flat keeps
``build_model("lavt_sadlr_tiny", image_size=96, text_weights="path/to/bert")`` simple and
makes ``config.json`` readable; fields that an architecture does not use are ignored by it.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config_checks import ARCHITECTURES, PLUGINS, check_model_config

__all__ = ["ModelConfig", "ARCHITECTURES", "PLUGINS", "parse_overrides"]

# Fields whose default changed after configs were saved without them, by the architecture
# that reads them: a saved config that lacks one was built the old way, and its weights only
# fit that model (VLT's first reading; LAVT's last gate, built then and saved; ASDA's
# aligner before its logit offset).
_SAVED_BEFORE_THE_FIELD = {
    "vlt_response": ("vlt", "modulate"), "lavt_last_gate": ("lavt", True), "aligner_output_bias": ("asda", False),
}


def _as_tuples(value: Any) -> Any:
    """JSON lists as the config's tuples (one level of nesting: ``selector_layers``)."""
    if isinstance(value, list):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


def _unknown_keys(unknown: Sequence[str], known: Sequence[str]) -> str:
    """``'refiner_iter' (did you mean 'refiner_iters'?)``, for each unknown key."""
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1)
        parts.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    return ", ".join(parts)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a reference model (weights aside).

    Args:
        name: the registry name it was built from (informational).
        architecture: one of ``lavt``, ``vlt``, ``lts``, ``asda``, ``s2rm``.
        plugin: ``None`` or ``"sadlr"`` (DynamicQueryRefiner replaces the baseline classifier).
        image_size: square input size in pixels.
        vision_encoder: ``"swin"`` (timm) or ``"clip"`` (open_clip ViT).
        swin_embed_dim: Swin stage-1 channels (128 for Swin-B, 96 for Swin-T).
        swin_depths: blocks per Swin stage.
        swin_heads: attention heads per Swin stage.
        swin_window: Swin window size.
        swin_windows: how Swin's shifted windows meet a map that is not a whole number of
            windows: ``"timm"`` (timm's classification Swin: shift, then pad; no shift on a
            map no larger than one window) or ``"segmentation"`` (the Swin of LAVT's code and
            of Swin's segmentation release: pad to whole windows, then shift, windows never
            shrink). The same weights either way; at 480 px only the last stage differs.
        clip_width: CLIP ViT width.
        clip_layers: CLIP ViT depth.
        clip_heads: CLIP ViT heads.
        clip_patch: CLIP ViT patch size.
        clip_embed_dim: CLIP joint embedding size (text projection output).
        clip_activation: the MLP activation of both CLIP towers, ``"quick_gelu"`` (OpenAI's
            weights, e.g. ViT-B/16: the ``asda_*`` recipes) or ``"gelu"`` (open_clip's default,
            LAION-style weights). It has no weights, so it must match the checkpoint's
            training; a file that hints otherwise is refused. The default is ``"gelu"`` so a
            ``config.json`` written before this field rebuilds the model it was trained as.
        vision_weights: local checkpoint for the vision encoder (timm or open_clip file).
        drop_path: Swin's stochastic-depth rate (0.2 for the papers' Swin-B, 0 for tiny).
        text_encoder: ``"bert"`` (transformers) or ``"clip"`` (open_clip text tower).
        text_dim: text hidden size (768 for BERT-base).
        text_layers: text transformer depth.
        text_heads: text attention heads.
        text_intermediate: text MLP width.
        vocab_size: text vocabulary size.
        max_words: maximum tokens per sentence (20 for BERT, 17/22 for CLIP).
        tokenizer: ``"bert"`` (WordPiece of ``text_weights`` or the bundled bert-base-uncased
            vocabulary), ``"clip"`` (CLIP BPE) or ``"word"`` (the generated benchmark's
            word-level vocabulary; tiny models). Saved with the model so evaluation and
            prediction tokenize exactly as training did.
        text_weights: local directory (BERT) or checkpoint (CLIP) for the text encoder.
        text_dropout: BERT's hidden and attention dropout (0.1 as pretrained; 0 for tiny).
        norm: the convolution norm of the decoders: ``"batch"`` (the papers) or ``"group"``
            (per-sample statistics, e.g. for tiny per-GPU batches or exact DDP parity on CPU,
            where SyncBatchNorm is unavailable).
        decoder_dim: the decoder width: the baselines' stride-4 map that SADLR refines
            (LAVT: 512), and ASDA's aligner width.
        num_queries: VLT's generated queries.
        vlt_response: how VLT's confidence-weighted query answers reach its mask decoder:
            ``"spatial"`` (VLT's released code: the transformer runs at stride 16, each
            answer becomes an ``h x w`` response map, and the mask decoder reads those maps
            alone) or ``"modulate"`` (our earlier reading of the paper: their mean modulates
            the encoder's stride-32 visual tokens, then a decoder over the Swin pyramid;
            configs saved before the field existed load as ``"modulate"``).
        transformer_layers: depth of VLT's and LTS's transformers, and of ASDA's aligner
            self-attention.
        refiner_iters: SADLR iterations.
        refiner_hidden: SADLR dynamic-layer widths.
        refiner_repeats: SADLR repeats of ``refiner_hidden``.
        refiner_update: SADLR query update, ``"sum"`` or ``"replace"``.
        refiner_pooling: SADLR mask pooling, ``"hard"`` or ``"soft"``.
        loss_weights: SADLR per-iteration loss weights.
        selector_layers: ASDA candidate layer groups (1-based, inclusive ranges).
        selector_gradient: ASDA selection gradient mode.
        aligner_masks: ASDA number of mask bases.
        s2rm_pos_dim: S2RM position channels.
        s2rm_fusion: S2RM's fusion on the stride-32 map: ``"coparser"`` (the paper's
            :class:`~rislayers.SpatialRecurrentCoparser`), ``"tile_concat"`` (Table IV's
            "W. Tile & Concat." baseline, :class:`~rislayers.TileConcatFusion`) or
            ``"pwam"`` (Table VII, LAVT's :class:`~rislayers.PixelWordAttention`, added to
            ``V_4``).
        s2rm_decoder: ``"casg"`` (the paper's :class:`~rislayers.CASGDecoder`) or ``"fpn"``
            (Table IV's and VII's baseline, :class:`~rislayers.FPNDecoder`).
        coparser_directions: coparsing directions kept, from ``["l2v", "v2l"]`` (Table IV's
            "-l2v" is ``["v2l"]``, "-v2l" is ``["l2v"]``).
        coparser_shift: the recurrent shift of the generator (``false``: Table IV's "-Shift").
        coparser_balance: the Eq. 9-10 gates (``false``: Table IV's "-Balance").
        coparser_implementation: ``"gemm"`` (one affinity and a gather) or ``"shift"`` (the
            literal roll-and-concat); the same function and parameters.
        casg_language: the sentence in CASG's attentions (``false``: Table V's "-Lang.").
        casg_channel: CASG's channel attention (``false``: Table V's "-Cha.").
        casg_spatial: CASG's spatial attention (``false``: Table V's "-Spa.").
        casg_activation: CASG's attention activation, ``"tanh"`` or ``"sigmoid"`` (Table V's "Sig.").
        casg_stages: CASG's attention-guided stages kept, 0 to 3, removed coarsest first
            (Table VI: 3 = Full, 2 = "-D3", 1 = "-D2&3", 0 = "-D1&2&3").
        focal_weight: ASDA focal-loss weight beside Dice.
        asda_selection: how ASDA picks its low and mid ViT layers: ``"adaptive"`` (AFS, the
            paper), ``"fixed"`` (``asda_fixed_layers``, CRIS's hand-picked layers: Table 2
            (b)) or ``"top"`` (the last layer alone: Table 2 (a), with ``asda_fusion="concat"``).
        asda_fixed_layers: the low and mid layers (1-based) of ``asda_selection="fixed"``.
        asda_fusion: ``"sfa"`` (the scale-wise aggregator, Eq. 4-5) or ``"concat"`` (CRIS's
            concatenate-and-project fusion, Table 2 (a)-(c)).
        asda_aggregator: the SFA reading, ``"paper"`` (Eq. 5, 32 channels) or
            ``"published"`` (the released code's 512-wide transposed-convolution version).
        asda_loss: ``"focal_dice"`` (the paper) or ``"bce_dice"`` (the released code's
            focal loss at alpha=-1, gamma=0, i.e. binary cross-entropy, plus Dice).
        selector_head: AFS's scoring network, ``"linear"``, ``"mlp"`` or ``"conv"`` (Table 5).
        selector_text: what AFS scores the class tokens against: ``"sentence"`` (``f_E``,
            the paper) or ``"layer_eos"`` (the released code: the CLIP text tower's [EOS]
            token at the layer of the same depth, from its residual stream, before
            ``ln_final`` and the projection; needs ``text_encoder="clip"`` and
            ``text_layers`` reaching the deepest candidate layer).
        aligner_branches: WGDA's branches: ``"dual"`` (the paper), ``"single"`` (the coarse
            map attends to the words, then the segmentation decoder: Table 2 (e)) or
            ``"visual"`` (the segmentation decoder alone: Table 2 (a)-(d)).
        aligner_word_mask: honour the word padding mask in WGDA (``false``: the released
            code, which attends to padding words).
        aligner_blocks: WGDA's visual attention blocks, ``"pre_norm"`` (standard, the
            design) or ``"published"`` (the released code's post-norm blocks with an MLP as
            wide as the tokens).
        aligner_output_bias: a learned offset on WGDA's combined logit (``false``: Eq. 10
            as written and released, whose logit cannot pass 0 once every coefficient is
            negative). Configs saved before the field load as ``false``.
        pwam_norm_affine: learnable scale and shift in PWAM's instance norms (``false``:
            LAVT's code, whose ``nn.InstanceNorm1d`` has none).
        decoder_align_corners: ``align_corners=True`` in the baselines' decoder and final
            upsampling (LAVT's code).
        head_loss: the baselines' loss on their 2-class logits: ``"dice"`` (SADLR's
            setting) or ``"weighted_ce"`` (LAVT's cross-entropy weighted 0.9 / 1.1).
        lavt_last_gate: build LAVT's last-stage language gate, whose output no later stage
            reads (``true`` only to hold the weights of LAVT's releases).
    """

    name: str = "custom"
    architecture: str = "lavt"
    plugin: str | None = None
    image_size: int = 480
    # vision
    vision_encoder: str = "swin"
    swin_embed_dim: int = 128
    swin_depths: tuple[int, ...] = (2, 2, 18, 2)
    swin_heads: tuple[int, ...] = (4, 8, 16, 32)
    swin_window: int = 12
    swin_windows: str = "timm"
    clip_width: int = 768
    clip_layers: int = 12
    clip_heads: int = 12
    clip_patch: int = 16
    clip_embed_dim: int = 512
    clip_activation: str = "gelu"
    vision_weights: str | None = None
    drop_path: float = 0.2
    # text
    text_encoder: str = "bert"
    text_dim: int = 768
    text_layers: int = 12
    text_heads: int = 12
    text_intermediate: int = 3072
    vocab_size: int = 30522
    max_words: int = 20
    tokenizer: str = "bert"
    text_weights: str | None = None
    text_dropout: float = 0.1
    # baselines
    norm: str = "batch"
    decoder_dim: int = 512
    num_queries: int = 16
    transformer_layers: int = 2
    vlt_response: str = "spatial"
    # SADLR
    refiner_iters: int = 3
    refiner_hidden: tuple[int, ...] = (128, 512)
    refiner_repeats: int = 1
    refiner_update: str = "sum"
    refiner_pooling: str = "hard"
    loss_weights: tuple[float, ...] = (0.15, 0.15, 0.7)
    # ASDA
    selector_layers: tuple[tuple[int, int], ...] = ((4, 6), (7, 9))
    selector_gradient: str = "straight_through"
    aligner_masks: int = 32
    focal_weight: float = 1.0
    asda_selection: str = "adaptive"
    asda_fixed_layers: tuple[int, ...] = (6, 9)
    asda_fusion: str = "sfa"
    asda_aggregator: str = "paper"
    asda_loss: str = "focal_dice"
    selector_head: str = "linear"
    selector_text: str = "sentence"
    aligner_branches: str = "dual"
    aligner_word_mask: bool = True
    aligner_blocks: str = "pre_norm"
    aligner_output_bias: bool = True
    # LAVT (its published code's readings, for loading its releases)
    pwam_norm_affine: bool = True
    decoder_align_corners: bool = False
    head_loss: str = "dice"
    lavt_last_gate: bool = False
    # S2RM
    s2rm_pos_dim: int = 8
    s2rm_fusion: str = "coparser"
    s2rm_decoder: str = "casg"
    coparser_directions: tuple[str, ...] = ("l2v", "v2l")
    coparser_shift: bool = True
    coparser_balance: bool = True
    coparser_implementation: str = "gemm"
    casg_language: bool = True
    casg_channel: bool = True
    casg_spatial: bool = True
    casg_activation: str = "tanh"
    casg_stages: int = 3

    def __post_init__(self) -> None:
        check_model_config(self)

    # -- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild a config from :meth:`to_dict` output; unknown keys raise ``ValueError``.

        A saved config that lacks a field whose default changed since (``vlt_response`` of a
        VLT, ``lavt_last_gate`` of a LAVT) gets the value it was built with, so old weights
        fit; pass every field to get today's defaults.
        """
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"config: unknown keys {_unknown_keys(unknown, list(known))}; valid keys are {sorted(known)}")
        values = {key: _as_tuples(value) for key, value in data.items()}
        architecture = values.get("architecture", known["architecture"].default)
        for key, (reader, value) in _SAVED_BEFORE_THE_FIELD.items():
            if architecture == reader:
                values.setdefault(key, value)
        return cls(**values)

    def replace(self, **overrides: Any) -> ModelConfig:
        """A copy with some fields changed; unknown names raise ``ValueError`` listing valid ones."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"overrides: unknown config keys {_unknown_keys(unknown, sorted(known))}; valid keys are {sorted(known)}"
            )
        return dataclasses.replace(self, **overrides)

    def save(self, path: str | Path) -> None:
        """Write the config as indented JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        """Read a config written by :meth:`save`, with a clear error for a bad file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no model config here (expected config.json)") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        return cls.from_dict(data)


def parse_overrides(items: Sequence[str], *, name: str = "--model-arg") -> dict[str, Any]:
    """Parse ``"KEY=VALUE"`` strings (the CLIs' ``--model-arg``) into config overrides.

    Values are read as JSON where they parse (``3``, ``0.5``, ``true``, ``[2, 2, 6, 2]``);
    for the list fields a comma-separated value (``2,2,6,2``) or a single value is a list too;
    anything else stays text (``norm=group``). Lists become tuples, as the config's sequence fields are. Keys must be
    :class:`ModelConfig` fields (a near miss is suggested); the values are checked by the
    config that receives them.

    Args:
        items: the ``KEY=VALUE`` strings, in order (a repeated key keeps the last value).
        name: what the error messages call the argument.

    Returns:
        ``{key: value}``.

    Example:
        >>> parse_overrides(["swin_window=12", "norm=group", "swin_depths=2,2,6,2", "refiner_hidden=[16, 32]"])
        {'swin_window': 12, 'norm': 'group', 'swin_depths': (2, 2, 6, 2), 'refiner_hidden': (16, 32)}
    """
    known = [f.name for f in dataclasses.fields(ModelConfig)]
    sequences = {f.name for f in dataclasses.fields(ModelConfig) if str(f.type).startswith("tuple")}
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{name}: expected KEY=VALUE; got {item!r}")
        if key not in known:
            raise ValueError(f"{name}: unknown config key {_unknown_keys([key], known)}; valid keys are {sorted(known)}")
        value = _parse_value(raw)
        if key in sequences and isinstance(value, str):
            # "2,2,6,2" (or "2, 2,"): only list fields split, so a path with a comma stays one
            value = [_parse_value(part) for part in value.split(",") if part.strip()]
        elif key in sequences and not isinstance(value, list):
            value = [value]  # "refiner_hidden=64": a list of one
        overrides[key] = _as_tuples(value)
    return overrides


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw.strip()
