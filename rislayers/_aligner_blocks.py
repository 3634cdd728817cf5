"""The blocks of ASDA's aligners (private: the classes live in :mod:`rislayers.aligner`).

The paper's pre-norm blocks and the released code's post-norm ones, the word attention
that honours the padding mask, the decoders' conv block and the option checks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ._conv_blocks import _NORMS, _choice
from .functional import _masked_softmax
from .norms import norm2d

_UPSAMPLE_MODES = ("nearest", "bilinear")

class _Mlp(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float, factory: dict) -> None:
        super().__init__(
            nn.Linear(dim, hidden, **factory),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim, **factory),
            nn.Dropout(dropout),
        )


class _SelfAttentionBlock(nn.Module):
    """Self-attention + MLP over pixel tokens; the position code enters q and k.

    Pre-norm (``post_norm=False``): ``x + Attn(LN(x))`` then ``x + MLP(LN(x))``. Post-norm
    (``post_norm=True``, the published code's transformer encoder layers):
    ``LN(x + Attn(x))`` then ``LN(x + MLP(x))``.
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_hidden: int, dropout: float, factory: dict, *, post_norm: bool = False
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.post_norm = post_norm
        self.attn_norm = nn.LayerNorm(dim, **factory)
        self.query = nn.Linear(dim, dim, **factory)
        # A key bias adds the same amount to every score of a query, which the softmax
        # cancels: it would never learn.
        self.key = nn.Linear(dim, dim, bias=False, **factory)
        self.value = nn.Linear(dim, dim, **factory)
        self.out = nn.Linear(dim, dim, **factory)
        self.out_drop = nn.Dropout(dropout)
        self.mlp_norm = nn.LayerNorm(dim, **factory)
        self.mlp = _Mlp(dim, mlp_hidden, dropout, factory)

    def _attend(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        with_pos = tokens + pos
        split = "b n (heads e) -> b heads n e"
        q = rearrange(self.query(with_pos), split, heads=self.num_heads)
        k = rearrange(self.key(with_pos), split, heads=self.num_heads)
        v = rearrange(self.value(tokens), split, heads=self.num_heads)
        attended = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_drop(self.out(rearrange(attended, "b heads n e -> b n (heads e)")))

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if self.post_norm:
            tokens = self.attn_norm(tokens + self._attend(tokens, pos))
            return self.mlp_norm(tokens + self.mlp(tokens))
        tokens = tokens + self._attend(self.attn_norm(tokens), pos)  # Eq. 6, attention step
        return tokens + self.mlp(self.mlp_norm(tokens))  # Eq. 6, MLP step


def _attend_to_words(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, word_mask: torch.Tensor | None, num_heads: int, drop: nn.Module
) -> torch.Tensor:
    """Multi-head attention from pixel tokens ``(b, n, c)`` to words ``(b, l, c)``, honouring ``word_mask``."""
    q, k, v = (rearrange(t, "b m (heads e) -> b heads m e", heads=num_heads) for t in (q, k, v))
    # Scale before the product (smaller float16 intermediates); softmax in float32.
    scores = torch.einsum("bgne,bgle->bgnl", q * (1.0 / math.sqrt(q.shape[-1])), k)
    weights = _masked_softmax(scores, word_mask)  # float32; an all-padding row gives zeros
    gathered = torch.einsum("bgnl,bgle->bgne", drop(weights.to(v.dtype)), v)
    return rearrange(gathered, "b heads n e -> b n (heads e)")


class _WordAttentionBlock(nn.Module):
    """Pre-norm cross-attention from pixel tokens to words + MLP, honouring the padding mask."""

    def __init__(self, dim: int, text_dim: int, num_heads: int, mlp_hidden: int, dropout: float, factory: dict) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query_norm = nn.LayerNorm(dim, **factory)
        self.word_norm = nn.LayerNorm(text_dim, **factory)
        self.query = nn.Linear(dim, dim, **factory)
        self.key = nn.Linear(text_dim, dim, bias=False, **factory)  # bias cancelled by softmax
        self.value = nn.Linear(text_dim, dim, **factory)
        self.out = nn.Linear(dim, dim, **factory)
        self.attn_drop = nn.Dropout(dropout)
        self.out_drop = nn.Dropout(dropout)
        self.mlp_norm = nn.LayerNorm(dim, **factory)
        self.mlp = _Mlp(dim, mlp_hidden, dropout, factory)

    def forward(self, tokens: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor | None) -> torch.Tensor:
        words = self.word_norm(words)  # padding already zeroed by the caller
        q, k, v = self.query(self.query_norm(tokens)), self.key(words), self.value(words)
        gathered = _attend_to_words(q, k, v, word_mask, self.num_heads, self.attn_drop)
        tokens = tokens + self.out_drop(self.out(gathered))  # Eq. 8, F'_K
        return tokens + self.mlp(self.mlp_norm(tokens))  # Eq. 8, F_fine


class _PublishedWordBlock(nn.Module):
    """The released code's word attention (``lang_tf_enc``): post-norm, ReLU input projections.

    ``words' = ReLU(Linear(words))`` (no bias); ``q, k, v = ReLU(Linear(tokens, words',
    words'))``, then the attention's own projections; ``x = LN(tokens + Attn)`` (no dropout
    on the attention output, as in the code) and ``LN(x + MLP(x))``.
    """

    def __init__(self, dim: int, text_dim: int, num_heads: int, mlp_hidden: int, dropout: float, factory: dict) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.word_proj = nn.Linear(text_dim, dim, bias=False, **factory)
        self.query_in = nn.Linear(dim, dim, **factory)
        self.key_in = nn.Linear(dim, dim, **factory)
        self.value_in = nn.Linear(dim, dim, **factory)
        self.query = nn.Linear(dim, dim, **factory)
        self.key = nn.Linear(dim, dim, bias=False, **factory)  # bias cancelled by softmax
        self.value = nn.Linear(dim, dim, **factory)
        self.out = nn.Linear(dim, dim, **factory)
        self.attn_drop = nn.Dropout(dropout)
        self.attn_norm = nn.LayerNorm(dim, **factory)
        self.mlp = _Mlp(dim, mlp_hidden, dropout, factory)
        self.mlp_norm = nn.LayerNorm(dim, **factory)

    def forward(self, tokens: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor | None) -> torch.Tensor:
        words = F.relu(self.word_proj(words))
        q = self.query(F.relu(self.query_in(tokens)))
        k = self.key(F.relu(self.key_in(words)))
        v = self.value(F.relu(self.value_in(words)))
        tokens = self.attn_norm(tokens + self.out(_attend_to_words(q, k, v, word_mask, self.num_heads, self.attn_drop)))
        return self.mlp_norm(tokens + self.mlp(tokens))


class _ConvNormReLU(nn.Sequential):
    def __init__(self, in_dim: int, out_dim: int, kernel_size: int, norm: str, factory: dict) -> None:
        # A bias before a normalisation that subtracts the mean would be cancelled.
        conv = nn.Conv2d(in_dim, out_dim, kernel_size, padding=kernel_size // 2, bias=norm == "none", **factory)
        # "none" is an Identity here (the ReLU stays at index 2 of saved state dicts).
        super().__init__(conv, norm2d(norm, out_dim, **factory), nn.ReLU())


def _check_options(**options: object) -> None:
    """ValueErrors naming the first bad constructor argument of the aligners (:mod:`rislayers.aligner`)."""
    for name in ("dim", "text_dim", "num_masks", "num_layers", "num_heads"):
        value = options[name]
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive integer; got {value!r}")
    dim, num_heads = options["dim"], options["num_heads"]
    if dim % 4 != 0 or dim % num_heads != 0:
        raise ValueError(f"dim: expected a multiple of 4 and of num_heads={num_heads}; got {dim}")
    upsample_steps = options["upsample_steps"]
    if not isinstance(upsample_steps, int) or upsample_steps < 0:
        raise ValueError(f"upsample_steps: expected a non-negative integer; got {upsample_steps!r}")
    if not options["mlp_ratio"] > 0:
        raise ValueError(f"mlp_ratio: expected a positive number; got {options['mlp_ratio']!r}")
    decoder_dim = options["decoder_dim"]
    if decoder_dim is not None and (not isinstance(decoder_dim, int) or decoder_dim < 1):
        raise ValueError(f"decoder_dim: expected a positive integer or None; got {decoder_dim!r}")
    _choice("norm", options["norm"], _NORMS)
    _choice("upsample_mode", options["upsample_mode"], _UPSAMPLE_MODES)
    for name in ("word_mask", "output_bias"):
        if not isinstance(options[name], bool):
            raise ValueError(f"{name}: expected a bool; got {options[name]!r}")
    if not 0.0 <= options["dropout"] < 1.0:
        raise ValueError(f"dropout: expected a probability in [0, 1); got {options['dropout']!r}")
