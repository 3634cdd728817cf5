"""DDP asks for ``find_unused_parameters`` only for models that leave parameters unused.

The dry step behind it (:func:`~reference_models.training.distributed.unused_parameters`)
must name the parameters out of the loss's graph and leave no trace: random numbers,
BatchNorm statistics and gradients as they were.
"""

from __future__ import annotations

import torch

from reference_models import build_model
from reference_models.training.distributed import unused_parameters


def test_a_model_that_uses_every_parameter_has_none_unused():
    assert unused_parameters(build_model("lavt_sadlr_tiny")) == []


def test_parameters_out_of_the_graph_are_named():
    # ASDA reads CLIP's patch tokens, never the pooled image embedding: its projection is unused
    unused = unused_parameters(build_model("asda_tiny"))
    assert "backbone.visual.proj" in unused and all(name.startswith("backbone.visual.") for name in unused)


def test_the_dry_step_leaves_no_trace():
    model = build_model("lavt_sadlr_tiny").eval()
    assert any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    before = {name: value.clone() for name, value in model.state_dict().items()}
    rng = torch.get_rng_state()
    unused_parameters(model)
    assert torch.equal(rng, torch.get_rng_state())
    assert not model.training
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
