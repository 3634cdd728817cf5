"""evaluate's measurements beside the final mask: SADLR per iteration, ASDA's layer choices,
and the two scoring protocols.

Models are untrained ``_tiny`` ones on a handful of generated samples: what is tested is
that each figure is computed from the right masks and layers, not accuracy.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader

from rislayers import RISMetrics

from reference_models import build_model
from reference_models.base import build_tokenizer, foreground_logit, upsample_to
from reference_models.config import LEGACY_DEFAULTS
from reference_models.data.samples import collate, make_sample
from reference_models.data.synthetic import SyntheticReferDataset
from reference_models.data.tokenizers import WordTokenizer
from reference_models.data.transforms import CLIP_MEAN, CLIP_STD, resize_mask, to_original_size
from reference_models.evaluate import _table, evaluate
from reference_models.evaluation_extras import SelectionStats, iteration_logits, iteration_table, selection_entropy, selection_table


def _loader(model, length: int = 6, batch_size: int = 3, *, drop: tuple[str, ...] = ()) -> list[dict]:
    """Batches of the generated benchmark for ``model`` (3 expressions per picture)."""
    config = model.config
    norm = {"mean": CLIP_MEAN, "std": CLIP_STD} if config.vision.kind == "clip" else {}
    data = SyntheticReferDataset(
        "val", level=1, image_size=config.image_size, length=length, seed=0, tokenizer=build_tokenizer(config),
        keep_original_mask=True, **norm,
    )
    batches = list(DataLoader(data, batch_size=batch_size, collate_fn=collate))
    return [{k: v for k, v in batch.items() if k not in drop} for batch in batches]


def _sadlr(**fields):
    torch.manual_seed(0)
    return build_model("lavt_sadlr_tiny", **fields).eval()


# -- SADLR: every iteration's mask ---------------------------------------------------------


@pytest.mark.parametrize("protocol", ["original", "resized"])
def test_the_last_iteration_is_the_prediction_and_there_is_one_per_iteration(protocol):
    for iterations, weights in ((3, (0.15, 0.15, 0.7)), (2, (0.3, 0.7))):
        model = _sadlr(refiner_iters=iterations, loss_weights=weights)
        result = evaluate(model, _loader(model), protocol=protocol)
        assert len(result["by_iteration"]) == iterations
        last = result["by_iteration"][-1]
        assert set(last) == set(RISMetrics().compute())
        assert last == {key: result[key] for key in last}  # exactly, not approximately


def test_earlier_iterations_are_scored_from_their_own_masks():
    model = _sadlr()
    loader = _loader(model)
    result = evaluate(model, loader, protocol="resized")
    first = RISMetrics()
    with torch.no_grad():
        for batch in loader:
            output = model(batch["image"], batch["input_ids"], batch["attention_mask"])
            logits = upsample_to(foreground_logit(output.aux_logits[0]), batch["image"].shape[-2:])
            first.update(logits[:, 0] > 0, batch["mask"])
    assert result["by_iteration"][0] == first.compute()
    # the untrained refiner's first mask is not its last: the test can tell them apart
    assert result["by_iteration"][0] != result["by_iteration"][-1]


def test_models_without_sadlr_report_no_iterations():
    torch.manual_seed(0)
    model = build_model("lavt_tiny").eval()
    assert "by_iteration" not in evaluate(model, _loader(model, length=3))


def test_iteration_logits_refuses_logits_that_are_not_the_last_iteration():
    model = _sadlr()
    batch = _loader(model, length=2, batch_size=2)[0]
    with torch.no_grad():
        output = model(batch["image"], batch["input_ids"], batch["attention_mask"])
    size = tuple(output.logits.shape[-2:])
    assert len(iteration_logits(model, output, size)) == model.config.head.iters
    shifted = output._replace(logits=output.logits + 1.0)
    assert iteration_logits(model, shifted, size) is None


def test_the_iteration_table_lists_each_iteration():
    model = _sadlr()
    table = _table({"val": evaluate(model, _loader(model, length=3))})
    assert "SADLR: the mask of each refinement iteration" in table
    assert [line.split()[1] for line in table.splitlines() if line.startswith("val ") and len(line.split()) == 9] == ["1", "2", "3"]
    assert iteration_table({"val": {"oIoU": 0.5}}) == []


# -- ASDA: the layers chosen ----------------------------------------------------------------


def _asda(**fields):
    torch.manual_seed(0)
    return build_model("asda_tiny", **fields).eval()


def _chosen_by_hand(model, loader, level: str) -> tuple[list[int], list[int], list[float]]:
    """(layers, image ids, entropies) read off ``last_selection`` batch by batch."""
    layers, images, entropies = [], [], []
    with torch.no_grad():
        for batch in loader:
            model(batch["image"], batch["input_ids"], batch["attention_mask"])
            selection = model.last_selection
            layers += getattr(selection, f"{level}_layer").tolist()
            images += batch["image_id"].tolist()
            probs = getattr(selection, f"{level}_probs")
            entropies += (-(probs * probs.clamp_min(1e-30).log()).sum(-1)).tolist()
    return layers, images, entropies


def test_asda_selection_counts_entropy_and_sensitivity_by_image():
    model = _asda()
    loader = _loader(model, length=9, batch_size=4)
    selection = evaluate(model, loader)["selection"]
    assert selection["sensitivity_from"] == "image_id"
    for level, (first, last) in (("low", (4, 6)), ("mid", (7, 9))):
        layers, images, entropies = _chosen_by_hand(model, loader, level)
        entry = selection[level]
        assert entry["counts"] == {str(layer): layers.count(layer) for layer in sorted(set(layers))}
        assert all(first <= int(layer) <= last for layer in entry["counts"])
        assert entry["entropy"] == pytest.approx(sum(entropies) / len(entropies), abs=1e-6)
        assert 0 <= entry["entropy"] <= math.log(last - first + 1) + 1e-6
        by_image: dict[int, set[int]] = {}
        for image, layer in zip(images, layers):
            by_image.setdefault(image, set()).add(layer)
        assert entry["compared"] == len(by_image) == 3  # 9 samples, 3 expressions per picture
        assert entry["sentence_sensitivity"] == sum(len(s) > 1 for s in by_image.values()) / 3


def test_without_image_ids_the_sentences_are_rolled_within_the_batch():
    model = _asda()
    loader = _loader(model, length=6, batch_size=3, drop=("image_id",))
    selection = evaluate(model, loader)["selection"]
    assert selection["sensitivity_from"] == "rolled_sentences"
    changed = []
    with torch.no_grad():
        for batch in loader:
            own = model.select_layers(batch["image"], batch["input_ids"], batch["attention_mask"]).low_layer
            rolled = model.select_layers(batch["image"], batch["input_ids"].roll(1, 0), batch["attention_mask"].roll(1, 0)).low_layer
            changed += (own != rolled).tolist()
    assert selection["low"]["compared"] == 6
    assert selection["low"]["sentence_sensitivity"] == sum(changed) / len(changed)


def test_models_without_a_selector_report_no_selection():
    model = _sadlr()
    assert "selection" not in evaluate(model, _loader(model, length=3))


@pytest.mark.skipif("asda_selection" not in LEGACY_DEFAULTS, reason="asda_selection not built yet")
def test_a_fixed_selection_is_one_layer_with_no_entropy_or_sensitivity():
    model = _asda(asda_selection="fixed", asda_fixed_layers=(5, 8))
    selection = evaluate(model, _loader(model, length=6))["selection"]
    assert selection["low"]["counts"] == {"5": 6} and selection["mid"]["counts"] == {"8": 6}
    assert selection["low"]["entropy"] == 0.0 and selection["mid"]["sentence_sensitivity"] == 0.0


def test_selection_stats_handle_constant_layers_missing_probabilities_and_lone_images():
    stats = SelectionStats()
    constant = SimpleNamespace(low_layer=6, mid_layer=torch.tensor(9), low_probs=None, mid_probs=torch.ones(4, 1))
    stats.update(constant, 4, image_ids=torch.tensor([1, 2, 3, 4]))  # every picture seen once
    result = stats.compute()
    assert result["low"] == {"counts": {"6": 4}, "entropy": None, "sentence_sensitivity": None, "compared": 0}
    assert result["mid"]["entropy"] == 0.0
    empty = SelectionStats()
    empty.update(SimpleNamespace(low_layer=None, mid_layer=None), 2)
    assert empty.compute() == {}
    table = selection_table({"val": {"selection": result}})
    assert "6: 100%" in table[-2] and table[-2].split()[-1] == "-"


@settings(max_examples=20, deadline=None)
@given(
    layers=st.lists(st.integers(4, 6), min_size=1, max_size=12),
    images=st.lists(st.integers(0, 3), min_size=12, max_size=12),
    batch=st.integers(1, 5),
)
def test_selection_stats_over_any_batching(layers, images, batch):
    """Counts add up and the sensitivity does not depend on how samples are batched."""
    images = images[: len(layers)]
    results = []
    for size in (batch, len(layers)):
        stats = SelectionStats()
        for start in range(0, len(layers), size):
            chunk = torch.tensor(layers[start : start + size])
            probs = torch.nn.functional.one_hot(chunk - 4, 3).float()
            stats.update(SimpleNamespace(low_layer=chunk, low_probs=probs), len(chunk), image_ids=images[start : start + size])
        results.append(stats.compute())
    low = results[0]["low"]
    assert sum(low["counts"].values()) == len(layers) and low["entropy"] == 0.0
    assert low["sentence_sensitivity"] is None or 0 <= low["sentence_sensitivity"] <= 1
    assert results[0] == results[1]


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.integers(1, 6), st.integers(0, 2**16))
def test_selection_entropy_lies_between_zero_and_log_k(b, k, seed):
    generator = torch.Generator().manual_seed(seed)
    probs = torch.randn(b, k, generator=generator).softmax(-1)
    entropy = selection_entropy(probs)
    assert entropy.shape == (b,) and torch.isfinite(entropy).all()
    assert (entropy >= 0).all() and (entropy <= math.log(k) + 1e-5).all()


# -- protocols ------------------------------------------------------------------------------


class _Logits(torch.nn.Module):
    """Returns given input-size logits, one map per sample, whatever the input."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, images, input_ids, attention_mask):
        return SimpleNamespace(logits=self.logits[: images.shape[0], None], aux_logits=[])


def _samples(masks: list[np.ndarray], size: int) -> dict:
    samples = [
        make_sample(
            Image.new("RGB", (m.shape[1], m.shape[0])), m, "the thing", tokenizer=WordTokenizer(), image_size=size, resize="square",
            mean=(0.5,) * 3, std=(0.5,) * 3, image_id=i, ref_id=i, sent_id=i, keep_original_mask=True,
        )
        for i, m in enumerate(masks)
    ]
    return collate(samples)


def _diagonal(height: int, width: int, thickness: int) -> np.ndarray:
    rows, cols = np.mgrid[:height, :width]
    return np.abs(rows * width / height - cols) < thickness


def test_the_protocols_agree_when_the_images_are_at_the_input_size():
    size = 32
    batch = _samples([_diagonal(size, size, 3), np.eye(size, dtype=bool)], size)
    model = _Logits(torch.randn(2, size, size, generator=torch.Generator().manual_seed(0)))
    original = evaluate(model, [batch], protocol="original")
    resized = evaluate(model, [batch], protocol="resized")
    assert original == resized and 0 < original["oIoU"] < 1


def test_the_protocols_differ_when_the_images_are_not():
    """A prediction equal to the nearest-resized target is perfect under LAVT's protocol,
    and loses the thin structure's edges when resized back to a larger, other-shaped image."""
    size = 32
    masks = [_diagonal(48, 80, 2), _diagonal(70, 40, 2)]
    batch = _samples(masks, size)
    logits = torch.stack([torch.from_numpy(resize_mask(m, size)).float() * 10 - 5 for m in masks])
    model = _Logits(logits)
    resized = evaluate(model, [batch], protocol="resized")
    original = evaluate(model, [batch], protocol="original")
    assert resized["oIoU"] == 1.0 and resized["mIoU"] == 1.0
    assert original["oIoU"] < 0.95
    # the original protocol is the logits resized back, then thresholded
    back = RISMetrics()
    for i, mask in enumerate(masks):
        back.update((to_original_size(logits[i], batch["content_box"][i], batch["orig_size"][i]) > 0)[None], torch.from_numpy(mask)[None])
    assert original == back.compute()


def test_iterations_are_resized_as_the_model_resizes_them_with_align_corners_too():
    # LAVT's code upsamples with align_corners=True (decoder_align_corners): the iterations follow
    from reference_models import build_model
    from reference_models.evaluation_extras import iteration_logits

    torch.manual_seed(0)
    model = build_model("lavt_sadlr_tiny", decoder_align_corners=True).eval()
    images, ids = torch.randn(2, 3, 64, 64), torch.randint(1, 50, (2, 5))
    with torch.no_grad():
        output = model(images, ids, torch.ones(2, 5, dtype=torch.long))
    maps = iteration_logits(model, output, (64, 64))
    assert maps is not None and len(maps) == model.config.head.iters
    assert torch.equal(maps[-1], output.logits)
