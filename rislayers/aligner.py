"""ASDA's Word Guided Dual-Branch Aligner (WGDA): masks from vision, coefficients from words.

Implements Eq. 6-10 of "Adaptive Selection based Referring Image Segmentation" (ASDA,
ACM MM 2024). The Coarse-to-Fine Segmentation decoder (CFS) refines the coarse map with
self-attention and decodes ``num_masks`` response masks; the Word-Guided Coefficient
Generator (WCG) lets the refined pixels attend to the words and pools one coefficient
per mask; the prediction is the coefficient-weighted sum of the masks.
"""

from __future__ import annotations

import warnings
from typing import ClassVar, Literal, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ._aligner_blocks import (
    _check_options,
    _ConvNormReLU,
    _PublishedWordBlock,
    _SelfAttentionBlock,
    _WordAttentionBlock,
)
from ._checkpointing import GradCheckpointing
from ._compat import autocast_output, renamed_arguments, user_stacklevel
from ._conv_blocks import _choice
from .functional import sine_position_encoding_2d, zero_padding
from .shapes import check_shape, check_words_inputs

__all__ = [
    "DualBranchAligner",
    "PublishedDualBranchAligner",
    "SingleBranchAligner",
    "PublishedSingleBranchAligner",
    "VisualOnlyAligner",
    "PublishedVisualOnlyAligner",
    "AlignerOutput",
]

_BRANCHES = ("dual", "single", "visual")
_BLOCKS = ("pre_norm", "published")


class AlignerOutput(NamedTuple):
    """Result of :class:`DualBranchAligner`: the prediction and the two branches' outputs."""

    logits: torch.Tensor
    """The foreground logit ``M = sum_k coefficients_k * masks_k``, ``(b, 1, h*2^s, w*2^s)``."""
    masks: torch.Tensor
    """The response masks ``M'`` in ``[0, 1]``, ``(b, num_masks, h*2^s, w*2^s)``; with one
    branch, the sigmoid of ``logits``."""
    coefficients: torch.Tensor
    """The mask coefficients ``f_coef`` in ``[-1, 1]``, ``(b, num_masks)``; ``(b, 0)`` with one branch."""


class _WordGuidedAligner(GradCheckpointing, nn.Module):
    """What every aligner class shares; the public subclasses fix ``_branches`` and ``_published``.

    ``_branches`` is ``"dual"`` (masks and coefficients), ``"single"`` (one channel from the
    word-fused map) or ``"visual"`` (one channel, no words); ``_published`` builds the
    released code's attention blocks. See :class:`DualBranchAligner` for the arguments.
    """

    _branches: ClassVar[str] = "dual"
    _published: ClassVar[bool] = False

    def __init__(
        self,
        dim: int,
        text_dim: int,
        *,
        num_masks: int = 32,
        num_layers: int = 2,
        num_heads: int = 8,
        upsample_steps: int = 3,
        mlp_ratio: float = 4.0,
        decoder_dim: int | None = None,
        norm: Literal["batch", "group", "none"] = "batch",
        upsample_mode: Literal["nearest", "bilinear"] = "nearest",
        word_mask: bool = True,
        output_bias: bool = True,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_options(
            dim=dim,
            text_dim=text_dim,
            num_masks=num_masks,
            num_layers=num_layers,
            num_heads=num_heads,
            upsample_steps=upsample_steps,
            mlp_ratio=mlp_ratio,
            decoder_dim=decoder_dim,
            norm=norm,
            upsample_mode=upsample_mode,
            word_mask=word_mask,
            output_bias=output_bias,
            dropout=dropout,
        )
        factory = {"device": device, "dtype": dtype}
        branches, published = self._branches, self._published
        self.dim = dim
        self.text_dim = text_dim
        self.branches = branches
        self.mask_words = word_mask
        self.blocks = "published" if published else "pre_norm"
        self.num_masks = num_masks if branches == "dual" else 1
        self.upsample_steps = upsample_steps
        mlp_hidden = max(1, round(dim * mlp_ratio))

        # CFS: local visual attention (Eq. 6) and segmentation decoder (Eq. 7).
        visual_hidden = dim if published else mlp_hidden
        self.visual_blocks = nn.ModuleList(
            _SelfAttentionBlock(dim, num_heads, visual_hidden, dropout, factory, post_norm=published)
            for _ in range(num_layers)
        )
        self.visual_norm = nn.LayerNorm(dim, **factory)
        width = dim // 2 if decoder_dim is None else decoder_dim
        self.mask_decoder = self._build_decoder(dim, width, upsample_steps, norm, upsample_mode, factory)
        self.mask_head = nn.Conv2d(width if upsample_steps else dim, self.num_masks, 1, **factory)

        # WCG: word-guided cross-attention (Eq. 8) and coefficient generation (Eq. 9).
        self.word_block = None
        if branches != "visual":
            word_block = _PublishedWordBlock if published else _WordAttentionBlock
            self.word_block = word_block(dim, text_dim, num_heads, mlp_hidden, dropout, factory)
        self.coefficient_head = None
        if branches == "dual":
            self.coefficient_head = nn.Sequential(
                _ConvNormReLU(dim, dim, 3, norm, factory),
                _ConvNormReLU(dim, dim, 3, norm, factory),
                nn.Conv2d(dim, num_masks, 1, **factory),
            )
        # One learned logit offset (Eq. 10 has none): with it the combined logit is no longer
        # capped at 0 when every coefficient turns negative.
        self.output_bias = None
        if output_bias and branches == "dual":
            self.output_bias = nn.Parameter(torch.zeros(1, **factory))

    @property
    def out_channels(self) -> int:
        """Channels of ``logits``, 1, the foreground logit (what a model wires the next part by)."""
        return 1

    @staticmethod
    def _build_decoder(dim: int, width: int, steps: int, norm: str, mode: str, factory: dict) -> nn.Sequential:
        layers: list[nn.Module] = []
        align = False if mode == "bilinear" else None
        for step in range(steps):
            layers.append(nn.Upsample(scale_factor=2, mode=mode, align_corners=align))
            layers.append(_ConvNormReLU(dim if step == 0 else width, width, 3, norm, factory))
        return nn.Sequential(*layers)

    def extra_repr(self) -> str:
        return (
            f"num_masks={self.num_masks}, upsample_steps={self.upsample_steps}, branches={self.branches!r}, "
            f"word_mask={self.mask_words}, blocks={self.blocks!r}, output_bias={self.output_bias is not None}"
        )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # A state dict saved before the offset existed holds no entry for it; an offset of 0 is
        # exactly that layer, so such weights load strictly and predict as they did.
        key = prefix + "output_bias"
        if self.output_bias is not None and key not in state_dict:
            state_dict[key] = torch.zeros_like(self.output_bias)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Names of the outputs, for ``torch.onnx.export(..., output_names=...)``."""
        return AlignerOutput._fields

    def _one_channel_output(self, decoded: torch.Tensor) -> AlignerOutput:
        # Without coefficients the decoder's single channel is the logit itself.
        logits = autocast_output(self.mask_head(self.mask_decoder(decoded)))
        return AlignerOutput(logits, logits.sigmoid(), logits.new_zeros(logits.shape[0], 0))

    def _visual_tokens(self, feats: torch.Tensor) -> torch.Tensor:
        """Eq. 6: the coarse map's pixels through the attention blocks and the norm, ``F_A`` as tokens."""
        height, width = feats.shape[-2], feats.shape[-1]
        published = self.blocks == "published"
        if published:  # the released code rectifies the coarse map before its encoder
            feats = F.relu(feats)
        # The released code's position code counts raw positions (1..h), not [0, 2 pi].
        pos = sine_position_encoding_2d(
            height, width, self.dim, normalize=not published, device=feats.device, dtype=feats.dtype
        )
        pos = rearrange(pos, "c h w -> 1 (h w) c")
        tokens = rearrange(feats, "b c h w -> b (h w) c")
        for block in self.visual_blocks:
            tokens = self._checkpointed(block, tokens, pos)
        return self.visual_norm(tokens)

    @property
    def decoded_channels(self) -> int:
        """Channels of :meth:`decode`'s map (the segmentation decoder's width)."""
        return self.mask_head.in_channels

    def decode(self, feats: torch.Tensor) -> torch.Tensor:
        """The coarse-to-fine branch alone (Eq. 6-7 before the mask head): ``F_A`` decoded.

        What a head of one's own (SADLR's refiner, say) reads in place of the mask bases and
        their word-guided coefficients; the words are not read.

        Args:
            feats: the coarse aligned map ``F_coarse``.

        Returns:
            The decoded map, ``decoded_channels`` wide, ``2 ** upsample_steps`` times larger.

        Shape:
            - feats: ``(b, dim, h, w)``
            - output: ``(b, decoded_channels, h * 2**s, w * 2**s)``

        Example:
            >>> import torch
            >>> aligner = VisualOnlyAligner(32, 16, num_layers=1, num_heads=2, upsample_steps=2)
            >>> aligner.decode(torch.randn(2, 32, 4, 4)).shape
            torch.Size([2, 16, 16, 16])
        """
        check_shape(feats, "b c h w", name="feats", c=self.dim)
        height, width = feats.shape[-2], feats.shape[-1]
        tokens = self._visual_tokens(feats)
        return autocast_output(self.mask_decoder(rearrange(tokens, "b (h w) c -> b c h w", h=height, w=width)))

    @renamed_arguments(coarse="feats")
    def forward(
        self, feats: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor | None = None
    ) -> AlignerOutput:
        """Predict response masks, their word-guided coefficients and the combined logit.

        Args:
            feats: the coarse aligned map ``F_coarse`` (e.g. from
                :class:`~rislayers.ScaleWiseAggregator`).
            words: word features ``f_T``.
            word_mask: bool, True for real tokens; ``None`` means every token is real. Pass
                ``~key_padding_mask`` if you hold PyTorch's True-on-padding mask. Checked
                but not applied when the layer was built with ``word_mask=False``.

        Returns:
            :class:`~rislayers.aligner.AlignerOutput` ``(logits, masks, coefficients)``.
        """
        dtype = self.mask_head.weight.dtype
        check_words_inputs(self, feats, words, word_mask, dim=self.dim, text_dim=self.text_dim, dtype=dtype)
        height, width = feats.shape[-2], feats.shape[-1]
        if self.mask_words:
            words = zero_padding(words, word_mask)
        else:
            word_mask = None  # the published code: padding words attend like real ones

        tokens = self._visual_tokens(feats)  # F_A

        visual_map = rearrange(tokens, "b (h w) c -> b c h w", h=height, w=width)
        if self.word_block is None:  # "visual": no word interaction at all
            return self._one_channel_output(visual_map)
        fine = self._checkpointed(self.word_block, tokens, words, word_mask)  # Eq. 8, F_fine
        fine_map = rearrange(fine, "b (h w) c -> b c h w", h=height, w=width)
        if self.coefficient_head is None:  # "single": the decoder reads the word-fused map
            return self._one_channel_output(fine_map)

        masks = self.mask_head(self.mask_decoder(visual_map)).sigmoid()  # Eq. 7, M'
        coefficients = self.coefficient_head(fine_map).mean(dim=(-2, -1)).tanh()  # Eq. 9
        logits = torch.einsum("bk,bkhw->bhw", coefficients, masks)  # Eq. 10
        if self.output_bias is not None:
            logits = logits + self.output_bias
        # The float32 offset would promote the logits: the layers' autocast convention casts back.
        logits = autocast_output(rearrange(logits, "b h w -> b 1 h w"))
        return AlignerOutput(logits, autocast_output(masks), autocast_output(coefficients))


class DualBranchAligner(_WordGuidedAligner):
    """Decode mask candidates from vision and mix them with word-guided coefficients (ASDA WGDA).

    Coarse-to-Fine Segmentation branch (CFS, Eq. 6-7): the coarse map's pixels pass
    ``num_layers`` pre-norm transformer blocks (self-attention with a fixed 2-D sine
    position code added to queries and keys, then an MLP) and a final LayerNorm, giving
    ``F_A``; ``upsample_steps`` times (2x upsample, 3x3 conv + norm + ReLU), a 1x1 conv to
    ``num_masks`` channels and a sigmoid give the response masks ``M'``.

    Word-Guided Coefficient Generator (WCG, Eq. 8-9): the pixels of ``F_A`` attend to the
    words (pre-norm multi-head cross-attention; padding words are excluded from the
    softmax and a sentence with no real word contributes nothing, never NaN), then an MLP,
    both residual, giving ``F_fine``; two 3x3 conv + norm + ReLU blocks, a 1x1 conv to
    ``num_masks`` channels, a global average pool and tanh give ``f_coef``.

    Output (Eq. 10): ``logits = sum_k f_coef[k] * M'[k] + b``, where ``b`` is one learned
    logit offset that starts at 0 (``output_bias=False`` drops it: Eq. 10 as written).

    The ablation variants of ASDA's Table 2 are classes of their own, since their outputs
    mean something else: :class:`SingleBranchAligner` (row (e)) and
    :class:`VisualOnlyAligner` (rows (a)-(d)); this class is row (f).

    Departures from the published code, all deliberate and each with an option where a
    run may want the published behaviour: the word padding mask is honoured
    (``word_mask=False`` ignores it as the published code does: padding words then take
    part in the softmax like real ones, so their values change the output); the attention
    blocks are pre-norm (:class:`PublishedDualBranchAligner` builds the released code's
    post-norm blocks). Without an option: the coefficients are pooled over space instead
    of read by ``Linear(26*26*32, 32)``, so any map size works; the masks use the paper's
    sigmoid (the published code applies ReLU); the decoders use ReLU and 1x1 output
    convolutions (the code: LeakyReLU(0.1), 3x3 output convolutions, and two 3x3 blocks at
    the coarse size before the mask decoder upsamples).

    Paper ambiguities, as options: the MLP width (``mlp_ratio``, 4 as in the published
    word-attention block and standard transformers), the convolution norm (``norm``:
    ``"batch"`` as in the published conv blocks, ``"group"`` for tiny batches, ``"none"``),
    the width of the upsampling convolutions (``decoder_dim``, default ``dim // 2`` as in
    the published decoder), the upsampling mode (``"nearest"`` as published) and dropout.
    Eq. 6 writes the MLP step without a LayerNorm; the default blocks are standard pre-norm
    blocks (a LayerNorm before the attention and before the MLP), as the design asks.
    With ``norm="batch"``, training on a batch of one ``1x1`` map fails (BatchNorm needs
    more than one value per channel); use ``"group"`` there.

    Activation checkpointing (``set_grad_checkpointing()``, timm's name; off by default):
    while the layer trains with gradients recorded, each attention block (the ``num_layers``
    self-attention blocks, in :meth:`forward` and :meth:`decode` alike, and the word block)
    keeps only its inputs and runs again in the backward pass, with the random-number state
    preserved so that dropout draws the same masks: the same outputs and gradients for less
    memory. The convolutional decoders are not checkpointed (they would recompute the
    layer's largest convolutions, at the upsampled size).

    Why the offset (a deliberate departure from Eq. 10, default on): the masks lie in
    ``[0, 1]`` and the coefficients in ``[-1, 1]``, so once every coefficient is negative no
    logit can pass 0 and nothing is predicted as foreground at the usual 0.5 cut. Trained
    from random weights this happened in 2 of 3 seeds of a tiny ASDA on the generated
    benchmark (the early, background-dominated loss pushes all coefficients down together):
    the masks had learned the object, which sat at logit 0 (probability 0.5) with the
    background below, so those runs scored 0 at a 0.5 cut and 50 mIoU at the released
    code's 0.35 cut. The offset's gradient lifts exactly that state; with it no seed ended
    there (docs page "Results on the generated benchmark"). Weights saved without the offset
    load into a layer that has it, with the offset at 0: the same function.

    Args:
        dim: visual channels ``c`` of the coarse map (a multiple of 4 and of ``num_heads``).
        text_dim: channels ``d`` of the words.
        num_masks: number of response masks and coefficients ``N_c`` (32 in the paper).
        num_layers: self-attention blocks ``n`` in CFS (2 in the paper).
        num_heads: attention heads of both branches.
        upsample_steps: 2x upsampling steps ``s`` of the mask decoder (3 in the paper).
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        decoder_dim: channels of the upsampling convolutions; default ``dim // 2``.
        norm: ``"batch"``, ``"group"`` or ``"none"`` after each 3x3 convolution.
        upsample_mode: ``"nearest"`` or ``"bilinear"``.
        word_mask: honour the word padding mask in the word attention (``False``: the
            published code, which ignores it).
        output_bias: add one learned offset to the combined logit. ``False``: Eq. 10 as
            written and as released.
        dropout: dropout in the attention blocks (0.1 in the published code).
        branches: deprecated (``DeprecationWarning``): ``"single"`` and ``"visual"`` build
            the modules of :class:`SingleBranchAligner` and :class:`VisualOnlyAligner`
            (``num_masks`` and ``output_bias`` are then ignored); build those classes instead.
        blocks: deprecated (``DeprecationWarning``): ``"published"`` builds the modules of
            the ``Published*`` classes; build those instead.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - feats: ``(b, c, h, w)`` the coarse map (named ``coarse`` before 0.2; the old
          keyword still works, with a ``DeprecationWarning``)
        - words: ``(b, l, d)``
        - word_mask: ``(b, l)`` bool, True for real tokens; ``None`` means all real (the
          negation of a ``key_padding_mask``: pass ``~key_padding_mask``)
        - output: :class:`~rislayers.aligner.AlignerOutput` with logits ``(b, 1, h*2^s, w*2^s)``, masks
          ``(b, num_masks, h*2^s, w*2^s)`` and coefficients ``(b, num_masks)``

    Example:
        >>> import torch
        >>> aligner = DualBranchAligner(32, 16, num_masks=8, num_heads=4, upsample_steps=2)
        >>> out = aligner(torch.randn(2, 32, 5, 6), torch.randn(2, 7, 16))
        >>> out.logits.shape, out.masks.shape, out.coefficients.shape
        (torch.Size([2, 1, 20, 24]), torch.Size([2, 8, 20, 24]), torch.Size([2, 8]))
        >>> aligner.out_channels
        1
    """

    def __init__(
        self,
        dim: int,
        text_dim: int,
        *,
        num_masks: int = 32,
        num_layers: int = 2,
        num_heads: int = 8,
        upsample_steps: int = 3,
        mlp_ratio: float = 4.0,
        decoder_dim: int | None = None,
        norm: Literal["batch", "group", "none"] = "batch",
        upsample_mode: Literal["nearest", "bilinear"] = "nearest",
        word_mask: bool = True,
        output_bias: bool = True,
        dropout: float = 0.0,
        branches: Literal["dual", "single", "visual"] | None = None,
        blocks: Literal["pre_norm", "published"] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if branches is not None or blocks is not None:
            # Instance attributes shadow the class's: the deprecated keywords build the same
            # modules (same state-dict keys) as the class they name.
            object.__setattr__(self, "_branches", _choice("branches", branches or "dual", _BRANCHES))
            object.__setattr__(self, "_published", _choice("blocks", blocks or "pre_norm", _BLOCKS) == "published")
            warnings.warn(
                f"branches, blocks: deprecated; build {_variant_name(branches or 'dual', blocks == 'published')} instead",
                DeprecationWarning,
                stacklevel=user_stacklevel(),
            )
        super().__init__(
            dim,
            text_dim,
            num_masks=num_masks,
            num_layers=num_layers,
            num_heads=num_heads,
            upsample_steps=upsample_steps,
            mlp_ratio=mlp_ratio,
            decoder_dim=decoder_dim,
            norm=norm,
            upsample_mode=upsample_mode,
            word_mask=word_mask,
            output_bias=output_bias,
            dropout=dropout,
            device=device,
            dtype=dtype,
        )


def _variant_name(branches: str, published: bool) -> str:
    """The class that builds what ``DualBranchAligner(branches=..., blocks=...)`` used to."""
    names = {"dual": "DualBranchAligner", "single": "SingleBranchAligner", "visual": "VisualOnlyAligner"}
    return ("Published" if published else "") + names[branches]


# The variants subclass the shared base above; importing them last keeps the one name space.
from .aligner_variants import (  # noqa: E402
    PublishedDualBranchAligner,
    PublishedSingleBranchAligner,
    PublishedVisualOnlyAligner,
    SingleBranchAligner,
    VisualOnlyAligner,
)
