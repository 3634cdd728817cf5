"""LAVT's early-fusion blocks: pixel-word attention and the language gate.

LAVT (Yang et al., CVPR 2022) fuses language into the visual backbone after every stage:
each pixel gathers a language feature from the words it attends to (pixel-word attention,
PWAM), the two are multiplied, and a learned gate decides how much of the multimodal
feature flows back into the backbone. These are the fusion blocks of our ``lavt`` reference
models, and a common early-fusion baseline for other RIS code.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from einops import rearrange
from torch import nn

from ._compat import autocast_output, renamed_arguments
from .functional import _masked_softmax, zero_padding
from .shapes import check_shape, check_words_inputs

__all__ = ["PixelWordAttention", "LanguageGate"]


class _ChannelNorm(nn.Module):
    """Instance norm over the positions of a ``(b, c, n)`` sequence, per channel.

    The maths of ``nn.InstanceNorm1d(c, affine=affine)``, computed in at least float32 (bf16
    sums over many positions lose precision; float64 stays float64) and defined for a single
    position too (a 1x1 map at the last stage), where it returns the bias (zero without affine).
    """

    def __init__(self, dim: int, *, affine: bool = True, eps: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype)) if affine else None
        self.bias = nn.Parameter(torch.zeros(dim, device=device, dtype=dtype)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute = torch.promote_types(x.dtype, torch.float32)
        x32 = x.to(compute)
        mean = x32.mean(dim=-1, keepdim=True)
        var = x32.var(dim=-1, unbiased=False, keepdim=True)
        normed = (x32 - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            normed = normed * self.weight.to(compute)[:, None] + self.bias.to(compute)[:, None]
        return normed.to(x.dtype)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, affine={self.weight is not None}"


class PixelWordAttention(nn.Module):
    """LAVT's pixel-word attention module (PWAM).

    Every pixel attends over the words (padding words are masked out of the softmax, which
    runs in float32, and their values are selected away before any product, so NaN or inf
    there cannot leak), gathers a language feature, and the multimodal feature is
    ``proj_out(proj_vis(feats) * proj_lang(gathered))``.

    Args:
        dim: visual channels ``c``.
        text_dim: word channels ``d``.
        key_dim: attention width (default ``dim``).
        num_heads: attention heads (LAVT: 1).
        dropout: dropout after the visual and output projections.
        norm_affine: learnable per-channel scale and shift in the two instance norms (of the
            queries and of the gathered language feature). ``False`` is LAVT's published code
            (``nn.InstanceNorm1d`` without affine): the norms then hold no parameters.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - feats: ``(b, c, h, w)`` the visual map (named ``vis`` before 0.2; the old keyword
          still works, with a ``DeprecationWarning``)
        - words: ``(b, l, d)``
        - word_mask: ``(b, l)`` bool, True = real word; ``None`` = all real (pass
          ``~key_padding_mask`` if you hold PyTorch's True-on-padding mask)
        - output: ``(b, c, h, w)``

    Example:
        >>> import torch
        >>> pwam = PixelWordAttention(32, 48)
        >>> pwam(torch.randn(2, 32, 8, 8), torch.randn(2, 5, 48)).shape
        torch.Size([2, 32, 8, 8])
        >>> lavt_code = PixelWordAttention(32, 48, norm_affine=False)  # parameter-free norms
        >>> [name for name, _ in lavt_code.named_parameters() if "norm" in name]
        []
    """

    def __init__(
        self,
        dim: int,
        text_dim: int,
        *,
        key_dim: int | None = None,
        num_heads: int = 1,
        dropout: float = 0.0,
        norm_affine: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        key_dim = dim if key_dim is None else key_dim
        for name, value in (("dim", dim), ("text_dim", text_dim), ("key_dim", key_dim), ("num_heads", num_heads)):
            if value < 1:
                raise ValueError(f"{name}: expected a positive integer; got {value}")
        if not isinstance(norm_affine, bool):
            raise ValueError(f"norm_affine: expected True or False; got {norm_affine!r}")
        if key_dim % num_heads or dim % num_heads:
            raise ValueError(f"num_heads: {num_heads} must divide key_dim={key_dim} and dim={dim}")
        fk = {"device": device, "dtype": dtype}
        self.dim, self.text_dim, self.num_heads = dim, text_dim, num_heads
        # Bias-free where a bias could never change the output (LAVT's convs keep them, dead):
        # query and gathered_proj feed an instance norm that subtracts any per-channel constant,
        # a key bias adds the same score to every word of a pixel (softmax ignores it), and a
        # value bias shifts every gathered vector by the same constant, which the norm removes.
        self.query = nn.Linear(dim, key_dim, bias=False, **fk)
        self.query_norm = _ChannelNorm(key_dim, affine=norm_affine, **fk)
        self.key = nn.Linear(text_dim, key_dim, bias=False, **fk)
        self.value = nn.Linear(text_dim, dim, bias=False, **fk)
        self.gathered_proj = nn.Linear(dim, dim, bias=False, **fk)
        self.gathered_norm = _ChannelNorm(dim, affine=norm_affine, **fk)
        self.vis_proj = nn.Sequential(nn.Linear(dim, dim, **fk), nn.GELU(), nn.Dropout(dropout))
        self.out_proj = nn.Sequential(nn.Linear(dim, dim, **fk), nn.GELU(), nn.Dropout(dropout))

    @property
    def out_channels(self) -> int:
        """Channels of the multimodal map, ``dim``, those of ``feats``."""
        return self.dim

    @property
    def output_names(self) -> tuple[str, ...]:
        """Name of the output, for ``torch.onnx.export(..., output_names=...)``."""
        return ("fused",)

    @renamed_arguments(vis="feats")
    def forward(self, feats: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Gather a language feature per pixel and multiply it into the map.

        Args:
            feats: the visual map.
            words: word features.
            word_mask: bool, True for real tokens; ``None`` means every token is real.

        Returns:
            The multimodal map, the shape of ``feats``.
        """
        dtype = self.query.weight.dtype
        check_words_inputs(self, feats, words, word_mask, dim=self.dim, text_dim=self.text_dim, dtype=dtype)
        h, w = feats.shape[-2], feats.shape[-1]
        words = zero_padding(words, word_mask)
        pixels = rearrange(feats, "b c h w -> b (h w) c")
        query = self.query_norm(rearrange(self.query(pixels), "b n k -> b k n"))
        query = rearrange(query, "b (m k) n -> b m n k", m=self.num_heads)
        key = rearrange(self.key(words), "b l (m k) -> b m k l", m=self.num_heads)
        value = rearrange(self.value(words), "b l (m c) -> b m l c", m=self.num_heads)
        # Scale the (normalised) queries before the product, not the scores after it.
        scores = (query * query.shape[-1] ** -0.5) @ key  # (b, m, n, l)
        attn = _masked_softmax(scores, word_mask).to(value.dtype)
        gathered = rearrange(attn @ value, "b m n c -> b n (m c)")
        gathered = self.gathered_norm(rearrange(self.gathered_proj(gathered), "b n c -> b c n"))
        fused = self.vis_proj(pixels) * rearrange(gathered, "b c n -> b n c")
        return rearrange(self.out_proj(fused), "b (h w) c -> b c h w", h=h, w=w)


class LanguageGate(nn.Module):
    """LAVT's language gate: ``x + gate(f) * f`` decides how much fused signal re-enters.

    ``gate = tanh(W2 relu(W1 f))`` per position and channel, bias-free. ``W2`` starts at
    zero so that a pretrained backbone starts unchanged (``zero_init=True``, LAVT's
    choice); with it, ``W1`` receives no gradient on the very first step.

    Args:
        dim: channels ``c``.
        zero_init: initialise the output layer to zero.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - x: ``(b, c, h, w)`` the backbone stream
        - fused: ``(b, c, h, w)`` the multimodal feature
        - output: ``(b, c, h, w)``

    Example:
        >>> import torch
        >>> gate = LanguageGate(16)
        >>> x = torch.randn(2, 16, 4, 4)
        >>> torch.equal(gate(x, torch.randn(2, 16, 4, 4)), x)  # zero-initialised
        True
    """

    def __init__(self, dim: int, *, zero_init: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim: expected a positive integer; got {dim}")
        fk = {"device": device, "dtype": dtype}
        self.dim = dim
        self.hidden = nn.Linear(dim, dim, bias=False, **fk)
        self.out = nn.Linear(dim, dim, bias=False, **fk)
        if zero_init:
            nn.init.zeros_(self.out.weight)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Name of the output, for ``torch.onnx.export(..., output_names=...)``."""
        return ("gated",)

    def forward(self, x: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        """Add the gated multimodal feature to the backbone stream.

        Args:
            x: the backbone stream.
            fused: the multimodal feature (e.g. from :class:`PixelWordAttention`).

        Returns:
            ``x + gate(fused) * fused``.
        """
        dtype = self.hidden.weight.dtype
        axes = check_shape(x, "b c h w", name="x", c=self.dim, floating=True, dtype=dtype)
        check_shape(fused, "b c h w", name="fused", bound=axes, floating=True, dtype=dtype)
        f = rearrange(fused, "b c h w -> b h w c")
        gate = torch.tanh(self.out(torch.relu(self.hidden(f))))
        return autocast_output(x + rearrange(gate * f, "b h w c -> b c h w"))  # float32 x would promote it
