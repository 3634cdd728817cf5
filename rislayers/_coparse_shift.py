"""S2RM's coparsing (Eq. 5-8): the literal roll-and-concat form, the groups' index layout, the option checks.

:class:`~rislayers.SpatialRecurrentCoparser` computes the groups with one affinity matmul and
a gather (``implementation="gemm"``, indices from :func:`group_sources`); :func:`coparse_shift`
keeps the paper's roll-and-concat form (``implementation="shift"``), which the tests and the
benchmark compare against. Both take ``shift``: ``False`` keeps only the zero-shift slice of
the generator (Table IV's "-Shift" rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange

from ._conv_blocks import _choice

DIRECTIONS = ("l2v", "v2l")
_IMPLEMENTATIONS = ("gemm", "shift")
_FUSIONS = ("add", "concat")
# No "none": the convs before the norms have no bias (the "gemm" path reads only weights).
_COPARSER_NORMS = ("batch", "group")


def normalise_directions(directions: object) -> tuple[str, ...]:
    """``directions`` as a tuple in the paper's order; anything else is a one-line ValueError."""
    ok = (
        isinstance(directions, Sequence)
        and not isinstance(directions, (str, bytes))
        and len(directions) > 0
        and len(set(directions)) == len(directions)
        and all(d in DIRECTIONS for d in directions)
    )
    if not ok:
        raise ValueError(
            f"directions: expected a non-empty sequence of distinct names from {DIRECTIONS}; got {directions!r}"
        )
    # Groups are always stacked in the paper's order (Eq. 9), whatever order was given.
    return tuple(d for d in DIRECTIONS if d in directions)


def group_sizes(height: int, width: int, directions: Sequence[str], shift: bool) -> tuple[int, ...]:
    """Channels of each kept group: ``n = h*w`` each with the shift, else ``w`` (C) and ``h`` (R)."""
    per_direction = (height * width, height * width) if shift else (width, height)
    return per_direction * len(directions)


def group_sources(height: int, width: int, shift: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Generator positions read by each channel of ``C`` and ``R``, for every parsed position.

    Returns ``(source_c, source_r)`` of shapes ``(n, S_h*w)`` and ``(n, S_w*h)`` (row-major
    flat positions), with ``S_h = h, S_w = w`` shifts, or one (the zero shift) without them:
    channel ``(s, t)`` of ``C`` reads ``((i - s) mod h, t)`` and of ``R`` reads
    ``(t, (j - s) mod w)``, for the parsed position ``(i, j)``.
    """
    n = height * width
    shifts_h, shifts_w = (height, width) if shift else (1, 1)
    row = torch.arange(height).view(height, 1, 1, 1)  # i: the parsed position's row
    col = torch.arange(width).view(1, width, 1, 1)  # j: the parsed position's column
    zeros = torch.zeros(height, width, 1, 1, dtype=torch.long)
    # Eq. 5-6: channel (s, t) of C reads generator position ((i - s) mod h, t).
    step_h = torch.arange(shifts_h).view(1, 1, shifts_h, 1)
    t_w = torch.arange(width).view(1, 1, 1, width)
    source_c = (((row - step_h) % height) * width + t_w + zeros).reshape(n, shifts_h * width)
    # Eq. 7-8: channel (s, t) of R reads generator position (t, (j - s) mod w).
    step_w = torch.arange(shifts_w).view(1, 1, shifts_w, 1)
    t_h = torch.arange(height).view(1, 1, 1, height)
    source_r = (t_h * width + (col - step_w) % width + zeros).reshape(n, shifts_w * height)
    return source_c, source_r


def coparse_shift(
    vis_flat: torch.Tensor,
    lang_flat: torch.Tensor,
    size: tuple[int, int],
    directions: Sequence[str],
    shift: bool = True,
) -> torch.Tensor:
    """Eq. 5-8 literally: shifted copies of the generator, concatenated, correlated.

    ``vis_flat`` and ``lang_flat`` are ``(b, n, c)`` row-major maps of ``size = (h, w)``; the
    result is ``(b, n, m)``, the groups of the kept ``directions`` in the paper's order
    (``m = sum(group_sizes(...))``). ``shift=False`` concatenates only the unshifted generator.
    """
    height, width = size
    vis = rearrange(vis_flat, "b (h w) c -> b h w c", h=height, w=width)
    lang = rearrange(lang_flat, "b (h w) c -> b h w c", h=height, w=width)
    pairs = {"l2v": (vis, lang), "v2l": (lang, vis)}  # (parsed, generator)
    shifts_h, shifts_w = (height, width) if shift else (1, 1)
    groups = []
    for direction in directions:
        parsed, generator = pairs[direction]
        # Eq. 5: T_row (h, S_h*w, c), concatenated along the width.
        rows = torch.cat([torch.roll(generator, s, dims=1) for s in range(shifts_h)], dim=2)
        # Eq. 6: C = parsed (h, w, c) x Perm(T_row) (h, c, S_h*w).
        col_wise = torch.matmul(parsed, rows.transpose(-1, -2))
        # Eq. 7: T_col (S_w*h, w, c), concatenated along the height; Perm2 -> (w, c, S_w*h)
        # is applied to each shifted copy before concatenating (a permutation commutes
        # with roll and cat), so the matmul reads it without another copy.
        generator_t = generator.transpose(1, 2)  # (b, w, h, c)
        cols = torch.cat([torch.roll(generator_t, s, dims=1) for s in range(shifts_w)], dim=2)
        # Eq. 8: R = Perm3(Perm1(parsed) (w, h, c) x Perm2(T_col) (w, c, S_w*h)).
        row_wise = torch.matmul(parsed.transpose(1, 2), cols.transpose(-1, -2)).transpose(1, 2)
        groups += [col_wise.flatten(1, 2), row_wise.flatten(1, 2)]
    return torch.cat(groups, dim=2)


def check_options(
    *,
    size: object,
    pos_dim: int,
    directions: object,
    balance: bool,
    shift: bool,
    implementation: str,
    fusion: str,
    norm: str,
) -> tuple[tuple[int, int], tuple[str, ...]]:
    """Validate the options of :class:`SpatialRecurrentCoparser` (all but ``dim`` and ``text_dim``).

    Args:
        size, pos_dim, directions, balance, shift, implementation, fusion, norm: the constructor's
            arguments of those names (documented there), checked in its order.

    Returns:
        ``size`` as an ``(h, w)`` tuple and ``directions`` in the paper's order.

    Raises:
        ValueError: naming the first bad argument and its value.
    """
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (
        isinstance(size, (str, bytes))
        or not isinstance(size, Sequence)
        or len(size) != 2
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size)
    ):
        raise ValueError(f"size: expected (h, w), two positive integers; got {size!r}")
    if isinstance(pos_dim, bool) or not isinstance(pos_dim, int) or pos_dim < 0 or (pos_dim not in (0, 8) and pos_dim % 4):
        raise ValueError(f"pos_dim: expected 0, 8 or a positive multiple of 4; got {pos_dim!r}")
    kept = normalise_directions(directions)
    for name, value in (("balance", balance), ("shift", shift)):
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected a bool; got {value!r}")
    _choice("implementation", implementation, _IMPLEMENTATIONS)
    _choice("fusion", fusion, _FUSIONS)
    _choice("norm", norm, _COPARSER_NORMS)
    return (size[0], size[1]), kept
