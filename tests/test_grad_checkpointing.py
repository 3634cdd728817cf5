"""Activation checkpointing: the same loss and gradients as a plain step, dropout included."""

from __future__ import annotations

import pytest
import torch

from reference_models import build_model

# Every architecture, with the randomness its parts have: BERT's dropout (text_dropout) and
# Swin's stochastic depth (drop_path); ASDA's CLIP towers have neither.
CASES = {
    "lavt_sadlr_tiny": {"text_dropout": 0.1, "drop_path": 0.2},
    "vlt_tiny": {"text_dropout": 0.1, "drop_path": 0.2},
    "lts_tiny": {"text_dropout": 0.1, "drop_path": 0.2},
    "s2rm_tiny": {"text_dropout": 0.1, "drop_path": 0.2},
    "asda_tiny": {},
}

# The parts switched: the encoders, and the heavy rislayers parts a model holds (SADLR's
# refiner, S2RM's CASG decoder, ASDA's aligner; tests/test_part_checkpointing.py).
SWITCHED = {
    "lavt_sadlr_tiny": ["backbone", "head.refiner", "text_encoder"],
    "vlt_tiny": ["backbone", "text_encoder"],
    "lts_tiny": ["backbone", "text_encoder"],
    "s2rm_tiny": ["backbone", "decoder", "text_encoder"],
    "asda_tiny": ["aligner", "backbone", "text_encoder"],
}


def _step(model, inputs, target, seed: int):
    """Loss and every parameter's gradient of one training step from the RNG state ``seed``."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = model.loss(model(*inputs), target)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _inputs(model, batch: int = 2):
    size, words = model.config.image_size, model.config.text.max_words
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(batch, 3, size, size, generator=generator)
    input_ids = torch.randint(1, 500, (batch, words), generator=generator)
    attention_mask = torch.ones(batch, words, dtype=torch.long)
    attention_mask[-1, words // 2:] = 0
    target = torch.rand(batch, size, size, generator=generator) > 0.5
    return (images, input_ids, attention_mask), target


@pytest.mark.parametrize("name", sorted(CASES))
def test_checkpointing_gives_the_same_loss_and_gradients(name):
    torch.manual_seed(0)
    model = build_model(name, image_size=64, **CASES[name]).train()
    inputs, target = _inputs(model)
    plain_loss, plain_grads = _step(model, inputs, target, seed=3)
    assert sorted(model.set_grad_checkpointing(True)) == SWITCHED[name]
    loss, grads = _step(model, inputs, target, seed=3)
    assert torch.allclose(loss, plain_loss, rtol=0, atol=1e-6), (loss, plain_loss)
    assert grads.keys() == plain_grads.keys()
    for key, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[key], rtol=0, atol=1e-6, msg=key)
    if CASES[name]:
        # the randomness is real: another seed gives another loss
        other, _ = _step(model, inputs, target, seed=4)
        assert not torch.allclose(other, plain_loss, rtol=0, atol=1e-6)


def _saved_bytes(model, inputs, target) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one forward and loss."""
    seen: dict[int, int] = {}

    def pack(tensor):
        seen[id(tensor)] = tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model.loss(model(*inputs), target)
    return sum(seen.values())


def test_checkpointing_keeps_fewer_activations():
    torch.manual_seed(0)
    model = build_model("lavt_tiny", image_size=64).train()
    inputs, target = _inputs(model)
    plain = _saved_bytes(model, inputs, target)
    model.set_grad_checkpointing(True)
    assert _saved_bytes(model, inputs, target) < 0.8 * plain
    model.set_grad_checkpointing(False)
    assert _saved_bytes(model, inputs, target) == plain


def test_checkpointing_is_off_without_gradients():
    model = build_model("asda_tiny", image_size=64).eval()
    model.set_grad_checkpointing(True)
    inputs, _ = _inputs(model, batch=1)
    with torch.no_grad():
        out = model(*inputs)
    assert out.logits.shape[-1] == model.config.image_size
