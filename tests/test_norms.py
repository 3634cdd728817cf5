"""rislayers.norms.norm2d: one norm factory, and norm="group" equals the BatchNorm-to-GroupNorm swap."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import rislayers as R
from rislayers.norms import NORMS, group_count, norm2d


def _swap(module: nn.Module) -> nn.Module:
    """reference_models.base.use_group_norm as it is today: every BatchNorm2d -> GroupNorm."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            groups = math.gcd(32, child.num_features)
            setattr(module, name, nn.GroupNorm(groups, child.num_features, eps=child.eps, affine=child.affine))
        else:
            _swap(child)
    return module


@given(channels=st.integers(1, 200))
def test_group_count_is_the_largest_power_of_two_up_to_32_dividing_the_channels(channels):
    groups = group_count(channels)
    assert channels % groups == 0 and groups in (1, 2, 4, 8, 16, 32)
    assert groups == 32 or channels % (2 * groups) != 0


@pytest.mark.parametrize("kind", NORMS)
def test_norm2d_builds_what_it_names(kind):
    module = norm2d(kind, 48, eps=1e-3, momentum=0.5)
    expected = {"batch": nn.BatchNorm2d, "group": nn.GroupNorm, "none": nn.Identity}[kind]
    assert type(module) is expected
    if kind == "batch":
        assert (module.eps, module.momentum) == (1e-3, 0.5)
    if kind == "group":
        assert (module.num_groups, module.eps) == (16, 1e-3)
    assert module(torch.randn(2, 48, 3, 3)).shape == (2, 48, 3, 3)


def test_norm2d_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"^norm: expected one of \('batch', 'group', 'none'\); got 'layer'$"):
        norm2d("layer", 8)
    with pytest.raises(ValueError, match=r"^channels: expected a positive integer; got 0$"):
        norm2d("batch", 0)


LAYERS = {
    "DualBranchAligner": lambda **k: R.DualBranchAligner(16, 8, num_masks=4, num_heads=4, upsample_steps=2, **k),
    "SingleBranchAligner": lambda **k: R.SingleBranchAligner(16, 8, num_heads=4, upsample_steps=1, **k),
    "SpatialRecurrentCoparser": lambda **k: R.SpatialRecurrentCoparser(16, 8, size=4, fusion="concat", **k),
    "TileConcatFusion": lambda **k: R.TileConcatFusion(16, 8, **k),
    "PublishedScaleWiseAggregator": lambda **k: R.PublishedScaleWiseAggregator(16, 8, hidden_dim=8, **k),
    "ConcatProjectFusion": lambda **k: R.ConcatProjectFusion((16, 16), 8, 12, **k),
    "CASGDecoder": lambda **k: R.CASGDecoder((8, 16, 24, 32), 8, **k),
    "FPNDecoder": lambda **k: R.FPNDecoder((8, 16, 24, 40), dim=24, **k),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_group_norm_at_build_time_equals_swapping_a_built_layer(name):
    torch.manual_seed(0)
    swapped = _swap(LAYERS[name]())
    torch.manual_seed(0)
    built = LAYERS[name](norm="group")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in built.modules())
    leaves = lambda m: [(n, str(c)) for n, c in m.named_modules() if not list(c.children())]  # noqa: E731
    assert leaves(swapped) == leaves(built)  # the same norms, groups, eps and affine, in the same places
    state = swapped.state_dict()
    assert list(state) == list(built.state_dict())
    built.load_state_dict(state)
    assert all(torch.equal(state[k], v) for k, v in built.state_dict().items())


@pytest.mark.parametrize("name", ["SpatialRecurrentCoparser", "TileConcatFusion", "PublishedScaleWiseAggregator"])
def test_layers_whose_convs_have_no_bias_refuse_norm_none(name):
    with pytest.raises(ValueError, match=r"^norm: expected one of \('batch', 'group'\); got 'none'$"):
        LAYERS[name](norm="none")
