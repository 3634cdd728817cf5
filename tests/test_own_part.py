"""A part of one's own (docs/guides/own_part.md): the guide's example, exactly as printed, is
built, trained for 2 steps by the train command, saved, loaded, evaluated and counted by
``bench flops``; ``--import`` and registration refuse bad input in one line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from reference_models import PartConfig, RISModel, build_model, register_part, unregister_part
from reference_models.cli import run
from reference_models.registry import registered_parts

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guides" / "own_part.md"
_CODE_BLOCK = re.compile(r"^```\{code-block\} python\n((?::\w+: [^\n]*\n)*)\n?(.*?)^```$", re.M | re.S)
QUICK_TRAIN = ["--max-steps", "2", "--epochs", "1", "--train-size", "16", "--val-size", "8", "--batch-size", "8", "--workers", "0"]


def _guide_blocks() -> tuple[str, str]:
    """The guide's module (the block captioned ``my_parts.py``) and the Python lines using it."""
    blocks = [(options, code) for options, code in _CODE_BLOCK.findall(GUIDE.read_text())]
    module = next(code for options, code in blocks if ":caption: my_parts.py" in options)
    usage = next(code for options, code in blocks if "import my_parts" in code)
    return module, usage


@pytest.fixture
def my_parts(tmp_path, monkeypatch):
    """The guide's module written to ``tmp_path/my_parts.py``, importable; forgotten afterwards."""
    (tmp_path / "my_parts.py").write_text(_guide_blocks()[0])
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("my_parts", None)
    if "gated_neck" in registered_parts()["neck"]:
        unregister_part("gated_neck")


def _command(tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", tool, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _inputs(words: int = 6):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 64, 64, generator=generator)
    ids = torch.randint(1, 100, (2, words), generator=generator)
    mask = torch.ones(2, words, dtype=torch.long)
    mask[-1, words // 2 :] = 0
    return images, ids, mask


def test_the_guide_example_is_about_30_lines():
    module, usage = _guide_blocks()
    assert 20 <= len(module.strip().splitlines()) <= 40
    assert "register_part" in module and "build_model" in usage


def test_the_guide_example_trains_by_the_train_command_then_saves_loads_and_evaluates(my_parts, tmp_path):
    namespace: dict = {}
    exec(compile(_guide_blocks()[1], "own_part.md (usage)", "exec"), namespace)
    assert type(namespace["model"].neck).__name__ == "GatedNeck" and namespace["model"].config.neck.hidden == 64

    # a fresh process, where only --import can register the part (python -m finds it in its folder)
    out = tmp_path / "run"
    args = ["--import", "my_parts", "--model", "lavt_tiny", "--model-arg", "neck=gated_neck", "--model-arg", "neck.hidden=8"]
    trained = _command("reference_models.train", *args, *QUICK_TRAIN, "--out", str(out), cwd=my_parts)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    assert json.loads((out / "config.json").read_text())["model"]["neck"] == {"kind": "gated_neck", "hidden": 8}

    model = RISModel.from_pretrained(out).eval()
    assert type(model.neck).__name__ == "GatedNeck" and model.neck.gate[0].out_features == 8
    model.save_pretrained(tmp_path / "saved")
    again = RISModel.from_pretrained(tmp_path / "saved").eval()
    images, ids, mask = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(again(images, ids, mask).logits, model(images, ids, mask).logits)

    from reference_models.evaluate import main as evaluate

    scores = tmp_path / "scores.json"
    argv = ["--import", "my_parts", "--checkpoint", str(tmp_path / "saved"), "--size", "8", "--batch-size", "8", "--workers", "0"]
    assert evaluate([*argv, "--json", str(scores), "--device", "cpu"]) == 0
    assert 0 <= json.loads(scores.read_text())["val"]["oIoU"] <= 1


def test_bench_flops_counts_the_guide_example(my_parts, tmp_path):
    table = tmp_path / "flops.json"
    args = ["flops", "--import", "my_parts", "--models", "lavt_tiny", "--model-arg", "neck=gated_neck", "--json", str(table)]
    counted = _command("reference_models.bench", *args, cwd=my_parts)
    assert counted.returncode == 0, counted.stderr[-2000:]
    (row,) = json.loads(table.read_text())["rows"]
    # its two linear layers at batch 1: text_dim 32 -> hidden 32 -> the stride-32 map's 128 channels
    assert row["parts"]["neck"] == pytest.approx((32 * 32 + 32 * 128) / 1e9, abs=1e-6)


def test_the_matrix_lists_an_imported_part(my_parts, capsys):
    from reference_models.models.matrix import main

    assert main(["--import", "my_parts", "--models", "lavt_tiny"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["lavt_tiny", "neck", "gated_neck", "yes"] == next(row[:4] for row in rows if "gated_neck" in row)


def test_a_saved_part_of_ones_own_needs_its_module_imported(my_parts, tmp_path, capsys):
    import my_parts as module  # noqa: F401  (registers gated_neck)

    build_model("lavt_tiny", neck="gated_neck").save_pretrained(tmp_path / "saved")
    unregister_part("gated_neck")
    from reference_models.evaluate import main as evaluate

    assert run(lambda: evaluate(["--checkpoint", str(tmp_path / "saved"), "--device", "cpu"]), "evaluate") == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    quoted = re.search(r"^```text\n(.*?)\n```$", GUIDE.read_text(), re.M | re.S).group(1)
    assert line.endswith(f"config.json: {quoted}")  # the line the guide shows, after the file's name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("parts/my_parts.py", r"^--import: expected a module name such as my_parts or lab.parts \(dotted, no path, no .py\); got 'parts/my_parts.py'$"),
        ("no_such_module_here", r"^--import: no module named 'no_such_module_here' on the Python path"),
    ],
)
def test_import_refuses_a_path_or_a_missing_module_in_one_line(name, message, capsys):
    from reference_models.training.cli import main as train

    assert run(lambda: train(["--import", name, "--max-steps", "1"]), "train") == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert re.match(message, line.removeprefix("train: error: "))


@dataclass(frozen=True)
class _WidthConfig(PartConfig):
    width: int = 8


class _NotADataclass(PartConfig):
    width: int = 8


@dataclass(frozen=True)
class _NoDefault(PartConfig):
    width: int


@pytest.mark.parametrize(
    ("slot", "kind", "options", "message"),
    [
        ("fusion", "mine", {}, r"^slot: expected one of \['neck', 'decoder', 'head'\]; got 'fusion'$"),
        ("neck", "Mine", {}, r"^kind: expected a lower-case name"),
        ("neck", "none", {}, r"^kind: expected a lower-case name"),
        ("neck", "coparser", {}, r"^kind: 'coparser' is one of our neck parts; choose another name$"),
        ("decoder", "mine", {"architectures": ("s2rm",)}, r"^architectures: a decoder of one's own goes on some of \['lavt', 'vlt', 'lts'\]"),
        ("neck", "mine", {"config": _NotADataclass}, r"^config: decorate _NotADataclass with @dataclass\(frozen=True\)"),
        ("neck", "mine", {"config": dict}, r"^config: expected a @dataclass\(frozen=True\) subclass of reference_models.PartConfig"),
        ("neck", "mine", {"config": _NoDefault}, r"^config: every option needs a default .* \['width'\] have none$"),
    ],
)
def test_register_part_refuses_bad_input_in_one_line(slot, kind, options, message):
    with pytest.raises(ValueError, match=message):
        register_part(slot, kind, **options)(nn.Identity)
    assert registered_parts() == {"neck": [], "decoder": [], "head": []}


class _TopDecoder(nn.Module):
    """A decoder of one's own: the coarsest map, projected and resized to the finest."""

    def __init__(self, dims, text_dim, config, *, norm):
        super().__init__()
        self.proj = nn.Conv2d(dims[-1], config.width, 1)
        self.out_channels = config.width

    def forward(self, maps, words, word_mask):
        return nn.functional.interpolate(self.proj(maps[-1]), size=maps[0].shape[-2:], mode="bilinear")


class _WordHead(nn.Module):
    """A head of one's own: a classifier whose foreground score is shifted by the real words' mean."""

    def __init__(self, dim, text_dim, config, *, norm):
        super().__init__()
        self.classify = nn.Conv2d(dim, 2, 1)
        self.shift = nn.Linear(text_dim, 2)

    def forward(self, feats, words, word_mask):
        real = word_mask.unsqueeze(-1).to(words.dtype)
        sentence = (words * real).sum(1) / real.sum(1).clamp(min=1)
        return self.classify(feats) + self.shift(sentence)[:, :, None, None]


@pytest.fixture
def decoder_and_head():
    register_part("decoder", "top_decoder", config=_WidthConfig)(_TopDecoder)
    register_part("head", "word_head")(_WordHead)
    yield
    unregister_part("top_decoder")
    unregister_part("word_head")


@pytest.mark.parametrize(
    ("name", "slots"),
    [
        ("lavt_tiny", {"decoder": "top_decoder", "head": "word_head"}),
        ("vlt_tiny", {"decoder": "top_decoder", "decoder.width": 12}),
        ("lts_tiny", {"decoder": "aligner", "head": "word_head"}),
        ("s2rm_tiny", {"head": "word_head"}),
        ("asda_tiny", {"head": "word_head"}),
    ],
)
def test_a_decoder_and_a_head_of_ones_own_train_ignore_padding_and_round_trip(decoder_and_head, name, slots, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, **slots)
    own = [m for m in model.modules() if isinstance(m, (_TopDecoder, _WordHead))]
    assert own and all(getattr(model.config, slot).kind == kind for slot, kind in slots.items() if "." not in slot)
    images, ids, mask = _inputs()
    loss = model.loss(model(images, ids, mask), torch.rand(2, 64, 64, generator=torch.Generator().manual_seed(1)) > 0.5)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None and torch.isfinite(p.grad).all() for m in own for p in m.parameters())
    model.eval()
    with torch.no_grad():
        base = model(images, ids, mask).logits
        padded = model(images, torch.cat([ids, torch.randint(1, 100, (2, 3))], 1), torch.cat([mask, torch.zeros(2, 3, dtype=torch.long)], 1))
        torch.testing.assert_close(padded.logits, base, rtol=1e-4, atol=1e-5)
        model.save_pretrained(tmp_path / "saved")
        again = RISModel.from_pretrained(tmp_path / "saved").eval()
        assert again.config == model.config
        torch.testing.assert_close(again(images, ids, mask).logits, base)


def test_parts_of_ones_own_are_refused_where_they_cannot_meet(decoder_and_head):
    with pytest.raises(ValueError, match=r"^decoder: expected a part .*; got 'top_decoder'; 'top_decoder' is a decoder of your own that goes on lavt, vlt, lts only$"):
        build_model("s2rm_tiny", decoder="top_decoder")
    with pytest.raises(ValueError, match=r"^decoder: top_decoder reads a pyramid of four maps, but query.response='spatial'"):
        build_model("vlt_tiny", decoder="top_decoder", vlt_response="spatial")
    with pytest.raises(ValueError, match=r"^kind: 'top_decoder' is already a decoder of one's own \(.*_TopDecoder\); choose another name$"):
        register_part("decoder", "top_decoder")(nn.Identity)
    # a later change by a flat name keeps the parts of one's own and their options
    config = build_model("lavt_tiny", decoder="top_decoder", head="word_head", **{"decoder.width": 12}).config
    changed = config.replace(neck="coparser", coparser_shift=False)
    assert (changed.decoder, changed.head.kind, changed.neck.shift) == (_WidthConfig(width=12), "word_head", False)
    with pytest.raises(ValueError, match=r"^head_loss: no part of this lavt \(.*head=word_head\) model reads it; read by: head=classifier"):
        config.replace(head_loss="weighted_ce")


def test_the_guide_rows_are_studied_by_name_with_import(my_parts, tmp_path):
    blocks = [(options, code) for options, code in _CODE_BLOCK.findall(GUIDE.read_text())]
    rows = next(code for options, code in blocks if ":caption: my_rows.py" in options)
    (my_parts / "my_rows.py").write_text(rows)
    out = tmp_path / "study"
    studied = _command("reference_models.study", "--import", "my_rows", "mine/lavt", "--quick", "--out", str(out), cwd=my_parts)
    assert studied.returncode == 0, studied.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert [row["experiment"] for row in results["rows"]] == ["mine/lavt/alone", "mine/lavt/gated"]
    assert {row["default"] for row in results["rows"]} == {"mine/lavt/alone"}
    saved = json.loads((out / "runs" / "mine-lavt-gated" / "seed-0" / "config.json").read_text())["model"]
    assert saved["neck"]["kind"] == "gated_neck"
    # without --import the rows are unknown, in one line
    refused = _command("reference_models.study", "mine/lavt", "--quick", "--out", str(tmp_path / "other"), cwd=my_parts)
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0 and "mine/lavt" in refused.stderr


def test_register_experiment_refuses_bad_rows_in_one_line():
    from reference_models.experiments import Experiment, get_experiment, register_experiment

    taken = get_experiment("plugins/lavt/alone")
    bad = [
        (Experiment(name="sadlr/x/y", paper="sadlr", table="x", row="y", model="lavt"), "one of the catalogue's own groups"),
        (Experiment(name="mine/x", paper="mine", table="x", row="y", model="lavt"), "expected '<paper>/<table>/<row>'"),
        (Experiment(name="mine/x/y", paper="mine", table="z", row="y", model="lavt"), "matching paper and table"),
        (taken, "one of the catalogue's own groups"),
        ("mine/x/y", "expected an Experiment"),
    ]
    for experiment, message in bad:
        with pytest.raises(ValueError, match=re.escape(message)):
            register_experiment(experiment)
