"""Property checks shared by the layer tests.

Each helper asserts one property that every rislayers module must have, so the per-layer
test files only describe how to build inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn


def tensors_of(output: Any) -> list[torch.Tensor]:
    """All tensors in a (nested) module output: tensor, NamedTuple, list, tuple or dict."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):
        return [t for value in output.values() for t in tensors_of(value)]
    if isinstance(output, Iterable) and not isinstance(output, (str, bytes)):
        return [t for value in output for t in tensors_of(value)]
    return []


def float_tensors_of(output: Any) -> list[torch.Tensor]:
    return [t for t in tensors_of(output) if t.is_floating_point()]


def assert_finite(output: Any) -> None:
    for i, t in enumerate(float_tensors_of(output)):
        assert torch.isfinite(t).all(), f"output tensor {i} of shape {tuple(t.shape)} has non-finite values"


def backward_sum(output: Any) -> None:
    """Backpropagate a loss that touches every floating output (with distinct weights)."""
    loss = sum((t.float() * (1.0 + 0.1 * i)).sum() for i, t in enumerate(float_tensors_of(output)) if t.requires_grad)
    loss.backward()


def assert_param_grads(
    module: nn.Module,
    *,
    finite: bool = True,
    nonzero: bool = True,
    exclude: Callable[[str], bool] = lambda name: False,
) -> None:
    """Every trainable parameter (except ``exclude``d ones) got a finite, non-zero gradient."""
    for name, param in module.named_parameters():
        if not param.requires_grad or exclude(name):
            continue
        assert param.grad is not None, f"parameter {name} received no gradient"
        if finite:
            assert torch.isfinite(param.grad).all(), f"parameter {name} has a non-finite gradient"
        if nonzero:
            assert param.grad.abs().sum() > 0, f"parameter {name} has an all-zero gradient"


def assert_grads_finite(module: nn.Module) -> None:
    """Every gradient the last backward left on ``module``'s parameters is finite."""
    for name, param in module.named_parameters():
        if param.grad is not None:
            assert torch.isfinite(param.grad).all(), f"parameter {name} has a non-finite gradient"


def assert_inputs_grads_finite(inputs: Iterable[torch.Tensor]) -> None:
    for i, t in enumerate(inputs):
        if isinstance(t, torch.Tensor) and t.requires_grad:
            assert t.grad is not None, f"input {i} received no gradient"
            assert torch.isfinite(t.grad).all(), f"input {i} has a non-finite gradient"


def batch_sample(output: Any, index: int) -> list[torch.Tensor]:
    """Sample ``index`` of every batched tensor in an output."""
    return [t[index] for t in tensors_of(output) if t.dim() > 0]


def assert_batch_independent(
    run: Callable[[dict[str, Any]], Any],
    inputs: dict[str, Any],
    perturb: Callable[[dict[str, Any], int], dict[str, Any]],
    *,
    changed: int,
    watched: int,
    atol: float = 1e-5,
) -> None:
    """Changing sample ``changed`` of the inputs never changes sample ``watched`` of the output.

    Args:
        run: maps an input dict to the module output (the module in eval mode).
        inputs: the original inputs.
        perturb: returns new inputs where only sample ``changed`` differs.
    """
    assert changed != watched
    with torch.no_grad():
        before = batch_sample(run(inputs), watched)
        after_inputs = perturb(inputs, changed)
        after = batch_sample(run(after_inputs), watched)
    assert len(before) == len(after)
    for i, (a, b) in enumerate(zip(before, after)):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, atol=atol, rtol=1e-4, msg=lambda m: f"output {i} of sample {watched} changed: {m}")
        else:
            assert torch.equal(a, b), f"output {i} of sample {watched} changed"


def assert_close_outputs(a: Any, b: Any, *, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    ta, tb = tensors_of(a), tensors_of(b)
    assert len(ta) == len(tb), f"{len(ta)} vs {len(tb)} output tensors"
    for i, (x, y) in enumerate(zip(ta, tb)):
        torch.testing.assert_close(x, y, atol=atol, rtol=rtol, msg=lambda m: f"output tensor {i}: {m}")


def pad_words(words: torch.Tensor, word_mask: torch.Tensor | None, extra: int, *, fill: float = 7.0):
    """Append ``extra`` padding words (garbage values, mask False) to every sentence."""
    b, _, d = words.shape
    if word_mask is None:
        word_mask = torch.ones(words.shape[:2], dtype=torch.bool)
    garbage = torch.full((b, extra, d), fill, dtype=words.dtype) + torch.randn(b, extra, d, dtype=words.dtype)
    return (
        torch.cat([words, garbage], dim=1),
        torch.cat([word_mask, torch.zeros(b, extra, dtype=torch.bool)], dim=1),
    )


def assert_compile_matches_eager(module: nn.Module, *args: Any, atol: float = 1e-5, rtol: float = 1e-4, **kwargs: Any) -> None:
    """``torch.compile(module)`` (default settings) gives the eager outputs within ``atol``."""
    torch._dynamo.reset()
    with torch.no_grad():
        eager = module(*args, **kwargs)
        compiled = torch.compile(module)(*args, **kwargs)
    assert_close_outputs(compiled, eager, atol=atol, rtol=rtol)


def assert_model_batch_independent(
    model: nn.Module,
    images: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    vocab: int,
    changed: int,
    watched: int,
) -> None:
    """A reference model in eval mode: new image and words for sample ``changed`` leave sample ``watched`` alone."""

    def perturb(values: dict[str, Any], index: int) -> dict[str, Any]:
        values = {k: v.clone() for k, v in values.items()}
        values["images"][index] = torch.randn_like(values["images"][index])
        values["input_ids"][index] = torch.randint(1, vocab, values["input_ids"][index].shape)
        return values

    inputs = {"images": images, "input_ids": input_ids, "attention_mask": attention_mask}
    assert_batch_independent(lambda v: model(**v), inputs, perturb, changed=changed, watched=watched)


def perturb_sample(inputs: Mapping[str, Any], index: int) -> dict[str, Any]:
    """New inputs where only sample ``index`` of every tensor (or list of tensors) differs."""
    out = {}
    for key, value in inputs.items():
        tensors = value if isinstance(value, list) else [value]
        changed = []
        for t in tensors:
            t = t.clone()
            t[index] = torch.randn_like(t[index]) * 3 + 1
            changed.append(t)
        out[key] = changed if isinstance(value, list) else changed[0]
    return out


def model_inputs(batch: int, size: int, words: int = 6, *, short: int = 2) -> tuple[torch.Tensor, ...]:
    """Images, ids and a mask for a reference model; every other sample ends ``short`` tokens early."""
    images = torch.randn(batch, 3, size, size)
    ids = torch.randint(1, 1000, (batch, words))
    mask = torch.ones(batch, words, dtype=torch.long)
    mask[1::2, words - short :] = 0
    return images, ids, mask


def model_target(batch: int, size: int, fill: bool | None = None) -> torch.Tensor:
    """A ground-truth mask: all ``fill`` when given, else one rectangle per sample."""
    if fill is not None:
        return torch.full((batch, size, size), fill)
    target = torch.zeros(batch, size, size, dtype=torch.bool)
    target[:, size // 4 : size * 5 // 8, size // 8 : size * 3 // 4] = True
    return target
