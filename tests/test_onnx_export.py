"""``DynamicQueryRefiner`` through both of torch's ONNX exporters, checked in onnxruntime.

``torch.onnx.export(..., dynamo=False)`` traces with TorchScript and passes every forward
argument it fills in (defaults included) by position, so the refiner's forward must take
``sentence`` by position too; ``dynamo=True`` goes through ``torch.export``. Each program is
exported with a dynamic batch (and sentence length) and run on inputs of another batch size
and length than the example, so a size that the export baked in would fail here.
``tests/test_export.py`` covers the other layers through ``torch.export`` and ``dynamo=True``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.export import Dim

import rislayers as R
from tests.layer_checks import tensors_of

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

C, D, H, W = 8, 6, 3, 4


def word_inputs(batch: int, length: int) -> dict[str, torch.Tensor]:
    lengths = torch.arange(batch) % length + 1  # every sample padded differently, none empty
    return {
        "feats": torch.randn(batch, C, H, W),
        "words": torch.randn(batch, length, D),
        "word_mask": torch.arange(length)[None, :] < lengths[:, None],
    }


def sentence_inputs(batch: int, length: int) -> dict[str, torch.Tensor]:
    return {"feats": torch.randn(batch, C, H, W), "sentence": torch.randn(batch, D)}


INPUTS = {"words": word_inputs, "sentence": sentence_inputs}
# Which axes of each input vary: TorchScript's names, and torch.export's Dims.
AXES = {"feats": {0: "b"}, "words": {0: "b", 1: "l"}, "word_mask": {0: "b", 1: "l"}, "sentence": {0: "b"}}
DIMS = {"b": Dim("b", min=1, max=64), "l": Dim("l", min=1, max=128)}


def export(module: torch.nn.Module, example: dict[str, torch.Tensor], path: str, *, dynamo: bool) -> None:
    """Export ``module`` called as a user would: ``feats`` by position, the language by keyword."""
    names = list(example)
    args, kwargs = (example["feats"],), {k: v for k, v in example.items() if k != "feats"}
    common = {"input_names": names, "output_names": list(module.output_names)}
    if dynamo:
        dynamic_shapes = {k: {axis: DIMS[n] for axis, n in AXES[k].items()} for k in names}
        program = torch.onnx.export(
            module, args, kwargs=kwargs, dynamo=True, dynamic_shapes=dynamic_shapes, optimize=False, verbose=False, **common
        )
        program.save(path)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(
            module, args, path, kwargs=kwargs, dynamo=False, dynamic_axes={k: AXES[k] for k in names}, **common
        )
    # The tracer warns (TracerWarning) where Python reads a traced size or value, such as a
    # shape check comparing sizes: a sign the trace may not generalise. torch's own
    # deprecation notices may come and go.
    assert not [str(w.message) for w in caught if issubclass(w.category, (torch.jit.TracerWarning, R.PaddingMaskWarning))]


@pytest.mark.filterwarnings("ignore:# The axis name")  # the dynamo exporter merging our shared b and l names
@pytest.mark.parametrize("language", ["words", "sentence"])
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_refiner_exports_with_both_exporters_and_matches_eager_in_onnxruntime(dynamo, language, tmp_path):
    module = R.DynamicQueryRefiner(C, D, hidden_dims=(4, 8), num_classes=2 if language == "words" else 1).eval()
    make = INPUTS[language]
    path = str(tmp_path / "refiner.onnx")
    export(module, make(2, 5), path, dynamo=dynamo)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(make(1, 1))
    assert [o.name for o in session.get_outputs()] == list(module.output_names)
    other = make(3, 7)  # another batch and sentence length than the example
    results = session.run(None, {k: v.numpy() for k, v in other.items()})
    with torch.no_grad():
        expected = tensors_of(module(**other))
    assert len(results) == len(expected) == 2 * module.num_iters
    for got, want in zip(results, expected):
        torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-5, rtol=1e-5)


def test_sentence_is_accepted_by_position_as_the_torchscript_exporter_passes_it():
    module = R.DynamicQueryRefiner(C, D, hidden_dims=(4,), num_iters=2).eval()
    inputs = sentence_inputs(2, 1)
    with torch.no_grad():
        by_position = module(inputs["feats"], None, None, inputs["sentence"])
        by_keyword = module(**inputs)
    for a, b in zip(tensors_of(by_position), tensors_of(by_keyword)):
        assert torch.equal(a, b)
