"""Each cell of the plug-in matrix against its baseline (issue 23, item 5 and its first "Done
when" line): a cell costs the baseline's multiply-accumulates with the one part swapped, and
it trains from ``python -m reference_models.train`` by one ``--model-arg``; a refused cell
stops that command in one line.

The cells are read from :func:`~reference_models.models.matrix.plugin_matrix` when the tests
are collected, so a cell the matrix gains is tested here without an edit; a model or slot
whose modules are not mapped in :data:`SLOT_CHILDREN` fails until it is.
"""

from __future__ import annotations

import functools
import json

import pytest
import torch

from reference_models.bench.flops import counting, macs_by_part
from reference_models.cli import run
from reference_models.models.matrix import Cell, _config, plugin_matrix
from reference_models.registry import build_from_config, get_config
from reference_models.train import main

TINY_BASELINES = ("lavt_tiny", "vlt_tiny", "lts_tiny", "s2rm_tiny", "asda_tiny")
CELLS = plugin_matrix(baselines=TINY_BASELINES)
BUILT = [cell for cell in CELLS if cell.built]
REFUSED = [cell for cell in CELLS if not cell.built]
PROG = "python -m reference_models.train"

# The model's direct children (macs_by_part's parts) that hold each slot, by model class:
# what swapping the slot's part replaces. A slot left empty holds None there.
SLOT_CHILDREN = {
    "LAVT": {"head": ("head",), "decoder": ("decoder",), "neck": ("neck",)},
    "VLT": {"head": ("head",), "decoder": ("mask_decoder",), "neck": ("neck",)},
    "LTS": {"head": ("head",), "decoder": ("segment",), "neck": ("neck",)},
    # S2RM keeps the paper's coparser under its name and any other neck as `fusion`.
    "S2RM": {"head": ("head",), "decoder": ("decoder",), "neck": ("coparser", "fusion")},
    # ASDA's decoder is its word-guided aligner; its `neck` child is the 1x1 projection of
    # F_coarse, no slot (the config has no neck part).
    "ASDA": {"head": ("head",), "decoder": ("aligner",)},
}


def _ids(cells: list[Cell]) -> list[str]:
    return [f"{cell.baseline}:{cell.slot}={cell.value}" for cell in cells]


def _inputs(config) -> tuple[torch.Tensor, ...]:
    """A batch-1 input as the counter feeds it (macs_by_part's)."""
    words = config.text.max_words
    images = torch.randn(1, 3, config.image_size, config.image_size)
    return images, torch.randint(1, 1000, (1, words)), torch.ones(1, words, dtype=torch.long)


def _gmacs_of(call, *args) -> float:
    with counting() as counter, torch.no_grad():
        call(*args)
    return counter.get_total_flops() / 2e9


def _input_of(model: torch.nn.Module, module: torch.nn.Module) -> tuple:
    """What ``module`` is called with in one forward of ``model``."""
    seen = []
    handle = module.register_forward_pre_hook(lambda _module, args: seen.append(args))
    try:
        with torch.no_grad():
            model(*_inputs(model.config))
    finally:
        handle.remove()
    return seen[0]


def _measured(config) -> tuple[torch.nn.Module, dict[str, float]]:
    """The model a config builds and its MACs by part."""
    torch.manual_seed(0)
    model = build_from_config(config).eval()
    return model, macs_by_part(model, config.image_size, config.text.max_words)


@functools.cache
def _baseline(name: str) -> tuple[torch.nn.Module, dict[str, float]]:
    """A registered baseline, measured once for all its cells."""
    return _measured(get_config(name))


# -- what a swapped part changes outside its slot, and why -------------------------------------
# Each gives the MACs (G) a child outside the slot must cost in the cell, from the baseline.


def _head_reads_the_decoders_width(base, cell, base_parts) -> float:
    # The 1x1 classifier is rebuilt for the plug-in decoder's out_channels: its cost per
    # channel of the stride-4 map it reads is unchanged. A decoder that predicts (the
    # aligner's word-guided assembly) leaves the head no classifier: it reads that logit as
    # the 2-class pair (0, logit), which costs nothing.
    assert not base.head.refines and not cell.head.refines, "no stated reason covers a refiner head here"
    if getattr(cell.head, "from_logit", False):
        assert not hasattr(cell.head, "classifier")
        return 0.0
    base_width, cell_width = base.head.classifier.in_channels, cell.head.classifier.in_channels
    return base_parts["head"] * cell_width / base_width


def _s2rm_decoder_loses_its_classifier(base, cell, base_parts) -> float:
    # With SADLR's refiner as the head, CASG is built without its final classifier (the
    # refiner replaces it), so the decoder costs that classifier less.
    assert cell.decoder.head is None and base.decoder.head is not None
    return base_parts["decoder"] - _gmacs_of(base.decoder.head, *_input_of(base, base.decoder.head))


def _asda_aligner_only_decodes(base, cell, base_parts) -> float:
    # The refiner reads the aligner's decoded map in place of the mask-coefficient assembly:
    # the cell's aligner costs what the baseline aligner's coarse-to-fine branch (decode)
    # costs on the same F_coarse; its word branch, masks and coefficients are not run.
    coarse = _input_of(base, base.aligner)[0]
    return _gmacs_of(base.aligner.decode, coarse)


READERS = {
    ("LAVT", "decoder"): {"head": _head_reads_the_decoders_width},
    ("VLT", "decoder"): {"head": _head_reads_the_decoders_width},
    ("LTS", "decoder"): {"head": _head_reads_the_decoders_width},
    ("S2RM", "head"): {"decoder": _s2rm_decoder_loses_its_classifier},
    ("ASDA", "head"): {"aligner": _asda_aligner_only_decodes},
}


def _close(expected: float, rel: float = 0.01):
    return pytest.approx(expected, rel=rel, abs=1e-12)


@pytest.mark.parametrize("cell", BUILT, ids=_ids(BUILT))
def test_a_cell_costs_its_baseline_with_the_one_part_swapped(cell):
    base, base_parts = _baseline(cell.baseline)
    model, parts = _measured(_config(cell.baseline, cell.slot, cell.value))
    arch = type(model).__name__
    if cell.slot not in SLOT_CHILDREN.get(arch, {}):
        pytest.fail(f"{cell.baseline}: no modules mapped for {arch}'s {cell.slot!r} slot; add them to SLOT_CHILDREN")
    children = SLOT_CHILDREN[arch][cell.slot]
    assert all(hasattr(model, child) for child in children), f"{arch} lacks one of {children}: update SLOT_CHILDREN"
    readers = READERS.get((arch, cell.slot), {})
    slot_base = sum(base_parts.get(child, 0.0) for child in children)
    slot_cell = sum(parts.get(child, 0.0) for child in children)
    assert (slot_cell > 0) == (cell.value != "none"), f"the {cell.slot} part ran: {parts}"

    changed = 0.0
    for child in sorted(set(base_parts) | set(parts)):
        if child in children:
            continue
        if child in readers:  # a stated reason gives the count itself: it holds exactly
            expected, rel = readers[child](base, model, base_parts), 1e-6
        else:
            expected, rel = base_parts.get(child, 0.0), 0.01
        assert parts.get(child, 0.0) == _close(expected, rel), f"{child} changed outside the {cell.slot} slot: {base_parts} -> {parts}"
        changed += expected - base_parts.get(child, 0.0)
    total = sum(base_parts.values()) - slot_base + slot_cell + changed
    assert sum(parts.values()) == _close(total)


# -- the command line --------------------------------------------------------------------------
# 2 optimizer steps of batch 2 at 32 px, one thread: every model of the matrix takes 32 (a
# multiple of S2RM's 32 and of the tiny CLIP's patch).
TRAIN_ARGS = [
    "--train-size", "4", "--val-size", "2", "--epochs", "1", "--batch-size", "2", "--max-steps", "2",
    "--image-size", "32", "--workers", "0", "--threads", "1", "--device", "cpu", "--grid-samples", "0",
]


@pytest.mark.parametrize("cell", BUILT, ids=_ids(BUILT))
def test_a_cell_trains_from_the_command_line_by_one_model_arg(cell, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--model", cell.baseline, "--model-arg", f"{cell.slot}={cell.value}", *TRAIN_ARGS, "--out", str(out)]
    code = run(lambda: main(argv), PROG)
    assert code == 0, capsys.readouterr().err.strip().splitlines()[-1:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2
    saved = json.loads((out / "config.json").read_text())["model"]
    expected = _config(cell.baseline, cell.slot, cell.value).to_dict()
    if cell.slot not in expected:  # ASDA's decoder=own: its aligner is its decoder, nothing changes
        assert (cell.baseline, cell.slot, cell.value) == ("asda_tiny", "decoder", "own")
        assert {k: v for k, v in saved.items() if k not in ("name", "image_size")} == {
            k: v for k, v in expected.items() if k not in ("name", "image_size")  # the test trains at 32 px
        }
        return
    assert saved[cell.slot] == expected[cell.slot]
    if cell.value not in ("own", "none"):
        assert saved[cell.slot]["kind"] == cell.value


def _reason(baseline: str, slot: str, value: str) -> str:
    with pytest.raises(ValueError) as refused:
        _config(baseline, slot, value)
    return str(refused.value)


# Every refused tiny cell, and the base VLT's spatial responses that no pyramid decoder can read.
REFUSALS = [(cell.baseline, cell.slot, cell.value) for cell in REFUSED] + [("vlt_base", "decoder", "casg")]


@pytest.mark.parametrize(("baseline", "slot", "value"), REFUSALS, ids=[f"{b}:{s}={v}" for b, s, v in REFUSALS])
def test_a_refused_cell_stops_the_train_command_in_one_line(baseline, slot, value, tmp_path, capsys):
    out = tmp_path / "run"
    code = run(lambda: main(["--model", baseline, "--model-arg", f"{slot}={value}", *TRAIN_ARGS, "--out", str(out)]), PROG)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.splitlines() == [f"{PROG}: error: {_reason(baseline, slot, value)}"]
    assert err.startswith(f"{PROG}: error: {slot}:")  # the line names the option it refuses
    assert not out.exists()
