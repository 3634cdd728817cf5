"""No tool's output replaces an input or an earlier result (issue 25, item 2), and names
read from files never become paths (item 3).

Each case builds a small file, runs the command as a user would (through
:func:`reference_models.cli.run`, which turns errors into one line) and checks both the
message and that the file it would have replaced is unchanged.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch

from reference_models import build_model
from reference_models.checkpoint import save_checkpoint
from reference_models.cli import run
from reference_models.outputs import check_name, check_output_file, check_output_folder, write_output
from reference_models.training.run_folder import RunLock

FAST = ["--size", "2", "--batch-size", "2", "--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished run folder: config.json, best.pt, last.pt of an untrained tiny model."""
    torch.manual_seed(0)
    model = build_model("lavt_sadlr_tiny")
    folder = tmp_path_factory.mktemp("run")
    state = {"model": model.state_dict(), "model_config": model.config.to_dict()}
    (folder / "config.json").write_text(json.dumps({"train": {}, "model": model.config.to_dict()}))
    for name in ("best.pt", "last.pt"):
        save_checkpoint(state, folder / name)
    return folder


def _one_line(capsys, code: int, expected: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and expected in err, err
    return err


# -- evaluate --json ----------------------------------------------------------------------------


def test_evaluate_json_never_replaces_the_checkpoint_it_reads(run_dir, capsys, monkeypatch):
    import reference_models.evaluate as evaluate_module

    # the check comes before any evaluation: one that started would fail the test
    monkeypatch.setattr(evaluate_module, "evaluate", lambda *a, **k: pytest.fail("evaluated before refusing --json"))
    before = (run_dir / "best.pt").read_bytes()
    for extra in ([], ["--overwrite"]):
        code = run(lambda: evaluate_module.main(["--checkpoint", str(run_dir / "best.pt"), "--json", str(run_dir / "best.pt"), *FAST, *extra]), "evaluate")
        _one_line(capsys, code, "--json:")
    # a second spelling of the same file, and a file of the run folder it reads
    code = run(lambda: evaluate_module.main(["--checkpoint", str(run_dir), "--json", str(run_dir / "." / "last.pt"), "--overwrite", *FAST]), "evaluate")
    _one_line(capsys, code, "which this command reads")
    assert (run_dir / "best.pt").read_bytes() == before


def test_evaluate_json_refuses_an_existing_result_unless_overwrite(run_dir, tmp_path, capsys):
    from reference_models.evaluate import main

    result = tmp_path / "val.json"
    result.write_text("{}")
    code = run(lambda: main(["--checkpoint", str(run_dir / "best.pt"), "--json", str(result), *FAST]), "evaluate")
    _one_line(capsys, code, f"--json: {result} already exists; pass --overwrite to replace it")
    assert result.read_text() == "{}"
    assert main(["--checkpoint", str(run_dir / "best.pt"), "--json", str(result), "--overwrite", *FAST]) == 0
    assert "val" in json.loads(result.read_text())


def test_evaluate_json_into_a_run_folder_a_run_holds_is_refused(run_dir, tmp_path, capsys):
    from reference_models.evaluate import main

    lock = RunLock(run_dir)
    try:
        code = run(lambda: main(["--checkpoint", str(run_dir / "best.pt"), "--json", str(run_dir / "eval.json"), *FAST]), "evaluate")
        _one_line(capsys, code, "--json: ")
    finally:
        lock.release(remove=True)
    assert not (run_dir / "eval.json").exists()


def test_a_json_path_that_cannot_be_written_is_named(tmp_path):
    full = Path("/dev/full")
    if not full.exists():
        pytest.skip("no /dev/full here")
    with pytest.raises(OSError) as caught:
        write_output(full, "{}", argument="--json")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == "/dev/full"
    from reference_models.cli import describe_os_error

    assert "/dev/full" in describe_os_error(caught.value)


def test_a_failed_write_leaves_the_earlier_file_whole(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    target.write_text("earlier")

    real_open = Path.open

    class Full:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "open", lambda self, *a, **k: Full(real_open(self, *a, **k)))
    with pytest.raises(OSError) as caught:
        write_output(target, "new", argument="--json")
    assert caught.value.filename == str(target)
    monkeypatch.undo()
    assert target.read_text() == "earlier"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind


def test_output_file_checks(tmp_path):
    with pytest.raises(ValueError, match=r"^--json: .* is a folder; expected a file"):
        check_output_file(tmp_path, argument="--json")
    (tmp_path / "metrics.jsonl").write_text("")  # a run folder: its files are never outputs
    with pytest.raises(ValueError, match=r"^--json: .*config.json is a file of the training run"):
        check_output_file(tmp_path / "config.json", argument="--json", overwrite=True)
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "metrics.jsonl")
    with pytest.raises(ValueError, match="which this command reads"):
        check_output_file(link, argument="--json", overwrite=True, reads=(tmp_path / "metrics.jsonl",))
    assert check_output_file(tmp_path / "new" / "r.json", argument="--json") == tmp_path / "new" / "r.json"


# -- bench --json -------------------------------------------------------------------------------


def test_bench_json_refuses_an_existing_file_before_measuring(tmp_path, capsys, monkeypatch):
    from reference_models.bench import cli as bench_cli

    monkeypatch.setattr(bench_cli, "_run_flops", lambda *a: pytest.fail("measured before refusing --json"))
    result = tmp_path / "flops.json"
    result.write_text("mine")
    code = run(lambda: bench_cli.main(["flops", "--models", "lts_tiny", "--json", str(result)]), "bench")
    _one_line(capsys, code, "--json: ")
    assert result.read_text() == "mine"


# -- convert lavt --out -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    from tests.fixtures_lavt import save_release

    return save_release(tmp_path_factory.mktemp("lavt") / "refcoco.pth")


def test_convert_never_writes_into_a_run_folder(release, run_dir, capsys):
    from reference_models.convert import main

    before = (run_dir / "config.json").read_text()
    for extra in ([], ["--overwrite"]):
        code = run(lambda: main(["lavt", str(release), "--out", str(run_dir), "--model-arg", "image_size=64", *extra]), "convert")
        _one_line(capsys, code, "is a training run's folder")
    assert (run_dir / "config.json").read_text() == before


def test_convert_refuses_a_non_empty_folder_unless_overwrite(release, tmp_path, capsys):
    from reference_models.convert import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code = run(lambda: main(["lavt", str(release), "--out", str(out), "--model-arg", "image_size=64"]), "convert")
    _one_line(capsys, code, "is not empty (notes.txt); pass --overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert main(["lavt", str(release), "--out", str(out), "--model-arg", "image_size=64", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "notes.txt"]  # no lock left
    with pytest.raises(ValueError, match="which this command reads"):
        check_output_folder(release.parent, argument="--out", overwrite=True, reads=(release,))


def test_convert_into_a_folder_a_run_holds_is_refused(release, tmp_path, capsys):
    from reference_models.convert import main

    out = tmp_path / "out"
    out.mkdir()
    lock = RunLock(out)
    try:
        code = run(lambda: main(["lavt", str(release), "--out", str(out), "--model-arg", "image_size=64"]), "convert")
        _one_line(capsys, code, "in use by another run")
    finally:
        lock.release(remove=True)
    assert list(out.iterdir()) == []


# -- names read from files -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../x_tiny", "/tmp/x_tiny", "a/b", "..", ".hidden", "", "x" * 200, 5, None])
def test_names_from_files_are_refused_unless_plain(name):
    with pytest.raises(ValueError, match=r"^config.json's name: expected a plain name"):
        check_name(name, what="config.json's name")
