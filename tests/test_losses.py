"""Losses: hand-computed values, edge cases in float32 and bfloat16."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rislayers import DeepSupervisionLoss, ShapeError, dice_loss, sigmoid_focal_loss

DTYPES = [torch.float32, torch.bfloat16]


def _targets(kind: str, b=2, h=6, w=6) -> torch.Tensor:
    if kind == "empty":
        return torch.zeros(b, h, w, dtype=torch.bool)
    if kind == "full":
        return torch.ones(b, h, w, dtype=torch.bool)
    t = torch.zeros(b, h, w, dtype=torch.bool)
    t[:, :3] = True
    return t


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["empty", "full", "half"])
@pytest.mark.parametrize(
    "loss_name, channels", [("dice", 1), ("dice", 2), ("dice_fg", 1), ("dice_fg", 2), ("focal", 1)]
)
def test_losses_finite_values_and_grads(dtype, kind, channels, loss_name):
    logits = (torch.randn(2, channels, 6, 6) * 5).to(dtype).requires_grad_()
    target = _targets(kind)
    if loss_name == "dice":
        loss = dice_loss(logits, target)
    elif loss_name == "dice_fg":
        loss = dice_loss(logits, target, classes="foreground")
    else:
        loss = sigmoid_focal_loss(logits, target)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert torch.isfinite(loss)
    loss.backward()
    assert logits.grad.dtype == dtype
    assert torch.isfinite(logits.grad).all()


def test_focal_loss_rejects_two_channels():
    with pytest.raises(ShapeError, match="logits"):
        sigmoid_focal_loss(torch.randn(2, 2, 4, 4), torch.zeros(2, 4, 4))


def test_dice_hand_computed():
    # foreground probability 1 on 2 of 4 pixels, target has 1 of those 2 and 1 other
    logits = torch.tensor([[[[20.0, 20.0], [-20.0, -20.0]]]])
    target = torch.tensor([[[True, False], [True, False]]])
    fg = 1 - (2 * 1 + 1) / (2 + 2 + 1)
    bg = 1 - (2 * 1 + 1) / (2 + 2 + 1)
    assert dice_loss(logits, target, classes="foreground").item() == pytest.approx(fg, abs=1e-6)
    assert dice_loss(logits, target).item() == pytest.approx((fg + bg) / 2, abs=1e-6)


def test_dice_two_channel_equals_sigmoid_of_difference():
    logits2 = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    logits1 = logits2[:, 1:] - logits2[:, :1]
    target = torch.rand(3, 5, 5) > 0.5
    torch.testing.assert_close(dice_loss(logits2, target), dice_loss(logits1, target))


def test_dice_perfect_prediction_is_near_zero_and_empty_vs_empty_zero():
    target = _targets("half")
    logits = torch.where(target, 30.0, -30.0).unsqueeze(1)
    assert dice_loss(logits, target).item() < 1e-6
    empty = _targets("empty")
    assert dice_loss(torch.full((2, 1, 6, 6), -30.0), empty, classes="foreground").item() < 1e-6


def test_dice_reduction_none_and_bad_args():
    per = dice_loss(torch.randn(4, 2, 3, 3), torch.zeros(4, 3, 3), reduction="none")
    assert per.shape == (4,)
    with pytest.raises(ValueError, match="reduction"):
        dice_loss(torch.randn(1, 2, 3, 3), torch.zeros(1, 3, 3), reduction="avg")
    with pytest.raises(ShapeError, match="target"):
        dice_loss(torch.randn(1, 2, 3, 3), torch.zeros(1, 4, 3))
    with pytest.raises(ShapeError, match="logits"):
        dice_loss(torch.randn(1, 3, 3, 3), torch.zeros(1, 3, 3))


def test_focal_matches_formula():
    logits = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    target = torch.rand(2, 4, 4) > 0.5
    t = target.double()
    p = logits[:, 0].sigmoid()
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = 0.25 * t + 0.75 * (1 - t)
    expected = (-alpha_t * (1 - p_t) ** 2 * torch.log(p_t)).mean()
    assert sigmoid_focal_loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)
    # gamma 0, no alpha: plain BCE
    bce = F.binary_cross_entropy_with_logits(logits[:, 0], t)
    assert sigmoid_focal_loss(logits, target, gamma=0, alpha=-1).item() == pytest.approx(bce.item(), rel=1e-5)


def test_deep_supervision_weights_and_resize():
    target = _targets("half", h=8, w=8)
    preds = [torch.randn(2, 2, 4, 4), torch.randn(2, 2, 8, 8), torch.randn(2, 2, 8, 8)]
    criterion = DeepSupervisionLoss((0.15, 0.15, 0.7))
    up = F.interpolate(preds[0], size=(8, 8), mode="bilinear", align_corners=False)
    expected = 0.15 * dice_loss(up, target) + 0.15 * dice_loss(preds[1], target) + 0.7 * dice_loss(preds[2], target)
    torch.testing.assert_close(criterion(preds, target), expected)


def test_deep_supervision_count_mismatch_is_clear():
    with pytest.raises(ValueError, match="expected a sequence of 3 predictions .* got 2 predictions"):
        DeepSupervisionLoss()([torch.randn(1, 2, 4, 4)] * 2, torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="weights"):
        DeepSupervisionLoss(())


@pytest.mark.parametrize("bad", [255.0, 0.5, -1.0, float("nan")])
@pytest.mark.parametrize("loss_name", ["dice", "focal", "deep_supervision"])
def test_targets_outside_zero_one_are_refused_naming_target(loss_name, bad):
    target = torch.zeros(2, 4, 4)
    target[1, 2, 3] = bad
    logits = torch.randn(2, 1, 4, 4)
    losses = {
        "dice": lambda t: dice_loss(logits, t),
        "focal": lambda t: sigmoid_focal_loss(logits, t),
        # with a loss of the user's own, the criterion checks the target itself
        "deep_supervision": lambda t: DeepSupervisionLoss((1.0,), loss=lambda p, y: p.mean())([logits], t),
    }
    with pytest.raises(ValueError, match=r"^target: expected a binary mask .*got the value"):
        losses[loss_name](target)
    target[1, 2, 3] = 1.0  # 0/1 floats, 0/1 integers and bools are all fine
    for good in (target, target.long(), target.bool()):
        assert torch.isfinite(losses[loss_name](good))


@pytest.mark.parametrize("weights", [(0.5, float("nan")), (float("inf"),), (0.2, -0.1)])
def test_deep_supervision_weights_must_be_finite_and_non_negative(weights):
    with pytest.raises(ValueError, match=r"^weights: expected .*finite, non-negative"):
        DeepSupervisionLoss(weights)
