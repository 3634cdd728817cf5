"""Export: every public layer through ``torch.export`` with dynamic batch (and sentence length
where the layer reads words), four of them on to ONNX and onnxruntime, all matching eager.

Each exported program is run on a second set of inputs of another batch size and sentence
length, so a dimension that export specialised would fail here. The padded word masks are
real (the mask-polarity check reads values, so it must stay out of traced graphs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch.export import Dim

import rislayers as R
from tests.layer_checks import assert_close_outputs, tensors_of

C, D, H, W = 8, 6, 3, 4
BATCH = Dim("b", min=1, max=64)
LENGTH = Dim("l", min=1, max=128)


def word_inputs(batch: int, length: int) -> dict[str, torch.Tensor]:
    lengths = torch.arange(batch) % length + 1  # every sample padded differently
    return {
        "feats": torch.randn(batch, C, H, W),
        "words": torch.randn(batch, length, D),
        "word_mask": torch.arange(length)[None, :] < lengths[:, None],
    }


WORD_DIMS = {"feats": {0: BATCH}, "words": {0: BATCH, 1: LENGTH}, "word_mask": {0: BATCH, 1: LENGTH}}


def pyramid(batch: int) -> dict:
    maps = [torch.randn(batch, c, s, s) for c, s in ((4, 8), (4, 4), (4, 2), (8, 1))]
    return {"features": maps, "sentence": torch.randn(batch, D)}


@dataclass(frozen=True)
class Case:
    build: Callable[[], torch.nn.Module]
    inputs: Callable[[int, int], dict]  # (batch, length) -> keyword inputs
    dynamic_shapes: dict


CASES = {
    "refiner": Case(lambda: R.DynamicQueryRefiner(C, D, hidden_dims=(4, 8)), word_inputs, WORD_DIMS),
    "refiner_sentence": Case(
        lambda: R.DynamicQueryRefiner(C, D, hidden_dims=(4, 8), num_classes=1),
        lambda b, l: {"feats": torch.randn(b, C, H, W), "sentence": torch.randn(b, D)},
        {"feats": {0: BATCH}, "sentence": {0: BATCH}},
    ),
    "pixel_word": Case(lambda: R.PixelWordAttention(C, D, num_heads=2), word_inputs, WORD_DIMS),
    "gate": Case(
        lambda: R.LanguageGate(C, zero_init=False),
        lambda b, l: {"x": torch.randn(b, C, H, W), "fused": torch.randn(b, C, H, W)},
        {"x": {0: BATCH}, "fused": {0: BATCH}},
    ),
    "coparser": Case(lambda: R.SpatialRecurrentCoparser(C, D, size=(H, W)), word_inputs, WORD_DIMS),
    "aligner": Case(lambda: R.DualBranchAligner(C, D, num_masks=4, num_heads=2, upsample_steps=1), word_inputs, WORD_DIMS),
    "selector": Case(
        lambda: R.AdaptiveLayerSelector(C, D, num_candidates=3),
        lambda b, l: {"candidates": torch.randn(b, 3, C, H, W), "cls_tokens": torch.randn(b, 3, C), "sentence": torch.randn(b, D)},
        {"candidates": {0: BATCH}, "cls_tokens": {0: BATCH}, "sentence": {0: BATCH}},
    ),
    "aggregator": Case(
        lambda: R.ScaleWiseAggregator(C, D, hidden_dim=4),
        lambda b, l: {"high": torch.randn(b, C, 5, 5), "mid": torch.randn(b, C, 5, 5), "low": torch.randn(b, C, 5, 5), "sentence": torch.randn(b, D)},
        {"high": {0: BATCH}, "mid": {0: BATCH}, "low": {0: BATCH}, "sentence": {0: BATCH}},
    ),
    "casg_stage": Case(
        lambda: R.CASGStage(C, (4, 8), D),
        lambda b, l: {"vis": torch.randn(b, C, H, W), "prev": [torch.randn(b, 4, 1, 2), torch.randn(b, 8, 2, 2)], "sentence": torch.randn(b, D)},
        {"vis": {0: BATCH}, "prev": [{0: BATCH}, {0: BATCH}], "sentence": {0: BATCH}},
    ),
    "casg_decoder": Case(lambda: R.CASGDecoder((4, 4, 4, 8), D), lambda b, l: pyramid(b), {"features": [{0: BATCH}] * 4, "sentence": {0: BATCH}}),
    "tile_concat": Case(lambda: R.TileConcatFusion(C, D), word_inputs, WORD_DIMS),
    "fpn_decoder": Case(
        lambda: R.FPNDecoder((4, 4, 4, 8), dim=8), lambda b, l: {"features": pyramid(b)["features"]}, {"features": [{0: BATCH}] * 4}
    ),
    "concat_fusion": Case(
        lambda: R.ConcatProjectFusion((C, 4, 4), D, 8),
        lambda b, l: {"maps": [torch.randn(b, C, 3, 4), torch.randn(b, 4, 3, 4), torch.randn(b, 4, 6, 8)], "sentence": torch.randn(b, D)},
        {"maps": [{0: BATCH}] * 3, "sentence": {0: BATCH}},
    ),
    "published_aggregator": Case(
        lambda: R.PublishedScaleWiseAggregator(C, D, hidden_dim=4),
        lambda b, l: {"high": torch.randn(b, C, 5, 5), "mid": torch.randn(b, C, 5, 5), "low": torch.randn(b, C, 5, 5), "sentence": torch.randn(b, D)},
        {"high": {0: BATCH}, "mid": {0: BATCH}, "low": {0: BATCH}, "sentence": {0: BATCH}},
    ),
}
ONNX_CASES = ["refiner", "coparser", "aligner", "casg_decoder"]


def export_and_check(name: str) -> tuple[torch.nn.Module, torch.export.ExportedProgram, dict]:
    """Export case ``name`` (eval mode) and check the program against eager on two input sizes.

    Returns the module, the program and the second inputs (batch 3, length 7).
    """
    case = CASES[name]
    module = case.build().eval()
    example = case.inputs(2, 5)
    program = torch.export.export(module, (), example, dynamic_shapes=case.dynamic_shapes)
    other = case.inputs(3, 7)
    with torch.no_grad():
        for inputs in (example, other):
            assert_close_outputs(program.module()(**inputs), module(**inputs), atol=1e-5, rtol=1e-5)
    return module, program, other


@pytest.mark.parametrize("name", [n for n in CASES if n not in ONNX_CASES])
def test_torch_export_matches_eager_with_dynamic_batch_and_length(name):
    export_and_check(name)


def flat_inputs(inputs: dict) -> list[torch.Tensor]:
    return [t for value in inputs.values() for t in (value if isinstance(value, list) else [value])]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:# The axis name")  # the exporter merging our shared b and l names
@pytest.mark.parametrize("name", ONNX_CASES)
def test_torch_export_and_onnx_match_eager_and_onnxruntime(name, tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    module, program, other = export_and_check(name)
    # Inputs are named after the forward's arguments; a list argument by position.
    input_names = ["feats", "words", "word_mask"] if name != "casg_decoder" else ["v1", "v2", "v3", "f4", "sentence"]
    onnx_program = torch.onnx.export(
        program, dynamo=True, input_names=input_names, output_names=list(module.output_names), optimize=False, verbose=False
    )
    path = tmp_path / f"{name}.onnx"
    onnx_program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(module.output_names)
    assert [i.name for i in session.get_inputs()] == input_names
    feeds = {n: t.numpy() for n, t in zip(input_names, flat_inputs(other))}
    results = session.run(None, feeds)
    with torch.no_grad():
        expected = tensors_of(module(**other))
    assert len(results) == len(expected)
    for got, want in zip(results, expected):
        torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-5, rtol=1e-5)


def test_output_names_follow_the_output_structure():
    refiner = R.DynamicQueryRefiner(C, D, hidden_dims=(4,), num_iters=2)
    assert refiner.output_names == ("logits_0", "logits_1", "queries_0", "queries_1")
    with torch.no_grad():
        assert len(tensors_of(refiner(**word_inputs(2, 5)))) == len(refiner.output_names)
    assert R.DualBranchAligner(C, D, num_heads=2).output_names == ("logits", "masks", "coefficients")
    assert R.CASGDecoder((4, 4, 4, 8), D, num_classes=None).output_names == ("features",)
