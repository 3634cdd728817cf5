"""Swin Transformer image encoder (timm), exposed stage by stage in NCHW."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..weights import load_weights
from .checkpointing import checkpointed

__all__ = ["SwinEncoder", "WINDOW_LAYOUTS"]

#: The ways a Swin stage can lay its windows over a map, ``"timm"`` (timm's classification
#: Swin) and ``"segmentation"`` (the Swin semantic-segmentation code that LAVT builds on).
WINDOW_LAYOUTS = ("timm", "segmentation")


def _pad_then_shift(block, x: torch.Tensor) -> torch.Tensor:
    """Window attention of the Swin segmentation code (LAVT's backbone) in a timm block.

    There the map is zero-padded to whole windows *before* the cyclic shift, and the shift
    mask covers the padded map; timm shifts the unpadded map, then pads. Where a map is not
    a multiple of the window the two can put different tokens in a window; at 480 px with
    window 12 (LAVT's) they differ in the last (15x15) stage only, as measured (see
    ``swin_windows`` in the model config).
    """
    from timm.models.swin_transformer import window_partition, window_reverse

    _, height, width, channels = x.shape
    x = F.pad(x, (0, 0, 0, -width % block.window_size[1], 0, -height % block.window_size[0]))
    _, padded_h, padded_w, _ = x.shape
    shifted = any(block.shift_size)
    if shifted:
        x = torch.roll(x, shifts=(-block.shift_size[0], -block.shift_size[1]), dims=(1, 2))
    windows = window_partition(x, block.window_size).view(-1, block.window_area, channels)
    mask = block.get_attn_mask(x) if block.dynamic_mask else block.attn_mask
    out = block.attn(windows, mask=mask).view(-1, block.window_size[0], block.window_size[1], channels)
    out = window_reverse(out, block.window_size, padded_h, padded_w)
    if shifted:
        out = torch.roll(out, shifts=block.shift_size, dims=(1, 2))
    return out[:, :height, :width, :].contiguous()


@functools.cache
def _pad_first_block() -> type:
    """timm's ``SwinTransformerBlock`` with :func:`_pad_then_shift` (built on first use, as
    timm is imported lazily; found by pickle through the module's ``__getattr__``)."""
    from timm.models.swin_transformer import SwinTransformerBlock

    block = type("_PadFirstSwinBlock", (SwinTransformerBlock,), {"_attn": _pad_then_shift, "__module__": __name__})
    return block


def __getattr__(name: str):
    if name == "_PadFirstSwinBlock":
        return _pad_first_block()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class SwinEncoder(nn.Module):
    """A timm ``SwinTransformer`` whose four stages can be run one at a time.

    timm's Swin works in NHWC; this wrapper converts at its boundary so that everything
    outside sees NCHW maps at strides 4, 8, 16, 32 with channels ``embed_dim * 2**i``.
    LAVT needs the stages one by one (it fuses language between them), so instead of
    timm's ``features_only`` wrapper the stages are exposed directly: :meth:`stem`, then
    :meth:`run_stage` for ``i = 0..3``; :meth:`forward` runs them all.

    Args:
        image_size: square input size (480 for LAVT/SADLR, 512 for S2RM); any multiple of
            32 works (timm pads windows that do not tile the map).
        embed_dim: stage-1 channels (Swin-T 96, Swin-B 128).
        depths: blocks per stage.
        num_heads: heads per stage.
        window_size: attention window (LAVT uses 12 with Swin-B).
        drop_path_rate: stochastic depth.
        windows: ``"timm"`` (default) or ``"segmentation"``: every stage keeps its full
            window and shift, and pads the map to whole windows before shifting it, as the
            Swin segmentation code (LAVT's backbone) does; the same weights.
        weights: a local Swin checkpoint, in timm's layout or the original Microsoft one
            (``{"model": ...}`` with ``layers.i.downsample`` at the end of stage ``i``, a
            ``head`` classifier, ``relative_position_index``/``attn_mask`` buffers), converted
            by timm's checkpoint filter. Relative-position tables of another window size are
            resized to ``window_size``, with a warning; the classifier head is dropped.
        strict: fail on any mismatched key (default) rather than loading what fits.

    Attributes:
        pixel_mean: the per-channel mean its inputs are normalised with (ImageNet's, as
            timm's ``pretrained_cfg`` gives for Swin); the one place training, evaluation,
            prediction, pictures and studies take it from
            (:func:`~reference_models.encoders.pixel_statistics`).
        pixel_std: the per-channel standard deviation, likewise.
        out_channels: channels of each stage's map, ``embed_dim * 2**i``.
        strides: input pixels per map pixel of each stage, ``4 * 2**i``.
        grad_checkpointing: whether :meth:`run_stage` checkpoints each block
            (:meth:`set_grad_checkpointing`).

    Shape:
        - images: ``(b, 3, H, W)``
        - output: list of 4 maps ``(b, embed_dim * 2**i, H / 2**(i+2), W / 2**(i+2))``

    Example:
        >>> encoder = SwinEncoder(64, embed_dim=8, depths=(1, 1), num_heads=(1, 2), window_size=4)
        >>> encoder.out_channels, encoder.strides, encoder.pixel_std
        ((8, 16), (4, 8), (0.229, 0.224, 0.225))
        >>> [tuple(m.shape) for m in encoder(torch.zeros(1, 3, 64, 64))]
        [(1, 8, 16, 16), (1, 16, 8, 8)]
    """

    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD

    def __init__(
        self,
        image_size: int = 480,
        *,
        embed_dim: int = 128,
        depths: Sequence[int] = (2, 2, 18, 2),
        num_heads: Sequence[int] = (4, 8, 16, 32),
        window_size: int = 12,
        drop_path_rate: float = 0.2,
        windows: str = "timm",
        weights: str | os.PathLike | None = None,
        strict: bool = True,
    ) -> None:
        super().__init__()
        from timm.models.swin_transformer import SwinTransformer

        if windows not in WINDOW_LAYOUTS:
            raise ValueError(f"windows: expected one of {WINDOW_LAYOUTS}; got {windows!r}")
        self.swin = SwinTransformer(
            img_size=image_size,
            embed_dim=embed_dim,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            window_size=window_size,
            drop_path_rate=drop_path_rate,
            num_classes=0,
            strict_img_size=False,
            always_partition=windows == "segmentation",
        )
        if windows == "segmentation":
            for block in self.swin.modules():
                if type(block).__name__ == "SwinTransformerBlock":
                    block.__class__ = _pad_first_block()
        self.windows = windows
        # timm's model has no per-stage norms; like LAVT and features_only users we normalise
        # each stage's output before it leaves the encoder.
        self.window_size = window_size
        self.dims = tuple(embed_dim * 2**i for i in range(len(depths)))
        self.out_channels: tuple[int, ...] = self.dims
        self.strides: tuple[int, ...] = tuple(4 * 2**i for i in range(len(depths)))
        self.out_norms = nn.ModuleList(nn.LayerNorm(d) for d in self.dims)
        self.swin.norm = nn.Identity()
        self.grad_checkpointing = False
        if weights is not None:
            self.load_pretrained(weights, strict=strict)

    def load_pretrained(self, path: str | os.PathLike, *, strict: bool = True) -> None:
        """Load a local Swin checkpoint into the backbone (not the output norms).

        Args:
            path: a checkpoint in timm's or the original Microsoft layout.
            strict: fail on any missing, unexpected or mis-shaped key (one line naming the
                file and the first keys).
        """
        from timm.models.swin_transformer import checkpoint_filter_fn

        def adapt(state: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
            # timm's filter looks up the block of every relative-position table and raises a
            # bare AttributeError for a block this model lacks (a deeper checkpoint): keep
            # those keys out of it so the loader reports them as "not in model".
            blocks = dict(module.named_modules())
            orphans = {
                k: v for k, v in state.items() if k.endswith(".relative_position_bias_table") and k.rsplit(".", 1)[0] not in blocks
            }
            resized = [
                f"{k} {tuple(v.shape)}"
                for k, v in state.items()
                if k.endswith(".relative_position_bias_table") and k not in orphans
                and v.shape != blocks[k.rsplit(".", 1)[0]].relative_position_bias_table.shape
            ]
            if resized:
                warnings.warn(
                    f"{path}: relative-position tables of another window size resized to swin_window="
                    f"{self.window_size} (first: {resized[0]}); the checkpoint was trained with another window",
                    stacklevel=3,
                )
            state = checkpoint_filter_fn({k: v for k, v in state.items() if k not in orphans}, module)
            state.update(orphans)
            return {k: v for k, v in state.items() if not k.startswith(("head.", "norm."))}

        load_weights(
            self.swin,
            path,
            strict=strict,
            transform=adapt,
            ignore=lambda key: key.endswith(("relative_position_index", "attn_mask")),
        )

    @property
    def num_stages(self) -> int:
        return len(self.dims)

    def stem(self, images: torch.Tensor) -> torch.Tensor:
        """Patch embedding: ``(b, 3, H, W)`` -> NHWC ``(b, H/4, W/4, c1)``."""
        return self.swin.patch_embed(images)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint every Swin block while training: each keeps only its input, and runs
        again in the backward pass (:func:`~reference_models.encoders.checkpointing.checkpointed`).

        Args:
            enable: switch it on (True) or off.

        Example:
            >>> encoder = SwinEncoder(32, embed_dim=8, depths=(1,), num_heads=(1,), window_size=4)
            >>> encoder.set_grad_checkpointing()
            >>> encoder.grad_checkpointing
            True
        """
        self.grad_checkpointing = bool(enable)

    def run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Run stage ``index`` on an NHWC map (the previous stage's raw output)."""
        stage = self.swin.layers[index]
        if not self.grad_checkpointing:
            return stage(x)
        x = stage.downsample(x)
        for block in stage.blocks:
            x = checkpointed(block, x, enabled=True)
        return x

    def to_nchw(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Normalise stage ``index``'s NHWC output and return it as NCHW."""
        return rearrange(self.out_norms[index](x), "b h w c -> b c h w")

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """All four stages: the NCHW maps at strides 4, 8, 16 and 32.

        Args:
            images: ``(b, 3, H, W)`` ImageNet-normalised pictures.
        """
        x = self.stem(images)
        feats = []
        for i in range(self.num_stages):
            x = self.run_stage(i, x)
            feats.append(self.to_nchw(i, x))
        return feats
