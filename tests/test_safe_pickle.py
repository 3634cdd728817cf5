"""The plain-data unpickler: crafted pickles that hang, exhaust memory or crash are refused fast.

The crafted pickles run in a forked child with a deadline and a memory cap, so that a
regression fails its test instead of hanging the suite, filling the machine's memory or
killing the test process.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import pickletools
import resource
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_models.data.errors import DataError
from reference_models.data.pickle_scan import _TABLE
from reference_models.data.safe_pickle import (
    BadPickleError,
    UnsafePickleError,
    load_plain_pickle,
    loads_plain_pickle,
)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the crafted pickles run in a forked child")


def _child(connection, data: bytes, source: str) -> None:
    # A gigabyte above what the process already maps: a regression that lets CPython size its
    # memo by a crafted index gets a MemoryError here instead of taking the machine's memory.
    pages = int(open("/proc/self/statm").read().split()[0]) if os.path.exists("/proc/self/statm") else 0
    cap = pages * resource.getpagesize() + (1 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        loads_plain_pickle(data, source=source)
        connection.send(("loaded", ""))
    except BadPickleError as error:
        connection.send((type(error).__name__, str(error)))
    except BaseException as error:  # noqa: BLE001 - reported to the test, which fails on it
        connection.send(("escaped", f"{type(error).__name__}: {error}"))


def _load_in_child(data: bytes, source: str, timeout: float = 20.0) -> tuple[str, str]:
    """``(outcome, message)`` of loads_plain_pickle in a fresh fork, or fail on a hang or crash."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(sender, data, source))
    child.start()
    try:
        if not receiver.poll(timeout):
            pytest.fail(f"{source}: loading did not finish within {timeout} s (exit code {child.exitcode})")
        return receiver.recv()
    finally:
        child.kill()
        child.join()


def _self_list() -> bytes:
    # PROTO 2, EMPTY_LIST, BINPUT 0, BINGET 0, APPEND, STOP: a list that holds itself.
    return b"\x80\x02]q\x00h\x00a."


def _shared_lists(depth: int) -> bytes:
    # Level i is a list holding level i-1 twice: 9 bytes a level, 2**depth values as a tree.
    out = bytearray(b"\x80\x02]q\x00")
    for level in range(1, depth + 1):
        out += b"](h" + bytes([level - 1]) + b"h" + bytes([level - 1]) + b"eq" + bytes([level])
    return bytes(out + b".")


COLLIDING = pickle.dumps({i * (2**61 - 1): None for i in range(1, 20_000)}, protocol=2)

CRAFTED = {
    "self-list": (_self_list(), "UnsafePickleError", "a list that contains itself"),
    "shared-lists": (_shared_lists(60), "UnsafePickleError", "expands to more than"),
    "huge-memo-index": (b"\x80\x02]r" + struct.pack("<I", 1_500_000_000) + b".", "UnsafePickleError", "memo index"),
    "deep-tuple-key": (b"\x80\x02})" + b"\x85" * 1_000_000 + b"Ns.", "UnsafePickleError", "nested deeper than 100"),
    "colliding-int-keys": (COLLIDING, "UnsafePickleError", "dict key"),
    "deep-list": (b"\x80\x02" + b"]" * 200_000 + b"a" * 199_999 + b".", "UnsafePickleError", "nested deeper than 100"),
    "huge-bytes-length": (b"\x80\x04\x8d" + struct.pack("<Q", 1 << 62) + b"ab.", "BadPickleError", "truncated"),
    "huge-frame": (b"\x80\x04\x95" + struct.pack("<Q", 1 << 60) + b"N.", "BadPickleError", "frame runs past the end"),
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_pickles_are_refused_quickly_with_the_file_name(name):
    data, kind, fragment = CRAFTED[name]
    outcome, message = _load_in_child(data, f"{name}.p")
    assert outcome == kind, message
    assert message.startswith(f"{name}.p: ") and fragment in message and "\n" not in message


def test_the_self_list_is_the_nine_bytes_an_ordinary_unpickler_accepts():
    data = _self_list()
    assert len(data) == 9
    value = pickle.loads(data)
    assert value[0] is value


def test_shared_structure_within_the_limits_loads():
    part = [1, "two", (3.0, None)]
    assert loads_plain_pickle(pickle.dumps({"a": part, "b": [part, part]})) == {"a": part, "b": [part, part]}
    # Four levels of doubling: 31 values as a tree from 42 bytes.
    value = loads_plain_pickle(_shared_lists(4))
    assert value[0] is value[1]
    with pytest.raises(UnsafePickleError, match="expands to more than 16 values"):
        loads_plain_pickle(_shared_lists(4), max_nodes=16)


def test_sharing_may_not_expand_past_the_file_size():
    # Sixteen levels of doubling: 2**17 values from 150 bytes, far under the default
    # max_nodes; the file's size is the bound.
    with pytest.raises(UnsafePickleError, match="more than 150 values .* the file's size in bytes"):
        loads_plain_pickle(_shared_lists(16), max_nodes=1 << 18)
    # A refs list naming one ref 20,000 times: 40 kB that would read as 20,000 refs.
    ref = {"ref_id": 0, "image_id": 1, "ann_id": 2, "split": "val", "sentences": [{"sent_id": 0, "raw": "the red one"}]}
    data = pickle.dumps([ref] * 20_000, protocol=2)
    with pytest.raises(UnsafePickleError, match="expands to more than"):
        loads_plain_pickle(data, source="refs(unc).p")


def test_deep_nesting_through_the_memo_is_found_by_the_walk():
    # Lists 0..149 are made first, then each is appended into the one before it through the
    # memo, so the opcode scan only ever sees depth 2; the walk over the result sees 150.
    out = bytearray(b"\x80\x02")
    for index in range(150):
        out += b"]r" + struct.pack("<I", index) + b"0"
    for index in range(149):
        out += b"j" + struct.pack("<I", index) + b"j" + struct.pack("<I", index + 1) + b"a0"
    out += b"j" + struct.pack("<I", 0) + b"."
    with pytest.raises(UnsafePickleError, match="nested deeper than 100"):
        loads_plain_pickle(bytes(out), source="chain.p")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (pickle.dumps(os.system, protocol=2), "the global"),
        (pickle.dumps(os.system, protocol=4), "STACK_GLOBAL"),
        (b"\x80\x02NNR.", "REDUCE"),
        (pickle.dumps([{1, 2}], protocol=4), "a set"),
        (pickle.dumps(frozenset({1}), protocol=4), "a frozenset"),
        (pickle.dumps([b"x"], protocol=4), "a bytes object"),
        (pickle.dumps(bytearray(b"x"), protocol=5), "a bytearray object"),
        (b"\x80\x02P1\n.", "a persistent id"),
        (pickle.dumps({0.5: 1}, protocol=2), "dict key"),
        (pickle.dumps({(1, 2): 1}, protocol=2), "dict key"),
        (pickle.dumps({10**30: 1}, protocol=0), "dict key"),
    ],
)
def test_everything_but_plain_data_is_refused(data, fragment):
    with pytest.raises(UnsafePickleError, match="refs.p: refusing .*" + fragment):
        loads_plain_pickle(data, source="refs.p")


def test_errors_are_unpickling_errors_and_data_errors():
    assert issubclass(UnsafePickleError, BadPickleError)
    assert issubclass(BadPickleError, pickle.UnpicklingError) and issubclass(BadPickleError, DataError)
    assert issubclass(BadPickleError, ValueError)  # the command-line tools print it as one line


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "ends without a STOP"),
        (b"hello world", "not a readable pickle"),
        (pickle.dumps([1, "abc"], protocol=2)[:-3], "truncated"),
        (b"\x80\x02h\x05.", "not a readable pickle"),
        (b"\x80\x02j\x05\x00\x00\x00.", "memo index 5 unset"),
        (b"\x80\x02U\x02\xff\xfe.", "UnicodeDecodeError"),
        (b"L" + b"9" * 5000 + b"L\n.", "ValueError"),
        (b"(K\x01d.", "odd number of items"),
        (b"K\x01(K\x02e.", "AttributeError"),
        (b"\x80\x09N.", "unsupported pickle protocol"),
        (b"\x80\x02T\xff\xff\xff\xffab.", "negative length"),
        (b"\x80\x02g99999999999999999999999\n.", "not a readable pickle"),
        (b"\x80\x02\xffN.", "unknown opcode 0xff"),
    ],
)
def test_garbage_gives_one_line_naming_the_file(data, fragment):
    with pytest.raises(BadPickleError) as caught:
        loads_plain_pickle(data, source="refs(unc).p")
    message = str(caught.value)
    assert message.startswith("refs(unc).p: ") and fragment in message and "\n" not in message


def test_python2_pickles_load_in_every_protocol():
    # REFER's refs were written by Python 2: byte strings (STRING, SHORT_BINSTRING) of UTF-8.
    protocol0 = b"(lp0\n(dp1\nS'ref_id'\np2\nI7\nsS'raw'\np3\nS'caf\\xc3\\xa9'\np4\nsa."
    protocol2 = b"\x80\x02]q\x00}q\x01(U\x06ref_idq\x02K\x07U\x03rawq\x03U\x05caf\xc3\xa9q\x04ua."
    for data in (protocol0, protocol2):
        assert loads_plain_pickle(data) == [{"ref_id": 7, "raw": "caf\u00e9"}]


def test_every_opcode_has_a_rule():
    assert {ord(op.code) for op in pickletools.opcodes} == {code for code, spec in enumerate(_TABLE) if spec}


def test_load_plain_pickle_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.p"):
        load_plain_pickle(tmp_path / "nothing.p")
    bad = tmp_path / "refs(unc).p"
    bad.write_bytes(b"\x80\x02]q\x00h\x00a.")
    with pytest.raises(UnsafePickleError, match=r"refs\(unc\)\.p: refusing a list that contains itself"):
        load_plain_pickle(bad)


_keys = st.one_of(st.text(max_size=5), st.integers(-(2**40), 2**40), st.booleans(), st.none())
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)
)
_plain = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(_keys, inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(deadline=None, max_examples=40)
@given(value=_plain, protocol=st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_plain_data_round_trips_in_every_protocol(value, protocol):
    assert loads_plain_pickle(pickle.dumps(value, protocol=protocol)) == value


def _assert_refused_or_plain(data: bytes) -> None:
    try:
        value = loads_plain_pickle(data, source="fuzz.p")
    except BadPickleError as error:
        message = str(error)
        assert message.startswith("fuzz.p: ") and "\n" not in message, message
    else:
        assert _is_plain(value)


def _is_plain(value: object) -> bool:
    if isinstance(value, dict):
        return all(_is_plain(k) and _is_plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_is_plain(item) for item in value)
    return type(value) in (str, int, float, bool, type(None))


@settings(deadline=None, max_examples=150)
@given(data=st.binary(max_size=64))
def test_random_bytes_raise_only_bad_pickle_errors(data):
    _assert_refused_or_plain(data)
    _assert_refused_or_plain(b"\x80\x02" + data)


@settings(deadline=None, max_examples=150)
@given(value=_plain, protocol=st.integers(0, pickle.HIGHEST_PROTOCOL), cut=st.integers(0, 10**6),
       flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3))
def test_truncated_and_mutated_pickles_raise_only_bad_pickle_errors(value, protocol, cut, flips):
    data = bytearray(pickle.dumps(value, protocol=protocol))
    for position, byte in flips:
        data[position % len(data)] = byte
    _assert_refused_or_plain(bytes(data))
    _assert_refused_or_plain(bytes(data[: cut % (len(data) + 1)]))
