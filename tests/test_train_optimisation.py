"""Training's optimisation options: frozen parts, layer-wise rates, starting from saved weights."""

from __future__ import annotations

import pytest
import torch

from reference_models.checkpoint import load_checkpoint
from reference_models.train import TrainConfig, train


def _one_batch(model, size=64, b=2, l=6):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(b, 3, size, size, generator=g)
    ids = torch.randint(1, 100, (b, l), generator=g)
    return images, ids, torch.ones(b, l, dtype=torch.long), torch.rand(b, size, size, generator=g) > 0.5


def _optimizer_params(optimizer) -> list[torch.nn.Parameter]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def test_frozen_parts_stay_unchanged_and_are_left_out_of_the_optimizer():
    from reference_models.training.model import build_run_model
    from reference_models.training.optim import build_optimizer

    cfg = TrainConfig(freeze=("backbone", "text_encoder.bert.embeddings"), lr=1e-2).resolved()
    model = build_run_model(cfg, None)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith(("backbone.", "text_encoder.bert.embeddings."))}
    optimizer = build_optimizer(model, cfg)
    in_optimizer = {id(p) for p in _optimizer_params(optimizer)}
    names = dict(model.named_parameters())
    assert in_optimizer == {id(p) for n, p in names.items() if n not in frozen}
    before = {n: p.detach().clone() for n, p in names.items()}
    images, ids, mask, target = _one_batch(model)
    for _ in range(3):
        optimizer.zero_grad()
        model.loss(model(images, ids, mask), target).backward()
        optimizer.step()
    assert all(torch.equal(names[n], before[n]) for n in frozen)
    changed = [n for n in names if n not in frozen and not torch.equal(names[n], before[n])]
    assert len(changed) > 0.8 * (len(names) - len(frozen))


def test_freeze_reproduces_lavts_bert_optimizer_with_layer_names():
    # LAVT's train.py optimizes BERT's encoder layers 0-9 only: embeddings and layers 10-11 stay
    from reference_models import build_model
    from reference_models.training.optim import freeze_modules

    model = build_model("lavt_tiny", text_layers=12)
    names = ["text_encoder.bert.embeddings", "text_encoder.bert.encoder.layer.10", "text_encoder.bert.encoder.layer.11"]
    frozen = freeze_modules(model, names)
    assert frozen and all(n.startswith(tuple(names)) for n in frozen)
    trained_text = {n.split(".")[4] for n, p in model.text_encoder.named_parameters(prefix="text_encoder") if p.requires_grad}
    assert trained_text == {str(i) for i in range(10)}


def test_unknown_freeze_names_list_what_is_there_in_one_line(tmp_path):
    from reference_models.train import main

    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"^--freeze: no module 'nope' in the model; the model's top-level parts are: "
                                         r"text_encoder, backbone, fusions, gates, decoder, head$"):
        main(["--train-size", "16", "--val-size", "8", "--workers", "0", "--freeze", "backbone,nope", "--out", str(out)])
    assert not out.exists()
    from reference_models import build_model
    from reference_models.training.optim import freeze_modules

    with pytest.raises(ValueError, match=r"^--freeze: no module 'text_encoder.embeddings' in the model; 'text_encoder' holds: bert$"):
        freeze_modules(build_model("lavt_tiny"), ["text_encoder.embeddings"])
    with pytest.raises(ValueError, match="--freeze: .* leaves no parameter to train"):
        freeze_modules(build_model("lavt_tiny"), ["text_encoder", "backbone", "fusions", "gates", "decoder", "head"])
    with pytest.raises(ValueError, match="--backbone-lr-scale: expected a number >= 0; got -1.0"):
        main(["--backbone-lr-scale", "-1", "--out", str(out)])


def test_backbone_lr_scale_sets_the_backbone_groups_rate_and_the_schedule_keeps_the_ratio():
    from reference_models.training.model import build_run_model
    from reference_models.training.optim import build_optimizer, build_scheduler

    cfg = TrainConfig(backbone_lr_scale=0.1, lr=1e-3, freeze=("text_encoder",)).resolved()
    model = build_run_model(cfg, None)
    optimizer = build_optimizer(model, cfg)
    backbone = {id(p) for p in model.backbone.parameters()}
    for group in optimizer.param_groups:
        ids = {id(p) for p in group["params"]}
        assert group["params"] and (ids <= backbone or not ids & backbone)
        assert group["lr"] == pytest.approx(1e-4 if ids <= backbone else 1e-3)
    assert len(optimizer.param_groups) == 4  # decay / no decay, backbone / the rest
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sorted(map(id, _optimizer_params(optimizer))) == sorted(map(id, trainable))  # each once
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=10, total_steps=10)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    rates = {round(g["lr"] / cfg.lr, 12) for g in optimizer.param_groups}
    assert len(rates) == 2 and max(rates) == pytest.approx(10 * min(rates)) and max(rates) < 1
    # the default keeps the two groups of before (and the optimizer states of earlier runs)
    default = build_optimizer(build_run_model(TrainConfig().resolved(), None), TrainConfig().resolved())
    assert [g["weight_decay"] for g in default.param_groups] == [pytest.approx(1e-2), 0.0]


def test_freeze_and_lr_scale_from_the_command_line_reach_the_run(tmp_path):
    from reference_models.train import main

    out = tmp_path / "run"
    args = ["--train-size", "16", "--val-size", "8", "--batch-size", "8", "--workers", "0", "--grid-samples", "0", "--max-steps", "2"]
    main([*args, "--freeze", "backbone, text_encoder.bert.embeddings", "--backbone-lr-scale", "0.5", "--out", str(out)])
    state = load_checkpoint(out / "last.pt")
    assert tuple(state["train_config"]["freeze"]) == ("backbone", "text_encoder.bert.embeddings")
    assert state["train_config"]["backbone_lr_scale"] == 0.5
    torch.manual_seed(0)  # the run's seed: its model started from these weights
    from reference_models.training.model import build_run_model

    start = build_run_model(TrainConfig.from_dict(state["train_config"]).resolved(), None).state_dict()
    for key, value in state["model"].items():
        if key.startswith(("backbone.", "text_encoder.bert.embeddings.")) and value.is_floating_point() and "running" not in key:
            assert torch.equal(value, start[key]), key
    assert not torch.equal(state["model"]["decoder.blocks.0.0.0.weight"], start["decoder.blocks.0.0.0.weight"])


def test_init_from_starts_the_run_from_a_save_pretrained_folder(tmp_path):
    from reference_models import build_model
    from reference_models.train import main

    torch.manual_seed(123)
    source = build_model("lavt_sadlr_tiny")
    source.save_pretrained(tmp_path / "start")
    out = tmp_path / "run"
    args = ["--train-size", "16", "--val-size", "8", "--batch-size", "8", "--workers", "0", "--grid-samples", "0", "--max-steps", "1"]
    main([*args, "--init-from", str(tmp_path / "start"), "--freeze", "backbone", "--out", str(out)])
    state = load_checkpoint(out / "last.pt")
    assert state["train_config"]["init_from"] == str(tmp_path / "start")
    start = source.state_dict()
    # frozen parts keep the folder's weights exactly; nothing was re-initialised
    backbone = [k for k in state["model"] if k.startswith("backbone.") and "running" not in k and state["model"][k].is_floating_point()]
    assert backbone and all(torch.equal(state["model"][k], start[k]) for k in backbone)
    # another model than the folder's is refused in one line, before any folder is made
    with pytest.raises(ValueError, match=r"^--init-from: .* holds a 'lavt_sadlr_tiny' model; --model says 'lts_tiny'"):
        main([*args, "--init-from", str(tmp_path / "start"), "--model", "lts_tiny", "--out", str(tmp_path / "other")])
    with pytest.raises(ValueError, match=r"^--init-from: .*config.json: no model config here"):
        main([*args, "--init-from", str(tmp_path / "nowhere"), "--out", str(tmp_path / "other")])
    assert not (tmp_path / "other").exists()
