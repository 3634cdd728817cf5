"""ASDA's Adaptive Feature Selection (AFS): pick one encoder layer per sentence.

Implements Eq. 1-3 of "Adaptive Selection based Referring Image Segmentation" (ASDA,
ACM MM 2024). The sentence vector ``f_E`` scores each candidate layer through its class
token ``f_C^k``, a linear layer and a softmax over the candidates turn the scores into
probabilities, and the map of the most probable layer is passed on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from einops import rearrange
from torch import nn

from ._compat import autocast_output
from .shapes import ShapeError, check_shape

__all__ = ["AdaptiveLayerSelector", "SelectionOutput"]

GradientMode = Literal["straight_through", "soft", "none"]
_GRADIENT_MODES = ("straight_through", "soft", "none")
_HEADS = ("linear", "mlp", "conv")


class SelectionOutput(NamedTuple):
    """Result of :class:`AdaptiveLayerSelector`: the chosen map, the probabilities, the choice."""

    features: torch.Tensor
    """The selected map ``(b, c, h, w)`` (for ``gradient="soft"`` the probability-weighted blend)."""
    probs: torch.Tensor
    """Selection probabilities over the candidates, ``(b, k)``."""
    index: torch.Tensor
    """The most probable candidate of each sample, ``(b,)`` int64."""


class AdaptiveLayerSelector(nn.Module):
    """Select the encoder layer whose class token best matches the sentence (ASDA AFS).

    For each candidate ``k`` (e.g. ViT layers 4-6 for the low level, 7-9 for the middle
    level) the score token is ``score_k = proj_text(f_E) * proj_vis(f_C^k)`` (Eq. 1, ``*``
    element-wise); a Linear shared across candidates maps it to one logit and a softmax
    over ``k`` gives ``probs`` (the paper's ``Phi_as``, Eq. 2); ``index = argmax(probs)``
    and the output is that candidate's map (Eq. 2-3).

    The published code applies a hard argmax, so the selector's parameters never receive a
    gradient and stay at their initialisation. ``gradient`` chooses what to do about that:

    - ``"straight_through"`` (default): the forward value is still exactly the hard pick,
      but the backward pass treats it as the probability-weighted sum (straight-through
      estimator, ``one_hot - probs.detach() + probs``), so the selector learns from the
      segmentation loss. This is the library default because the design notes count the
      published code's missing gradient as a defect and the paper describes a trained
      selection network (its Table 5 compares Linear, Conv and MLP selectors).
    - ``"none"``: the published behaviour. Hard pick; ``probs`` is returned detached, so
      nothing (not even a loss on ``probs``) reaches the selector's parameters.
    - ``"soft"``: ``features = sum_k probs_k * candidates_k``. Fully differentiable, but its
      forward value is a blend, NOT the hard pick; ``index`` still reports the argmax.

    Ties between equal probabilities resolve to the lowest index (``torch.argmax``).

    ``head`` chooses ``Phi_as``'s scoring network, the three of ASDA's Table 5 (the paper
    names them only "Linear, Convolution (Conv), and Multi-layer Perceptron (MLP)", each
    followed by the softmax; the readings below are ours):

    - ``"linear"`` (default, the paper's choice): one ``Linear(score_dim, 1)`` shared by the
      candidates.
    - ``"mlp"``: ``Linear(score_dim, score_dim) -> ReLU -> Linear(score_dim, 1)`` shared by
      the candidates. The hidden Linear keeps its bias (the ReLU after it means the softmax
      does not cancel it); the last one has none.
    - ``"conv"``: a ``Conv1d(score_dim, 1, kernel_size=3, padding=1)`` along the candidate
      axis, the score tokens read as a ``(b, score_dim, k)`` sequence, so each candidate's
      logit also sees its neighbouring layers' score tokens (zero-padded at the ends). With
      one candidate only the centre tap acts, which is the ``"linear"`` head.

    ``sentence`` may also hold one vector per candidate, ``(b, k, d)``: the published code
    (``Model.forward`` in ``model/model.py`` of swagger-coder/ASDA) scores each ViT
    layer's class token (the residual stream's first token, projected by a bias-free
    ``Linear(768, 512)``) against the text tower's [EOS] token of the same layer (its
    residual stream: no ``ln_final``, no projection) rather than against the final
    sentence feature; its scorer is a ``Linear(512, 1)`` per level and it picks with a
    hard argmax (``gradient="none"``). ``project_text=False`` reads the text as is, as the
    code and Eq. 1 do.

    The two projections and the scorer's last layer have no bias: a bias of ``proj_vis``
    (with one sentence vector) or of the scorer's output adds the same logit to every
    candidate, which the softmax cancels, so it could never learn. The paper and the
    published code project only the class token (into ``f_E``'s space); ``proj_text``
    (``project_text=True``, the default) is the design's extra adapter, which lets the
    score tokens have their own width ``score_dim``.

    Args:
        dim: visual channels ``c`` of the candidate maps and class tokens.
        text_dim: channels ``d`` of the sentence vector.
        num_candidates: number of candidate layers ``k``.
        gradient: ``"straight_through"``, ``"soft"`` or ``"none"`` (see above).
        score_dim: width of the score tokens; default ``text_dim`` (the paper scores in
            the sentence's space).
        head: ``"linear"``, ``"mlp"`` or ``"conv"`` scoring network (see above).
        project_text: project the text to the score width (``False``: the text is the
            score token's text factor as is, so ``score_dim`` must equal ``text_dim``).
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - candidates: ``(b, k, c, h, w)`` or a sequence of ``k`` tensors ``(b, c, h, w)``
        - cls_tokens: ``(b, k, c)``
        - sentence: ``(b, d)``, or ``(b, k, d)`` (one text vector per candidate)
        - output: :class:`SelectionOutput` with features ``(b, c, h, w)``, probs
          ``(b, k)`` and index ``(b,)``

    Example:
        >>> import torch
        >>> selector = AdaptiveLayerSelector(32, 16, num_candidates=3)
        >>> layers = [torch.randn(2, 32, 5, 5) for _ in range(3)]
        >>> out = selector(layers, torch.randn(2, 3, 32), torch.randn(2, 16))
        >>> out.features.shape, out.probs.shape, out.index.shape
        (torch.Size([2, 32, 5, 5]), torch.Size([2, 3]), torch.Size([2]))
    """

    def __init__(
        self,
        dim: int,
        text_dim: int,
        *,
        num_candidates: int,
        gradient: GradientMode = "straight_through",
        score_dim: int | None = None,
        head: Literal["linear", "mlp", "conv"] = "linear",
        project_text: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("text_dim", text_dim), ("num_candidates", num_candidates)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer; got {value!r}")
        if gradient not in _GRADIENT_MODES:
            raise ValueError(f"gradient: expected one of {_GRADIENT_MODES}; got {gradient!r}")
        score_dim = text_dim if score_dim is None else score_dim
        if not isinstance(score_dim, int) or score_dim < 1:
            raise ValueError(f"score_dim: expected a positive integer or None; got {score_dim!r}")
        if head not in _HEADS:
            raise ValueError(f"head: expected one of {_HEADS}; got {head!r}")
        if not isinstance(project_text, bool):
            raise ValueError(f"project_text: expected a bool; got {project_text!r}")
        if not project_text and score_dim != text_dim:
            raise ValueError(f"score_dim: expected text_dim={text_dim} with project_text=False; got {score_dim}")
        factory = {"device": device, "dtype": dtype}
        self.dim = dim
        self.text_dim = text_dim
        self.num_candidates = num_candidates
        self.gradient = gradient
        self.head = head
        self.project_text = project_text
        self.proj_text = nn.Linear(text_dim, score_dim, bias=False, **factory) if project_text else nn.Identity()
        self.proj_vis = nn.Linear(dim, score_dim, bias=False, **factory)
        self.scorer = self._build_scorer(head, score_dim, factory)

    @staticmethod
    def _build_scorer(head: str, score_dim: int, factory: dict) -> nn.Module:
        if head == "mlp":
            return nn.Sequential(
                nn.Linear(score_dim, score_dim, **factory),
                nn.ReLU(),
                nn.Linear(score_dim, 1, bias=False, **factory),
            )
        if head == "conv":
            return nn.Conv1d(score_dim, 1, kernel_size=3, padding=1, bias=False, **factory)
        return nn.Linear(score_dim, 1, bias=False, **factory)

    def extra_repr(self) -> str:
        return (
            f"num_candidates={self.num_candidates}, gradient={self.gradient!r}, head={self.head!r}, "
            f"project_text={self.project_text}"
        )

    def _logits(self, scores: torch.Tensor) -> torch.Tensor:
        """One logit per candidate from the score tokens ``(b, k, s)``."""
        if self.head == "conv":
            return rearrange(self.scorer(rearrange(scores, "b k s -> b s k")), "b 1 k -> b k")
        return rearrange(self.scorer(scores), "b k 1 -> b k")

    def _text(self, sentence: torch.Tensor, axes: dict[str, int]) -> torch.Tensor:
        """The projected text, ``(b, 1, s)`` for one sentence vector or ``(b, k, s)`` for one per candidate."""
        dtype = self.proj_vis.weight.dtype
        if isinstance(sentence, torch.Tensor) and sentence.dim() == 3:
            check_shape(sentence, "b k d", name="sentence", bound=axes, d=self.text_dim, floating=True, dtype=dtype)
            return self.proj_text(sentence)
        if isinstance(sentence, torch.Tensor) and sentence.dim() != 2:
            raise ShapeError(
                f"sentence: expected (b, d) or (b, k, d) with b={axes['b']}, k={self.num_candidates}, "
                f"d={self.text_dim}; got {tuple(sentence.shape)}"
            )
        check_shape(sentence, "b d", name="sentence", bound=axes, d=self.text_dim, floating=True, dtype=dtype)
        return rearrange(self.proj_text(sentence), "b s -> b 1 s")

    def _stack(self, candidates: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict[str, int]]:
        dtype = self.proj_vis.weight.dtype
        if isinstance(candidates, torch.Tensor):
            axes = check_shape(
                candidates, "b k c h w", name="candidates", k=self.num_candidates, c=self.dim, floating=True, dtype=dtype
            )
            return candidates, axes
        if not isinstance(candidates, Sequence) or isinstance(candidates, (str, bytes)):
            raise ShapeError(
                f"candidates: expected a tensor (b, k, c, h, w) or a sequence of k={self.num_candidates} "
                f"tensors (b, c, h, w); got {type(candidates).__name__}"
            )
        if len(candidates) != self.num_candidates:
            raise ShapeError(
                f"candidates: expected a sequence of k={self.num_candidates} tensors (b, c, h, w); "
                f"got {len(candidates)} (k: {len(candidates)} != {self.num_candidates})"
            )
        axes: dict[str, int] = {"k": self.num_candidates, "c": self.dim}
        for i, candidate in enumerate(candidates):
            check_shape(candidate, "b c h w", name=f"candidates[{i}]", bound=axes, floating=True, dtype=dtype)
        return torch.stack(list(candidates), dim=1), axes

    @property
    def output_names(self) -> tuple[str, ...]:
        """Names of the outputs, for ``torch.onnx.export(..., output_names=...)``."""
        return SelectionOutput._fields

    def forward(
        self,
        candidates: torch.Tensor | Sequence[torch.Tensor],
        cls_tokens: torch.Tensor,
        sentence: torch.Tensor,
    ) -> SelectionOutput:
        """Score the candidates against the sentence and return the selected map.

        Args:
            candidates: the candidate layers' maps, stacked or as a sequence.
            cls_tokens: each candidate layer's class token ``f_C^k``.
            sentence: the sentence vector ``f_E`` (e.g. CLIP's [EOS] activation), or one
                per candidate ``(b, k, d)`` (e.g. the [EOS] token of each text layer).

        Returns:
            :class:`SelectionOutput` ``(features, probs, index)``.
        """
        stacked, axes = self._stack(candidates)
        dtype = self.proj_vis.weight.dtype
        check_shape(cls_tokens, "b k c", name="cls_tokens", bound=axes, floating=True, dtype=dtype)
        text = self._text(sentence, axes)

        scores = text * self.proj_vis(cls_tokens)  # Eq. 1, one score token per candidate
        probs = self._logits(scores).softmax(dim=-1)  # Eq. 2 (Phi_as = scorer + softmax)
        index = probs.argmax(dim=-1)

        if self.gradient == "soft":
            features = torch.einsum("bk,bkchw->bchw", probs, stacked)
            return SelectionOutput(autocast_output(features), autocast_output(probs), index)

        batch = torch.arange(stacked.shape[0], device=stacked.device)
        picked = stacked[batch, index]  # Eq. 2-3: F = F_V^(argmax)
        if self.gradient == "none":
            return SelectionOutput(autocast_output(picked), autocast_output(probs.detach()), index)
        # Straight-through: (probs - probs.detach()) is exactly zero in value, so the output
        # equals the hard pick bit for bit, while its gradient is that of the soft blend.
        zero_valued = probs - probs.detach()
        features = picked + torch.einsum("bk,bkchw->bchw", zero_valued, stacked)
        # A pick of float32 candidates stays float32: the layers' autocast convention casts it.
        return SelectionOutput(autocast_output(features), autocast_output(probs), index)
