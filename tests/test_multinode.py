"""Two machines, as the distributed guide shows them: two ``torchrun`` launches joined by a
c10d rendezvous, here both on this machine (CPU, gloo), one process each. They must end with
the weights of one process trained with the same global batch (test_train's parity bounds).
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys

from reference_models.checkpoint import load_checkpoint
from reference_models.training.cli import main as train_main
from tests.test_train import QUICK, ROOT, _assert_same_training, _weights


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_equal_one_process_with_the_same_global_batch(tmp_path):
    common = QUICK[:4] + ["--workers", "0", "--epochs", "1", "--max-steps", "3", "--model-arg", "norm=group"]
    # the one-process reference runs in this process: a third interpreter start costs more than its training
    with contextlib.redirect_stdout(io.StringIO()):
        assert train_main([*common, "--batch-size", "8", "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # The guide's command, once per machine: the same flags on both, the endpoint on the first.
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
            "--rdzv_backend", "c10d", "--rdzv_endpoint", f"localhost:{_free_port()}", "--rdzv_id", "multinode-test",
            "-m", "reference_models.train", *common, "--batch-size", "4", "--out", str(tmp_path / "two")]
    launches = [subprocess.Popen(node, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        outputs = [launch.communicate(timeout=300) for launch in launches]
    finally:
        for launch in launches:
            if launch.poll() is None:
                launch.kill()
    for launch, (_, err) in zip(launches, outputs):
        assert launch.returncode == 0, err[-3000:]
    assert load_checkpoint(tmp_path / "two" / "last.pt")["step"] == 3
    _assert_same_training(_weights(tmp_path / "two" / "last.pt"), _weights(tmp_path / "one" / "last.pt"), steps=3)
    # every parameter of this model is used: DDP was not asked to look for unused ones
    assert not any("find_unused_parameters=True" in err for _, err in outputs)
