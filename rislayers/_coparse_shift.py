"""S2RM's coparsing (Eq. 5-8) written literally: the ``implementation="shift"`` reference.

:class:`~rislayers.SpatialRecurrentCoparser` computes the same groups with one affinity
matmul and a gather (``implementation="gemm"``); this module keeps the paper's roll-and-concat
form, which the tests and the benchmark compare against.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange


def coparse_shift(
    vis_flat: torch.Tensor, lang_flat: torch.Tensor, size: tuple[int, int], directions: Sequence[str]
) -> torch.Tensor:
    """Eq. 5-8 literally: shifted copies of the generator, concatenated, correlated.

    ``vis_flat`` and ``lang_flat`` are ``(b, n, c)`` row-major maps of ``size = (h, w)``; the
    result is ``(b, n, k*n)``, the groups of the kept ``directions`` in the paper's order.
    """
    height, width = size
    vis = rearrange(vis_flat, "b (h w) c -> b h w c", h=height, w=width)
    lang = rearrange(lang_flat, "b (h w) c -> b h w c", h=height, w=width)
    pairs = {"l2v": (vis, lang), "v2l": (lang, vis)}  # (parsed, generator)
    groups = []
    for direction in directions:
        parsed, generator = pairs[direction]
        # Eq. 5: T_row (h, h*w, c), concatenated along the width.
        rows = torch.cat([torch.roll(generator, s, dims=1) for s in range(height)], dim=2)
        # Eq. 6: C = parsed (h, w, c) x Perm(T_row) (h, c, h*w).
        col_wise = torch.matmul(parsed, rows.transpose(-1, -2))
        # Eq. 7: T_col (h*w, w, c), concatenated along the height; Perm2 -> (w, c, w*h)
        # is applied to each shifted copy before concatenating (a permutation commutes
        # with roll and cat), so the matmul reads it without another copy.
        generator_t = generator.transpose(1, 2)  # (b, w, h, c)
        cols = torch.cat([torch.roll(generator_t, s, dims=1) for s in range(width)], dim=2)
        # Eq. 8: R = Perm3(Perm1(parsed) (w, h, c) x Perm2(T_col) (w, c, w*h)).
        row_wise = torch.matmul(parsed.transpose(1, 2), cols.transpose(-1, -2)).transpose(1, 2)
        groups += [col_wise.flatten(1, 2), row_wise.flatten(1, 2)]
    return torch.cat(groups, dim=2)
