"""Every public class and function is documented: a summary, ``Args:`` and, for modules, ``Shape:``.

"Public" means listed in the ``__all__`` of ``rislayers``, ``reference_models`` or any of
their modules (found by walking the packages, so a new module is covered without editing
this file). Each object is checked once, where it is defined.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
from types import ModuleType
from typing import NamedTuple

import pytest
from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer
from torch import nn

import reference_models
import rislayers

PACKAGES = (rislayers, reference_models)

# Signature parameters that carry no user-facing meaning of their own.
_IGNORED_PARAMS = {"self", "cls"}


def _public_modules() -> list[ModuleType]:
    modules = []
    for package in PACKAGES:
        modules.append(package)
        for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
            if info.name.rsplit(".", 1)[-1].startswith("_"):
                continue
            modules.append(importlib.import_module(info.name))
    return modules


def _public_objects() -> dict[str, object]:
    """``{qualified name where defined: object}`` for every public class and function."""
    found: dict[str, object] = {}
    for module in _public_modules():
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue  # submodules and constants
            home = getattr(obj, "__module__", module.__name__)
            if not home.startswith(tuple(p.__name__ for p in PACKAGES)):
                continue  # a re-exported third-party object is not ours to document
            found.setdefault(f"{home}.{obj.__qualname__}", obj)
    return found


OBJECTS = _public_objects()


def _sections(doc: str) -> set[str]:
    """Google-style section headers (``Args:``, ``Shape:``, ...) at the docstring's top level."""
    return set(re.findall(r"^(\w[\w ]*):\s*$", inspect.cleandoc(doc), flags=re.M))


def _is_record(cls: type) -> bool:
    """NamedTuples and dataclasses: their constructor arguments are their documented fields."""
    return dataclasses.is_dataclass(cls) or (issubclass(cls, tuple) and hasattr(cls, "_fields"))


def _defines_init(cls: type) -> bool:
    """Whether ``cls`` itself defines a constructor worth documenting (not Python's or torch's)."""
    return "__init__" in vars(cls) and cls.__module__.split(".")[0] not in ("builtins", "torch", "typing")


def _takes_arguments(obj: object) -> bool:
    if inspect.isclass(obj):
        if getattr(obj, "_is_protocol", False):
            return False  # an interface: its methods carry the arguments
        if not _is_record(obj) and not any(_defines_init(c) for c in obj.__mro__):
            return False  # the constructor is inherited from Python or torch (exceptions)
        target = obj if _is_record(obj) else obj.__init__
    else:
        target = obj
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return any(name not in _IGNORED_PARAMS for name in params)


def test_the_walk_finds_the_public_api():
    # guard against the walk silently finding nothing (e.g. a broken import path)
    names = set(OBJECTS)
    assert "rislayers.refiner.DynamicQueryRefiner" in names
    assert "reference_models.training.run.train" in names
    assert "reference_models.data.synthetic.SyntheticReferDataset" in names
    assert len(names) > 80


def _section_entries(doc: str, section: str) -> set[str]:
    """The names a Google-style section documents (``name:`` or ``name (type):`` lines)."""
    lines = inspect.cleandoc(doc).splitlines()
    try:
        start = lines.index(f"{section}:")
    except ValueError:
        return set()
    names = set()
    for line in lines[start + 1 :]:
        if line and not line.startswith(" "):
            break  # the next section or paragraph
        match = re.match(r"^ {4}\*{0,2}(\w+)(?: \(.*\))?:", line)
        if match:
            names.add(match.group(1))
    return names


def _attribute_docstrings(cls: type) -> set[str]:
    """Fields documented by a string literal or ``#:`` comment right after them."""
    try:
        docs = ModuleAnalyzer.for_module(cls.__module__).find_attr_docs()
    except PycodeError:
        return set()
    return {name for (scope, name), lines in docs.items() if scope == cls.__qualname__ and "".join(lines).strip()}


def _parameters(obj: object) -> list[str]:
    if inspect.isclass(obj):
        if _is_record(obj):
            return list(obj._fields) if hasattr(obj, "_fields") else [f.name for f in dataclasses.fields(obj)]
        target = obj.__init__
    else:
        target = obj
    params = inspect.signature(target).parameters.values()
    return [p.name for p in params if p.name not in _IGNORED_PARAMS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _problems(obj: object) -> list[str]:
    """What is missing from ``obj``'s docstring (empty when it is complete)."""
    doc = inspect.getdoc(obj) if inspect.isfunction(obj) else obj.__dict__.get("__doc__")
    if not doc or not doc.strip():
        return ["no docstring"]
    problems = []
    sections = _sections(doc)
    if _takes_arguments(obj):
        if inspect.isclass(obj) and _is_record(obj):
            # a record's fields may be documented in Attributes/Args or one by one
            documented = _section_entries(doc, "Attributes") | _section_entries(doc, "Args") | _attribute_docstrings(obj)
        elif "Args" not in sections:
            documented = None
            problems.append("takes arguments but has no Args section")
        else:
            documented = _section_entries(doc, "Args")
        if documented is not None:
            missing = [p for p in _parameters(obj) if p not in documented]
            if missing:
                problems.append(f"arguments not documented: {', '.join(missing)}")
    if inspect.isclass(obj) and issubclass(obj, nn.Module) and "Shape" not in sections:
        problems.append("is an nn.Module without a Shape section")
    return problems


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_public_object_is_documented(name):
    problems = _problems(OBJECTS[name])
    assert not problems, f"{name}: " + "; ".join(problems)


def test_section_parser_sees_google_sections():
    doc = """Summary.

    Args:
        x: a thing.

    Shape:
        x: ``(b, c)``.
    """
    assert _sections(doc) == {"Args", "Shape"}
    assert _sections("Summary only.") == set()


def test_checker_flags_incomplete_docstrings():
    class Bare(nn.Module):
        """A module with arguments but no sections."""

        def __init__(self, dim: int) -> None:
            super().__init__()

    class Partial(nn.Module):
        """A module that forgets one argument.

        Args:
            dim: channels.

        Shape:
            - x: ``(b, dim)``
        """

        def __init__(self, dim: int, *, depth: int = 1) -> None:
            super().__init__()

    def undocumented(x):
        return x

    class Record(NamedTuple):
        """A record whose second field is not described.

        Attributes:
            first: described.
        """

        first: int
        second: int

    assert _problems(Bare) == ["takes arguments but has no Args section", "is an nn.Module without a Shape section"]
    assert _problems(Partial) == ["arguments not documented: depth"]
    assert _problems(undocumented) == ["no docstring"]
    assert _problems(Record) == ["arguments not documented: second"]


def test_checker_accepts_complete_docstrings():
    class Complete(nn.Module):
        """A complete module.

        Args:
            dim: channels.

        Shape:
            - x: ``(b, dim)``
        """

        def __init__(self, dim: int) -> None:
            super().__init__()

    class Failure(ValueError):
        """An exception: its message is its only argument."""

    assert _problems(Complete) == []
    assert _problems(Failure) == []
