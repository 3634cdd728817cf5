"""The main job: train (shortened), resume after SIGKILL, DDP parity, evaluate, predict."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from reference_models.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from reference_models.train import ShardedResumableSampler, TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
# A few tiny steps: the suite checks the machinery, the README command checks accuracy.
QUICK = ["--train-size", "48", "--val-size", "16", "--batch-size", "8", "--workers", "0", "--log-every", "1"]


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "reference_models.train", *args], cwd=ROOT, env=env, capture_output=True, text=True, **kwargs)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_shortened_default_run_writes_everything(tmp_path):
    summary = train(
        TrainConfig(train_size=32, val_size=8, batch_size=8, epochs=2, workers=0, grid_samples=3, log_every=1), tmp_path, progress=False
    )
    for name in ("config.json", "metrics.jsonl", "last.pt", "best.pt", "curves.png", "samples.png", "summary.json"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["model"] == "lavt_sadlr_tiny" and saved["steps"] == 8 and saved["seconds"] > 0
    assert set(saved["val"]) >= {"oIoU", "mIoU", "P@0.5"}
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum("loss" in r for r in rows) == 8 and sum("val" in r for r in rows) == 2
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["train"]["lr"] == 2e-3 and config["model"]["name"] == "lavt_sadlr_tiny"
    # best.pt is for evaluation: weights and configurations, not the optimizer's moments.
    last, best = load_checkpoint(tmp_path / "last.pt"), load_checkpoint(tmp_path / "best.pt")
    assert {"optimizer", "scheduler", "rng"} <= set(last) and not {"optimizer", "scheduler", "rng"} & set(best)
    assert best["train_config"] == last["train_config"] and best["model"].keys() == last["model"].keys()
    assert (tmp_path / "best.pt").stat().st_size < 0.5 * (tmp_path / "last.pt").stat().st_size
    from PIL import Image

    with Image.open(tmp_path / "samples.png") as picture:
        assert picture.width > picture.height / 3 * 2  # 2 + 3 iteration columns for 3 rows


def test_sampler_shards_cover_the_epoch_and_skip_resumes():
    full = list(ShardedResumableSampler(10, seed=3))
    assert sorted(full) == list(range(10))
    ranks = [list(ShardedResumableSampler(10, rank=r, world=3, seed=3)) for r in range(3)]
    assert all(len(r) == 4 for r in ranks) and set(sum(ranks, [])) == set(range(10))
    resumed = ShardedResumableSampler(10, seed=3)
    resumed.set_epoch(0, skip=4)
    assert list(resumed) == full[4:]
    other_epoch = ShardedResumableSampler(10, seed=3)
    other_epoch.set_epoch(1)
    assert list(other_epoch) != full


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    args = QUICK + ["--epochs", "3", "--save-every", "1"]
    reference = _run(args + ["--out", str(tmp_path / "ref")], timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "reference_models.train", *args, "--out", str(killed_dir)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        last = killed_dir / "last.pt"
        if last.exists() and load_checkpoint(last)["step"] >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "training finished before it could be killed"
    interrupted_at = load_checkpoint(killed_dir / "last.pt")["step"]
    assert 2 <= interrupted_at < 18

    resumed = _run(["--out", str(killed_dir), "--resume"], timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final, expected = _weights(killed_dir / "last.pt"), _weights(tmp_path / "ref" / "last.pt")
    assert final.keys() == expected.keys()
    for key in expected:
        assert torch.equal(final[key], expected[key]), key
    summary = json.loads((killed_dir / "summary.json").read_text())
    assert summary["steps"] == 18 and summary["val"] == json.loads((tmp_path / "ref" / "summary.json").read_text())["val"]


def test_truncated_checkpoint_is_a_clear_error_and_atomic_save_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "model_config": {}}, path)
    good = path.read_bytes()

    def crash(obj, f, *a, **k):
        Path(f).write_bytes(b"partial")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "model_config": {}}, path)
    monkeypatch.undo()
    assert path.read_bytes() == good, "the previous checkpoint was damaged"
    assert list(tmp_path.iterdir()) == [path], "a temporary file was left behind"

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match=r"truncated.pt: cannot read checkpoint .* truncated or corrupt"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="not a reference_models training checkpoint"):
        torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
        load_checkpoint(tmp_path / "other.pt")


def test_resume_from_truncated_last_fails_clearly_and_keeps_best(tmp_path):
    train(TrainConfig(train_size=16, val_size=8, batch_size=8, epochs=1, workers=0, grid_samples=0), tmp_path, progress=False)
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    best_bytes = best.read_bytes()
    last.write_bytes(last.read_bytes()[:5000])
    result = _run(["--out", str(tmp_path), "--resume"], timeout=300)
    assert result.returncode != 0
    assert "last.pt: cannot read checkpoint" in result.stderr
    assert best.read_bytes() == best_bytes
    model = load_model(best)  # the previous good checkpoint still loads
    assert model.config.name == "lavt_sadlr_tiny"


def _assert_same_training(got: dict, expected: dict, *, steps: int, lr: float = 2e-3) -> None:
    """Two runs that must agree up to summation order took the same steps.

    Adam divides by sqrt(v): for a weight whose gradient is near zero, a difference in the
    last bits of the gradient (another summation order: two processes, two micro-batches,
    another CPU's vector width) can flip the update's sign, moving that weight by up to
    2 lr per step. A wrong reduction or different data moves nearly every weight.
    """
    total = close = 0
    for key in expected:
        diff = (got[key].double() - expected[key].double()).abs()
        assert diff.max() <= 2 * lr * steps + 1e-6, f"{key}: max difference {float(diff.max()):.2e}"
        if expected[key].is_floating_point():
            total += diff.numel()
            close += int((diff <= 1e-4).sum())
    # measured (2-core x86 CPU, torch 2.14.1): 99.994% of weights agree to 1e-4 after two
    # accumulated steps; different data or a missing reduction moves nearly all by ~lr
    assert close / total > 0.9995, f"only {close} of {total} weights agree to 1e-4"


def test_ddp_two_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    common = QUICK[:4] + ["--workers", "0", "--epochs", "1", "--max-steps", "3", "--model-arg", "norm=group"]
    single = _run(common + ["--batch-size", "8", "--out", str(tmp_path / "one")], timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "reference_models.train", *common, "--batch-size", "4", "--out", str(tmp_path / "two")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert torchrun.returncode == 0, torchrun.stderr[-3000:]
    one, two = _weights(tmp_path / "one" / "last.pt"), _weights(tmp_path / "two" / "last.pt")
    assert load_checkpoint(tmp_path / "two" / "last.pt")["step"] == 3
    _assert_same_training(two, one, steps=3)
    # and training really moved the weights away from the (seeded) initialisation
    from reference_models.registry import build_from_config
    from reference_models.config import ModelConfig

    torch.manual_seed(0)
    initial = build_from_config(ModelConfig.from_dict(load_checkpoint(tmp_path / "one" / "last.pt")["model_config"])).state_dict()
    assert sum(not torch.equal(initial[k], one[k]) for k in one if one[k].is_floating_point()) > 10


def test_evaluate_on_refer_export_matches_direct_metrics(tmp_path):
    from torch.utils.data import DataLoader

    from reference_models.data.refer import ReferDataset
    from reference_models.data.samples import collate
    from reference_models.data.synthetic import export_refer
    from reference_models.evaluate import main as evaluate_main
    from reference_models.base import build_tokenizer
    from rislayers import RISMetrics

    train(TrainConfig(train_size=32, val_size=8, batch_size=8, epochs=1, workers=0, grid_samples=0), tmp_path / "run", progress=False)
    root = tmp_path / "refer"
    export_refer(root, counts={"train": 1, "val": 4, "test": 1}, image_size=64, progress=False)
    # A briefly trained model predicts nothing; shift its foreground score so that it predicts
    # partial masks and the comparison is not 0 == 0.
    model = load_model(tmp_path / "run" / "best.pt").eval()
    data = ReferDataset(root, "synthetic", "unc", "val", tokenizer=build_tokenizer(model.config), image_size=64, all_sentences=True)
    batch = collate([data[i] for i in range(4)])
    with torch.no_grad():
        logits = model(batch["image"], batch["input_ids"], batch["attention_mask"]).logits
        model.head.refiner.classifier.bias[1] -= float(logits.quantile(0.8))
    checkpoint = model.save_pretrained(tmp_path / "shifted")
    out_json = tmp_path / "eval.json"
    code = evaluate_main(
        ["--checkpoint", str(checkpoint), "--data", f"refer:{root}", "--dataset", "synthetic", "--split", "val",
         "--workers", "0", "--protocol", "resized", "--json", str(out_json)]
    )
    assert code == 0
    reported = json.loads(out_json.read_text())["val"]

    direct = RISMetrics()
    with torch.no_grad():
        for batch in DataLoader(data, batch_size=5, collate_fn=collate):
            logits = model(batch["image"], batch["input_ids"], batch["attention_mask"]).logits
            direct.update(logits[:, 0] > 0, batch["mask"])
    assert len(direct) == len(data) >= 4 * 3  # every sentence of every ref is one sample
    assert 0 < direct.compute()["oIoU"] < 1
    by_length = reported.pop("oIoU_by_length")  # evaluate's extra: oIoU per sentence length
    assert sum(b["samples"] for b in by_length.values()) == len(data)
    iterations = reported.pop("by_iteration")  # SADLR's extra: every iteration's mask scored
    assert iterations[-1] == pytest.approx(direct.compute(), abs=1e-12)
    unreadable = reported.pop("unreadable")  # evaluate's extra: sentences with words the model cannot read
    assert unreadable["of"] == len(data) and 0 <= unreadable["sentences"] <= len(data)
    assert reported == pytest.approx(direct.compute(), abs=1e-12)


def test_predict_writes_pictures_a_person_can_open(tmp_path):
    from PIL import Image

    from reference_models.predict import main as predict_main

    train(TrainConfig(train_size=16, val_size=8, batch_size=8, epochs=1, workers=0, grid_samples=0), tmp_path / "run", progress=False)
    image = tmp_path / "photo.jpg"
    Image.new("RGB", (90, 60), (200, 30, 30)).save(image)
    out = tmp_path / "pred.png"
    assert predict_main(["--checkpoint", str(tmp_path / "run" / "last.pt"), "--image", str(image), "--text", "the red circle", "--out", str(out)]) == 0
    with Image.open(out) as overlay, Image.open(tmp_path / "pred_mask.png") as mask:
        assert overlay.size == (90, 60) and overlay.mode == "RGB"
        assert mask.size == (90, 60) and set(np.unique(np.asarray(mask)).tolist()) <= {0, 255}


def test_predict_names_a_corrupt_image(tmp_path):
    from reference_models.predict import main as predict_main

    train(TrainConfig(train_size=16, val_size=8, batch_size=8, epochs=1, workers=0, grid_samples=0, max_steps=1), tmp_path / "run", progress=False)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(Exception, match="broken.png"):
        predict_main(["--checkpoint", str(tmp_path / "run" / "last.pt"), "--image", str(bad), "--text", "x", "--out", str(tmp_path / "o.png")])


def test_training_on_refer_data_switches_tiny_models_to_bert_vocabulary(tmp_path):
    from reference_models.data.synthetic import export_refer

    export_refer(tmp_path / "refer", counts={"train": 3, "val": 1, "test": 1}, image_size=64, progress=False)
    cfg = TrainConfig(data=f"refer:{tmp_path / 'refer'}", dataset="synthetic", batch_size=4, epochs=2, workers=0, grid_samples=2)
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["steps"] == 2 * 3  # 3 images x 3 refs, one sample per ref and epoch
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    from reference_models.config import ModelConfig

    assert ModelConfig.from_dict(state["model_config"]).text.tokenizer == "bert"
    assert (tmp_path / "run" / "samples.png").is_file()


def test_gradient_accumulation_equals_one_large_batch(tmp_path):
    # group norm: per-sample statistics, so 2 micro-batches of 4 see what one batch of 8 sees
    common = {"train_size": 16, "val_size": 8, "epochs": 1, "workers": 0, "grid_samples": 0, "model_args": ("norm=group",)}
    train(TrainConfig(batch_size=8, **common), tmp_path / "big", progress=False)
    train(TrainConfig(batch_size=4, grad_accum=2, **common), tmp_path / "accum", progress=False)
    big, accum = _weights(tmp_path / "big" / "last.pt"), _weights(tmp_path / "accum" / "last.pt")
    assert load_checkpoint(tmp_path / "accum" / "last.pt")["step"] == 2
    _assert_same_training(accum, big, steps=2)


def test_bf16_autocast_training_step_is_finite(tmp_path):
    summary = train(
        TrainConfig(train_size=16, val_size=8, batch_size=8, epochs=1, workers=0, grid_samples=0, amp="bf16"), tmp_path, progress=False
    )
    assert summary["steps"] == 2
    state = load_checkpoint(tmp_path / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)


def test_bad_training_options_are_clear():
    with pytest.raises(ValueError, match="--amp: expected 'none', 'bf16' or 'fp16'; got 'fp8'"):
        TrainConfig(amp="fp8")
    with pytest.raises(ValueError, match="--data: expected 'synthetic' or 'refer:ROOT'"):
        TrainConfig(data="coco")
    with pytest.raises(ValueError, match="--model-arg: expected KEY=VALUE"):
        TrainConfig(model_args=("norm",)).model_overrides()


def test_cli_user_errors_are_one_line_not_a_traceback(tmp_path):
    result = _run(["--model", "lavt_sadlr_huge", "--out", str(tmp_path / "x")], timeout=120)
    assert result.returncode == 2
    assert "error: name: unknown model 'lavt_sadlr_huge'" in result.stderr and "available: " in result.stderr
    assert "Traceback" not in result.stderr


def test_resume_refuses_another_world_size_and_a_finished_run_keeps_its_summary(tmp_path):
    cfg = TrainConfig(train_size=16, val_size=8, batch_size=8, epochs=1, workers=0, grid_samples=0)
    first = train(cfg, tmp_path, progress=False)
    again = train(cfg, tmp_path, resume=True, progress=False)  # nothing left to do
    assert again["val"] == first["val"] and again["steps"] == first["steps"]
    state = load_checkpoint(tmp_path / "last.pt")
    state["world"] = 2
    save_checkpoint(state, tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"world size: the run in .* was trained by 2 process\(es\); resume it with 2 \(now 1\)"):
        train(cfg, tmp_path, resume=True, progress=False)


TINY = {"train_size": 16, "val_size": 8, "batch_size": 8, "workers": 0, "grid_samples": 0}


def test_fresh_run_refuses_a_folder_holding_a_run_and_leaves_it_untouched(tmp_path, monkeypatch):
    import reference_models.training.run as run_module

    train(TrainConfig(max_steps=1, **TINY), tmp_path, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    message = r"--out: .* already holds a run \(config.json, last.pt, best.pt, metrics.jsonl, summary.json\); pass --resume"
    with pytest.raises(ValueError, match=message):
        train(TrainConfig(max_steps=1, seed=1, **TINY), tmp_path, progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # a run that starts in the same folder after the check still cannot take it over
    raced = tmp_path / "raced"
    raced.mkdir()
    (raced / "config.json").write_text("{}")
    monkeypatch.setattr(run_module, "refuse_existing_run", lambda out_dir: None)
    with pytest.raises(ValueError, match=r"raced already holds a run \(config.json\); it has no last.pt to resume from"):
        train(TrainConfig(max_steps=1, **TINY), raced, progress=False)
    assert [p.name for p in raced.iterdir()] == ["config.json"]


def test_default_run_folders_started_in_the_same_second_do_not_mix(tmp_path, monkeypatch):
    import reference_models.training.run_folder as run_folder_module
    from datetime import datetime

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2024, 1, 2, 3, 4, 5)

    monkeypatch.setattr(run_folder_module, "datetime", Frozen)
    monkeypatch.chdir(tmp_path)
    first = train(TrainConfig(max_steps=1, **TINY), progress=False)
    second = train(TrainConfig(max_steps=1, seed=1, **TINY), progress=False)
    assert first["out"] == str(Path("runs") / "lavt_sadlr_tiny-20240102-030405")
    assert second["out"] == first["out"] + "-2"
    for summary in (first, second):
        rows = [json.loads(line) for line in (tmp_path / summary["out"] / "metrics.jsonl").read_text().splitlines()]
        assert [("loss" in r, "val" in r) for r in rows] == [(True, False), (False, True)]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "gpu"], "--device: expected 'cpu', 'cuda', 'cuda:N' or 'mps'; got 'gpu'"),
        pytest.param(
            ["--device", "cuda"], "--device: 'cuda' requested but",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU"),
        ),
        (["--image-size", "50"], r"--image-size: expected a multiple of 4 \(Swin's patch size\); got 50"),
        (["--model", "s2rm_tiny", "--image-size", "36"], "--image-size: S2RM's coparser .* multiple of 32; got 36"),
        (["--model", "asda_tiny", "--image-size", "36"], "--image-size: expected a multiple of patch_size=8; got 36"),
        (["--threads", "0"], "--threads: expected >= 1; got 0"),
        (["--max-steps", "0"], "--max-steps: expected >= 1; got 0"),
        (["--workers", "-1"], "^--workers: expected >= 0; got -1$"),
        (["--lr", "-1"], "--lr: expected a positive number; got -1.0"),
        (["--weight-decay", "-0.1"], "--weight-decay: expected a number >= 0; got -0.1"),
    ],
)
def test_bad_cli_options_name_their_flag_and_create_no_folder(tmp_path, args, message):
    from reference_models.train import main

    out = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        main(["--train-size", "16", "--val-size", "8", "--workers", "0", *args, "--out", str(out)])
    assert not out.exists()


def test_image_sizes_swin_takes_train_end_to_end(tmp_path):
    # Swin needs a multiple of its patch (4), not of 32: 36 px gives a padded 2x2 last stage
    summary = train(TrainConfig(image_size=36, max_steps=1, **TINY), tmp_path, progress=False)
    assert summary["steps"] == 1
    assert load_checkpoint(tmp_path / "last.pt")["model_config"]["image_size"] == 36


def test_resume_says_where_it_continues_and_which_given_flags_it_ignores(tmp_path, capsys):
    from reference_models.train import main

    train(TrainConfig(epochs=1, **TINY), tmp_path, progress=False)
    capsys.readouterr()
    assert main(["--out", str(tmp_path), "--resume", "--lr", "0.1", "--max-steps", "5", "--workers", "0", "--seed", "0"]) == 0
    err = capsys.readouterr().err
    # --workers 0 and --seed 0 match the saved configuration: nothing is ignored there
    assert f"warning: {tmp_path} keeps its saved configuration; ignoring --lr 0.1 (saved: 0.002), --max-steps 5 (saved: none)\n" in err
    assert f"{tmp_path} finished at step 2; nothing to do" in err

    state = load_checkpoint(tmp_path / "last.pt")
    state["train_config"]["epochs"] = 2  # as if the run had been killed after its first epoch
    save_checkpoint(state, tmp_path / "last.pt")
    assert main(["--out", str(tmp_path), "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"resuming {tmp_path} from step 2 of 4 (epoch 2 of 2)" in err and "warning" not in err
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 4


def test_resume_takes_machine_settings_from_the_command_line(tmp_path, capsys):
    from reference_models.train import main

    train(TrainConfig(epochs=1, **TINY), tmp_path, progress=False)
    state = load_checkpoint(tmp_path / "last.pt")
    # as if the run had been started on a GPU and killed after its first epoch
    state["train_config"].update(device="cuda", epochs=2, threads=2)
    save_checkpoint(state, tmp_path / "last.pt")
    capsys.readouterr()
    assert main(["--out", str(tmp_path), "--resume", "--device", "cpu", "--threads", "1", "--text-blind", "--no-sync-bn"]) == 0
    err = capsys.readouterr().err
    # --device/--threads are this machine's: used, not warned about; switches are named by their flag
    assert f"ignoring --text-blind on (saved: off), --no-sync-bn on (saved: off)\n" in err
    saved = load_checkpoint(tmp_path / "last.pt")["train_config"]
    assert saved["device"] == "cpu" and saved["threads"] == 1 and saved["text_blind"] is False


def test_resume_refuses_a_weights_only_checkpoint(tmp_path):
    train(TrainConfig(max_steps=1, **TINY), tmp_path, progress=False)
    (tmp_path / "last.pt").write_bytes((tmp_path / "best.pt").read_bytes())
    with pytest.raises(ValueError, match=r"--resume: .*last.pt holds weights only \(no optimizer, scheduler, scaler, rng\)"):
        train(TrainConfig(**TINY), tmp_path, resume=True, progress=False)


@pytest.mark.parametrize("max_steps, last_epoch_batches", [(None, 2), (3, 1)])
def test_progress_bars_end_at_their_total(tmp_path, capsys, max_steps, last_epoch_batches):
    import re

    # 2 batches per epoch; the run ends on the last batch (no limit) or mid-epoch (3 steps)
    cfg = TrainConfig(epochs=2, max_steps=max_steps, **{**TINY, "train_size": 8, "batch_size": 4})
    train(cfg, tmp_path, progress=True)
    err = capsys.readouterr().err
    bars = re.findall(r"(epoch \d/2): +\d+%\|[^|]*\| (\d+)/(\d+)", err)
    final = {desc: (int(n), int(total)) for desc, n, total in bars}  # each bar's last state
    assert final == {"epoch 1/2": (2, 2), "epoch 2/2": (last_epoch_batches, last_epoch_batches)}
    # The validation line names the epoch its bar showed, also when --max-steps cut it short.
    labels = re.findall(r"^(epoch [^:]*): oIoU", err.replace("\r", "\n"), flags=re.MULTILINE)
    assert labels == ["epoch 1", "epoch 2" if max_steps is None else "epoch 2 (stopped at step 3)"]


def test_help_shows_each_default_once_and_explains_every_flag(capsys):
    from reference_models.train import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    blocks = {block.split()[0]: " ".join(block.split()) for block in text.split("\n  -")[1:]}
    for flag, block in blocks.items():
        assert block.count("default") <= 1, block
    assert "(default: True)" not in blocks["-no-sync-bn"] and "SyncBatchNorm" in blocks["-no-sync-bn"]
    for flag in ("dataset", "split-by", "val-split", "optimizer", "lr", "weight-decay", "schedule", "seed", "log-every"):
        assert len(blocks["-" + flag].split()) > 3, blocks["-" + flag]  # flag, metavar, then a help text
    for flag in ("optimizer", "lr", "weight-decay", "schedule"):
        assert "default: the model's recipe" in blocks["-" + flag]
