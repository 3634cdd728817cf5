"""FPNDecoder, S2RM's Table IV/VII decoder baseline: shapes, the top-down reading, properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from layer_checks import (
    assert_batch_independent,
    assert_finite,
    assert_inputs_grads_finite,
    assert_param_grads,
    backward_sum,
    perturb_sample,
)
from rislayers import FPNDecoder, ShapeError

IN_DIMS = (6, 8, 10, 12)


def make_features(batch, h1, w1, in_dims=IN_DIMS, dtype=torch.float32):
    sizes = [(math.ceil(h1 / 2**k), math.ceil(w1 / 2**k)) for k in range(4)]
    return [torch.randn(batch, c, h, w, dtype=dtype) for c, (h, w) in zip(in_dims, sizes)]


@settings(max_examples=20)
@given(
    batch=st.integers(1, 3),
    h1=st.integers(1, 12),
    w1=st.integers(1, 12),
    in_dims=st.tuples(*[st.integers(1, 8)] * 4),
    dim=st.integers(1, 8),
    num_classes=st.one_of(st.none(), st.integers(1, 3)),
    merge=st.sampled_from(["sum", "finest"]),
)
def test_output_shape(batch, h1, w1, in_dims, dim, num_classes, merge):
    decoder = FPNDecoder(in_dims, dim=dim, num_classes=num_classes, merge=merge).eval()
    out = decoder(make_features(batch, h1, w1, in_dims))
    expected = (batch, num_classes, 4 * h1, 4 * w1) if num_classes else (batch, dim, h1, w1)
    assert out.shape == expected
    assert_finite(out)


@pytest.mark.parametrize("merge", ["sum", "finest"])
def test_follows_the_top_down_pathway(merge):
    decoder = FPNDecoder(IN_DIMS, dim=5, merge=merge, dtype=torch.float64).eval()
    features = make_features(2, 9, 7, dtype=torch.float64)
    up = lambda x, ref: F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)  # noqa: E731
    with torch.no_grad():
        p4 = decoder.lateral[3](features[3])
        p3 = decoder.lateral[2](features[2]) + up(p4, features[2])
        p2 = decoder.lateral[1](features[1]) + up(p3, features[1])
        p1 = decoder.lateral[0](features[0]) + up(p2, features[0])
        if merge == "finest":
            merged = decoder.smooth[0](p1)
        else:
            merged = sum(up(decoder.smooth[k](p), features[0]) for k, p in enumerate((p1, p2, p3, p4)))
        expected = F.interpolate(decoder.head(merged), size=(36, 28), mode="bilinear", align_corners=False)
        torch.testing.assert_close(decoder(features), expected)


def test_merge_option_changes_the_output_and_the_parameters():
    torch.manual_seed(0)
    summed = FPNDecoder(IN_DIMS, dim=5).eval()
    finest = FPNDecoder(IN_DIMS, dim=5, merge="finest").eval()
    assert len(summed.smooth) == 4 and len(finest.smooth) == 1
    finest.load_state_dict(summed.state_dict(), strict=False)
    features = make_features(2, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(summed(features), finest(features))


def test_every_coarse_level_reaches_the_output():
    decoder = FPNDecoder(IN_DIMS, dim=5).eval()
    features = make_features(2, 8, 8)
    with torch.no_grad():
        before = decoder(features)
        for k in range(4):
            changed = list(features)
            changed[k] = changed[k] + 1
            assert not torch.allclose(decoder(changed), before), f"V{k + 1} does not reach the output"


def test_batch_independence_in_eval():
    decoder = FPNDecoder(IN_DIMS, dim=5).eval()
    inputs = {"features": make_features(3, 8, 6)}
    run = lambda x: decoder(x["features"])  # noqa: E731
    assert_batch_independent(run, inputs, perturb_sample, changed=1, watched=0)
    assert_batch_independent(run, inputs, perturb_sample, changed=0, watched=2)


@pytest.mark.parametrize("merge", ["sum", "finest"])
def test_batch_of_one_trains_with_finite_gradients(merge):
    decoder = FPNDecoder(IN_DIMS, dim=5, merge=merge).train()
    features = [f.requires_grad_() for f in make_features(1, 16, 16)]
    out = decoder(features)
    assert_finite(out)
    backward_sum(out)
    assert_inputs_grads_finite(features)
    assert_param_grads(decoder)


def test_errors_name_the_argument():
    for kwargs, name in [({"dim": 0}, "dim"), ({"num_classes": 0}, "num_classes"), ({"merge": "max"}, "merge"), ({"norm": "layer"}, "norm")]:
        with pytest.raises(ValueError, match=rf"^{name}: "):
            FPNDecoder(IN_DIMS, **kwargs)
    with pytest.raises(ValueError, match=r"^in_dims: "):
        FPNDecoder((4, 4, 4))
    decoder = FPNDecoder(IN_DIMS, dim=5)
    features = make_features(2, 8, 8)
    with pytest.raises(ShapeError, match=r"^features: expected a sequence of 4"):
        decoder(features[:3])
    with pytest.raises(ShapeError, match=r"^features\[2\]: .*c: 9 != 10"):
        decoder([*features[:2], torch.randn(2, 9, 2, 2), features[3]])


def test_a_pyramid_given_coarsest_first_is_refused():
    decoder = FPNDecoder((8, 8, 8, 8), dim=8)
    features = [torch.randn(1, 8, 16 >> i, 16 >> i) for i in range(4)]
    with pytest.raises(ShapeError, match=r"^features: expected \[V1, V2, V3, V4\] high resolution first .* got sizes 2x2, 4x4, 8x8, 16x16$"):
        decoder(features[::-1])
    assert decoder.out_channels == 1 and FPNDecoder((8, 8, 8, 8), dim=6, num_classes=None).out_channels == 6
