"""``bench official``: the interleaving, the ratios and the report on two tiny stand-in models,
the import of a released codebase for one build only, and the one-line path errors.

No released code runs here: the stand-ins are defined below.
"""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from reference_models.bench import official
from reference_models.bench.cli import main
from reference_models.bench.official import Contender, format_official_row, side_by_side, summarise


class _StandIn(nn.Module):
    """A tiny model that records every forward (its name, training mode, checkpointing)."""

    def __init__(self, name: str, calls: list, width: int) -> None:
        super().__init__()
        self.name, self.calls = name, calls
        self.layers = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 1))
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.name, self.training, self.grad_checkpointing))
        return self.layers(x)


def _contender(label: str, calls: list, width: int) -> Contender:
    model = _StandIn(label, calls, width)
    x = torch.randn(3, 4)
    return Contender(label, model, lambda: model(x), lambda out: out.square().mean())


def test_side_by_side_interleaves_and_compares_the_stand_ins():
    calls: list = []
    rows, times = side_by_side(_contender("official", calls, 8), _contender("ours", calls, 16), repeats=3, warmup=1)
    # 5 runs a round (two forwards, three steps), a warm-up round and 3 timed ones
    assert len(calls) == 5 * 4
    assert set(times) == {"official forward", "ours forward", "official step", "ours step", "ours+ckpt step"}
    assert all(len(seconds) == 3 for seconds in times.values())
    # every round runs each once; the timed rounds alternate their order (A B C, C B A, ...)
    rounds = [calls[i : i + 5] for i in range(0, len(calls), 5)]
    assert rounds[1] == rounds[2][::-1] == rounds[3]
    assert sorted(rounds[1]) == sorted(
        [("official", False, False), ("ours", False, False), ("official", True, False), ("ours", True, False), ("ours", True, True)]
    )
    forward, step = rows
    assert (forward["part"], step["part"]) == ("forward", "step")
    assert "ckpt_ms" not in forward
    # the ratios are the ones of the rounds' times
    expected = summarise(times, baseline="official step", other="ours step")
    assert (step["official_ms"], step["ours_ms"], step["ratio"], step["paired_ratio"]) == (
        expected["baseline_ms"], expected["other_ms"], expected["ratio"], expected["paired_ratio"]
    )
    ckpt = summarise(times, baseline="official step", other="ours+ckpt step")
    assert (step["ckpt_ms"], step["ckpt_ratio"]) == (ckpt["other_ms"], ckpt["ratio"])


def test_side_by_side_trains_both_and_leaves_checkpointing_off():
    calls: list = []
    official_side, ours_side = _contender("official", calls, 8), _contender("ours", calls, 16)
    before = [p.detach().clone() for p in ours_side.module.parameters()] + [p.detach().clone() for p in official_side.module.parameters()]
    side_by_side(official_side, ours_side, repeats=1, warmup=0)
    after = list(ours_side.module.parameters()) + list(official_side.module.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(after, before))  # the AdamW steps moved every weight
    assert ours_side.module.grad_checkpointing is False
    assert all(p.grad is None for p in after)


def test_side_by_side_without_checkpointing():
    calls: list = []
    rows, times = side_by_side(_contender("official", calls, 8), _contender("ours", calls, 16), repeats=2, warmup=0, checkpointing=False)
    assert "ours+ckpt step" not in times and "ckpt_ms" not in rows[1]
    assert not any(ckpt for _, _, ckpt in calls)


def test_summarise_ratio_of_medians_and_median_of_paired_ratios():
    times = {"a": [1.0, 2.0, 4.0], "b": [3.0, 3.0, 2.0]}
    got = summarise(times, baseline="a", other="b")
    assert got == {"baseline_ms": 2000.0, "other_ms": 3000.0, "ratio": 1.5, "paired_ratio": 1.5}
    got = summarise({"a": [1.0, 2.0, 4.0], "b": [1.0, 6.0, 2.0]}, baseline="a", other="b")
    assert (got["ratio"], got["paired_ratio"]) == (1.0, 1.0)
    assert summarise({"a": [2.0], "b": [1.0]}, baseline="a", other="b")["paired_ratio"] == 0.5


def test_report_lines_carry_the_figures():
    rows, _ = side_by_side(_contender("official", [], 8), _contender("ours", [], 16), repeats=1, warmup=0)
    for row in rows:
        row.update(system="stand", model="tiny", input=4, batch=3)
        fields = format_official_row(row).split()
        assert fields[:5] == ["stand", "tiny", "4", "3", row["part"]]
        assert float(fields[5]) == row["official_ms"] and float(fields[6]) == row["ours_ms"]
        assert float(fields[7]) == row["ratio"]
    assert len(format_official_row(rows[1])) == len(official.OFFICIAL_HEADER)  # the columns line up


def test_released_code_is_imported_for_the_build_only(tmp_path):
    # two codebases with a top-level package of the same name, as LAVT-RIS and ASDA have
    for name, value in (("first", 1), ("second", 2)):
        (tmp_path / name / "utils").mkdir(parents=True)
        (tmp_path / name / "utils" / "__init__.py").write_text(f"VALUE = {value}\nprint('building')\n")
    path_before = list(sys.path)
    with official._importing_from([tmp_path / "first"], stand_ins=("surely_not_installed_pkg.sub",)):
        import utils
        from surely_not_installed_pkg.sub import anything

        first = utils.VALUE
    with official._importing_from([tmp_path / "second"]):
        import utils

        second = utils.VALUE
    assert (first, second) == (1, 2)
    assert sys.path == path_before
    assert "utils" not in sys.modules and "surely_not_installed_pkg.sub" not in sys.modules
    with pytest.raises(RuntimeError, match="not installed"):
        anything()


@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "--lavt, --asda: expected the folder of at least one released codebase"),
        (["--lavt", "{tmp}"], "--lavt: expected the folder of LAVT-RIS (github.com/yz93/LAVT-RIS); {tmp} has no lib/segmentation.py"),
        (["--asda", "{tmp}/missing"], "--asda: expected the folder of ASDA (github.com/swagger-coder/ASDA); {tmp}/missing is not a folder"),
        (["--asda", "{asda}", "--clip", "{tmp}"], "--clip: expected the folder of OpenAI's CLIP (github.com/openai/CLIP); {tmp} has no clip/model.py"),
        (["--asda", "{asda}", "--clip", "{clip}", "--batch", "1"], "--batch: expected at least 2"),
    ],
)
def test_a_path_without_the_released_code_is_one_line(tmp_path, capsys, flags, message):
    asda, clip = tmp_path / "asda", tmp_path / "clip"
    for folder, files in ((asda, ("model/model.py", "utils/utils.py")), (clip, ("clip/model.py",))):
        for name in files:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text("")
    argv = ["official"] + [f.format(tmp=tmp_path, asda=asda, clip=clip) for f in flags]
    with pytest.raises(ValueError) as err:
        main(argv)
    assert str(err.value).startswith(message.format(tmp=tmp_path))
    assert "\n" not in str(err.value)
    assert capsys.readouterr().out == ""  # refused before the header
