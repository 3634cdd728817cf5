"""S2RM's cross-scale abstract semantic guided decoder (CASG).

Yang et al., "Spatial Semantic Recurrent Mining for Referring Image Segmentation", Sec. III-C,
Eq. 11-15 and Fig. 3. The decoder walks the pyramid from coarse to fine. At each stage the
outputs of all coarser stages are upsampled to the current size and re-combined by a conv
(``I_{i,1}``, Eq. 13-15); from that tensor and the sentence vector it derives a channel gate
``C_i`` (Eq. 11, applied to the stage's pure vision feature ``V_i``) and a spatial gate ``S_i``
(a sentence-generated dynamic 1x1 conv, Eq. 11, applied to the fused result), with
``I_{i,1}`` concatenated twice as a skip (Eq. 12).

Choices where the paper is silent or ambiguous are keyword options whose default is the
paper's reading (see each class's ``Args``). In particular, the paper's "Coord" in Eq. 11 is
*defined* in its text as "re-combine the feature maps from the previous decoding stages,
detailed in Eq. (13)-(15)", and those equations contain no coordinate map, so by default no
coordinate channels are added; ``coord="recombine"`` reads "Coord" the CoordConv way instead
and concatenates :func:`rislayers.functional.coord_features` to the re-combined input.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import nn

from ._checkpointing import GradCheckpointing
from ._compat import user_stacklevel
from ._conv_blocks import _NORMS, _check_pyramid, _ConvNormAct, _choice, _dims_tuple
from .functional import coord_features
from .shapes import ShapeError, check_shape, positive_int

__all__ = ["CASGStageOptions", "CASGStage", "CASGDecoder"]

_GATES = ("tanh", "sigmoid")
_COORDS = ("none", "recombine")
_COORD_CHANNELS = 8


@dataclasses.dataclass(frozen=True)
class CASGStageOptions:
    """The options every :class:`CASGStage` of a :class:`CASGDecoder` shares (the paper's readings).

    One frozen value, given to the decoder as ``stage=`` and handed to each stage as its
    keywords, so the decoder does not re-declare them. Checked when made.

    Args:
        mlp_ratio: hidden width of the channel gate's perceptron, as a multiple of the
            stage's width (the paper does not give it; 1.0 keeps it ``(d + c) -> c -> c``).
        kernel_size: kernel of the stage's three convs (odd; the paper does not give it).
        gate: ``"tanh"`` (the paper) or ``"sigmoid"`` (Table V's "Sig.").
        channel_attention: apply the channel gate (``False`` = Table V's "-Cha.").
        spatial_attention: apply the spatial gate (``False`` = Table V's "-Spa.").
        language: use the sentence (``False`` = Table V's "-Lang.").
        spatial_scaling: divide the dynamic-conv response by ``sqrt(dim)`` before the gate.
        coord: ``"none"`` (the paper's "Coord" is the re-combination) or ``"recombine"``
            (8 coordinate channels appended to the re-combining conv's input).

    Example:
        >>> CASGStageOptions(gate="sigmoid").kernel_size
        3
        >>> CASGStageOptions(kernel_size=2)
        Traceback (most recent call last):
        ...
        ValueError: kernel_size: expected an odd positive integer; got 2
    """

    mlp_ratio: float = 1.0
    kernel_size: int = 3
    gate: Literal["tanh", "sigmoid"] = "tanh"
    channel_attention: bool = True
    spatial_attention: bool = True
    language: bool = True
    spatial_scaling: bool = False
    coord: Literal["none", "recombine"] = "none"

    def __post_init__(self) -> None:
        if positive_int("kernel_size", self.kernel_size) % 2 == 0:
            raise ValueError(f"kernel_size: expected an odd positive integer; got {self.kernel_size!r}")
        ratio = self.mlp_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
            raise ValueError(f"mlp_ratio: expected a positive number; got {ratio!r}")
        _choice("gate", self.gate, _GATES)
        _choice("coord", self.coord, _COORDS)


class CASGStage(GradCheckpointing, nn.Module):
    """One attention-guided decoding stage of CASG (S2RM Eq. 11-15, Fig. 3).

    With ``I`` the re-combination of the coarser stages' outputs, ``V`` this stage's pure
    vision feature and ``t`` the sentence vector (the paper's ``AvgP(T)``)::

        I  = Conv(Cat(Up(F_coarsest), ..., Up(F_previous)))    # Eq. 13-15 ("Coord")
        C  = tanh(MLP(Cat(t, AvgPool(I))))                      # Eq. 11, channel gate (b, c)
        S  = tanh(sum_c I * Linear(t))                          # Eq. 11, dynamic 1x1 conv (b, 1, h, w)
        I2 = Conv(Cat(V * C, I))                                # Eq. 12
        F  = Conv(Cat(I2 * S, I))                               # Eq. 12, the stage's output

    Every ``Conv`` is conv -> norm -> ReLU. Previous maps are resized (bilinear) to the exact
    size of ``vis``, so pyramids whose sizes do not halve exactly (e.g. 13, 7, 4, 2) work.

    Activation checkpointing (``set_grad_checkpointing()``, off by default): while training
    with gradients recorded, the stage keeps only its inputs and runs again in the backward
    pass; its BatchNorms' running statistics are put back after that second run, so a step
    moves them once, as without checkpointing.

    Args:
        dim: channels ``c`` of the stage (of ``I``, the gates and the output); the paper uses
            the channel count ``C_i^vis`` of the stage's vision feature.
        prev_dims: channels of the coarser stages' outputs, in the order ``prev`` is passed
            (the paper: coarsest first, ``F_4^cross, ..., F_{i+1}^cross``). At least one.
        text_dim: channels ``d`` of the sentence vector.
        vis_dim: channels of ``vis`` when they differ from ``dim``; ``vis`` is then first
            projected to ``dim`` by a 1x1 conv -> norm -> ReLU (not in the paper, whose
            widths always agree). ``None`` means ``dim``.
        mlp_ratio: hidden width of the channel gate's two-layer perceptron, as a multiple of
            ``dim`` (the paper does not give it; 1.0 keeps the MLP ``(d + c) -> c -> c``).
        kernel_size: kernel of the three convs (odd; the paper does not give it).
        norm: ``"batch"`` (the paper's ``Conv_BN_ReLU``; samples of a batch interact in
            training mode, so use eval mode where batch independence matters), ``"group"``
            (GroupNorm with gcd(c, 32) groups, batch-independent in training mode too) or
            ``"none"`` (conv bias instead).
        gate: ``"tanh"`` (the paper) or ``"sigmoid"`` (its ablation "Sig." in Table V).
        channel_attention: apply the channel gate ``C`` (``False`` = Table V's "-Cha.":
            ``V`` enters unscaled).
        spatial_attention: apply the spatial gate ``S`` (``False`` = Table V's "-Spa.").
        language: use the sentence (``False`` = Table V's "-Lang.": the MLP sees only
            ``AvgPool(I)`` and ``S`` comes from a learned static 1x1 conv; ``sentence`` is
            still validated but otherwise ignored).
        spatial_scaling: divide the dynamic-conv response by ``sqrt(dim)`` before the gate,
            as scaled dot-product attention does, so wide stages saturate tanh less. The
            paper uses the raw response (``False``).
        coord: where the 8 coordinate channels of
            :func:`~rislayers.functional.coord_features` are concatenated: ``"none"`` (the
            paper defines its "Coord" as the re-combination of Eq. 13-15, which has no
            coordinates) or ``"recombine"`` (appended to the upsampled maps entering the
            re-combining conv, the CoordConv reading of "Coord").
        align_corners: passed to the bilinear resizing of ``prev``.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - vis: ``(b, c, h, w)`` (``c = vis_dim`` when given)
        - prev: a sequence of ``len(prev_dims)`` maps ``(b, c_k, h_k, w_k)``, any sizes
        - sentence: ``(b, d)``
        - output: ``(b, c, h, w)`` with ``c = dim``

    Example:
        >>> import torch
        >>> stage = CASGStage(32, prev_dims=(64, 48), text_dim=16)
        >>> vis = torch.randn(2, 32, 13, 13)
        >>> prev = [torch.randn(2, 64, 4, 4), torch.randn(2, 48, 7, 7)]
        >>> stage(vis, prev, torch.randn(2, 16)).shape
        torch.Size([2, 32, 13, 13])
    """

    def __init__(
        self,
        dim: int,
        prev_dims: Sequence[int],
        text_dim: int,
        *,
        vis_dim: int | None = None,
        mlp_ratio: float = 1.0,
        kernel_size: int = 3,
        norm: Literal["batch", "group", "none"] = "batch",
        gate: Literal["tanh", "sigmoid"] = "tanh",
        channel_attention: bool = True,
        spatial_attention: bool = True,
        language: bool = True,
        spatial_scaling: bool = False,
        coord: Literal["none", "recombine"] = "none",
        align_corners: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.dim = positive_int("dim", dim)
        self.prev_dims = _dims_tuple("prev_dims", prev_dims)
        self.text_dim = positive_int("text_dim", text_dim)
        self.vis_dim = dim if vis_dim is None else positive_int("vis_dim", vis_dim)
        self.options = CASGStageOptions(  # checks the options
            mlp_ratio, kernel_size, gate, channel_attention, spatial_attention, language, spatial_scaling, coord
        )
        self.norm = _choice("norm", norm, _NORMS)
        self.gate = gate
        self.coord = coord
        self.channel_attention = bool(channel_attention)
        self.spatial_attention = bool(spatial_attention)
        self.language = bool(language)
        self.spatial_scaling = bool(spatial_scaling)
        self.align_corners = bool(align_corners)
        factory = {"device": device, "dtype": dtype}

        recombine_in = sum(self.prev_dims) + (_COORD_CHANNELS if self.coord == "recombine" else 0)
        self.recombine = _ConvNormAct(recombine_in, dim, kernel_size, self.norm, **factory)
        self.vis_proj = (
            _ConvNormAct(self.vis_dim, dim, 1, self.norm, **factory) if self.vis_dim != dim else None
        )
        if self.channel_attention:
            hidden = max(1, round(dim * mlp_ratio))
            mlp_in = dim + (text_dim if self.language else 0)
            self.channel_mlp: nn.Module | None = nn.Sequential(
                nn.Linear(mlp_in, hidden, **factory), nn.ReLU(inplace=True), nn.Linear(hidden, dim, **factory)
            )
        else:
            self.channel_mlp = None
        if not self.spatial_attention:
            self.spatial_kernel: nn.Module | None = None
        elif self.language:
            # "Insert(AvgP(T))": the sentence becomes the weights of a 1x1 conv c -> 1; a
            # projection is needed because d != c in general.
            self.spatial_kernel = nn.Linear(text_dim, dim, **factory)
        else:
            self.spatial_kernel = nn.Conv2d(dim, 1, 1, **factory)
        self.fuse_vis = _ConvNormAct(2 * dim, dim, kernel_size, self.norm, **factory)
        self.fuse_out = _ConvNormAct(2 * dim, dim, kernel_size, self.norm, **factory)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, prev_dims={self.prev_dims}, text_dim={self.text_dim}, vis_dim={self.vis_dim}, "
            f"gate={self.gate!r}, coord={self.coord!r}, language={self.language}"
        )

    def _gate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x) if self.gate == "tanh" else torch.sigmoid(x)

    @property
    def out_channels(self) -> int:
        """Channels of the stage's output, ``dim``."""
        return self.dim

    @property
    def output_names(self) -> tuple[str, ...]:
        """Name of the output, for ``torch.onnx.export(..., output_names=...)``."""
        return ("fused",)

    def forward(self, vis: torch.Tensor, prev: Sequence[torch.Tensor], sentence: torch.Tensor) -> torch.Tensor:
        """Fuse ``vis`` with the coarser stages' outputs under sentence-driven gates.

        Args:
            vis: the stage's pure vision feature ``V_i``.
            prev: the outputs of all coarser stages, in the order of ``prev_dims``.
            sentence: the sentence vector (the paper's average-pooled words ``AvgP(T)``).

        Returns:
            The stage's output ``F_i^cross``, at the size of ``vis``.
        """
        dtype = self.fuse_out[0].weight.dtype
        check_shape(vis, "b c h w", name="vis", c=self.vis_dim, floating=True, dtype=dtype)
        # Sizes come from the tensor, not the binding: checks may be switched off.
        batch = vis.shape[0]
        check_shape(sentence, "b d", name="sentence", bound={"b": batch}, d=self.text_dim, floating=True, dtype=dtype)
        if isinstance(prev, torch.Tensor) or not isinstance(prev, Sequence) or len(prev) != len(self.prev_dims):
            got = f"length {len(prev)}" if isinstance(prev, Sequence) else type(prev).__name__
            raise ShapeError(
                f"prev: expected a sequence of {len(self.prev_dims)} maps (b, c_k, h_k, w_k) with "
                f"c_k = {self.prev_dims}; got {got}"
            )
        for k, (feat, channels) in enumerate(zip(prev, self.prev_dims)):
            check_shape(feat, "b c h w", name=f"prev[{k}]", bound={"b": batch}, c=channels, floating=True, dtype=dtype)
        return self._checkpointed(self._fuse, vis, tuple(prev), sentence)

    def _fuse(self, vis: torch.Tensor, prev: tuple[torch.Tensor, ...], sentence: torch.Tensor) -> torch.Tensor:
        """Eq. 11-15 on checked inputs (checkpointed as one block when switched on)."""
        batch, height, width = vis.shape[0], vis.shape[-2], vis.shape[-1]
        resized = [
            feat
            if feat.shape[-2:] == (height, width)
            else F.interpolate(feat, size=(height, width), mode="bilinear", align_corners=self.align_corners)
            for feat in prev
        ]
        if self.coord == "recombine":
            resized.append(coord_features(batch, height, width, device=vis.device, dtype=vis.dtype))
        recombined = self.recombine(torch.cat(resized, dim=1))  # I_{i,1}, Eq. 13-15

        if self.vis_proj is not None:
            vis = self.vis_proj(vis)
        if self.channel_mlp is not None:
            pooled = reduce(recombined, "b c h w -> b c", "mean")
            summary = torch.cat((sentence, pooled), dim=1) if self.language else pooled
            channel_gate = self._gate(self.channel_mlp(summary))  # C_i, Eq. 11
            vis = vis * rearrange(channel_gate, "b c -> b c 1 1")
        fused = self.fuse_vis(torch.cat((vis, recombined), dim=1))  # I_{i,2}, Eq. 12

        if self.spatial_kernel is not None:
            if self.language:
                kernel = self.spatial_kernel(sentence)  # dynamic 1x1 conv weights, (b, c)
                response = torch.einsum("bchw,bc->bhw", recombined, kernel)
                response = rearrange(response, "b h w -> b 1 h w")
            else:
                response = self.spatial_kernel(recombined)
            if self.spatial_scaling:
                response = response * self.dim**-0.5
            fused = fused * self._gate(response)  # S_i, Eq. 11
        return self.fuse_out(torch.cat((fused, recombined), dim=1))  # F_i^cross, Eq. 12


class CASGDecoder(GradCheckpointing, nn.Module):
    """S2RM's CASG decoder: three :class:`CASGStage` s from coarse to fine, then a classifier.

    ``F_4^cross`` (the fused coarsest map, e.g. from
    :class:`~rislayers.SpatialRecurrentCoparser`) seeds the decoder; the stage of ``V_3``
    sees ``[F_4]``, the stage of ``V_2`` sees ``[F_4, F_3]`` and the stage of ``V_1`` sees
    ``[F_4, F_3, F_2]`` (Eq. 13-15). ``F_1`` goes through "another 2D convolution" to
    ``num_classes`` logits, which are bilinearly upsampled x4 (V1 is at stride 4 of the
    image). The paper's final sigmoid is left to the loss: the decoder returns logits.
    :meth:`forward_features` stops before the classifier and returns ``F_1^cross``;
    ``num_classes=None`` builds no classifier at all, for a plug-in head that reads
    ``F_1^cross`` instead (e.g. SADLR's :class:`~rislayers.DynamicQueryRefiner`).
    ``set_grad_checkpointing()`` checkpoints each stage (see :class:`CASGStage`).

    Args:
        in_dims: channels ``(c1, c2, c3, c4)`` of ``V1, V2, V3, F4cross``.
        text_dim: channels ``d`` of the sentence vector.
        num_classes: output channels (1 = one foreground logit). ``None`` builds no
            classifier: :meth:`forward` then returns ``F_1^cross`` ``(b, dims[0], h1, w1)``,
            as :meth:`forward_features` does.
        num_stages: attention-guided stages kept, 0 to 3 (Table VI: 3 = Full, 2 = "-D3",
            1 = "-D2&3", 0 = "-D1&2&3"). Stages go coarsest first: a removed stage is not
            built, its ``V_i`` is not read and the later stages see one map fewer in
            ``prev``; with 0 the classifier reads ``F_4^cross`` (``c4`` channels) and the
            logits are upsampled to ``4*h1, 4*w1`` all the same. The decoded map
            (:meth:`forward_features`) is then at the size of the finest kept stage, with
            ``out_dim`` channels.
        dims: widths of the stages of ``V1, V2, V3`` (high-res first). ``None`` (the paper:
            "F_i^cross of size H/2^{i+1} x W/2^{i+1} x C_i^vis") uses ``in_dims[:3]``; other
            widths add a 1x1 projection of each ``V_i`` (see ``CASGStage(vis_dim=...)``).
        head_kernel_size: kernel of the final classifier conv (odd; the paper does not say;
            1 is a plain per-pixel classifier).
        stage: the options every stage shares (:class:`CASGStageOptions`; default: the
            paper's readings).
        norm: see :class:`CASGStage` (``"batch"``, the default, couples the samples of a
            batch in training mode; use eval mode for per-sample results).
        align_corners: bilinear resizing inside the stages and of the final logits.
        **stage_options: deprecated (``DeprecationWarning``): the fields of
            :class:`CASGStageOptions` as keywords (``gate="sigmoid"``), applied over
            ``stage``; pass ``stage=CASGStageOptions(gate="sigmoid")`` instead.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - features: ``[V1 (b, c1, h1, w1), V2 (b, c2, h2, w2), V3 (b, c3, h3, w3),
          F4cross (b, c4, h4, w4)]``, high resolution first: no map may be larger than the
          one before it (a ShapeError names a pyramid given coarsest first); the sizes need
          not halve exactly (each stage resizes to its own map)
        - sentence: ``(b, d)``
        - output: ``(b, num_classes, 4*h1, 4*w1)``; ``(b, dims[0], h1, w1)`` with
          ``num_classes=None``

    Example:
        >>> import torch
        >>> decoder = CASGDecoder((16, 32, 64, 128), text_dim=24)
        >>> features = [torch.randn(2, c, 32 // 2**i, 32 // 2**i) for i, c in enumerate((16, 32, 64, 128))]
        >>> decoder(features, torch.randn(2, 24)).shape
        torch.Size([2, 1, 128, 128])
        >>> decoder.forward_features(features, torch.randn(2, 24)).shape
        torch.Size([2, 16, 32, 32])
        >>> sig = CASGDecoder((16, 32, 64, 128), 24, stage=CASGStageOptions(gate="sigmoid"), num_classes=None)
        >>> sig.out_channels, sig.stages[0].gate
        (16, 'sigmoid')
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        text_dim: int,
        *,
        num_classes: int | None = 1,
        num_stages: int = 3,
        dims: Sequence[int] | None = None,
        head_kernel_size: int = 1,
        stage: CASGStageOptions | None = None,
        norm: Literal["batch", "group", "none"] = "batch",
        align_corners: bool = False,
        device=None,
        dtype=None,
        **stage_options: object,
    ) -> None:
        super().__init__()
        self.stage_options = _stage_options(stage, stage_options)
        self.in_dims = _dims_tuple("in_dims", in_dims, 4)
        self.text_dim = positive_int("text_dim", text_dim)
        self.num_classes = None if num_classes is None else positive_int("num_classes", num_classes)
        if isinstance(num_stages, bool) or not isinstance(num_stages, int) or not 0 <= num_stages <= 3:
            raise ValueError(f"num_stages: expected an integer in [0, 3]; got {num_stages!r}")
        self.num_stages = num_stages
        self.dims = self.in_dims[:3] if dims is None else _dims_tuple("dims", dims, 3)
        head_kernel_size = positive_int("head_kernel_size", head_kernel_size)
        if head_kernel_size % 2 == 0:
            raise ValueError(f"head_kernel_size: expected an odd positive integer; got {head_kernel_size!r}")
        self.align_corners = bool(align_corners)
        factory = {"device": device, "dtype": dtype}

        # Run order: V3's stage first. Each sees F4 and every finer output produced so far.
        # Stages are removed coarsest first (Table VI's -D3, -D2&3, -D1&2&3): the finest
        # num_stages levels are kept, and a removed level's V_i is not read.
        self.levels = (2, 1, 0)[3 - num_stages :]
        stages = []
        prev_dims = [self.in_dims[3]]
        for level in self.levels:
            stages.append(
                CASGStage(
                    self.dims[level],
                    tuple(prev_dims),
                    text_dim,
                    vis_dim=self.in_dims[level],
                    norm=norm,
                    align_corners=align_corners,
                    **dataclasses.asdict(self.stage_options),
                    **factory,
                )
            )
            prev_dims.append(self.dims[level])
        self.stages = nn.ModuleList(stages)
        # Channels of the decoded map: F_1^cross, or F_4^cross itself when no stage is kept.
        self.out_dim = self.dims[0] if num_stages else self.in_dims[3]
        self.head = (
            None
            if num_classes is None
            else nn.Conv2d(self.out_dim, num_classes, head_kernel_size, padding=head_kernel_size // 2, **factory)
        )

    def extra_repr(self) -> str:
        return (
            f"in_dims={self.in_dims}, text_dim={self.text_dim}, num_classes={self.num_classes}, "
            f"num_stages={self.num_stages}, dims={self.dims}"
        )

    @property
    def out_channels(self) -> int:
        """Channels of what :meth:`forward` returns, ``num_classes``, or ``out_dim`` without a classifier."""
        return self.out_dim if self.num_classes is None else self.num_classes

    @property
    def output_names(self) -> tuple[str, ...]:
        """Name of the output (``"logits"``, or ``"features"`` without a classifier), for ONNX export."""
        return ("logits",) if self.head is not None else ("features",)

    def forward(self, features: Sequence[torch.Tensor], sentence: torch.Tensor) -> torch.Tensor:
        """Decode the pyramid into mask logits at 4x the resolution of ``V1``.

        Args:
            features: ``[V1, V2, V3, F4cross]``, high resolution first.
            sentence: the sentence vector (the paper's ``AvgP(T)``).

        Returns:
            Logits ``(b, num_classes, 4*h1, 4*w1)``; without a classifier
            (``num_classes=None``), ``F_1^cross`` ``(b, dims[0], h1, w1)``.
        """
        decoded = self.forward_features(features, sentence)
        if self.head is None:
            return decoded
        # 4x V1's size, whatever the last kept stage's size (F4's with num_stages=0).
        height, width = features[0].shape[-2:]
        logits = self.head(decoded)
        return F.interpolate(logits, size=(4 * height, 4 * width), mode="bilinear", align_corners=self.align_corners)

    def forward_features(self, features: Sequence[torch.Tensor], sentence: torch.Tensor) -> torch.Tensor:
        """Run the three stages and return the finest fused map ``F_1^cross`` (no classifier).

        Args:
            features: ``[V1, V2, V3, F4cross]``, high resolution first.
            sentence: the sentence vector (the paper's ``AvgP(T)``).

        Returns:
            ``F_1^cross`` ``(b, dims[0], h1, w1)``, at the size of ``V1``.
        """
        if isinstance(features, torch.Tensor) or not isinstance(features, Sequence) or len(features) != 4:
            got = f"length {len(features)}" if isinstance(features, Sequence) else type(features).__name__
            raise ShapeError(
                f"features: expected a sequence of 4 maps [V1, V2, V3, F4cross] (b, c_k, h_k, w_k) with "
                f"c_k = {self.in_dims}; got {got}"
            )
        if self.num_stages:
            dtype = self.stages[0].fuse_out[0].weight.dtype
        else:
            dtype = None if self.head is None else self.head.weight.dtype
        check_shape(features[0], "b c h w", name="features[0]", c=self.in_dims[0], floating=True, dtype=dtype)
        batch = features[0].shape[0]
        for k in (1, 2, 3):
            check_shape(
                features[k], "b c h w", name=f"features[{k}]", bound={"b": batch}, c=self.in_dims[k], floating=True, dtype=dtype
            )
        check_shape(sentence, "b d", name="sentence", bound={"b": batch}, d=self.text_dim, floating=True, dtype=dtype)
        _check_pyramid(features, "[V1, V2, V3, F4cross]")

        decoded = [features[3]]
        for stage, level in zip(self.stages, self.levels):
            decoded.append(stage(features[level], tuple(decoded), sentence))
        return decoded[-1]


def _stage_options(stage: CASGStageOptions | None, legacy: dict[str, object]) -> CASGStageOptions:
    """``stage`` with the deprecated per-option keywords of :class:`CASGDecoder` applied over it."""
    if stage is not None and not isinstance(stage, CASGStageOptions):
        raise ValueError(f"stage: expected a CASGStageOptions; got {stage!r}")
    stage = stage or CASGStageOptions()
    if not legacy:
        return stage
    fields = {f.name for f in dataclasses.fields(CASGStageOptions)}
    unknown = sorted(set(legacy) - fields)
    if unknown:
        raise TypeError(f"{unknown[0]}: not an argument of CASGDecoder nor a field of CASGStageOptions")
    names = ", ".join(sorted(legacy))
    warnings.warn(
        f"{names}: deprecated as CASGDecoder keywords; pass them in stage=CASGStageOptions(...) instead",
        DeprecationWarning,
        stacklevel=user_stacklevel(),
    )
    return dataclasses.replace(stage, **legacy)
