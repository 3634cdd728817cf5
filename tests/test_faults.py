"""Fault injection: each probe of a run that must survive (signals, a second process, flipped
bytes, a full disk, non-finite steps, damaged run files) and the behaviour it must get.

The data probes (malformed refs and instances, crafted pickles, undecodable pictures before
the run) are in test_data_preflight.py and test_safe_pickle.py; here are the ones that need
a run.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reference_models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from reference_models.cli import Stopped
from reference_models.train import TrainConfig, train
from reference_models.training import run as run_module

ROOT = Path(__file__).resolve().parents[1]
TINY = {"train_size": 32, "val_size": 8, "batch_size": 8, "workers": 0, "grid_samples": 0, "log_every": 1}


def _cli(args: list[str], **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # a session of its own: a signal sent to its process group reaches none of the tests'
    return subprocess.Popen([sys.executable, "-m", "reference_models.train", *args], cwd=ROOT, env=env, start_new_session=True, **kwargs)


def _signal_at_step(monkeypatch, step: int, signum: int) -> None:
    """Make the in-process run receive ``signum`` right after optimizer step ``step``."""
    original = run_module._Run.on_step

    def on_step(self, loss):
        original(self, loss)
        if self.progress.step == step:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(run_module._Run, "on_step", on_step)


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _stopped_run(tmp_path: Path, monkeypatch, *, step: int = 2, **config) -> Path:
    folder = tmp_path / "stopped"
    _signal_at_step(monkeypatch, step, signal.SIGTERM)
    with pytest.raises(Stopped) as stopped:
        train(TrainConfig(**{**TINY, "epochs": 2, **config}), folder, progress=False)
    monkeypatch.undo()
    assert stopped.value.exit_code == 143
    return folder


def test_sigterm_saves_last_and_resume_is_bit_identical(tmp_path, monkeypatch):
    reference = train(TrainConfig(epochs=2, **TINY), tmp_path / "reference", progress=False)
    handler = signal.getsignal(signal.SIGTERM)
    folder = tmp_path / "stopped"
    _signal_at_step(monkeypatch, 3, signal.SIGTERM)
    with pytest.raises(Stopped) as stopped:
        train(TrainConfig(epochs=2, **TINY), folder, progress=False)
    monkeypatch.undo()
    message = str(stopped.value)
    assert stopped.value.exit_code == 143 and "\n" not in message
    # the signal came after step 3 had passed its boundary check: the run stops after step 4
    assert message.startswith("SIGTERM at step 4: saved") and f"python -m reference_models.train --out {folder} --resume" in message
    assert load_checkpoint(folder / "last.pt")["step"] == 4
    assert signal.getsignal(signal.SIGTERM) is handler, "the run left its handler installed"

    summary = train(TrainConfig(), folder, resume=True, progress=False)
    assert summary["steps"] == reference["steps"] == 8 and summary["val"] == reference["val"]
    final, expected = load_checkpoint(folder / "last.pt")["model"], load_checkpoint(tmp_path / "reference" / "last.pt")["model"]
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    assert [r["step"] for r in _rows(folder) if "loss" in r] == list(range(1, 9))  # no step logged twice


def test_ctrl_c_from_the_command_line_exits_130_with_the_resume_command(tmp_path):
    folder = tmp_path / "run"
    proc = _cli(
        ["--train-size", "400", "--val-size", "8", "--batch-size", "8", "--workers", "1", "--log-every", "1", "--out", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if (folder / "metrics.jsonl").exists() and len(_rows(folder)) >= 2:
            break
        time.sleep(0.05)
    # a terminal's Ctrl-C reaches the whole process group: the data worker too
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 130, stderr[-2000:]
    last_line = stderr.strip().splitlines()[-1]
    assert "SIGINT at step" in last_line and f"--out {folder} --resume" in last_line
    saved = load_checkpoint(folder / "last.pt")
    assert saved["step"] >= 2 and saved["step"] == max(r["step"] for r in _rows(folder) if "loss" in r)


def test_a_second_run_on_a_live_folder_is_refused_and_a_dead_ones_lock_is_not(tmp_path, monkeypatch):
    folder = _stopped_run(tmp_path, monkeypatch, step=1, train_size=400)
    live = _cli(["--out", str(folder), "--resume"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while f"process {live.pid} " not in (folder / ".lock").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(ValueError, match=rf"--out: .*stopped is in use by another run \(process {live.pid} on .*\); wait"):
            train(TrainConfig(), folder, resume=True, progress=False)
        with pytest.raises(ValueError, match=rf"--out: .*stopped is in use by another run \(process {live.pid} on .*\); wait"):
            train(TrainConfig(**TINY), folder, progress=False)
    finally:
        live.kill()
        live.wait()
    # the killed process's lock is gone with it; a stale temporary file of its write goes too
    (folder / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    summary = train(TrainConfig(), folder, resume=True, progress=False)
    assert summary["steps"] == 100  # 2 epochs of 400 samples in batches of 8
    assert not list(folder.glob(".*.tmp"))
    steps = [r["step"] for r in _rows(folder) if "loss" in r]
    assert steps == sorted(set(steps)), "rows of two processes were interleaved"


def _flip_a_tensor_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    # torch stores tensors uncompressed in the zip: a byte in the middle of the file is
    # tensor data (the pickle and the directory are at the ends)
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_flipped_byte_is_refused_by_resume_evaluate_and_predict(tmp_path, monkeypatch):
    from reference_models.evaluate import main as evaluate_main
    from reference_models.predict import main as predict_main

    folder = _stopped_run(tmp_path, monkeypatch)
    train(TrainConfig(), folder, resume=True, progress=False)
    for name in ("last.pt", "best.pt"):
        _flip_a_tensor_byte(folder / name)
        with pytest.raises(CheckpointError, match=rf"{name}: corrupt checkpoint \(its contents do not match the digest"):
            load_checkpoint(folder / name)
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        train(TrainConfig(), folder, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        evaluate_main(["--checkpoint", str(folder / "best.pt"), "--device", "cpu"])
    image = tmp_path / "photo.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        predict_main(["--checkpoint", str(folder / "best.pt"), "--image", str(image), "--text", "a", "--out", str(tmp_path / "o.png")])


def test_non_finite_weights_are_refused_by_evaluate_and_predict(tmp_path, monkeypatch):
    from reference_models.checkpoint import load_model

    folder = _stopped_run(tmp_path, monkeypatch)
    state = load_checkpoint(folder / "last.pt")
    key = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][key] = torch.full_like(state["model"][key], float("nan"))
    save_checkpoint(state, folder / "nan.pt")
    with pytest.raises(CheckpointError, match=rf"nan.pt: the weights hold NaN or infinite values \(first: {key}\)"):
        load_model(folder / "nan.pt")


def test_non_finite_steps_are_skipped_and_counted_then_the_run_stops(tmp_path, monkeypatch):
    from reference_models.training import loop

    calls = {"n": 0}

    def sometimes_nan(model_loss):
        def loss(out, mask):
            calls["n"] += 1
            value = model_loss(out, mask)
            return value * float("nan") if calls["n"] in (2, 3) else value
        return loss

    original_build = loop.build_optimisation

    def build(model, *args, **kwargs):
        model.loss = sometimes_nan(model.loss)
        return original_build(model, *args, **kwargs)

    monkeypatch.setattr(run_module, "build_optimisation", build)
    summary = train(TrainConfig(epochs=1, **TINY), tmp_path / "two_bad", progress=False)
    assert summary["skipped_steps"] == 2 and summary["steps"] == 2  # 4 batches, 2 of them skipped
    skipped = [r for r in _rows(tmp_path / "two_bad") if "skipped" in r]
    assert [r["skipped_in_a_row"] for r in skipped] == [1, 2]
    assert all(torch.isfinite(v).all() for v in load_checkpoint(tmp_path / "two_bad" / "last.pt")["model"].values() if v.is_floating_point())

    monkeypatch.setattr(run_module, "build_optimisation", lambda model, *a, **k: original_build(_always_nan(model), *a, **k))
    with pytest.raises(Stopped, match=r"stopped at step 0: 3 steps in a row had a non-finite loss or gradient") as stopped:
        train(TrainConfig(epochs=1, max_bad_steps=3, **TINY), tmp_path / "diverged", progress=False)
    assert stopped.value.exit_code == 1 and "no checkpoint had been written" in str(stopped.value)
    assert not (tmp_path / "diverged").exists(), "a run that saved nothing must not leave a folder that refuses a rerun"


def _always_nan(model):
    model_loss = model.loss
    model.loss = lambda out, mask: model_loss(out, mask) * float("nan")
    return model


def test_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from reference_models import weights
    from reference_models.cli import describe_os_error

    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "model_config": {}}, path)
    good = path.read_bytes()

    def full(obj, f):  # what torch's zip writer raises when a write comes up short
        Path(f).write_bytes(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(weights, "_disk_full", lambda err, folder: True)
    with pytest.raises(OSError) as raised:
        weights.atomic_save({"model": {"w": torch.zeros(3)}}, path, save=full)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)
    assert describe_os_error(raised.value) == f"no space left on device writing {path}: free some space and run the command again"
    assert path.read_bytes() == good and list(tmp_path.iterdir()) == [path]

    # the real thing, where a write really comes up short: /dev/full
    monkeypatch.undo()
    with pytest.raises(OSError) as raised:
        weights.atomic_save({"w": torch.zeros(3)}, path, save=lambda obj, f: torch.save(obj, open("/dev/full", "wb")))
    assert raised.value.errno == errno.ENOSPC and path.read_bytes() == good


def test_damaged_run_files_give_one_line(tmp_path, monkeypatch):
    folder = _stopped_run(tmp_path, monkeypatch)
    state = load_checkpoint(folder / "last.pt")

    tampered = dict(state, train_config={**state["train_config"], "epochs": "two"})
    save_checkpoint(tampered, folder / "last.pt")
    with pytest.raises(CheckpointError, match=r"last.pt: its train_config is not valid \(--epochs: expected int \| None; got 'two'\)"):
        train(TrainConfig(), folder, resume=True, progress=False)

    # another model's config over these weights (the composed config of that model, so it builds)
    from reference_models import get_config

    other = dict(state, model_config=get_config("vlt_tiny").replace(image_size=state["model_config"]["image_size"]).to_dict())
    save_checkpoint(other, folder / "last.pt")
    with pytest.raises(CheckpointError, match=r"last.pt: its weights are not those of its model 'vlt_tiny' \("):
        train(TrainConfig(), folder, resume=True, progress=False)

    (folder / "last.pt").write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError, match=r"last.pt: not a checkpoint"):
        train(TrainConfig(), folder, resume=True, progress=False)


def test_timed_checkpoints(tmp_path, monkeypatch):
    saved_at = []
    original = run_module.save_training_checkpoint

    def spy(path, **kwargs):
        saved_at.append((path.name, kwargs["progress"].step))
        original(path, **kwargs)

    monkeypatch.setattr(run_module, "save_training_checkpoint", spy)
    train(TrainConfig(epochs=1, checkpoint_minutes=1e-9, **TINY), tmp_path / "often", progress=False)
    assert [s for name, s in saved_at if name == "last.pt"] == [1, 2, 3, 4, 4]  # every step, then the epoch's end
    saved_at.clear()
    train(TrainConfig(epochs=1, checkpoint_minutes=0, **TINY), tmp_path / "never", progress=False)
    assert [s for name, s in saved_at if name == "last.pt"] == [4]


@pytest.mark.parametrize(
    "config, message",
    [
        ({"milestones": (0, 3)}, "--milestones: expected epochs >= 1; got 0 3"),
        ({"grid_samples": -1}, "--grid-samples: expected >= 0; got -1"),
        ({"max_bad_samples": -1}, "--max-bad-samples: expected >= 0; got -1"),
        ({"checkpoint_minutes": float("nan")}, "--checkpoint-minutes: expected a number >= 0; got nan"),
        ({"level": 99}, "--level: expected one of"),
    ],
)
def test_bad_options_name_their_flag(tmp_path, config, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train(TrainConfig(**{**TINY, **config}), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_undecodable_pictures_are_skipped_listed_and_stop_the_run_past_the_limit(tmp_path):
    from reference_models.data.synthetic import export_refer

    export_refer(tmp_path / "refer", counts={"train": 4, "val": 1, "test": 1}, image_size=64, progress=False)
    picture = tmp_path / "refer" / "images" / "synthetic" / "train_000001.png"
    picture.write_bytes(picture.read_bytes()[:200])  # the header opens; decoding fails
    data = {"data": f"refer:{tmp_path / 'refer'}", "dataset": "synthetic", "batch_size": 4, "workers": 0, "grid_samples": 0}

    summary = train(TrainConfig(epochs=1, **data), tmp_path / "skips", progress=False)
    listed = [json.loads(line) for line in (tmp_path / "skips" / "bad_samples.jsonl").read_text().splitlines()]
    assert summary["bad_samples"] == len(listed) == 3  # the picture's 3 refs
    assert {r["path"] for r in listed} == {str(picture)} and all(r["split"] == "train" and r["reason"] for r in listed)
    assert summary["steps"] == 3  # 12 refs in batches of 4: the skipped samples were replaced

    with pytest.raises(Stopped) as stopped:
        train(TrainConfig(epochs=2, max_bad_samples=2, **data), tmp_path / "stops", progress=False)
    message = str(stopped.value)
    assert stopped.value.exit_code == 2 and "\n" not in message
    assert "3 samples could not be read (more than --max-bad-samples 2)" in message and "bad_samples.jsonl" in message
    assert f"--out {tmp_path / 'stops'} --resume --max-bad-samples N" in message
    stopped_at = load_checkpoint(tmp_path / "stops" / "last.pt")["step"]
    resumed = train(TrainConfig(max_bad_samples=100), tmp_path / "stops", resume=True, progress=False, given=["max_bad_samples"])
    assert resumed["steps"] == 6 > stopped_at and resumed["bad_samples"] == 6


def test_a_dataset_with_nothing_readable_gives_one_line():
    from reference_models.data.errors import BadSampleError, DataError
    from reference_models.training.data import SkipUnreadable

    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 100

        def __getitem__(self, index):
            raise BadSampleError(index, f"images/{index}.jpg", "truncated picture")

    with pytest.raises(DataError, match=r"^images/10.jpg: 8 train samples in a row from sample 3 cannot be read \(last: truncated picture\)"):
        SkipUnreadable(Broken(), "train", attempts=8)[3]


def test_a_run_that_crashes_before_its_first_checkpoint_leaves_nothing_that_blocks_a_rerun(tmp_path, monkeypatch):
    from reference_models.training import loop

    original = loop.build_optimisation

    def crashing(model, *args, **kwargs):
        def loss(out, mask):
            raise RuntimeError("CUDA out of memory (simulated)")

        model.loss = loss
        return original(model, *args, **kwargs)

    monkeypatch.setattr(run_module, "build_optimisation", crashing)
    (tmp_path / "kept").mkdir()
    for folder in (tmp_path / "new", tmp_path / "kept"):
        with pytest.raises(RuntimeError, match="simulated"):
            train(TrainConfig(epochs=1, **TINY), folder, progress=False)
    assert not (tmp_path / "new").exists() and list((tmp_path / "kept").iterdir()) == []
    monkeypatch.undo()
    assert train(TrainConfig(epochs=1, **TINY), tmp_path / "new", progress=False)["steps"] == 4
