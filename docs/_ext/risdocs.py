"""Sphinx helpers for the rislayers site: the API pages are generated from ``__all__``.

- ``.. public-module:: NAME`` documents a module's own public names (its ``__all__``, minus
  what it re-exports from elsewhere) with autodoc, and lists the re-exported names with links
  to where they are documented. A new public name therefore appears in the reference without
  editing any page.
- Cross-references to a re-exported spelling (``rislayers.CASGStage``,
  ``reference_models.data.ReferDataset``) resolve to the documented canonical object.
- Private base classes (``_CounterMetric``) are replaced, in "Bases:" lines, by their public
  bases; torch bases are shown under their public names (``torch.nn.Module``).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import typing
from functools import cache
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

PACKAGES = ("rislayers", "reference_models")

# Values whose repr is longer than this are documented without their value.
_MAX_VALUE_REPR = 70


def _ours(name: str) -> bool:
    return name.split(".", 1)[0] in PACKAGES


@cache
def all_modules() -> tuple[str, ...]:
    """Every importable module of the two packages (private ones excluded)."""
    names = []
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        names.append(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=package_name + "."):
            if not info.name.rsplit(".", 1)[-1].startswith("_"):
                names.append(info.name)
    return tuple(names)


@cache
def defined_names(module_name: str) -> frozenset[str]:
    """Names a module binds at top level itself (defs, classes, assignments), not imports."""
    module = importlib.import_module(module_name)
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return frozenset()
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                found.update(t.id for t in ast.walk(target) if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found.add(node.target.id)
    return frozenset(found)


def canonical_name(module_name: str, name: str) -> str | None:
    """Where ``module_name.name`` is documented: the module that defines it, or None if not ours."""
    obj = getattr(importlib.import_module(module_name), name)
    if inspect.ismodule(obj):
        return obj.__name__
    if inspect.isclass(obj) or inspect.isfunction(obj):
        home = getattr(obj, "__module__", "") or ""
        return f"{home}.{obj.__qualname__}" if _ours(home) else None
    if name in defined_names(module_name):
        return f"{module_name}.{name}"
    for other in all_modules():
        if name in defined_names(other) and getattr(importlib.import_module(other), name, None) is obj:
            return f"{other}.{name}"
    return None


def _kind(obj: Any) -> str:
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return "function"
    return "data"


def _namedtuple_fields(obj: Any) -> tuple[str, ...]:
    if inspect.isclass(obj) and issubclass(obj, tuple) and hasattr(obj, "_fields"):
        return tuple(obj._fields)
    return ()


def _is_type_alias(obj: Any) -> bool:
    """``Literal[...]``, ``X | None`` and other typing constructs bound to a module-level name."""
    return typing.get_origin(obj) is not None and not inspect.isclass(obj)


@cache
def _attribute_docs(module_name: str) -> dict[str, list[str]]:
    """The ``#:`` comments and string literals documenting a module's top-level names."""
    try:
        docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
    except PycodeError:
        return {}
    return {name: lines for (scope, name), lines in docs.items() if scope == ""}


def _class_attribute_docs(cls: type) -> set[str]:
    """Class attributes documented by a string literal or ``#:`` comment after them."""
    try:
        docs = ModuleAnalyzer.for_module(cls.__module__).find_attr_docs()
    except PycodeError:
        return set()
    return {name for (scope, name), lines in docs.items() if scope == cls.__qualname__ and "".join(lines).strip()}


def _inherit_through_private_bases(cls: type) -> str | None:
    """For ``:inherited-members:``: the ancestors whose members stay out, if a private one exists.

    ``RISMetrics`` gets ``merge`` from ``_CounterMetric``, which the site does not document,
    so the members of private ancestors are shown on their public subclasses.
    """
    ancestors = inspect.getmro(cls)[1:]
    if not any(_private(a) for a in ancestors):
        return None
    return ", ".join(a.__name__ for a in ancestors if not _private(a))


def _module_lines(module_name: str, listed: dict[tuple, str] | None = None) -> list[str]:
    """The reST of one ``public-module``; ``listed`` maps re-export lists already on the page to
    their module, so that a module re-exporting the same names (``train`` and ``training``)
    refers to that list instead of repeating it."""
    module = importlib.import_module(module_name)
    lines = [f".. automodule:: {module_name}", ""]
    own, reexported = [], []
    for name in getattr(module, "__all__", ()):
        obj = getattr(module, name)
        target = canonical_name(module_name, name)
        if target == f"{module_name}.{name}" and not inspect.ismodule(obj):
            own.append(name)
        elif target is not None:
            reexported.append((name, target))
    # type aliases used in public signatures (``GradientMode``) are documented even when
    # they are not in __all__, so annotations that name them resolve
    aliases = [
        n for n in sorted(defined_names(module_name))
        if not n.startswith("_") and n not in own and _is_type_alias(getattr(module, n, None))
    ]
    attr_docs = _attribute_docs(module_name)
    for name in own + aliases:
        obj = getattr(module, name)
        kind = _kind(obj)
        if _is_type_alias(obj):
            lines += [f".. py:type:: {name}", f"   :module: {module_name}", ""]
            lines += [f"   {line}" for line in attr_docs.get(name, [])]
            lines += ["", f"   Alias of ``{_alias_repr(obj)}``.", ""]
            continue
        if kind == "data" and name not in attr_docs:
            # autodoc would show the docstring of the value's type (dict, tuple, ...)
            lines += [f".. py:data:: {name}", f"   :module: {module_name}"]
            if len(repr(obj)) <= _MAX_VALUE_REPR:
                lines.append(f"   :value: {obj!r}")
            lines.append("")
            continue
        lines.append(f".. auto{kind}:: {module_name}.{name}")
        if kind in ("class", "exception"):
            lines.append("   :members:")
            lines.append("   :show-inheritance:")
            inherited = _inherit_through_private_bases(obj)
            if inherited is not None:
                lines.append(f"   :inherited-members: {inherited}")
            # Record fields without a docstring of their own are described by the class
            # docstring's Attributes section; autodoc would list them again ("Alias for
            # field number 0"). Fields with their own docstring are shown by autodoc.
            fields = _namedtuple_fields(obj) or (tuple(f.name for f in dataclasses.fields(obj)) if dataclasses.is_dataclass(obj) else ())
            excluded = [f for f in fields if f not in _class_attribute_docs(obj)]
            if excluded:
                lines.append(f"   :exclude-members: {', '.join(excluded)}")
        elif kind == "data" and len(repr(obj)) > _MAX_VALUE_REPR:
            lines.append("   :no-value:")
        lines.append("")
    if reexported and listed is not None and tuple(reexported) in listed:
        lines += [f"Public names of ``{module_name}``: the same as those of ``{listed[tuple(reexported)]}`` above.", ""]
    elif reexported:
        if listed is not None:
            listed[tuple(reexported)] = module_name
        lines += [f"Public names of ``{module_name}``, documented where they are defined:", ""]
        for name, target in reexported:
            role = "mod" if inspect.ismodule(getattr(module, name)) else "obj"
            lines.append(f"- ``{name}``: :py:{role}:`{target}`")
        lines.append("")
    return lines


def _alias_repr(obj: Any) -> str:
    return repr(obj).replace("typing.", "")


class PublicModule(SphinxDirective):
    """``.. public-module:: reference_models.data.synthetic``."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        module_name = self.arguments[0]
        self.env.note_dependency(inspect.getsourcefile(importlib.import_module(module_name)))
        # one record per page: what an earlier directive of this page listed
        listed = self.env.temp_data.setdefault(("risdocs-listed", self.env.docname), {})
        content = StringList(_module_lines(module_name, listed), source=f"<public-module {module_name}>")
        container = nodes.container()
        nested_parse_with_titles(self.state, content, container)
        return container.children


def _canonical_target(target: str) -> str | None:
    """``rislayers.CASGStage`` -> ``rislayers.casg.CASGStage``; None when not a re-export of ours."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if not hasattr(module, parts[cut]):
            return None
        home = canonical_name(module_name, parts[cut])
        if home is None:
            return None
        new_target = ".".join([home, *parts[cut + 1 :]])
        return None if new_target == target else new_target
    return None


def resolve_reexport(app, env, node, contnode):
    """Resolve references that name one of our objects by a re-exported spelling.

    Tried in order: the target as written, then relative to the current class and module
    (``:class:`TextFeatures``` inside ``reference_models.encoders.bert``).
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    module_name, class_name = node.get("py:module"), node.get("py:class")
    candidates = [target]
    if module_name and not _ours(target):
        if class_name:
            candidates.append(f"{module_name}.{class_name}.{target}")
        candidates.append(f"{module_name}.{target}")
    domain = env.get_domain("py")
    for candidate in candidates:
        if not _ours(candidate):
            continue
        new_target = _canonical_target(candidate)
        if new_target is None:
            continue
        found = domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], new_target, node, contnode)
        if found is not None:
            return found
    return None


def _private(cls: type) -> bool:
    """A private class of ours, or one from a private module of ours (``rislayers._checkpointing``'s
    mixin): shown through its public bases, its members on its public subclasses."""
    module = cls.__module__
    return _ours(module) and (cls.__name__.startswith("_") or any(part.startswith("_") for part in module.split(".")))


def _public_bases(cls: type) -> list[Any]:
    bases: list[Any] = []
    for base in cls.__bases__:
        if base is object:
            continue
        if _private(base):
            bases.extend(_public_bases(base))
        else:
            bases.append(base)
    return bases


def process_bases(app, name, obj, options, bases: list[Any]) -> None:
    """Hide private bases and spell torch bases by their public names."""
    from make_torch_inventory import public_torch_name  # docs/ is on sys.path

    if any(_private(b) for b in bases if inspect.isclass(b)):
        bases[:] = _public_bases(obj)
    for i, base in enumerate(bases):
        public = public_torch_name(base) if inspect.isclass(base) else None
        if public is not None:
            bases[i] = f":py:class:`~{public}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def normalise_shape_sections(app, what, name, obj, options, lines: list[str]) -> None:
    """Let napoleon render ``Shape:`` bullet lists (``- feats: (b, c, h, w)``) as a field list.

    Docstrings follow PyTorch's habit of a bulleted Shape section; napoleon's
    ``params_style`` expects ``name: description`` entries, so the bullets are dropped here,
    before napoleon runs. Continuation lines stay deeper-indented, as napoleon wants them.
    """
    section_indent = item_indent = None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        if line.strip() == "Shape:":
            section_indent, item_indent = _indent(line), None
            continue
        if section_indent is None:
            continue
        if _indent(line) <= section_indent:
            section_indent = None  # the next section or paragraph
            continue
        if item_indent is None:
            item_indent = _indent(line)
        if _indent(line) == item_indent and line.lstrip().startswith("- "):
            lines[i] = line[:item_indent] + line[item_indent + 2 :]


def setup(app):
    # before napoleon (priority 500) turns the sections into reST
    app.connect("autodoc-process-docstring", normalise_shape_sections, priority=400)
    app.add_directive("public-module", PublicModule)
    app.connect("missing-reference", resolve_reexport)
    app.connect("autodoc-process-bases", process_bases)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

