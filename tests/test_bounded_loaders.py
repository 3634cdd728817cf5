"""Checkpoints, weight files and releases are read in time and memory bounded by their size.

Each file here is small and crafted to expand when read: shared or self-holding lists in a
checkpoint's values, a zip record that inflates, a tensor view that repeats one element. The
loaders must refuse them in one line, within a few seconds and a memory limit, in a forked child.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from reference_models.checkpoint import CheckpointError, content_digest, load_checkpoint
from reference_models.convert.lavt import ConversionError, read_lavt_release
from reference_models.weights import WeightsError, read_state_dict

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the crafted files are read in a forked child")


def _child(connection, function, args, memory: int) -> None:
    # ``memory`` bytes above what the process maps already: a loader that inflates the file
    # gets a MemoryError here instead of taking the machine's memory.
    pages = int(Path("/proc/self/statm").read_text().split()[0]) if os.path.exists("/proc/self/statm") else 0
    cap = pages * resource.getpagesize() + memory
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        function(*args)
        connection.send(("loaded", ""))
    except BaseException as error:  # noqa: BLE001 - reported to the test, which judges it
        connection.send((type(error).__name__, str(error)))


def _bounded(function, *args, memory: int = 256 << 20, timeout: float = 20.0) -> tuple[str, str]:
    """``(outcome, message)`` of ``function(*args)`` in a fresh fork, or fail on a hang."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(sender, function, args, memory))
    child.start()
    try:
        if not receiver.poll(timeout):
            pytest.fail(f"{function.__name__}{args}: did not finish within {timeout} s")
        return receiver.recv()
    finally:
        child.kill()
        child.join()


def _with_pickle(path: Path, payload: bytes) -> Path:
    """A torch zip file whose ``data.pkl`` is ``payload`` (the other records as torch writes them)."""
    template = path.with_suffix(".template")
    torch.save({}, template)
    with zipfile.ZipFile(template) as source, zipfile.ZipFile(path, "w") as target:
        for record in source.infolist():
            data = payload if record.filename.endswith("/data.pkl") else source.read(record)
            target.writestr(record.filename, data)
    return path


def _text(value: str) -> bytes:
    encoded = value.encode()
    return b"X" + struct.pack("<I", len(encoded)) + encoded  # BINUNICODE


def _inflating(path: Path, nbytes: int) -> Path:
    """A torch file of a few hundred kB whose one tensor record inflates to ``nbytes``."""
    template = path.with_suffix(".template")
    torch.save({"w": torch.zeros(4)}, template)
    with zipfile.ZipFile(template) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for record in source.infolist():
            if "/data/" in record.filename and not record.filename.endswith(".pkl"):
                with target.open(record.filename, "w", force_zip64=True) as stream:
                    for _ in range(nbytes >> 24):
                        stream.write(bytes(1 << 24))
                continue
            data = source.read(record)
            if record.filename.endswith("/data.pkl"):
                # the storage's element count, 4 (BININT1), becomes nbytes / 4 (BININT)
                data = data.replace(b"K\x04", b"J" + struct.pack("<i", nbytes // 4), 1)
            target.writestr(record.filename, data)
    return path


def _checkpoint_of(path: Path, extra: object) -> Path:
    torch.save({"model": {}, "model_config": {}, "extra": extra, "digest": "0" * 64}, path)
    return path


# -- checkpoints: the digest walk ------------------------------------------------------------------


def test_shared_lists_in_a_checkpoint_are_refused_at_once(tmp_path):
    shared: list = [0]
    for _ in range(60):  # 2**60 lists when read as a tree: the digest walk would never end
        shared = [shared, shared]
    file = _checkpoint_of(tmp_path / "shared.pt", shared)
    outcome, message = _bounded(load_checkpoint, file, timeout=10)
    assert outcome == "CheckpointError", message
    assert message.startswith(f"{file}: refusing a checkpoint whose values") and "about 2**" in message
    assert "\n" not in message


def test_a_list_that_holds_itself_is_refused(tmp_path):
    loop: list = []
    loop.append(loop)
    file = _checkpoint_of(tmp_path / "loop.pt", loop)
    outcome, message = _bounded(load_checkpoint, file)
    assert (outcome, message) == ("CheckpointError", f"{file}: refusing a checkpoint with a list that contains itself; a checkpoint holds no cycles")


def test_deeply_nested_values_are_digested_without_recursion(tmp_path):
    depth = 5000  # five times Python's recursion limit; torch.save itself cannot write it
    nested: list = []
    for _ in range(depth - 1):
        nested = [nested]
    digest = content_digest({"model": {}, "model_config": {}, "extra": nested})
    items = (
        _text("model") + b"}" + _text("model_config") + b"}"
        + _text("extra") + b"]" * depth + b"a" * (depth - 1)  # EMPTY_LISTs, each APPENDed into the one below
        + _text("digest") + _text(digest)
    )
    file = _with_pickle(tmp_path / "deep.pt", b"\x80\x02}(" + items + b"u.")
    state = load_checkpoint(file)
    assert state["digest"] == digest


def test_a_tensor_view_that_repeats_its_storage_is_refused_before_it_is_made_real(tmp_path):
    file = tmp_path / "view.pt"  # 2 kB declaring a 1 GiB tensor over one element
    torch.save({"model": {"w": torch.zeros(1).expand(2**28)}, "model_config": {}, "digest": "0" * 64}, file)
    outcome, message = _bounded(load_checkpoint, file)
    assert outcome == "CheckpointError", message
    assert message.startswith(f"{file}: refusing a checkpoint whose values") and "1,073,742," in message


# -- weight files and releases: declared sizes before allocating ----------------------------------


@pytest.fixture(scope="module")
def inflating(tmp_path_factory) -> Path:
    return _inflating(tmp_path_factory.mktemp("bomb") / "release.pth", 256 << 20)


@pytest.mark.parametrize(
    ("loader", "error"),
    [(load_checkpoint, "CheckpointError"), (read_state_dict, "WeightsError"), (read_lavt_release, "ConversionError")],
)
def test_a_zip_record_that_inflates_is_refused_before_it_is(inflating, loader, error):
    assert os.path.getsize(inflating) < 1 << 20
    outcome, message = _bounded(loader, inflating, memory=128 << 20)
    assert outcome == error, message
    assert message.startswith(f"{inflating}: refusing a zip whose records expand to 268,435,")
    assert "release/data/0 alone 268,435,456" in message


def test_weights_holding_a_view_that_repeats_its_storage_are_refused(tmp_path):
    file = tmp_path / "view.pth"
    torch.save({"state_dict": {"w": torch.zeros(1).expand(2**28), "b": torch.ones(2)}}, file)
    with pytest.raises(WeightsError, match=r"refusing tensors of 1,073,741,832 bytes in all \(w alone 1,073,741,824\)"):
        read_state_dict(file)


def test_a_release_holding_a_view_that_repeats_its_storage_is_refused(tmp_path):
    file = tmp_path / "lavt.pth"
    view = torch.zeros(1).expand(2**28)
    torch.save({"model": {"backbone.layers.0.fusion.w": view}, "bert_model": {"embeddings.w": torch.ones(2)}}, file)
    with pytest.raises(ConversionError, match=r"refusing tensors of .* \(backbone.layers.0.fusion.w alone 1,073,741,824\)"):
        read_lavt_release(file)


def test_a_safetensors_header_beyond_the_file_is_one_line(tmp_path):
    # safetensors checks the offsets its header declares against the file before allocating
    header = json.dumps({"w": {"dtype": "F32", "shape": [2**29], "data_offsets": [0, 2**31]}}).encode()
    file = tmp_path / "model.safetensors"
    file.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    outcome, message = _bounded(read_state_dict, file, memory=128 << 20)
    assert outcome == "WeightsError" and message.startswith(f"{file}: cannot read weights") and "\n" not in message


def test_ordinary_files_still_load(tmp_path):
    tied = torch.randn(8, 4)
    file = tmp_path / "w.pth"
    torch.save({"a": tied, "b": tied, "c": torch.arange(3)}, file)  # tied weights count twice
    assert set(read_state_dict(file)) == {"a", "b", "c"}
