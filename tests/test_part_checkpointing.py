"""Activation checkpointing inside the heavy layers: the aligner's attention blocks, CASG's
stages and the refiner's iterations.

With ``set_grad_checkpointing(True)`` a training step gives the loss, gradients (of the
parameters and of the inputs) and buffers of a plain step, to 1e-6 in float32, dropout
included; it keeps fewer activations; evaluation and ``torch.no_grad`` run as before; and
``RISModel.set_grad_checkpointing`` reaches the parts inside the reference models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import rislayers._checkpointing as checkpointing
from reference_models import build_model
from rislayers import (
    CASGDecoder,
    CASGStage,
    DualBranchAligner,
    DynamicQueryRefiner,
    PublishedDualBranchAligner,
    PublishedVisualOnlyAligner,
    SingleBranchAligner,
    VisualOnlyAligner,
)
from rislayers.casg import CASGStageOptions
from tests.layer_checks import float_tensors_of

Case = tuple[torch.nn.Module, Callable[[], Any], list[torch.Tensor]]


def _leaf(*shape: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, generator=generator).requires_grad_()


def _aligner(cls, *, decode: bool = False, **options) -> Case:
    generator = torch.Generator().manual_seed(1)
    module = cls(16, 12, num_heads=4, upsample_steps=1, dropout=0.2, **options)
    feats, words = _leaf(2, 16, 3, 4, generator=generator), _leaf(2, 5, 12, generator=generator)
    word_mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    if decode:
        return module, lambda: module.decode(feats), [feats]
    return module, lambda: module(feats, words, word_mask), [feats, words]


def _stage() -> Case:
    generator = torch.Generator().manual_seed(1)
    module = CASGStage(8, (12, 6), 10, vis_dim=5)
    vis, sentence = _leaf(2, 5, 7, 6, generator=generator), _leaf(2, 10, generator=generator)
    prev = [_leaf(2, 12, 2, 2, generator=generator), _leaf(2, 6, 4, 3, generator=generator)]
    return module, lambda: module(vis, prev, sentence), [vis, sentence, *prev]


def _decoder(**options) -> Case:
    generator = torch.Generator().manual_seed(1)
    in_dims = (6, 8, 10, 12)
    module = CASGDecoder(in_dims, 10, **options)
    features = [_leaf(2, c, 12 // 2**k, 12 // 2**k, generator=generator) for k, c in enumerate(in_dims)]
    sentence = _leaf(2, 10, generator=generator)
    return module, lambda: module(features, sentence), [*features, sentence]


def _refiner(**options) -> Case:
    generator = torch.Generator().manual_seed(1)
    module = DynamicQueryRefiner(12, 10, hidden_dims=(6, 8), **options)
    feats, words = _leaf(2, 12, 5, 4, generator=generator), _leaf(2, 6, 10, generator=generator)
    return module, lambda: module(feats, words), [feats, words]


# name -> (builder, whether a step draws random numbers (dropout), checkpointed calls per step)
CASES: dict[str, tuple[Callable[[], Case], bool, int]] = {
    "DualBranchAligner": (lambda: _aligner(DualBranchAligner, num_masks=3), True, 3),
    "PublishedDualBranchAligner": (lambda: _aligner(PublishedDualBranchAligner, num_layers=1, word_mask=False), True, 2),
    "SingleBranchAligner": (lambda: _aligner(SingleBranchAligner), True, 3),
    "VisualOnlyAligner.decode": (lambda: _aligner(VisualOnlyAligner, decode=True), True, 2),
    "PublishedVisualOnlyAligner": (lambda: _aligner(PublishedVisualOnlyAligner, num_layers=3), True, 3),
    "CASGStage": (_stage, False, 1),
    "CASGDecoder": (lambda: _decoder(stage=CASGStageOptions(coord="recombine")), False, 3),
    "CASGDecoder-2-stages-group": (lambda: _decoder(num_stages=2, norm="group", num_classes=None), False, 2),
    "DynamicQueryRefiner": (_refiner, False, 3),
    "DynamicQueryRefiner-soft-replace": (lambda: _refiner(pooling="soft", update="replace", num_iters=2), False, 2),
}


def _step(module: torch.nn.Module, run: Callable[[], Any], inputs: list[torch.Tensor], seed: int):
    """Loss, gradients (parameters, then inputs) and buffers after one training step from RNG state ``seed``."""
    module.zero_grad(set_to_none=True)
    for tensor in inputs:
        tensor.grad = None
    torch.manual_seed(seed)
    outputs = [t for t in float_tensors_of(run()) if t.numel()]  # the one-channel aligners' coefficients are empty
    loss = sum((t.float() * (1.0 + 0.1 * i)).square().mean() for i, t in enumerate(outputs))
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    grads.update({f"input {i}": t.grad.clone() for i, t in enumerate(inputs) if t.grad is not None})
    return loss.detach(), grads, {name: b.clone() for name, b in module.named_buffers()}


def _assert_same_step(module, run, inputs, *, seed: int = 3) -> torch.Tensor:
    """A step with checkpointing equals a plain one from the same module state; returns the loss."""
    state = {name: b.clone() for name, b in module.named_buffers()}
    module.set_grad_checkpointing(False)
    plain_loss, plain_grads, plain_buffers = _step(module, run, inputs, seed)
    with torch.no_grad():  # the plain step moved the BatchNorm statistics: start again from the same ones
        for name, buffer in module.named_buffers():
            buffer.copy_(state[name])
    module.set_grad_checkpointing(True)
    loss, grads, buffers = _step(module, run, inputs, seed)
    torch.testing.assert_close(loss, plain_loss, rtol=0, atol=1e-6)
    assert grads.keys() == plain_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=0, atol=1e-6, msg=name)
    for name, buffer in buffers.items():  # BatchNorm's running statistics updated once, not twice
        torch.testing.assert_close(buffer, plain_buffers[name], rtol=0, atol=1e-6, msg=name)
    return loss


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_checkpointed_step_equals_a_plain_one(name):
    build, random, _ = CASES[name]
    module, run, inputs = build()
    loss = _assert_same_step(module.train(), run, inputs)
    if random:  # the dropout is real: another seed gives another loss
        other, _, _ = _step(module, run, inputs, seed=4)
        assert not torch.allclose(other, loss, rtol=0, atol=1e-6)


def test_batch_norm_statistics_move_once_per_step():
    module, run, inputs = _decoder()
    module.train().set_grad_checkpointing(True)
    _step(module, run, inputs, seed=0)
    counts = {name: int(b) for name, b in module.named_buffers() if name.endswith("num_batches_tracked")}
    assert counts and set(counts.values()) == {1}, counts


def _saved_bytes(run: Callable[[], Any]) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass of ``run()``."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return sum(storages.values())


@pytest.mark.parametrize("name", sorted(CASES))
def test_checkpointing_keeps_fewer_activations(name):
    module, run, _ = CASES[name][0]()
    module.train()
    plain = _saved_bytes(run)
    module.set_grad_checkpointing(True)
    assert _saved_bytes(run) < plain
    module.set_grad_checkpointing(False)
    assert _saved_bytes(run) == plain


@pytest.fixture
def checkpoint_calls(monkeypatch) -> list[object]:
    """The blocks handed to torch's checkpoint, recorded as the layers call it."""
    calls: list[object] = []
    real = checkpointing.checkpoint

    def spy(block, *args, **kwargs):
        calls.append(block)
        return real(block, *args, **kwargs)

    monkeypatch.setattr(checkpointing, "checkpoint", spy)
    return calls


@pytest.mark.parametrize("name", sorted(CASES))
def test_only_a_training_step_with_gradients_checkpoints(name, checkpoint_calls):
    module, run, _ = CASES[name][0]()
    module.eval()
    plain_eval = float_tensors_of(run())
    module.set_grad_checkpointing(True)
    for output, plain in zip(float_tensors_of(run()), plain_eval, strict=True):
        torch.testing.assert_close(output, plain, rtol=0, atol=0)
    module.train()
    with torch.no_grad():
        run()
    assert checkpoint_calls == []
    run()
    assert len(checkpoint_calls) == CASES[name][2]


def test_the_switch_reaches_nested_stages_and_takes_only_a_bool():
    decoder = CASGDecoder((6, 8, 10, 12), 10)
    assert not any(stage.grad_checkpointing for stage in decoder.stages)
    decoder.set_grad_checkpointing()
    assert decoder.grad_checkpointing and all(stage.grad_checkpointing for stage in decoder.stages)
    decoder.set_grad_checkpointing(False)
    assert not any(m.grad_checkpointing for m in (decoder, *decoder.stages))
    with pytest.raises(ValueError, match="^enable: expected a bool; got 'yes'$"):
        decoder.set_grad_checkpointing("yes")


def test_the_switch_is_not_saved_with_the_weights():
    module, _, _ = _refiner()
    plain = module.state_dict()
    module.set_grad_checkpointing(True)
    assert module.state_dict().keys() == plain.keys()
    fresh, _, _ = _refiner()
    fresh.load_state_dict(module.state_dict())
    assert not fresh.grad_checkpointing


# The parts each reference model holds, where RISModel.set_grad_checkpointing finds them.
MODEL_PARTS = {
    "asda_tiny": {"aligner": DualBranchAligner},
    "s2rm_tiny": {"decoder": CASGDecoder},
    "lavt_sadlr_tiny": {"head.refiner": DynamicQueryRefiner},
}


@pytest.mark.parametrize("name", sorted(MODEL_PARTS))
def test_the_model_switch_reaches_the_parts(name):
    model = build_model(name, image_size=64)
    parts = {path: model.get_submodule(path) for path in MODEL_PARTS[name]}
    for path, part in parts.items():
        assert isinstance(part, MODEL_PARTS[name][path]) and not part.grad_checkpointing
    switched = model.set_grad_checkpointing(True)
    assert set(parts) <= set(switched)
    nested = [m for part in parts.values() for m in part.modules() if isinstance(m, checkpointing.GradCheckpointing)]
    assert all(m.grad_checkpointing for m in nested)
    model.set_grad_checkpointing(False)
    assert not any(m.grad_checkpointing for m in nested)


# --------------------------------------------------------------------------- properties


@given(
    num_iters=st.integers(1, 3),
    hidden=st.lists(st.integers(1, 6), min_size=1, max_size=2),
    repeats=st.integers(1, 2),
    pooling=st.sampled_from(["hard", "soft"]),
    update=st.sampled_from(["sum", "replace"]),
    num_classes=st.sampled_from([1, 2]),
    size=st.tuples(st.integers(1, 6), st.integers(1, 6)),
)
def test_refiner_steps_are_equal_for_any_configuration(num_iters, hidden, repeats, pooling, update, num_classes, size):
    generator = torch.Generator().manual_seed(2)
    module = DynamicQueryRefiner(
        4, 3, num_iters=num_iters, hidden_dims=hidden, repeats=repeats, pooling=pooling, update=update,
        num_classes=num_classes,
    ).train()
    feats, sentence = _leaf(2, 4, *size, generator=generator), _leaf(2, 3, generator=generator)
    _assert_same_step(module, lambda: module(feats, sentence=sentence), [feats, sentence])


@given(
    h1=st.integers(2, 10),
    num_stages=st.integers(1, 3),
    norm=st.sampled_from(["batch", "group", "none"]),
    gate=st.sampled_from(["tanh", "sigmoid"]),
    language=st.booleans(),
    coord=st.sampled_from(["none", "recombine"]),
)
def test_casg_steps_are_equal_for_any_configuration(h1, num_stages, norm, gate, language, coord):
    generator = torch.Generator().manual_seed(2)
    in_dims = (4, 6, 8, 10)
    stage = CASGStageOptions(gate=gate, language=language, coord=coord)
    module = CASGDecoder(in_dims, 5, num_stages=num_stages, norm=norm, stage=stage).train()
    features = [_leaf(2, c, max(1, h1 // 2**k), max(1, h1 // 2**k), generator=generator) for k, c in enumerate(in_dims)]
    sentence = _leaf(2, 5, generator=generator)
    _assert_same_step(module, lambda: module(features, sentence), [*features, sentence])


@given(
    cls=st.sampled_from([DualBranchAligner, PublishedDualBranchAligner, SingleBranchAligner, VisualOnlyAligner]),
    num_layers=st.integers(1, 3),
    dropout=st.sampled_from([0.0, 0.3]),
    size=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    length=st.integers(1, 4),
)
def test_aligner_steps_are_equal_for_any_configuration(cls, num_layers, dropout, size, length):
    generator = torch.Generator().manual_seed(2)
    module = cls(8, 6, num_layers=num_layers, num_heads=2, upsample_steps=1, norm="group", dropout=dropout).train()
    feats, words = _leaf(2, 8, *size, generator=generator), _leaf(2, 4, 6, generator=generator)
    word_mask = torch.arange(4) < torch.tensor([[4], [length]])
    _assert_same_step(module, lambda: module(feats, words, word_mask), [feats, words])
