"""The test behind every verdict: Student's t, the paired and Welch intervals, the verdict
rule, and the results page's verdicts recomputed from ``docs/results/*.json``."""

from __future__ import annotations

import json
import random
import re
import statistics

import pytest

from reference_models.study.intervals import difference_interval, incomplete_beta, t_cdf, t_quantile, verdict
from reference_models.study.page import PAGE, RESULTS_DIR

# two-sided 95 % critical values of Student's t, from printed tables
T_975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 9: 2.2622, 30: 2.0423}


@pytest.mark.parametrize("df, value", sorted(T_975.items()))
def test_t_quantile_matches_the_printed_tables(df, value):
    assert t_quantile(0.975, df) == pytest.approx(value, abs=1e-4)
    assert t_cdf(value, df) == pytest.approx(0.975, abs=1e-5)
    assert t_quantile(0.025, df) == pytest.approx(-value, abs=1e-4)


def test_t_agrees_with_scipy_where_it_is_installed():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 1.7, 2.5, 4, 11.3, 200):
        for p in (0.6, 0.9, 0.975, 0.999):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-8)
        for t in (-8.0, -1.0, 0.3, 3.0):
            assert t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), abs=1e-10)


def test_incomplete_beta_has_its_closed_forms():
    # I_x(a, 1) = x**a and I_x(1, b) = 1 - (1 - x)**b
    for x in (0.01, 0.3, 0.7, 0.99):
        assert incomplete_beta(x, 2.5, 1.0) == pytest.approx(x**2.5, rel=1e-10)
        assert incomplete_beta(x, 1.0, 3.5) == pytest.approx(1 - (1 - x) ** 3.5, rel=1e-10)
    with pytest.raises(ValueError, match="incomplete_beta"):
        incomplete_beta(1.5, 1.0, 1.0)


def test_paired_interval_is_the_t_interval_of_the_per_seed_differences():
    row, base = {0: 0.61, 1: 0.55, 2: 0.70, 3: 0.52}, {0: 0.50, 1: 0.49, 2: 0.58, 3: 0.51}
    found = difference_interval(row, base)
    gaps = [row[k] - base[k] for k in row]
    half = T_975[3] * statistics.stdev(gaps) / 2.0
    assert found["test"] == "paired" and found["n"] == 4 and found["df"] == 3
    assert found["low"] == pytest.approx(statistics.mean(gaps) - half, abs=1e-5)
    assert found["high"] == pytest.approx(statistics.mean(gaps) + half, abs=1e-5)


def test_welch_interval_for_rows_of_other_seeds():
    row, base = {0: 0.6, 1: 0.7, 2: 0.65}, {0: 0.5, 1: 0.52, 3: 0.4, 4: 0.45}
    found = difference_interval(row, base)
    a, b = statistics.variance(row.values()) / 3, statistics.variance(base.values()) / 4
    df = (a + b) ** 2 / (a**2 / 2 + b**2 / 3)
    assert found["test"] == "welch" and found["n"] == [3, 4] and found["df"] == pytest.approx(df, abs=1e-3)
    half = t_quantile(0.975, df) * (a + b) ** 0.5
    assert found["high"] - found["low"] == pytest.approx(2 * half, abs=1e-5)


def test_intervals_cover_the_true_difference_95_times_in_100():
    rng = random.Random(0)
    trials, covered = 3000, {"paired": 0, "welch": 0}
    for _ in range(trials):
        shared = [rng.gauss(0, 1) for _ in range(3)]  # what a seed does to both rows
        row = {k: 0.3 + shared[k] + rng.gauss(0, 0.5) for k in range(3)}
        base = {k: shared[k] + rng.gauss(0, 0.5) for k in range(3)}
        paired = difference_interval(row, base)
        covered["paired"] += paired["low"] <= 0.3 <= paired["high"]
        # rows of other seeds: independent, with unequal spreads and sizes
        welch = difference_interval({k: 0.3 + rng.gauss(0, 1) for k in range(3)}, {k: rng.gauss(0, 0.4) for k in range(10, 15)})
        covered["welch"] += welch["low"] <= 0.3 <= welch["high"]
    # 95 % +- 3 binomial standard errors (Welch's is approximate, so a little wider)
    assert abs(covered["paired"] / trials - 0.95) < 0.012
    assert abs(covered["welch"] / trials - 0.95) < 0.02


def test_the_verdict_needs_an_interval_that_excludes_zero():
    assert verdict(-0.02, {"low": -0.09, "high": -0.001}) == "agrees"
    assert verdict(0.02, {"low": -0.09, "high": -0.001}) == "disagrees"
    assert verdict(0.02, {"low": -0.09, "high": 0.3}) == "unresolved"
    assert verdict(0.02, None) == "unresolved"
    assert verdict(0.02, {"low": 0.0, "high": 0.1}) == "unresolved"  # zero on the edge is inside
    assert verdict(None, {"low": -0.3, "high": -0.1}) == "lower"
    assert verdict(0.02, {"low": 0.1, "high": 0.2}, is_default=True) == ""


def _recorded() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(RESULTS_DIR.glob("*.json"))}


def _figures(row: dict, metric: str) -> dict[int, float]:
    if "runs" in row:
        return {run["seed"]: run["metrics"][metric] for run in row["runs"] if metric in run["metrics"]}
    return dict(enumerate(row["metrics"][metric]["runs"]))  # written before rows kept their seeds


def _expected(row: dict, base: dict, metric: str) -> tuple[str, str]:
    """The interval and verdict of ``row - base``, recomputed here from the runs alone."""
    mine, theirs = _figures(row, metric), _figures(base, metric)
    interval = difference_interval(mine, theirs)
    if interval is None:
        return "–", "unresolved"
    if interval["test"] == "paired" and interval["df"] in T_975:  # the printed tables, not our quantile
        gaps = [mine[k] - theirs[k] for k in sorted(mine)]
        half = T_975[int(interval["df"])] * statistics.stdev(gaps) / len(gaps) ** 0.5
        low, high = statistics.mean(gaps) - half, statistics.mean(gaps) + half
        assert (low, high) == pytest.approx((interval["low"], interval["high"]), abs=2e-5)  # the tables have 4 decimals
    paper = None
    if metric in row["reported"] and metric in base["reported"]:
        paper = row["reported"][metric] - base["reported"][metric]
    excludes = interval["low"] > 0 or interval["high"] < 0
    if not excludes:
        expected = "unresolved"
    elif paper is None:
        expected = "higher" if interval["low"] > 0 else "lower"
    else:
        expected = "agrees" if (paper > 0) == (interval["low"] > 0) else "disagrees"
    return f"[{100 * interval['low']:+.2f}, {100 * interval['high']:+.2f}]", expected


def test_every_recorded_difference_in_the_json_is_the_recomputed_one():
    for name, results in _recorded().items():
        by_name = {row["experiment"]: row for row in results["rows"]}
        for row in results["rows"]:
            base = by_name[row["default"]]
            for metric, stored in row["differences"].items():
                if row is base:
                    assert stored["verdict"] == "" and stored["interval"] is None, name
                    continue
                interval, expected = _expected(row, base, metric)
                assert stored["verdict"] == expected, (name, row["experiment"], metric)
                if stored["interval"]:
                    shown = f"[{100 * stored['interval']['low']:+.2f}, {100 * stored['interval']['high']:+.2f}]"
                    assert shown == interval, (name, row["experiment"], metric)


def test_every_verdict_on_the_results_page_follows_from_its_interval():
    page = PAGE.read_text()
    recorded = _recorded()
    blocks = re.findall(r"<!-- study: ([\w-]+)(?: compare: ([^>]*?))? -->\n(.*?)<!-- end study -->", page, re.S)
    assert {name for name, _, _ in blocks} == set(recorded)
    checked = 0
    for name, _, body in blocks:
        rows = recorded[name]["rows"]
        by_label = {row["row"]: row for row in rows}
        by_name = {row["experiment"]: row for row in rows}
        for line in body.splitlines():
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if len(cells) == 8 and cells[0].removesuffix(" (default)") in by_label:  # a row against the default
                row = by_label[cells[0].removesuffix(" (default)")]
                base = by_name[row["default"]]
                if row is base:
                    assert cells[5:] == ["–", "–", "–"], (name, line)
                    continue
                interval, expected = _expected(row, base, "mIoU")
                assert (cells[5], cells[7]) == (interval, expected), (name, line)
                checked += 1
            elif len(cells) == 6 and " − " in cells[0]:  # a comparison of two rows
                label, reference = cells[0].split(" − ")
                interval, expected = _expected(by_label[label], by_label[reference], "mIoU")
                assert (cells[3], cells[5]) == (interval, expected), (name, line)
                checked += 1
    assert checked >= 40, f"only {checked} verdicts found on the page"


def test_a_recorded_study_copied_in_without_tests_is_refreshed(tmp_path):
    from reference_models.study.page import refresh_recorded

    recorded = json.loads((RESULTS_DIR / "s2rm-table5.json").read_text())
    stripped = {**recorded, "rows": [{k: v for k, v in row.items() if k != "differences"} for row in recorded["rows"]]}
    (tmp_path / "s2rm-table5.json").write_text(json.dumps(stripped))
    written = refresh_recorded("s2rm-table5", tmp_path)
    assert [p.suffix for p in written] == [".json", ".md", ".png"]
    assert json.loads(written[0].read_text())["rows"] == recorded["rows"]
    assert "ours Δ, 95 % CI" in written[1].read_text() and written[2].read_bytes()[:4] == b"\x89PNG"


# the studies whose readings claim a direction (issue 26 item 2), and the plug-in study
FIVE_SEED_STUDIES = (
    "sadlr-table3", "sadlr-table4a-2000", "asda-table2", "asda-fixes", "s2rm-table4-128px", "s2rm-table5", "plugins",
)


@pytest.mark.parametrize("name", FIVE_SEED_STUDIES)
def test_the_studies_that_claim_a_direction_have_five_seeds_a_row(name):
    results = _recorded()[name]
    assert results["settings"]["seeds"] >= 5 and results["settings"].get("commit"), name
    for row in results["rows"]:
        assert sorted(run["seed"] for run in row["runs"]) == list(range(len(row["runs"]))), row["experiment"]
        assert len(row["runs"]) >= 5, (name, row["experiment"], len(row["runs"]))
