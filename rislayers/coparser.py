"""S2RM's spatial semantic recurrent coparsing (Yang et al., 2024, Sec. III-B, Eq. 1-10).

The fusion runs in three steps on the top visual map ``V`` and the words ``T``:

1. *Distribute language* (Eq. 1-4): a coarse language-aware map ``Q`` attends over the
   words and gives a per-position language map ``T_dist`` of the same shape as ``V``.
2. *Coparse* (Eq. 5-8): every position of one modality is correlated with every position
   of the other, with the generator map's rows (columns) cyclically shifted, giving four
   groups of ``h*w`` maps: ``C_l2v, R_l2v`` (``V`` parsed by ``T_dist``) and
   ``C_v2l, R_v2l`` (``T_dist`` parsed by ``V``).
3. *Balance* (Eq. 9-10): one sigmoid gate per group, then a 1x1 conv compresses the
   ``4*h*w`` channels to ``c`` and the result is fused into ``V``.

All four groups are re-indexings of ONE affinity ``A = V_flat @ T_dist_flat^T`` (``n x n``,
``n = h*w``): with ``i, j`` the position and the channel ``m`` written as ``(s, t)``,

- ``C_l2v[(i, j), s*w + t] = A[(i, j), ((i - s) mod h, t)]``
- ``R_l2v[(i, j), s*h + t] = A[(i, j), (t, (j - s) mod w)]``
- ``C_v2l`` and ``R_v2l``: the same index maps applied to ``A^T``.

``implementation="gemm"`` (default) therefore computes one batched matmul and a single
fixed ``index_select`` (the flat indices are a non-persistent buffer), instead of the
paper's ``h`` (``w``) shifted copies of a ``(h, w, c)`` map per group and four matmuls
over them (``implementation="shift"``, kept as the literal reference): a quarter of the
multiply-accumulates and no ``(h, h*w, c)`` tensors. On a 2-core CPU at ``h = w = 16,
c = 768``, batch 8, the coparsing step measured more than 15x faster (forward and
forward+backward) with more than 25x less peak memory, and the whole layer about 5x
faster; ``benchmarks/coparser.py`` measures it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ._compat import autocast_output, is_tracing, renamed_arguments
from ._coparse_shift import DIRECTIONS, check_options, coparse_shift, group_sizes, group_sources, normalise_directions
from .functional import _masked_mean, _masked_softmax, coord_features, sine_position_encoding_2d, zero_padding
from .norms import norm2d
from .shapes import check_shape, check_words_inputs, positive_int

__all__ = ["SpatialRecurrentCoparser", "coparse_index"]

_DIRECTIONS = DIRECTIONS


def coparse_index(
    height: int, width: int, directions: Sequence[str] = _DIRECTIONS, *, shift: bool = True
) -> torch.Tensor:
    """Flat indices into the affinity ``A (n, n)`` that lay out S2RM's coparsing groups.

    ``A.reshape(b, n * n).index_select(1, index).view(b, n, m)`` gives the
    ``k = 2 * len(directions)`` groups of Eq. 5-8 (``C_l2v, R_l2v, C_v2l, R_v2l`` for both
    directions), channels-last, in the channel order of the paper: ``C`` channel
    ``s*w + t`` is the generator row shifted by ``s``, column ``t``; ``R`` channel
    ``s*h + t`` is the generator column shifted by ``s``, row ``t``. With the shift
    ``m = k*n``; without it (``shift=False``, only ``s = 0``: the parsed position's own row
    for ``C``, own column for ``R``) each direction has ``w + h`` channels.

    Args:
        height: ``h`` of the map.
        width: ``w`` of the map.
        directions: ``"l2v"`` (groups read from ``A``) and/or ``"v2l"`` (from ``A^T``).
        shift: keep every cyclic shift of the generator (the paper), or only the unshifted one.

    Returns:
        int64 tensor of ``n * m`` indices into the flattened ``(n, n)`` affinity.

    Example:
        >>> coparse_index(3, 4).shape
        torch.Size([576])
        >>> coparse_index(2, 2, ("l2v",)).view(4, 8)[1]  # position (0, 1) reads A.flatten()[...]
        tensor([4, 5, 6, 7, 5, 7, 4, 6])
        >>> coparse_index(2, 2, ("l2v",), shift=False).view(4, 4)[1]  # its row, then its column
        tensor([4, 5, 5, 7])
    """
    positive_int("height", height)
    positive_int("width", width)
    directions = normalise_directions(directions)
    n = height * width
    source_c, source_r = group_sources(height, width, bool(shift))
    parsed = torch.arange(n).view(n, 1)
    groups = []
    if "l2v" in directions:  # A[q, p]
        groups += [parsed * n + source_c, parsed * n + source_r]
    if "v2l" in directions:  # A^T[q, p] = A[p, q]
        groups += [source_c * n + parsed, source_r * n + parsed]
    return torch.cat(groups, dim=1).reshape(-1)


class SpatialRecurrentCoparser(nn.Module):
    """Spatial Semantic Recurrent Mining, the S2RM fusion block (Sec. III-B, Eq. 1-10).

    Given the top visual map ``V`` (``(b, c, h, w)``) and the words ``T``:

    - Eq. 1: ``Q = ReLU(BN(Conv1x1(Cat(V, Tile(AvgP(T)), P))))``, ``AvgP`` the mean of the
      real words, ``P`` a fixed position map (``pos_dim`` channels).
    - Eq. 2-4: ``K = LN-ReLU(Linear(T))``, ``V_T = LN-ReLU(Linear(T))`` (two stacks);
      ``T_dist = Softmax_words(Q_flat K^T / sqrt(c)) V_T`` (padding words excluded).
    - Eq. 5-8: the four groups of ``n = h*w`` correlation maps between ``V`` and ``T_dist``
      (see the module docstring for the index maps; both implementations produce them in
      the same channel order).
    - Eq. 9-10: ``g = Sigmoid(AvgP(Conv1x1(G)))`` (one gate per group), ``B`` = gated
      groups, compressed to ``c`` by Conv1x1-BN-ReLU and fused into ``V``.

    Readings of the paper (defaults follow the text):

    - ``Perm1``/``Perm2`` of Eq. 8 are read as ``(h, w, c) -> (w, h, c)`` and
      ``(hw, w, c) -> (w, c, hw)``, the only reading whose shapes agree; Shift_Row moves
      row ``i`` to row ``(i + s) mod h`` (``torch.roll``), as the text defines.
    - The coparsing correlations are plain dot products over channels (no scaling): Eq. 6
      has none, and the compressing BatchNorm normalises their scale.
    - "The compressed product is finally fused to V4": ``fusion="add"`` (default) is the
      residual sum ``V + compressed`` ("instilling the scanned maps into the main
      branch"); ``fusion="concat"`` is Conv1x1-BN-ReLU of ``Cat(V, compressed)``.
    - The kernels of the Eq. 1, Eq. 9 and compressing convs are unspecified; they are 1x1
      (Eq. 1 says so; the others act on ``4hw`` channels of position-indexed maps, where a
      spatial kernel would mix unrelated channel meanings across positions).
    - ``P`` is the 8-channel coordinate map of the RIS literature for ``pos_dim=8``
      (:func:`~rislayers.functional.coord_features`); ``pos_dim=0`` drops it and any other
      multiple of 4 uses :func:`~rislayers.functional.sine_position_encoding_2d`.
    - ``directions`` keeps one or both of ``"l2v"``, ``"v2l"`` (Table IV's "-l2v"/"-v2l"
      ablations); the groups and gates shrink to ``k = 2 * len(directions)``.
      ``balance=False`` skips Eq. 9-10's gates (Table IV's "-Balance"): the groups go to the
      compressing conv unweighted, and the module has no balance conv.
    - ``shift=False`` (Table IV's "-Shift" rows) coparses without the recurrent shift: the
      generator enters Eq. 5 and 7 unshifted only (``s = 0``), so each position is
      correlated with the other modality's positions in its own row (``C``, ``w`` channels)
      and its own column (``R``, ``h`` channels) instead of with every row (column) brought
      to it by the shifts; the groups shrink to ``w`` and ``h`` channels (``group_sizes``)
      and the balance and compress convs read ``len(directions) * (h + w)`` channels.
    - A sentence with no real word gives ``T_dist = 0`` (its attention weights are zero),
      so its output is finite.

    ``implementation`` selects how the same function is computed (identical parameters; a
    state dict loads into either): ``"gemm"`` computes ``A`` once and gathers the groups,
    folds the tiled sentence of Eq. 1 into a per-sample bias, averages before the balance
    conv (both are linear) and runs the 1x1 convs as matmuls on channels-last views;
    ``"shift"`` follows the paper literally (roll-and-concat generator tensors, four
    matmuls, concatenated conv inputs) and is the reference the tests compare against.

    Args:
        dim: channels ``c`` of the visual map (and of the output).
        text_dim: channels ``d`` of the word features.
        size: ``(h, w)`` of the visual map (an int means square). Fixed, because the
            balance and compress convs read ``k*h*w`` channels.
        pos_dim: channels of the position map ``P`` in Eq. 1 (8, 0, or a multiple of 4).
        directions: coparsing directions kept, from ``("l2v", "v2l")``.
        balance: apply the Eq. 9-10 gates.
        shift: cyclically shift the generator (Eq. 5, 7); ``False`` keeps only its unshifted
            slice (Table IV's "-Shift").
        implementation: ``"gemm"`` (fast, default) or ``"shift"`` (literal reference).
        fusion: ``"add"`` (residual, default) or ``"concat"`` (Conv1x1-BN-ReLU).
        norm: the ``BN`` of Eq. 1, of the compression and of ``"concat"``: ``"batch"`` (the
            paper) or ``"group"`` (:func:`~rislayers.norms.norm2d`; batch-independent). No
            ``"none"``: those convs have no bias.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - feats: ``(b, c, h, w)`` with ``(h, w) == size``; ``b = 0`` gives an empty output
        - words: ``(b, l, d)``
        - word_mask: ``(b, l)`` bool, True = real token; ``None`` = all real (the negation
          of a ``key_padding_mask``: pass ``~key_padding_mask``)
        - output: ``(b, c, h, w)``

    Example:
        >>> import torch
        >>> layer = SpatialRecurrentCoparser(32, 24, size=(6, 5))
        >>> feats, words = torch.randn(2, 32, 6, 5), torch.randn(2, 7, 24)
        >>> mask = torch.tensor([[True] * 4 + [False] * 3, [True] * 7])
        >>> layer(feats, words, mask).shape
        torch.Size([2, 32, 6, 5])
        >>> layer.num_groups, layer.compress_proj.in_channels
        (4, 120)
    """

    def __init__(
        self,
        dim: int,
        text_dim: int,
        *,
        size: int | Sequence[int],
        pos_dim: int = 8,
        directions: Sequence[str] = _DIRECTIONS,
        balance: bool = True,
        shift: bool = True,
        implementation: str = "gemm",
        fusion: str = "add",
        norm: str = "batch",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.dim = positive_int("dim", dim)
        self.text_dim = positive_int("text_dim", text_dim)
        self.size, self.directions = check_options(
            size=size, pos_dim=pos_dim, directions=directions, balance=balance, shift=shift,
            implementation=implementation, fusion=fusion, norm=norm,
        )
        self.pos_dim = pos_dim
        self.balance = balance
        self.shift = shift
        self.implementation = implementation
        self.fusion = fusion
        self.norm = norm

        height, width = self.size
        self.num_positions = height * width
        self.num_groups = 2 * len(self.directions)
        self.group_sizes = group_sizes(height, width, self.directions, shift)
        group_channels = sum(self.group_sizes)

        # Eq. 1. No conv bias: BatchNorm follows and would cancel it.
        self.distribute_proj = nn.Conv2d(self.dim + self.text_dim + pos_dim, self.dim, 1, bias=False, **factory)
        self.distribute_norm = norm2d(norm, self.dim, **factory)
        # Eq. 2: separate Linear-LN-ReLU stacks for the keys and the values.
        self.key_proj = nn.Sequential(
            nn.Linear(self.text_dim, self.dim, **factory), nn.LayerNorm(self.dim, **factory), nn.ReLU()
        )
        self.value_proj = nn.Sequential(
            nn.Linear(self.text_dim, self.dim, **factory), nn.LayerNorm(self.dim, **factory), nn.ReLU()
        )
        # Eq. 9: one gate logit per group.
        self.balance_proj = nn.Conv2d(group_channels, self.num_groups, 1, **factory) if balance else None
        # Eq. 10 and after: compress k*h*w -> c.
        self.compress_proj = nn.Conv2d(group_channels, self.dim, 1, bias=False, **factory)
        self.compress_norm = norm2d(norm, self.dim, **factory)
        if fusion == "concat":
            self.fuse_proj = nn.Conv2d(2 * self.dim, self.dim, 1, bias=False, **factory)
            self.fuse_norm = norm2d(norm, self.dim, **factory)
        else:
            self.fuse_proj = None
            self.fuse_norm = None

        if pos_dim == 8:
            positions = coord_features(1, height, width, device=device, dtype=dtype)
        elif pos_dim > 0:
            positions = sine_position_encoding_2d(height, width, pos_dim, device=device, dtype=dtype).unsqueeze(0)
        else:
            positions = torch.zeros(1, 0, height, width, device=device, dtype=dtype)
        # Buffers derived from the constructor arguments: not saved, so state dicts of the
        # two implementations are interchangeable.
        self.register_buffer("positions", positions, persistent=False)
        self.register_buffer(
            "group_index", coparse_index(height, width, self.directions, shift=shift).to(device), persistent=False
        )

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, text_dim={self.text_dim}, size={self.size}, pos_dim={self.pos_dim}, "
            f"directions={self.directions}, balance={self.balance}, shift={self.shift}, "
            f"implementation={self.implementation!r}, fusion={self.fusion!r}"
        )

    # ------------------------------------------------------------------ Eq. 1-4
    @renamed_arguments(vis="feats")
    def distribute(self, feats: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Distribution-aware language map ``T_dist`` (Eq. 1-4), channels-last.

        Args:
            feats: the visual map ``V``.
            words: word features ``T``.
            word_mask: bool, True for real tokens; ``None`` means every token is real.

        Shape:
            - feats: ``(b, c, h, w)``
            - words: ``(b, l, d)``
            - word_mask: ``(b, l)``
            - output: ``(b, n, c)`` with ``n = h*w`` (row-major positions)

        Example:
            >>> import torch
            >>> layer = SpatialRecurrentCoparser(16, 8, size=4)
            >>> layer.distribute(torch.randn(2, 16, 4, 4), torch.randn(2, 3, 8)).shape
            torch.Size([2, 16, 16])
        """
        self._check_inputs(feats, words, word_mask)
        return self._distribute(feats, zero_padding(words, word_mask), word_mask)

    def _distribute(self, feats: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor | None) -> torch.Tensor:
        """:meth:`distribute` on checked inputs whose padding is already zeroed."""
        batch = feats.shape[0]
        height, width = self.size
        sentence = _masked_mean(words, word_mask)  # AvgP(T) over real words
        positions = self.positions.to(feats.dtype)
        if self.implementation == "shift":
            tiled = rearrange(sentence, "b d -> b d 1 1").expand(-1, -1, height, width)
            stacked = torch.cat((feats, tiled, positions.expand(batch, -1, -1, -1)), dim=1)
            query = self.distribute_proj(stacked)
        else:
            # The conv of a concatenation is the sum of convs of the parts; the tiled
            # sentence then costs one (b, d) x (d, c) product instead of n of them. The
            # result is channels-last, which the attention matmul below reads directly.
            weight = self.distribute_proj.weight.flatten(1)
            w_vis, w_text, w_pos = weight.split((self.dim, self.text_dim, self.pos_dim), dim=1)
            query = F.linear(rearrange(feats, "b c h w -> b (h w) c"), w_vis)
            query = query + F.linear(sentence, w_text)[:, None, :]
            if self.pos_dim:
                query = query + F.linear(rearrange(positions, "1 p h w -> 1 (h w) p"), w_pos)
            query = rearrange(query, "b (h w) c -> b c h w", h=height, w=width)
        query = F.relu(self.distribute_norm(query))  # Eq. 1

        keys = self.key_proj(words)  # Eq. 2
        values = self.value_proj(words)
        query_flat = rearrange(query, "b c h w -> b (h w) c") / math.sqrt(self.dim)
        scores = torch.bmm(query_flat, keys.transpose(1, 2))
        weights = _masked_softmax(scores, word_mask)  # Eq. 3
        return torch.bmm(weights.to(values.dtype), values)  # Eq. 4

    # ------------------------------------------------------------------ Eq. 5-8
    def coparse(self, vis_flat: torch.Tensor, lang_flat: torch.Tensor) -> torch.Tensor:
        """The coparsing groups of Eq. 5-8, channels-last.

        Args:
            vis_flat: the visual map ``V`` flattened row-major (``rearrange(vis, "b c h w -> b (h w) c")``).
            lang_flat: ``T_dist``, as returned by :meth:`distribute`.

        Shape:
            - vis_flat: ``(b, n, c)``
            - lang_flat: ``(b, n, c)``
            - output: ``(b, n, m)``: ``k = 2 * len(directions)`` groups of ``n`` channels
              (``m = k*n``; without the shift ``w`` for ``C`` and ``h`` for ``R``, see
              ``group_sizes``), in the order ``C_l2v, R_l2v, C_v2l, R_v2l`` (those kept).

        Example:
            >>> import torch
            >>> layer = SpatialRecurrentCoparser(16, 8, size=(3, 4))
            >>> layer.coparse(torch.randn(2, 12, 16), torch.randn(2, 12, 16)).shape
            torch.Size([2, 12, 48])
        """
        axes = check_shape(vis_flat, "b n c", name="vis_flat", n=self.num_positions, c=self.dim, floating=True)
        check_shape(lang_flat, "b n c", name="lang_flat", bound=axes, floating=True)
        if self.implementation == "shift":
            return coparse_shift(vis_flat, lang_flat, self.size, self.directions, self.shift)
        batch, n = vis_flat.shape[0], self.num_positions
        affinity = torch.bmm(vis_flat, lang_flat.transpose(1, 2))  # A (b, n, n)
        # Explicit sizes, not -1: an empty batch (b = 0) has no size to infer.
        groups = affinity.reshape(batch, n * n).index_select(1, self.group_index)
        return groups.view(batch, n, sum(self.group_sizes))

    # ------------------------------------------------------------------ Eq. 9-10
    def compress(self, groups: torch.Tensor) -> torch.Tensor:
        """Balance (Eq. 9-10, if enabled) and compress the groups to ``c`` channels.

        Args:
            groups: the output of :meth:`coparse`.

        Shape:
            - groups: ``(b, n, m)``, ``m = sum(group_sizes)``
            - output: ``(b, c, h, w)``

        Example:
            >>> import torch
            >>> layer = SpatialRecurrentCoparser(16, 8, size=(3, 4))
            >>> layer.compress(torch.randn(2, 12, 48)).shape
            torch.Size([2, 16, 3, 4])
        """
        height, width = self.size
        check_shape(groups, "b n m", name="groups", n=self.num_positions, m=sum(self.group_sizes), floating=True)
        batch, k, n = groups.shape[0], self.num_groups, self.num_positions
        if self.implementation == "shift":
            stacked = rearrange(groups, "b (h w) m -> b m h w", h=height, w=width)
            if self.balance_proj is not None:
                gates = self.balance_proj(stacked).mean(dim=(2, 3)).sigmoid()  # Eq. 9
                parts = stacked.split(self.group_sizes, dim=1)
                stacked = torch.cat([parts[g] * gates[:, g, None, None, None] for g in range(k)], dim=1)  # Eq. 10
            compressed = self.compress_proj(stacked)
        else:
            if self.balance_proj is not None:
                # AvgP(Conv1x1(G)) == Conv1x1(AvgP(G)): average the groups first.
                logits = F.linear(groups.mean(dim=1), self.balance_proj.weight.flatten(1), self.balance_proj.bias)
                gates = logits.sigmoid()  # Eq. 9
                groups = self._gated(groups, gates)  # Eq. 10
            # The 1x1 conv as a matmul on the channels-last groups (no transposed copy).
            compressed = F.linear(groups, self.compress_proj.weight.flatten(1))
            compressed = rearrange(compressed, "b (h w) c -> b c h w", h=height, w=width)
        return F.relu(self.compress_norm(compressed))

    def _gated(self, groups: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """Channels-last groups ``(b, n, m)`` times their group's gate ``(b, k)`` (Eq. 10)."""
        batch, n, k = groups.shape[0], self.num_positions, self.num_groups
        if not self.shift:  # groups of w and h channels: one product per group
            parts = groups.split(self.group_sizes, dim=2)
            return torch.cat([part * gates[:, g, None, None] for g, part in enumerate(parts)], dim=2)
        return (groups.view(batch, n, k, n) * gates[:, None, :, None]).view(batch, n, k * n)

    @property
    def out_channels(self) -> int:
        """Channels of the fused map, ``dim``, those of ``feats``."""
        return self.dim

    @property
    def output_names(self) -> tuple[str, ...]:
        """Name of the output, for ``torch.onnx.export(..., output_names=...)``."""
        return ("fused",)

    @renamed_arguments(vis="feats")
    def forward(self, feats: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Fuse the words into the visual map (Eq. 1-10).

        Args:
            feats: visual map ``V`` of the constructed ``size`` (named ``vis`` before 0.2;
                the old keyword still works, with a ``DeprecationWarning``).
            words: word features.
            word_mask: bool, True for real tokens; ``None`` means every token is real. Pass
                ``~key_padding_mask`` if you hold PyTorch's True-on-padding mask.

        Returns:
            The fused map ``F_cross`` ``(b, c, h, w)``, in the dtype of ``feats``; an empty
            batch gives an empty map.
        """
        self._check_inputs(feats, words, word_mask)
        if feats.shape[0] == 0 and not is_tracing():
            # Nothing to fuse; returning early also keeps BatchNorm's running statistics
            # away from the NaN mean of an empty batch in training mode.
            return autocast_output(feats + 0)
        lang_flat = self._distribute(feats, zero_padding(words, word_mask), word_mask)
        groups = self.coparse(rearrange(feats, "b c h w -> b (h w) c"), lang_flat)
        compressed = self.compress(groups)
        if self.fuse_proj is not None:
            return autocast_output(F.relu(self.fuse_norm(self.fuse_proj(torch.cat((feats, compressed), dim=1)))))
        return autocast_output(feats + compressed)  # float32 feats would promote the sum

    def macs(self, length: int, *, batch: int = 1) -> int:
        """Multiply-accumulates of one forward with the current ``implementation``.

        Counts the matmuls and convs (Eq. 1 conv, key/value Linears, attention scores and
        values, the coparsing correlations, the balance and compress convs, the concat
        fusion conv); not norms, activations, pooling, gating or gathers.

        Args:
            length: number of words ``l``.
            batch: batch size ``b``.

        Example:
            >>> gemm = SpatialRecurrentCoparser(768, 768, size=16)
            >>> shift = SpatialRecurrentCoparser(768, 768, size=16, implementation="shift")
            >>> round(gemm.macs(20) / 1e9, 3), round(shift.macs(20) / 1e9, 3)
            (0.436, 0.739)
        """
        l, b = positive_int("length", length), positive_int("batch", batch)
        n, c, d, k, p = self.num_positions, self.dim, self.text_dim, self.num_groups, self.pos_dim
        shift, m = self.implementation == "shift", sum(self.group_sizes)
        distribute = n * (c + d + p) * c if shift else n * (c + p) * c + d * c
        language = 2 * l * d * c + 2 * n * l * c
        # The literal form correlates each group's channels; "gemm" always forms all of A.
        correlations = n * m * c if shift else n * n * c
        balance = 0 if not self.balance else (n * m * k if shift else m * k)
        compress = n * m * c
        fuse = n * 2 * c * c if self.fusion == "concat" else 0
        return b * (distribute + language + correlations + balance + compress + fuse)

    def _check_inputs(self, feats: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor | None) -> None:
        height, width = self.size
        dtype = self.distribute_proj.weight.dtype
        check_words_inputs(
            self, feats, words, word_mask, dim=self.dim, text_dim=self.text_dim, dtype=dtype, h=height, w=width
        )
