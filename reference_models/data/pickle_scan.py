"""The opcode scan that :mod:`~reference_models.data.safe_pickle` runs before unpickling anything.

It follows what each opcode does to the unpickler's stack, keeping for every stack entry only
what kind of value it is (a string, a small int, another scalar, or a container with its
nesting depth), and raises before CPython's unpickler could be made to:

- look up a global, build an object, a set, bytes, a persistent or out-of-band reference;
- allocate without bound: CPython sizes its memo table by the largest memo index, so a
  12-byte pickle asking to store at index 1.5e9 would take gigabytes; here an index may not
  exceed the byte position (every pickler numbers its memo 0, 1, 2, ...), and every length
  must lie within the data;
- take quadratic time: ints and floats can be chosen to share one hash, and a dict of such
  keys takes quadratic time to build (200 kB of them take seconds, 1 MB minutes), so keys
  must be strings, ints below 2**55, bools or None;
- crash: hashing a tuple recurses in C without a guard, and a dict keyed by a 1 MB chain of
  nested tuples kills the interpreter; containers are never keys here, and nesting deeper
  than ``max_depth`` is refused as it is built.

It also reports whether the pickle ever fetches a container from the memo (or duplicates
one). Without that, every container has exactly one place in the result: no cycles, no shared
parts, and the depths tracked here are exact, so the walk over the result is not needed.
"""

from __future__ import annotations

import pickletools
import struct
from collections.abc import Callable

from .errors import DataError, one_line

__all__ = ["scan_pickle"]

_PLAIN_NAMES = "dict, list, tuple, str, int, float, bool and None"

# The argument of an opcode: a fixed byte count (>= 0) or one of these layouts.
_LINE, _TWO_LINES, _LEN1, _LEN4, _ULEN4, _ULEN8 = -1, -2, -3, -4, -5, -6

# Stack entries: these scalar kinds, or a container's nesting depth (>= 1).
_STR, _SMALL, _OTHER = -1, -2, -3
_KEY_KINDS = frozenset({_STR, _SMALL})  # hashes that cannot be chosen to collide

# What an opcode does; the first four push the value of _PUSHED.
(_PUSH_STR, _PUSH_SMALL, _PUSH_OTHER, _PUSH_EMPTY, _LONG1, _MARK, _BUILD, _APPEND, _SETITEM,
 _APPENDS, _SETITEMS, _POP_MARK, _POP, _DUP, _GET, _PUT, _MEMOIZE, _NOP, _FRAME, _STOP, _GLOBAL, _CODE,
 _REFUSE) = range(23)
_PUSHED = {_PUSH_STR: _STR, _PUSH_SMALL: _SMALL, _PUSH_OTHER: _OTHER, _PUSH_EMPTY: 1}

_SPECS: dict[str, tuple[int, int]] = {
    "I": (_LINE, _PUSH_OTHER), "L": (_LINE, _PUSH_OTHER), "J": (4, _PUSH_SMALL), "K": (1, _PUSH_SMALL),
    "M": (2, _PUSH_SMALL), "\x8a": (_LEN1, _LONG1), "\x8b": (_LEN4, _PUSH_OTHER),
    "S": (_LINE, _PUSH_STR), "T": (_LEN4, _PUSH_STR), "U": (_LEN1, _PUSH_STR), "V": (_LINE, _PUSH_STR),
    "\x8c": (_LEN1, _PUSH_STR), "X": (_ULEN4, _PUSH_STR), "\x8d": (_ULEN8, _PUSH_STR),
    "F": (_LINE, _PUSH_OTHER), "G": (8, _PUSH_OTHER),
    "N": (0, _PUSH_SMALL), "\x88": (0, _PUSH_SMALL), "\x89": (0, _PUSH_SMALL),
    "]": (0, _PUSH_EMPTY), "}": (0, _PUSH_EMPTY), ")": (0, _PUSH_EMPTY),
    "(": (0, _MARK), "l": (0, _BUILD), "d": (0, _BUILD), "t": (0, _BUILD),
    "\x85": (0, _BUILD), "\x86": (0, _BUILD), "\x87": (0, _BUILD),
    "a": (0, _APPEND), "s": (0, _SETITEM), "e": (0, _APPENDS), "u": (0, _SETITEMS),
    "1": (0, _POP_MARK), "0": (0, _POP), "2": (0, _DUP),
    "g": (_LINE, _GET), "h": (1, _GET), "j": (4, _GET),
    "p": (_LINE, _PUT), "q": (1, _PUT), "r": (4, _PUT), "\x94": (0, _MEMOIZE),
    "\x80": (1, _NOP), "\x95": (8, _FRAME), ".": (0, _STOP),
    "c": (_TWO_LINES, _GLOBAL), "i": (_TWO_LINES, _GLOBAL),
    "\x93": (0, _CODE), "R": (0, _CODE), "b": (0, _CODE), "o": (0, _CODE), "\x81": (0, _CODE),
    "\x92": (0, _CODE), "\x82": (1, _CODE), "\x83": (2, _CODE), "\x84": (4, _CODE),
    "\x8f": (0, _REFUSE), "\x90": (0, _REFUSE), "\x91": (0, _REFUSE), "P": (_LINE, _REFUSE),
    "Q": (0, _REFUSE), "\x97": (0, _REFUSE), "\x98": (0, _REFUSE),
    "B": (_ULEN4, _REFUSE), "C": (_LEN1, _REFUSE), "\x8e": (_ULEN8, _REFUSE), "\x96": (_ULEN8, _REFUSE),
}
_TABLE: list[tuple[int, int] | None] = [None] * 256
for _code, _spec in _SPECS.items():
    _TABLE[ord(_code)] = _spec
_NAMES = {ord(op.code): op.name for op in pickletools.opcodes}
_REFUSED = {
    "EMPTY_SET": "a set", "ADDITEMS": "a set", "FROZENSET": "a frozenset", "PERSID": "a persistent id",
    "BINPERSID": "a persistent id", "NEXT_BUFFER": "an out-of-band buffer", "READONLY_BUFFER": "an out-of-band buffer",
    "BINBYTES": "a bytes object", "SHORT_BINBYTES": "a bytes object", "BINBYTES8": "a bytes object",
    "BYTEARRAY8": "a bytearray object",
}

# The loop of _Scanner.run handles the frequent opcodes itself (a refs file is millions of
# opcodes, and every comparison costs): the binary protocols' below _F_TEXT, protocol 0's from
# it, each group most frequent first (_Scanner.fill does the work of APPENDS and SETITEMS, one
# per container); _Scanner.other handles the rest from _SPECS.
(_F_GET1, _F_PUSH_FIXED, _F_PUT, _F_MARK, _F_MEMOIZE, _F_PUSH_SIZED, _F_FILL, _F_TEXT, _F_GET_LINE,
 _F_APPEND, _F_PUSH_LINE, _F_GET4, _F_STOP, _F_OTHER) = range(14)
_FAST = [_F_OTHER] * 256
_STEP = [0] * 256  # bytes taken by an opcode with a fixed-size argument
_KIND = [0] * 256  # what a push pushes
for _code, (_arg, _effect) in _SPECS.items():
    if _effect in _PUSHED:
        _op = ord(_code)
        _KIND[_op] = _PUSHED[_effect]
        if _arg >= 0:
            _FAST[_op], _STEP[_op] = _F_PUSH_FIXED, 1 + _arg
        else:
            _FAST[_op] = {_LEN1: _F_PUSH_SIZED, _ULEN4: _F_PUSH_SIZED, _LINE: _F_PUSH_LINE}.get(_arg, _F_OTHER)
for _codes, _class in {"h": _F_GET1, "qr": _F_PUT, "(": _F_MARK, "\x94": _F_MEMOIZE, "eu": _F_FILL,
                       "gp": _F_GET_LINE, "as": _F_APPEND, "j": _F_GET4, ".": _F_STOP}.items():
    for _code in _codes:
        _FAST[ord(_code)] = _class
_SETITEM, _SETITEMS, _PUT4, _LINE_PUT, _SHORT = ord("s"), ord("u"), ord("r"), ord("p"), (ord("U"), ord("\x8c"))

_U4 = struct.Struct("<I").unpack_from
_S4 = struct.Struct("<i").unpack_from
_U8 = struct.Struct("<Q").unpack_from


def scan_pickle(
    data: bytes, source: str, *, max_depth: int, bad: type[DataError], unsafe: type[DataError]
) -> bool:
    """Check a pickle's opcodes before it is loaded (see the module docstring).

    Args:
        data: the pickle.
        source: the file name that starts every message.
        max_depth: the deepest nesting of containers allowed.
        bad: the exception raised for unreadable data (garbage, truncation).
        unsafe: the exception raised for refused content.

    Returns:
        Whether some container may appear in more than one place (then only a walk over the
        loaded value can rule out cycles and measure its expanded size).

    Example:
        >>> import pickle
        >>> scan_pickle(pickle.dumps([[1], "a"]), "x.p", max_depth=10, bad=DataError, unsafe=DataError)
        False
        >>> shared = [1]
        >>> scan_pickle(pickle.dumps([shared, shared]), "x.p", max_depth=10, bad=DataError, unsafe=DataError)
        True
    """
    return _Scanner(bytes(data), source, max_depth, bad, unsafe).run()


class _Scanner:
    __slots__ = ("data", "source", "max_depth", "bad", "unsafe", "stack", "marks", "memo", "shared")

    def __init__(self, data: bytes, source: str, max_depth: int, bad: type[DataError], unsafe: type[DataError]) -> None:
        self.data, self.source, self.max_depth, self.bad, self.unsafe = data, source, max_depth, bad, unsafe
        self.stack: list[int] = []
        self.marks: list[int] = []
        self.memo: list[int | None] = []
        self.shared = False

    def refuse(self, what: str, at: int) -> DataError:
        return self.unsafe(
            f"{self.source}: refusing {what} (byte {at}); only {_PLAIN_NAMES} are allowed in this file "
            "(it may be malicious or not a refs file)"
        )

    def run(self) -> bool:
        # One long loop on purpose: a call per opcode would double the time of a refs file. A
        # call per container (fill, for APPENDS and SETITEMS) costs little beside its items.
        data, stack, marks, memo = self.data, self.stack, self.marks, self.memo
        fast, step, kinds, push, get, put = _FAST, _STEP, _KIND, stack.append, self.get, self.put
        pos = at = 0
        memoized = puts = False
        end = len(data)
        try:
            while pos < end:
                at, op = pos, data[pos]
                case = fast[op]
                if case < _F_TEXT:
                    if case == _F_GET1:
                        index = data[pos + 1]
                        kind = memo[index]
                        push(get(index, at) if kind is None or kind > 0 else kind)
                        pos += 2
                    elif case == _F_PUSH_FIXED:
                        push(kinds[op])
                        pos += step[op]
                    elif case == _F_PUT:
                        index, pos = (_U4(data, pos + 1)[0], pos + 5) if op == _PUT4 else (data[pos + 1], pos + 2)
                        if index == len(memo) and not memoized:
                            memo.append(stack[-1])
                        else:
                            put(index, at, memoized)
                        puts = True
                    elif case == _F_MARK:
                        marks.append(len(stack))
                        pos += 1
                    elif case == _F_MEMOIZE:
                        if puts:
                            raise self.refuse("MEMOIZE mixed with PUT opcodes", at)
                        memo.append(stack[-1])
                        memoized = True
                        pos += 1
                    elif case == _F_PUSH_SIZED:
                        push(kinds[op])
                        pos += 2 + data[pos + 1] if op in _SHORT else 5 + _U4(data, pos + 1)[0]
                    else:  # APPENDS, SETITEMS
                        self.fill(op, at)
                        pos += 1
                elif case == _F_GET_LINE:  # GET or PUT
                    pos = data.index(b"\n", pos) + 1
                    index = int(data[at + 1 : pos - 1])
                    if op == _LINE_PUT:
                        put(index, at, memoized)
                        puts = True
                    else:
                        push(get(index, at))
                elif case == _F_APPEND:  # or SETITEM
                    kind = stack.pop()
                    if op == _SETITEM and stack.pop() not in _KEY_KINDS:
                        self.check_keys([_OTHER], at)
                    if kind > 0 and kind >= stack[-1] > 0:
                        stack[-1] = self.deeper(kind, at)
                    pos += 1
                elif case == _F_PUSH_LINE:
                    pos = data.index(b"\n", pos) + 1
                    # INT and LONG: up to 17 digits and a sign (or an L) stay far below 2**61,
                    # where int hashes wrap; the other pushes know their kind.
                    push(kinds[op] if op != 0x49 and op != 0x4C else _SMALL if pos - at <= 20 else _OTHER)
                elif case == _F_GET4:
                    push(get(_U4(data, pos + 1)[0], at))
                    pos += 5
                elif case == _F_STOP:
                    return self.shared
                else:
                    pos = self.other(op, at)
            if pos > end:
                raise IndexError("an argument runs past the end")
        except (self.bad, self.unsafe):
            raise
        except (IndexError, ValueError, struct.error) as error:
            raise self.bad(
                f"{self.source}: not a readable pickle (truncated or malformed at byte {at}: {one_line(error, 80)})"
            ) from None
        raise self.bad(f"{self.source}: not a readable pickle (truncated: it ends without a STOP opcode)")

    def fill(self, op: int, at: int) -> None:
        """APPENDS or SETITEMS (``op``) at byte ``at``: the items above the last mark go into the
        container below it, whose depth grows to hold the deepest of them."""
        stack = self.stack
        start = self.marks.pop()
        if op == _SETITEMS:
            if not _KEY_KINDS.issuperset(stack[start::2]):
                self.check_keys(stack[start::2], at)
            deepest = max(stack[start + 1 :: 2], default=0)
        else:
            deepest = max(stack[start:], default=0)
        del stack[start:]
        if deepest >= stack[-1] > 0:
            stack[-1] = self.deeper(deepest, at)

    def get(self, index: int, at: int) -> int:
        """What the memo holds at ``index``; fetching a container means it may be shared."""
        kind = self.memo[index] if 0 <= index < len(self.memo) else None
        if kind is None:
            raise self.bad(f"{self.source}: not a readable pickle (memo index {index} unset at byte {at})")
        if kind > 0:
            self.shared = True
        return kind

    def put(self, index: int, at: int, memoized: bool) -> None:
        memo = self.memo
        # Indices run 0, 1, 2, ... in any pickler's output; this bound keeps CPython's memo table
        # (allocated up to the largest index) linear in the file. MEMOIZE numbers by count, so
        # its indices would be ambiguous once PUT has chosen some.
        if memoized or not 0 <= index <= at:
            raise self.refuse(f"the memo index {index} after MEMOIZE" if memoized else f"the memo index {index}", at)
        if index >= len(memo):
            memo.extend([None] * (index + 1 - len(memo)))
        memo[index] = self.stack[-1]

    def check_keys(self, keys: list[int], at: int) -> None:
        if not _KEY_KINDS.issuperset(keys):
            raise self.refuse("a dict key that is not a str, a small int, a bool or None", at)

    def deeper(self, depth: int, at: int) -> int:
        if depth >= self.max_depth:
            raise self.unsafe(f"{self.source}: refusing containers nested deeper than {self.max_depth} (byte {at})")
        return depth + 1

    def other(self, op: int, at: int) -> int:
        """The opcodes run's loop leaves to this method; returns the next opcode's position.

        The loop takes every MARK, APPEND(S), SETITEM(S), GET, PUT, MEMOIZE and STOP itself.
        """
        data, stack, marks = self.data, self.stack, self.marks
        spec = _TABLE[op]
        if spec is None:
            raise self.bad(f"{self.source}: not a readable pickle (unknown opcode {op:#04x} at byte {at})")
        pos = self.argument_end(spec[0], at)
        effect = spec[1]
        if effect in _PUSHED:
            stack.append(_PUSHED[effect])
        elif effect == _BUILD:  # LIST, DICT, TUPLE from the mark; TUPLE1-3 from the top
            count = {0x85: 1, 0x86: 2, 0x87: 3}.get(op)
            start = marks.pop() if count is None else len(stack) - count
            if start < 0:
                raise IndexError("stack underflow")
            items = stack[start:]
            if op == 0x64:  # DICT
                self.check_keys(items[0::2], at)
                items = items[1::2]
            del stack[start:]
            stack.append(self.deeper(max(max(items, default=0), 0), at))
        elif effect == _POP_MARK:
            del stack[marks.pop():]
        elif effect == _POP:
            # As CPython's POP: a mark on top of the stack is popped instead of a value.
            if marks and marks[-1] == len(stack):
                marks.pop()
            else:
                stack.pop()
        elif effect == _DUP:
            self.shared = self.shared or stack[-1] > 0
            stack.append(stack[-1])
        elif effect == _LONG1:
            stack.append(_SMALL if data[at + 1] <= 7 else _OTHER)
        elif effect == _FRAME:
            if _U8(data, at + 1)[0] > len(data) - pos:
                raise IndexError("a frame runs past the end")
        elif effect == _GLOBAL:
            module, name = data[at + 1 : pos - 1].split(b"\n")
            raise self.refuse(one_line(f"the global {module.decode('latin-1')}.{name.decode('latin-1')}", 120), at)
        elif effect == _CODE:
            raise self.refuse(f"the opcode {_NAMES[op]} (it builds objects or calls code)", at)
        elif effect == _REFUSE:
            raise self.refuse(_REFUSED[_NAMES[op]], at)
        return pos  # PROTO: nothing to follow

    def argument_end(self, arg: int, at: int) -> int:
        """Where the argument of the opcode at ``at`` ends (the next opcode's position)."""
        data, pos = self.data, at + 1
        if arg >= 0:
            pos += arg
        elif arg == _LEN1:
            pos += 1 + data[pos]
        elif arg == _LINE:
            pos = data.index(b"\n", pos) + 1
        elif arg == _TWO_LINES:
            pos = data.index(b"\n", data.index(b"\n", pos) + 1) + 1
        else:
            unpack: Callable[[bytes, int], tuple[int]] = _S4 if arg == _LEN4 else _U4 if arg == _ULEN4 else _U8
            size = unpack(data, pos)[0]
            if size < 0:
                raise self.bad(f"{self.source}: not a readable pickle (negative length at byte {at})")
            pos += (8 if arg == _ULEN8 else 4) + size
        if pos > len(data):
            raise IndexError("an argument runs past the end")
        return pos
