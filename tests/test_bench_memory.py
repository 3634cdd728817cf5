"""``bench memory`` and ``bench train --grad-checkpointing``: the estimate holds at a third batch
size, the table prints, the flags are checked; the GPU check's switches part in its dry run."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from reference_models.bench import gpu, main
from reference_models.bench import gpu_switches
from reference_models.bench.memory import (
    CARDS_GB,
    largest_batch,
    measure_step_memory,
    memory_fit,
    model_and_optimizer,
    predicted_bytes,
)


def test_the_estimate_holds_at_a_third_batch_size():
    # Memory is read by the profiler's record of every CPU allocation and free (peak_bytes).
    row = memory_fit("lavt_tiny", batches=(1, 2), image_size=128)
    model, optimizer = model_and_optimizer("lavt_tiny", torch.device("cpu"), 128, False)
    point = measure_step_memory(model, optimizer, 3, torch.device("cpu"))
    measured_step = max(point["peak_bytes"], point["update_bytes"])
    measured = row["weights_bytes"] + point["optimizer_bytes"] + measured_step
    assert predicted_bytes(row, 3) == pytest.approx(measured, rel=0.15)
    # the part that grows with the batch alone, too
    step = predicted_bytes(row, 3) - row["weights_bytes"] - row["optimizer_bytes"]
    assert step == pytest.approx(measured_step, rel=0.15)
    assert row["per_image_bytes"] > 0 and row["activation_per_image_bytes"] > 0


def test_the_largest_batch_leaves_the_margin_free():
    gib = 2**30
    row = {"weights_bytes": gib, "optimizer_bytes": 2 * gib, "fixed_bytes": gib // 2, "per_image_bytes": gib, "update_bytes": 2 * gib}
    batch = largest_batch(row, 24, margin=0.15, context_gib=1.0)
    assert predicted_bytes(row, batch) <= 24 * gib * 0.85 - gib < predicted_bytes(row, batch + 1)
    assert largest_batch(row, 4) == 0  # not even one image


def test_memory_table_prints_every_card(capsys):
    assert main(["memory", "--models", "lavt_tiny", "--image-size", "64", "--batches", "1", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    header = next(line for line in out if line.startswith("model"))
    assert [f"{c} GB" for c in CARDS_GB] == [part.strip() for part in header.split("|")[1].split("  ") if part.strip()]
    row = next(line for line in out if line.startswith("lavt_tiny"))
    assert len(row.split("|")[1].split()) == len(CARDS_GB)
    assert "leaving 15 % of it and 1 GiB free" in out[1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batches", "2", "2"], "--batches: expected two different sizes; got 2 twice"),
        (["--batches", "0", "2"], "--batches: expected integers >= 1; got 0 2"),
        (["--margin", "1.5"], "--margin: expected a share of the card in [0, 1); got 1.5"),
        (["--models", "nope"], "nope"),
    ],
)
def test_memory_flags_are_checked_before_anything_runs(argv, message, capsys):
    with pytest.raises(ValueError, match=None) as err:
        main(["memory", *argv])
    assert message in str(err.value) and "\n" not in str(err.value)
    assert capsys.readouterr().out == ""


def test_train_compares_a_step_without_and_with_checkpointing(capsys):
    assert main(["train", "--grad-checkpointing", "--models", "lavt_tiny", "--image-size", "64", "--batch", "2",
                 "--steps", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    off, on = (line for line in out if line.startswith("lavt_tiny"))
    assert off.split()[3] == "off" and on.split()[3] == "on"
    assert on.split()[-1] in ("yes", "NO") and on.count("%") == 2


def test_the_gpu_checks_switches_part_in_its_dry_run():
    plan = dataclasses.replace(gpu.dry_plan(), train_model="lavt_tiny", train_steps=1)
    units = dict((label["switch"], unit) for label, unit in gpu_switches.switch_units(plan))
    assert list(units) == ["tf32", "grad_checkpointing", "fused_optimizer", "fit"]
    rows = units["tf32"]() + units["fused_optimizer"]()
    assert [(row["switch"], row["on"]) for row in rows] == [("tf32", False), ("tf32", True), ("fused_optimizer", False), ("fused_optimizer", True)]
    assert all(row["status"] == "ok" and row["step_ms"] > 0 for row in rows) and rows[0]["applied"] is False
    assert "switches" in gpu.PARTS and "fused_optimizer" in gpu_switches.format_switch_row(rows[-1])
