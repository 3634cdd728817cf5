"""Test configuration: a reproducible hypothesis profile and shared fixtures."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# The scripts that wrote the fixtures ran against older code; they are records, not tests.
collect_ignore_glob = ["fixtures/*"]

# "ci" (the default) is derandomized so a red run reproduces exactly, bounded so the suite
# stays fast on 2 cores, and has no deadline because CPU timing on shared machines varies.
# HYPOTHESIS_PROFILE=thorough explores far more examples locally.
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=12,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Every test starts from the same torch seed; one intra-op thread per xdist worker."""
    torch.manual_seed(0)
    yield


def pytest_configure(config):
    # Two xdist workers on two cores: more intra-op threads only oversubscribe.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
