"""RISMetrics and GRESMetrics: hand-computed cases, batching/merging invariance, DDP reduce."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given
from hypothesis import strategies as st

from rislayers import GRESMetrics, RISMetrics, ShapeError


def _mask(rows: list[str]) -> torch.Tensor:
    return torch.tensor([[c == "#" for c in row] for row in rows])


# Four hand-computed samples on a 2x4 grid.
PARTIAL_PRED = _mask(["##..", "##.."])  # 4 px
PARTIAL_TRUE = _mask([".##.", ".##."])  # 4 px, overlap 2 -> I=2, U=6
EMPTY = _mask(["....", "...."])
FULL = _mask(["####", "####"])


def _update(metrics, pairs):
    for pred, true in pairs:
        metrics.update(pred[None], true[None])


def test_ris_partial_overlap():
    m = RISMetrics()
    _update(m, [(PARTIAL_PRED, PARTIAL_TRUE)])
    out = m.compute()
    assert out["oIoU"] == pytest.approx(2 / 6)
    assert out["mIoU"] == pytest.approx(2 / 6)
    assert all(out[f"P@{t}"] == 0.0 for t in ("0.5", "0.6", "0.7", "0.8", "0.9"))


def test_ris_empty_cases_follow_lavt():
    m = RISMetrics()
    # empty prediction vs full target: I=0, U=8 -> IoU 0
    # full prediction vs empty target: I=0, U=8 -> IoU 0
    # empty vs empty: U=0 -> IoU 0 (LAVT's convention), adds nothing to oIoU
    # perfect full: I=U=8 -> IoU 1
    _update(m, [(EMPTY, FULL), (FULL, EMPTY), (EMPTY, EMPTY), (FULL, FULL)])
    out = m.compute()
    assert out["oIoU"] == pytest.approx(8 / 24)
    assert out["mIoU"] == pytest.approx(1 / 4)
    assert out["P@0.5"] == pytest.approx(1 / 4) and out["P@0.9"] == pytest.approx(1 / 4)
    assert len(m) == 4


def test_ris_threshold_is_inclusive():
    m = RISMetrics(thresholds=(0.5,))
    pred = _mask(["##..", "...."])
    true = _mask(["#...", "...."])  # IoU exactly 0.5
    _update(m, [(pred, true)])
    assert m.compute()["P@0.5"] == 1.0


def test_ris_no_samples_and_bad_input():
    assert RISMetrics().compute() == {"oIoU": 0.0, "mIoU": 0.0, "P@0.5": 0.0, "P@0.6": 0.0, "P@0.7": 0.0, "P@0.8": 0.0, "P@0.9": 0.0}
    m = RISMetrics()
    with pytest.raises(TypeError, match="pred: expected a bool"):
        m.update(torch.rand(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.bool))
    with pytest.raises(ShapeError, match=r"^target: .*\(h: 3 != 2\)"):
        m.update(torch.zeros(1, 2, 2, dtype=torch.bool), torch.zeros(1, 3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="thresholds"):
        RISMetrics(thresholds=(0.0,))
    with pytest.raises(ValueError, match="other"):
        RISMetrics().merge(RISMetrics(thresholds=(0.5,)))


masks = st.integers(1, 6).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.integers(0, 2**31 - 1),
        st.lists(st.integers(1, n), min_size=0, max_size=4),  # batch cut points
    )
)


@given(masks, st.integers(0, 3))
def test_streaming_is_invariant_to_batching_and_merging(spec, density_seed):
    n, seed, cuts = spec
    g = torch.Generator().manual_seed(seed)
    density = [0.0, 0.2, 0.5, 1.0][density_seed]
    pred = torch.rand(n, 5, 5, generator=g) < torch.rand(n, 1, 1, generator=g) * (1 - density) + density * 0.5
    true = torch.rand(n, 5, 5, generator=g) < 0.4
    true[0] = False  # always include an empty target
    bounds = sorted(set([0, n] + cuts))
    for cls in (RISMetrics, GRESMetrics):
        whole = cls()
        whole.update(pred, true)
        batched = cls()
        parts = []
        for a, b in zip(bounds, bounds[1:]):
            batched.update(pred[a:b], true[a:b])
            part = cls()
            part.update(pred[a:b], true[a:b])
            parts.append(part)
        merged = parts[0]
        for part in parts[1:]:
            merged.merge(part)
        for other in (batched, merged):
            for key, value in whole.compute().items():
                got = other.compute()[key]
                assert (math.isnan(value) and math.isnan(got)) or got == pytest.approx(value, abs=1e-12), key


def test_gres_hand_computed():
    m = GRESMetrics()
    # no-target, predicted empty: gIoU 1, N correct
    # no-target, predicted something: gIoU 0, N wrong
    # target, predicted empty: IoU 0, T wrong
    # target, partial: IoU 2/6, T right
    _update(m, [(EMPTY, EMPTY), (PARTIAL_PRED, EMPTY), (EMPTY, PARTIAL_TRUE), (PARTIAL_PRED, PARTIAL_TRUE)])
    out = m.compute()
    assert out["gIoU"] == pytest.approx((1 + 0 + 0 + 2 / 6) / 4)
    # cumulative: I = 0+0+0+2, U = 0+4+4+6
    assert out["cIoU"] == pytest.approx(2 / 14)
    assert out["N-acc"] == pytest.approx(1 / 2)
    assert out["T-acc"] == pytest.approx(1 / 2)


def test_gres_explicit_no_target_decision_overrides_pixels():
    m = GRESMetrics()
    m.update(PARTIAL_PRED[None], EMPTY[None], pred_no_target=torch.tensor([True]))
    out = m.compute()
    assert out["gIoU"] == 1.0 and out["N-acc"] == 1.0 and out["cIoU"] == 0.0


def test_gres_undefined_accuracies_are_nan():
    m = GRESMetrics()
    m.update(FULL[None], FULL[None])
    out = m.compute()
    assert math.isnan(out["N-acc"]) and out["T-acc"] == 1.0


def test_state_dict_round_trip():
    m = RISMetrics()
    _update(m, [(PARTIAL_PRED, PARTIAL_TRUE), (FULL, FULL)])
    fresh = RISMetrics()
    fresh.load_state_dict(m.state_dict())
    assert fresh.compute() == m.compute()
    with pytest.raises(ValueError, match="counters"):
        RISMetrics(thresholds=(0.5,)).load_state_dict(m.state_dict())


def _ddp_worker(rank: int, world: int, port: int, queue) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        m = RISMetrics()
        pred = PARTIAL_PRED if rank == 0 else FULL
        m.update(pred[None], PARTIAL_TRUE[None])
        m.all_reduce()
        queue.put((rank, m.compute()))
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_counters_across_processes():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(_ddp_worker, args=(2, port, queue), nprocs=2, start_method="spawn", join=True)
    results = dict(queue.get() for _ in range(2))
    expected = RISMetrics()
    _update(expected, [(PARTIAL_PRED, PARTIAL_TRUE), (FULL, PARTIAL_TRUE)])
    assert results[0] == results[1] == expected.compute()


@pytest.mark.parametrize("metric", [RISMetrics, GRESMetrics])
@pytest.mark.parametrize("argument", ["pred", "target"])
def test_integer_masks_other_than_zero_one_are_refused(metric, argument):
    labels = torch.zeros(2, 2, 4, dtype=torch.long)
    labels[0, 1, 2] = 2  # e.g. a class-index map, which .bool() would silently binarise
    masks = {"pred": torch.zeros(2, 2, 4, dtype=torch.bool), "target": torch.zeros(2, 2, 4, dtype=torch.bool)}
    masks[argument] = labels
    m = metric()
    with pytest.raises(ValueError, match=rf"^{argument}: expected a binary mask .*got the value 2"):
        m.update(masks["pred"], masks["target"])
    assert len(m) == 0  # nothing was counted
    masks[argument] = labels.clamp(max=1).to(torch.uint8)
    m.update(masks["pred"], masks["target"])
    assert len(m) == 2
