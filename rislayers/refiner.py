"""SADLR's iterative dynamic-query refinement (Yang et al., AAAI 2023, Sec. 3).

A query vector, first the projected sentence and then enriched with the features under
each iteration's predicted mask, generates the kernels of a few 1x1 "dynamic
convolutions" over the multi-modal feature map; a shared classifier turns the result into
per-iteration score maps. The dynamic convolutions follow Sparse R-CNN's ``DynamicConv``
(a Linear generates the kernel, then batched matmul, LayerNorm, ReLU) and run as batched
matrix products on the ``(b, n, c)`` view of the map, so nothing larger than one
``(b, n, width)`` activation per layer is materialised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ._checkpointing import GradCheckpointing
from ._compat import autocast_output
from .functional import _masked_mean, masked_avg_pool2d
from .shapes import check_mask, check_shape, positive_int

__all__ = ["RefinerOutput", "DynamicQueryRefiner"]

_UPDATES = ("sum", "replace")
_POOLINGS = ("hard", "soft")


class RefinerOutput(NamedTuple):
    """Result of :class:`DynamicQueryRefiner`: per-iteration score maps and queries."""

    logits: list[torch.Tensor]
    """One ``(b, num_classes, h, w)`` score map per iteration; the last one is the
    prediction, the others are for deep supervision (SADLR Eq. 3)."""
    queries: list[torch.Tensor]
    """The ``(b, c)`` query each iteration used (``queries[0]`` is the projected sentence Q1)."""


class DynamicQueryRefiner(GradCheckpointing, nn.Module):
    """Semantics-aware dynamic localization and refinement (SADLR, Sec. 3).

    Iteration ``i`` (of ``num_iters``) generates a chain of 1x1 kernels from the query
    ``Q_i`` and applies them to the feature map ``Y`` (each kernel followed by LayerNorm
    over channels and ReLU), giving ``Z_i``; a shared 1x1 classifier maps ``Z_i`` to the
    score map ``R_i``. The foreground of ``R_i`` pools the object vector
    ``O_i = AvgPool(M_i, Y)`` (Eq. 1) and the next query is ``Q_{i+1} = Q_i + O_i`` (Eq. 2)
    or ``O_i`` (the "replace" ablation). ``Q_1`` is a Linear projection of the mean of the
    real words, or of a sentence vector given instead (such as CLIP's [EOS] feature). All
    parameters are shared across iterations.

    Readings of the paper (defaults follow the text):

    - Kernel widths: ``hidden_dims=(a1, a2)`` gives kernels ``c x a1`` then ``a1 x a2``
      (Table 4b's "[a, b]": ``b`` filters in the second layer; the "C' x C'" of Sec. 3.3
      only holds when ``a1 == a2``); ``repeats=k`` chains the widths ``k`` times ("[a, b] x k").
      The classifier reads the last width.
    - The query feeds the kernel Linears directly (Sec. 3.3: "given query Q_i, a first
      linear function generates a dynamic kernel"); nothing normalises it first.
    - Every dynamic layer, the last one included, ends with LayerNorm and ReLU (Sec. 3.3).
    - The object vector is pooled from the input map ``Y`` (Eq. 1), not from ``Z_i``.
    - ``pooling="hard"`` (the paper): ``M_i`` is the argmax mask (ties go to background,
      as ``argmax`` returns the first index), so no gradient flows through the mask;
      ``"soft"`` weights positions by the foreground probability, which is differentiable.
    - An empty mask pools to a zero vector (eps-guarded mean): the query then stays as it
      is ("sum") or becomes zero ("replace"), never NaN.
    - No query is produced after the last iteration (it would be unused).

    Activation checkpointing (``set_grad_checkpointing()``, timm's name; off by default):
    while the layer trains with gradients recorded, each iteration's dynamic convolutions
    and classifier run as one checkpointed block that keeps only the map and the query, and
    run again in the backward pass. The mask pooling and the query update are left as they
    are (they keep one ``(b, h*w)`` mask). Measured before deciding (float32, two CPU
    cores): at ``lavt_sadlr_base``'s size (``c = 512``, a 120 x 120 map, widths
    ``(128, 512)``, batch 2) the refiner keeps 483 MiB for its backward pass without
    checkpointing and 57 MiB with it (the input map, which the pooling keeps anyway), for
    one more pass of its dynamic convolutions: +22 % of the refiner's own forward and
    backward, about 2 % of that model's training step. Both grow with ``h*w``, so
    checkpointing every iteration pays at any map size.

    Args:
        dim: channels ``c`` of the feature map (and of the query).
        text_dim: channels ``d`` of the word features.
        num_iters: iterations ``n`` (paper default 3; Table 4a).
        hidden_dims: output widths of the dynamic layers (paper default ``(128, 512)``;
            Table 4b).
        repeats: how many times ``hidden_dims`` is chained (Table 4b's "x 2").
        update: ``"sum"`` (Eq. 2, paper default) or ``"replace"`` (Table 4c).
        pooling: ``"hard"`` (argmax mask, the paper) or ``"soft"`` (probability weights).
        num_classes: 2 (background, object; channel 1 is the object, as in the paper) or 1
            (a single foreground logit; foreground is ``logit > 0`` / ``sigmoid(logit)``).
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - feats: ``(b, c, h, w)``
        - words: ``(b, l, d)``
        - word_mask: ``(b, l)`` bool, True = real token; ``None`` = all real (the negation
          of a ``key_padding_mask``: pass ``~key_padding_mask``)
        - sentence: ``(b, d)``, instead of ``words``
        - output.logits: ``num_iters`` tensors ``(b, num_classes, h, w)``
        - output.queries: ``num_iters`` tensors ``(b, c)``

    Example:
        >>> import torch
        >>> refiner = DynamicQueryRefiner(32, 24, hidden_dims=(8, 16))
        >>> out = refiner(torch.randn(2, 32, 6, 5), torch.randn(2, 7, 24))
        >>> len(out.logits), out.logits[-1].shape, out.queries[0].shape
        (3, torch.Size([2, 2, 6, 5]), torch.Size([2, 32]))
        >>> refiner.layer_widths
        ((32, 8), (8, 16))
        >>> refiner(torch.randn(2, 32, 6, 5), sentence=torch.randn(2, 24)).logits[-1].shape
        torch.Size([2, 2, 6, 5])
    """

    def __init__(
        self,
        dim: int,
        text_dim: int,
        *,
        num_iters: int = 3,
        hidden_dims: Sequence[int] = (128, 512),
        repeats: int = 1,
        update: str = "sum",
        pooling: str = "hard",
        num_classes: int = 2,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.dim = positive_int("dim", dim)
        self.text_dim = positive_int("text_dim", text_dim)
        self.num_iters = positive_int("num_iters", num_iters)
        self.repeats = positive_int("repeats", repeats)
        if isinstance(hidden_dims, (str, bytes)) or not isinstance(hidden_dims, Sequence) or len(hidden_dims) == 0:
            raise ValueError(f"hidden_dims: expected a non-empty sequence of positive integers; got {hidden_dims!r}")
        for width in hidden_dims:
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise ValueError(f"hidden_dims: expected a non-empty sequence of positive integers; got {hidden_dims!r}")
        self.hidden_dims = tuple(hidden_dims)
        if update not in _UPDATES:
            raise ValueError(f"update: expected one of {_UPDATES}; got {update!r}")
        if pooling not in _POOLINGS:
            raise ValueError(f"pooling: expected one of {_POOLINGS}; got {pooling!r}")
        if num_classes not in (1, 2) or isinstance(num_classes, bool):
            raise ValueError(f"num_classes: expected 1 or 2; got {num_classes!r}")
        self.update = update
        self.pooling = pooling
        self.num_classes = num_classes

        widths = (self.dim,) + self.hidden_dims * self.repeats
        self.layer_widths: tuple[tuple[int, int], ...] = tuple(zip(widths[:-1], widths[1:]))
        # Sec. 3.1: Q1 = channel-reducing projection of the word-averaged sentence.
        self.sentence_proj = nn.Linear(self.text_dim, self.dim, **factory)
        # One kernel generator per dynamic layer (Sparse R-CNN emits all kernels from one
        # Linear; separate Linears are the same map, and keep each layer's weights readable).
        self.kernel_generators = nn.ModuleList(
            nn.Linear(self.dim, c_in * c_out, **factory) for c_in, c_out in self.layer_widths
        )
        self.norms = nn.ModuleList(nn.LayerNorm(c_out, **factory) for _, c_out in self.layer_widths)
        # The 1x1 classifier as a Linear on the (b, n, width) activations: a conv would need a
        # channels-first copy of the largest tensor. Weight (num_classes, width).
        self.classifier = nn.Linear(widths[-1], num_classes, **factory)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, text_dim={self.text_dim}, num_iters={self.num_iters}, "
            f"layer_widths={self.layer_widths}, update={self.update!r}, pooling={self.pooling!r}, "
            f"num_classes={self.num_classes}"
        )

    def macs(self, height: int, width: int, *, batch: int = 1) -> int:
        """Multiply-accumulates of one forward on a ``(batch, dim, height, width)`` map.

        Counts the sentence projection, kernel generation, the dynamic matmuls, the
        classifier and the mask pooling of every iteration (not LayerNorm, ReLU, the
        word mean or the query sums: element-wise work).

        Args:
            height: ``h`` of the feature map.
            width: ``w`` of the feature map.
            batch: batch size.

        Example:
            >>> refiner = DynamicQueryRefiner(512, 768, device="meta")  # no memory needed
            >>> round(refiner.macs(120, 120) / 1e9, 2)  # SADLR's default on a 480 px input
            5.92
        """
        positions = positive_int("height", height) * positive_int("width", width)
        kernels = sum(c_in * c_out for c_in, c_out in self.layer_widths)
        per_iter = (
            self.dim * kernels  # kernel generation
            + positions * kernels  # dynamic 1x1 convolutions
            + positions * self.layer_widths[-1][1] * self.num_classes  # classifier
        )
        pooling = positions * self.dim * (self.num_iters - 1)
        total = self.text_dim * self.dim + self.num_iters * per_iter + pooling
        return positive_int("batch", batch) * total

    def _classify(self, pixels: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Dynamic 1x1 convolutions of ``pixels (b, n, c)`` by ``query (b, c)``; scores ``(b, n, k)``."""
        hidden = pixels
        for generator, norm, (c_in, c_out) in zip(self.kernel_generators, self.norms, self.layer_widths):
            # i, o: this layer's input and output widths (the kernel's rows and columns)
            kernel = rearrange(generator(query), "b (i o) -> b i o", i=c_in, o=c_out)
            # Sec. 3.3 / Fig. 4: MatMul -> LN -> ReLU. bmm takes the channels-last view of
            # the map as a transposed operand, so the input map is never copied.
            hidden = F.relu(norm(torch.bmm(hidden, kernel)))
        return self.classifier(hidden)

    def _foreground(self, scores: torch.Tensor) -> torch.Tensor:
        """Pooling weights ``(b, n)`` from scores ``(b, n, k)``: the mask M_i (hard) or P(object) (soft)."""
        if self.num_classes == 2:
            # argmax over (background, object) is "object > background" with ties to
            # background; softmax(...)[1] is sigmoid(object - background).
            margin = scores[..., 1] - scores[..., 0]
        else:
            margin = scores[..., 0]
        if self.pooling == "hard":
            return margin > 0
        return margin.sigmoid()

    @property
    def output_names(self) -> tuple[str, ...]:
        """Names of the flattened outputs (for ``torch.onnx.export(..., output_names=...)``):
        ``logits_0 ... logits_{n-1}``, then ``queries_0 ... queries_{n-1}``."""
        steps = range(self.num_iters)
        return tuple(f"logits_{i}" for i in steps) + tuple(f"queries_{i}" for i in steps)

    def _sentence(
        self, feats: torch.Tensor, words: torch.Tensor | None, word_mask: torch.Tensor | None, sentence: torch.Tensor | None
    ) -> torch.Tensor:
        """Check the inputs; the sentence vector ``(b, d)`` that Q1 projects."""
        dtype = self.sentence_proj.weight.dtype
        axes = check_shape(feats, "b c h w", name="feats", c=self.dim, floating=True, dtype=dtype)
        if (words is None) == (sentence is None):
            got = "both" if words is not None else "neither"
            raise ValueError(f"words, sentence: expected exactly one (word features or a sentence vector); got {got}")
        if sentence is not None:
            if word_mask is not None:
                raise ValueError("word_mask: only used with words; a sentence vector has no padding")
            check_shape(sentence, "b d", name="sentence", bound=axes, d=self.text_dim, floating=True, dtype=dtype)
            return sentence
        check_shape(words, "b l d", name="words", bound=axes, d=self.text_dim, floating=True, dtype=dtype)
        check_mask(word_mask, name="word_mask", bound=axes, owner=self)
        return _masked_mean(words, word_mask)

    def forward(
        self,
        feats: torch.Tensor,
        words: torch.Tensor | None = None,
        word_mask: torch.Tensor | None = None,
        sentence: torch.Tensor | None = None,
    ) -> RefinerOutput:
        """Run ``num_iters`` refinement iterations.

        Give the language either as ``words`` (Q1 projects their masked mean) or as a
        ``sentence`` vector (Q1 projects it), exactly one of the two. ``sentence`` may also
        be passed by position (``refiner(feats, None, None, sentence)``), as
        ``torch.onnx.export(..., dynamo=False)`` passes it; both ONNX exporters work.

        Args:
            feats: multi-modal feature map ``Y``, ``(b, c, h, w)``.
            words: word features, ``(b, l, d)``.
            word_mask: ``(b, l)`` bool, True for real tokens; ``None`` means all real. Pass
                ``~key_padding_mask`` if you hold PyTorch's True-on-padding mask. A mask that
                looks inverted, or has a row without a real token, gives a
                :class:`~rislayers.PaddingMaskWarning` at every eager call (never inside
                :func:`torch.compile`, where the check is skipped without a graph break; see
                :func:`~rislayers.shapes.warn_if_inverted`). A really empty sentence still
                computes: its mean is zero, so its Q1 is the projection's bias.
            sentence: a sentence feature ``(b, d)`` instead of ``words``, e.g. CLIP's [EOS]
                token.

        Returns:
            :class:`RefinerOutput` with ``num_iters`` score maps and queries.
        """
        sentence = self._sentence(feats, words, word_mask, sentence)
        height, width = feats.shape[-2:]

        pixels = rearrange(feats, "b c h w -> b (h w) c")  # a view: no copy
        query = self.sentence_proj(sentence)  # Q1 (Sec. 3.1)
        logits: list[torch.Tensor] = []
        queries: list[torch.Tensor] = []
        for step in range(self.num_iters):
            queries.append(query)
            scores = self._checkpointed(self._classify, pixels, query)
            logits.append(rearrange(scores, "b (h w) k -> b k h w", h=height, w=width))
            if step + 1 == self.num_iters:
                break
            weights = rearrange(self._foreground(scores), "b (h w) -> b h w", h=height, w=width)
            objects = masked_avg_pool2d(feats, weights)  # O_i, Eq. 1
            query = query + objects if self.update == "sum" else objects  # Eq. 2 / Table 4c
        # The layers' autocast convention: the returned queries in the autocast dtype (the
        # pooled objects are float32); the iterations above read them as they were.
        return RefinerOutput(logits, [autocast_output(q) for q in queries])
