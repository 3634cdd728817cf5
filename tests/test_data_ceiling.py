"""Language is necessary: text-blind rules stay at or below 0.30 mIoU on every synthetic level."""

from __future__ import annotations

import pytest

from reference_models.data.ceiling import RULES, main, text_blind_ceiling
from reference_models.data.synthetic import LEVELS


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_text_blind_rules_score_at_most_030(level):
    scores = text_blind_ceiling(level, samples=150, seed=1)
    assert set(scores) == set(RULES)
    best = max(score["mIoU"] for score in scores.values())
    assert 0.0 < best <= 0.30, scores
    # Sanity of the measure: guessing an object must score a little, not nothing.
    assert scores["random object"]["mIoU"] > 0.05


def test_cli_reports_and_checks_the_limit(capsys):
    assert main(["--levels", "1", "--samples", "20"]) == 0
    assert "best text-blind mIoU" in capsys.readouterr().out
    assert main(["--levels", "1", "--samples", "20", "--limit", "0.01"]) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--levels", "5"], "--levels: expected levels from [1, 2, 3, 4]; got [5]"),
        (["--samples", "0"], "--samples: expected a positive integer; got 0"),
        (["--image-size", "8"], "--image-size: expected an int >= 32; got 8"),
    ],
)
def test_cli_bad_arguments_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: {message}")
