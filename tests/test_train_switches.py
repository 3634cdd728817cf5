"""train's memory and GPU switches: --grad-checkpointing, TF32, the fused optimizer, cuDNN's
benchmark: recorded in config.json, kept on --resume, and applied where they apply."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from reference_models.base import RISModel
from reference_models.checkpoint import load_checkpoint, save_checkpoint
from reference_models.train import TrainConfig, train
from reference_models.training import optim
from reference_models.training.config import resume_config
from reference_models.training.precision import apply_backend_settings

TINY = {"train_size": 8, "val_size": 4, "batch_size": 4, "workers": 0, "grid_samples": 0, "image_size": 64, "epochs": 1}


def test_the_switches_are_recorded_and_checkpointing_is_switched_on(tmp_path, monkeypatch):
    switched = []
    original = RISModel.set_grad_checkpointing
    monkeypatch.setattr(RISModel, "set_grad_checkpointing", lambda self, enable=True: switched.append(enable) or original(self, enable))
    train(TrainConfig(grad_checkpointing=True, tf32=False, **TINY), tmp_path, progress=False)
    saved = json.loads((tmp_path / "config.json").read_text())["train"]
    assert (saved["grad_checkpointing"], saved["tf32"], saved["fused_optimizer"], saved["cudnn_benchmark"]) == (True, False, True, True)
    assert switched == [True]


def test_the_command_line_sets_each_switch():
    from reference_models.training.cli import _parser

    args = _parser().parse_args(["--grad-checkpointing", "--no-tf32", "--no-fused-optimizer", "--no-cudnn-benchmark"])
    assert (args.grad_checkpointing, args.tf32, args.fused_optimizer, args.cudnn_benchmark) == (True, False, False, False)
    defaults = _parser().parse_args([])
    assert (defaults.grad_checkpointing, defaults.tf32, defaults.fused_optimizer, defaults.cudnn_benchmark) == (False, True, True, True)


def test_resume_keeps_the_saved_switches_and_takes_the_machines_from_the_command_line():
    saved = TrainConfig(grad_checkpointing=True, tf32=False, fused_optimizer=False)
    kept, ignored = resume_config(TrainConfig(), saved, given=[])
    assert (kept.grad_checkpointing, kept.tf32, kept.fused_optimizer, kept.cudnn_benchmark) == (True, False, False, True)
    asked = TrainConfig(grad_checkpointing=False, tf32=True, fused_optimizer=True)
    resumed, ignored = resume_config(asked, saved, given=["grad_checkpointing", "tf32", "fused_optimizer"])
    # checkpointing and the optimizer's kernel are the machine's; TF32 changes the arithmetic
    assert (resumed.grad_checkpointing, resumed.fused_optimizer, resumed.tf32) == (False, True, False)
    assert ignored == ["--no-tf32 off (saved: on)"]


def test_a_configuration_saved_before_the_switches_ran_without_them():
    data = TrainConfig().to_dict()
    for name in ("grad_checkpointing", "tf32", "fused_optimizer", "cudnn_benchmark"):
        del data[name]
    old = TrainConfig.from_dict(data)
    assert (old.grad_checkpointing, old.tf32, old.fused_optimizer, old.cudnn_benchmark) == (False, False, False, False)


def test_resumed_run_continues_with_checkpointing(tmp_path, capsys):
    from reference_models.train import main

    train(TrainConfig(**TINY), tmp_path, progress=False)
    state = load_checkpoint(tmp_path / "last.pt")
    state["train_config"]["epochs"] = 2  # as if killed after its first epoch
    save_checkpoint(state, tmp_path / "last.pt")
    capsys.readouterr()
    assert main(["--out", str(tmp_path), "--resume", "--grad-checkpointing"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "last.pt")["train_config"]["grad_checkpointing"] is True


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_the_fused_optimizer_only_where_every_parameter_is_on_cuda(monkeypatch, optimizer):
    net = nn.Linear(2, 2)
    cfg = TrainConfig(optimizer=optimizer, lr=1e-3, weight_decay=0.0)
    assert not optim.build_optimizer(net, cfg).defaults.get("fused")  # on the CPU
    monkeypatch.setattr(optim, "fused_applies", lambda model: True)  # as on CUDA
    assert optim.build_optimizer(net, cfg).defaults["fused"] is True
    assert not optim.build_optimizer(net, TrainConfig(optimizer=optimizer, lr=1e-3, weight_decay=0.0, fused_optimizer=False)).defaults.get("fused")


@pytest.fixture
def backend_kept():
    from reference_models.bench.gpu_switches import _backend_kept

    with _backend_kept():
        yield


def test_tf32_and_cudnn_benchmark_are_set_for_a_cuda_run_only(backend_kept):
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.benchmark)
    assert apply_backend_settings(TrainConfig(), torch.device("cpu")) == {}
    assert (matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.benchmark) == before
    assert apply_backend_settings(TrainConfig(), torch.device("cuda")) == {"tf32": True, "cudnn_benchmark": True}
    assert (matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.benchmark) == ("tf32", "tf32", True)
    apply_backend_settings(TrainConfig(tf32=False, cudnn_benchmark=False), torch.device("cuda"))
    assert (matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.benchmark) == ("ieee", "ieee", False)


def test_grad_checkpointing_refuses_a_model_without_a_part_that_checkpoints():
    from reference_models.training.run import _switch_checkpointing

    with pytest.raises(ValueError, match=r"^--grad-checkpointing: Linear has no part that checkpoints$"):
        _switch_checkpointing(nn.Linear(2, 2))
