"""The expression language of the synthetic benchmark: run, say, read and enumerate programs.

A program is a JSON-like dict (so it can be stored next to its sentence in a refs file):

- ``{"op": "select", "colour": c, "shape": s, "size": z}``: attribute filter (``None`` = any);
- ``{"op": "region", "region": r, "of": P}``: the objects of ``P`` in the left/right/top/
  bottom half of the grid (the outer third on a 3x3 grid) or its centre cell;
- ``{"op": "ordinal", "k": k, "from": side, "of": P}``: the objects of ``P`` in the k-th
  distinct column (row) counted from a side; ``k = 1`` is "the leftmost ...";
- ``{"op": "relate", "relation": rel, "of": P, "anchor": A}``: the objects of ``P`` strictly
  left of/right of/above/below the single object of ``A``;
- ``{"op": "all", "of": P}``: a plural ("all red circles") over the same set.

:func:`realise` says a program as a sentence, :func:`parse_expression` reads it back, and
:class:`ProgramEnumerator` lists the programs that pick out exactly one given object.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .lexicon import (
    COLOURS,
    EXTREME_WORDS,
    GENERIC_NOUNS,
    GENERIC_PLURALS,
    ORDINAL_WORDS,
    REGION_PHRASES,
    RELATION_PHRASES,
    SHAPE_PLURALS,
    SHAPE_SYNONYMS,
    SIZE_WORDS,
    TEMPLATES,
)
from .scenes import LevelSpec, Scene, SceneObject

__all__ = [
    "KINDS",
    "SIDES",
    "REGIONS",
    "RELATIONS",
    "execute",
    "realise",
    "parse_expression",
    "ProgramEnumerator",
    "choose_programs",
]

KINDS = ("colour", "shape", "size")
SIDES = ("left", "right", "top", "bottom")
REGIONS = ("left", "right", "top", "bottom", "centre")
RELATIONS = ("left_of", "right_of", "above", "below")


# -- semantics ---------------------------------------------------------------------------------


def _in_region(obj: SceneObject, region: str, grid: int) -> bool:
    if region == "left":
        return obj.col < grid // 2
    if region == "right":
        return obj.col >= (grid + 1) // 2
    if region == "top":
        return obj.row < grid // 2
    if region == "bottom":
        return obj.row >= (grid + 1) // 2
    if region == "centre":
        return grid % 2 == 1 and obj.row == obj.col == grid // 2
    raise ValueError(f"program: unknown region {region!r}; expected one of {REGIONS}")


def _relation_holds(obj: SceneObject, anchor: SceneObject, relation: str) -> bool:
    if relation == "left_of":
        return obj.col < anchor.col
    if relation == "right_of":
        return obj.col > anchor.col
    if relation == "above":
        return obj.row < anchor.row
    if relation == "below":
        return obj.row > anchor.row
    raise ValueError(f"program: unknown relation {relation!r}; expected one of {RELATIONS}")


def execute(program: Mapping[str, Any], objects: Sequence[SceneObject], grid: int) -> frozenset[int]:
    """Run an expression program on a scene's objects.

    Operations: ``select`` (attribute filter; ``None`` = any), ``region`` (a half of the grid,
    or its centre cell), ``ordinal`` (the k-th distinct column/row counted from a side),
    ``relate`` (objects strictly left of/right of/above/below a *unique* anchor; an anchor
    that is missing or ambiguous makes the result empty) and ``all`` (plural, same set).

    Args:
        program: the program dict.
        objects: the scene's objects.
        grid: cells per side.

    Returns:
        The indices of the referred objects.

    Example:
        >>> a = SceneObject("red", "circle", "large", 0, 0, (0, 0, 0), ())
        >>> b = SceneObject("red", "square", "large", 0, 2, (0, 0, 0), ())
        >>> sorted(execute({"op": "select", "colour": "red", "shape": None, "size": None}, [a, b], 3))
        [0, 1]
        >>> sorted(execute({"op": "ordinal", "k": 1, "from": "right",
        ...                 "of": {"op": "select", "colour": "red", "shape": None, "size": None}}, [a, b], 3))
        [1]
    """
    op = program.get("op")
    if op == "select":
        wanted = {kind: program.get(kind) for kind in KINDS}
        return frozenset(
            index
            for index, obj in enumerate(objects)
            if all(value is None or getattr(obj, kind) == value for kind, value in wanted.items())
        )
    if op == "all":
        return execute(program["of"], objects, grid)
    if op == "region":
        inner = execute(program["of"], objects, grid)
        return frozenset(i for i in inner if _in_region(objects[i], program["region"], grid))
    if op == "ordinal":
        inner = execute(program["of"], objects, grid)
        side, k = program["from"], int(program["k"])
        if side not in SIDES:
            raise ValueError(f"program: unknown side {side!r}; expected one of {SIDES}")
        key = (lambda o: o.col) if side in ("left", "right") else (lambda o: o.row)
        ranks = sorted({key(objects[i]) for i in inner}, reverse=side in ("right", "bottom"))
        if not 1 <= k <= len(ranks):
            return frozenset()
        return frozenset(i for i in inner if key(objects[i]) == ranks[k - 1])
    if op == "relate":
        anchors = execute(program["anchor"], objects, grid)
        if len(anchors) != 1:
            return frozenset()
        anchor = objects[next(iter(anchors))]
        inner = execute(program["of"], objects, grid)
        return frozenset(i for i in inner if _relation_holds(objects[i], anchor, program["relation"]))
    raise ValueError(f"program: unknown op {op!r}")


# -- realisation and parsing -------------------------------------------------------------------


def _pick(options: Sequence[str], rng: np.random.Generator, spec: LevelSpec) -> str:
    return options[int(rng.integers(len(options)))] if spec.synonyms and len(options) > 1 else options[0]


def _noun_phrase(
    select: Mapping[str, Any], rng: np.random.Generator, spec: LevelSpec, *, plural: bool = False
) -> str:
    words = []
    if select.get("size"):
        words.append(_pick(SIZE_WORDS[select["size"]], rng, spec))
    if select.get("colour"):
        words.append(select["colour"])
    if select.get("shape"):
        noun = _pick(SHAPE_SYNONYMS[select["shape"]], rng, spec)
        noun = SHAPE_PLURALS[noun] if plural else noun
    else:
        noun = _pick(GENERIC_NOUNS, rng, spec)
        noun = GENERIC_PLURALS[noun] if plural else noun
    return " ".join([*words, noun])


def _phrase(program: Mapping[str, Any], rng: np.random.Generator, spec: LevelSpec) -> str:
    op = program["op"]
    if op == "select":
        return _noun_phrase(program, rng, spec)
    if op == "region":
        return f"{_phrase(program['of'], rng, spec)} {_pick(REGION_PHRASES[program['region']], rng, spec)}"
    if op == "ordinal":
        k, side = int(program["k"]), program["from"]
        inner = _phrase(program["of"], rng, spec)
        if k == 1 and not (spec.synonyms and rng.random() < 0.3):
            return f"{_pick(EXTREME_WORDS[side], rng, spec)} {inner}"
        return f"{ORDINAL_WORDS[k]} {inner} from the {side}"
    if op == "relate":
        relation = _pick(RELATION_PHRASES[program["relation"]], rng, spec)
        return f"{_phrase(program['of'], rng, spec)} {relation} the {_phrase(program['anchor'], rng, spec)}"
    raise ValueError(f"program: cannot realise op {op!r}")


def realise(program: Mapping[str, Any], rng: np.random.Generator, spec: LevelSpec) -> str:
    """Say a program as a sentence, with the synonyms and sentence frames of a level.

    Args:
        program: the program.
        rng: chooses synonyms and frames.
        spec: the level (its ``synonyms`` and ``templates``).

    Returns:
        The sentence; :func:`parse_expression` gives the program back.

    Example:
        >>> from reference_models.data.scenes import LEVELS
        >>> select = {"op": "select", "colour": "red", "shape": "circle", "size": None}
        >>> realise({"op": "ordinal", "k": 2, "from": "left", "of": select}, np.random.default_rng(0), LEVELS[1])
        'the second red circle from the left'
    """
    if program["op"] == "all":
        plural = _noun_phrase(program["of"], rng, spec, plural=True)
        return f"all {plural}" if spec.templates == 1 or rng.random() < 0.5 else f"the {plural}"
    template = TEMPLATES[int(rng.integers(spec.templates))]
    return template.format(_phrase(program, rng, spec))


def _lookup_tables() -> dict[str, Any]:
    nouns: dict[str, tuple[str | None, bool]] = {}
    for shape, synonyms in SHAPE_SYNONYMS.items():
        for word in synonyms:
            nouns[word] = (shape, False)
            nouns[SHAPE_PLURALS[word]] = (shape, True)
    for word in GENERIC_NOUNS:
        nouns[word] = (None, False)
        nouns[GENERIC_PLURALS[word]] = (None, True)
    return {
        "nouns": nouns,
        "sizes": {word: size for size, words in SIZE_WORDS.items() for word in words},
        "extremes": {word: side for side, words in EXTREME_WORDS.items() for word in words},
        "ordinals": {word: k for k, word in ORDINAL_WORDS.items()},
        "regions": {tuple(p.split()): region for region, phrases in REGION_PHRASES.items() for p in phrases},
        "relations": {tuple(p.split()): rel for rel, phrases in RELATION_PHRASES.items() for p in phrases},
        "prefixes": sorted((tuple(t.replace("{}", "").split()) for t in TEMPLATES), key=len, reverse=True),
    }


_TABLES = _lookup_tables()


def parse_expression(sentence: str) -> dict[str, Any]:
    """Recover the program of a generated sentence (the inverse of the realiser).

    Args:
        sentence: a sentence produced by this module.

    Returns:
        The program dict (synonyms map to their canonical attribute values).

    Raises:
        ValueError: the sentence is not in the benchmark's grammar.

    Example:
        >>> parse_expression("the big red ball left of the blue square")["relation"]
        'left_of'
    """
    words = sentence.lower().split()
    error = ValueError(f"sentence: {sentence!r} is not in the synthetic grammar")
    plural_frame = False
    if words[:1] == ["all"]:
        words, plural_frame = words[1:], True
    else:
        for prefix in _TABLES["prefixes"]:
            if tuple(words[: len(prefix)]) == prefix:
                words = words[len(prefix) :]
                break

    def noun_phrase(position: int) -> tuple[dict[str, Any], bool, int]:
        select: dict[str, Any] = {"op": "select", "colour": None, "shape": None, "size": None}
        if position < len(words) and words[position] in _TABLES["sizes"]:
            select["size"] = _TABLES["sizes"][words[position]]
            position += 1
        if position < len(words) and words[position] in COLOURS:
            select["colour"] = words[position]
            position += 1
        if position >= len(words) or words[position] not in _TABLES["nouns"]:
            raise error
        select["shape"], plural = _TABLES["nouns"][words[position]]
        return select, plural, position + 1

    if not words:
        raise error
    if words[0] in _TABLES["extremes"] or words[0] in _TABLES["ordinals"]:
        if words[0] in _TABLES["extremes"]:
            k, side = 1, _TABLES["extremes"][words[0]]
            inner, plural, end = noun_phrase(1)
        else:
            k = _TABLES["ordinals"][words[0]]
            inner, plural, end = noun_phrase(1)
            if len(words) != end + 3 or words[end : end + 2] != ["from", "the"] or words[end + 2] not in SIDES:
                raise error
            side, end = words[end + 2], end + 3
        if plural or plural_frame or end != len(words):
            raise error
        return {"op": "ordinal", "k": k, "from": side, "of": inner}
    inner, plural, end = noun_phrase(0)
    rest = tuple(words[end:])
    if plural or plural_frame:
        if rest or not plural:
            raise error
        return {"op": "all", "of": inner}
    if not rest:
        return inner
    if rest in _TABLES["regions"]:
        return {"op": "region", "region": _TABLES["regions"][rest], "of": inner}
    for phrase, relation in _TABLES["relations"].items():
        if rest[: len(phrase)] == phrase and rest[len(phrase) : len(phrase) + 1] == ("the",):
            anchor, anchor_plural, anchor_end = noun_phrase(end + len(phrase) + 1)
            if anchor_plural or anchor_end != len(words):
                raise error
            return {"op": "relate", "relation": relation, "of": inner, "anchor": anchor}
    raise error


# -- enumeration -----------------------------------------------------------------------------


def _select_of(obj: SceneObject, kinds: Sequence[str]) -> dict[str, Any]:
    return {"op": "select", **{kind: (getattr(obj, kind) if kind in kinds else None) for kind in KINDS}}


def _attribute_count(program: Mapping[str, Any]) -> int:
    total = sum(1 for kind in KINDS if program.get(kind)) if program["op"] == "select" else 0
    for key in ("of", "anchor"):
        if key in program:
            total += _attribute_count(program[key])
    return total


def _subsets(kinds: Sequence[str], *, empty: bool) -> list[tuple[str, ...]]:
    return [combo for r in range(0 if empty else 1, len(kinds) + 1) for combo in itertools.combinations(kinds, r)]


class ProgramEnumerator:
    """Lists the programs of a level that refer to given objects of one scene.

    Positional forms (region, extreme, ordinal, relation) are only offered when the target's
    attributes alone leave distractors, so position words are never decoration.

    Args:
        scene: the scene.
        spec: the level (its forms, attribute kinds and palette).

    Example:
        >>> from reference_models.data.scenes import generate_scene, LEVELS
        >>> scene = generate_scene(1, 64, np.random.default_rng(0), np.random.default_rng(1))
        >>> forms = ProgramEnumerator(scene, LEVELS[1]).singular(0)
        >>> list(forms), len(forms["attributes"])
        (['attributes'], 1)
    """

    def __init__(self, scene: Scene, spec: LevelSpec) -> None:
        self.scene, self.spec = scene, spec
        self._memo: dict[str, frozenset[int]] = {}

    def run(self, program: Mapping[str, Any]) -> frozenset[int]:
        """:func:`execute` on this scene, memoised."""
        key = json.dumps(program, sort_keys=True)
        if key not in self._memo:
            self._memo[key] = execute(program, self.scene.objects, self.scene.grid)
        return self._memo[key]

    def singular(self, target: int) -> dict[str, list[dict[str, Any]]]:
        """Programs whose result is exactly ``{target}``, by form (forms without any are left out)."""
        spec, objects = self.spec, self.scene.objects
        obj, wanted = objects[target], frozenset([target])
        forms: dict[str, list[dict[str, Any]]] = {}
        if "attributes" in spec.forms:
            subsets = [("colour", "shape")] if spec.conjunction_only else _subsets(spec.kinds, empty=False)
            forms["attributes"] = [p for p in (_select_of(obj, s) for s in subsets) if self.run(p) == wanted]
        # Position is only used when the attributes alone leave distractors.
        inner = [p for p in (_select_of(obj, s) for s in _subsets(spec.kinds, empty=True)) if len(self.run(p)) > 1]
        if "region" in spec.forms:
            forms["region"] = [
                q
                for p in inner
                for region in REGIONS
                if _in_region(obj, region, spec.grid)
                for q in [{"op": "region", "region": region, "of": p}]
                if self.run(q) == wanted
            ]
        for form, ks in (("extreme", (1,)), ("ordinal", (2, 3))):
            if form in spec.forms:
                forms[form] = [
                    q
                    for p in inner
                    for k in ks
                    for side in SIDES
                    for q in [{"op": "ordinal", "k": k, "from": side, "of": p}]
                    if self.run(q) == wanted
                ]
        if "relation" in spec.forms:
            found = []
            for anchor_index, anchor in enumerate(objects):
                relations = [r for r in RELATIONS if anchor_index != target and _relation_holds(obj, anchor, r)]
                if not relations:
                    continue
                anchor_programs = [
                    p
                    for p in (_select_of(anchor, s) for s in _subsets(spec.kinds, empty=False))
                    if self.run(p) == {anchor_index}
                ]
                if not anchor_programs:
                    continue
                shortest = min(_attribute_count(p) for p in anchor_programs)
                anchor_programs = [p for p in anchor_programs if _attribute_count(p) == shortest]
                for relation in relations:
                    for p in inner:
                        for a in anchor_programs:
                            q = {"op": "relate", "relation": relation, "of": p, "anchor": a}
                            if self.run(q) == wanted:
                                found.append(q)
            forms["relation"] = found
        return {form: programs for form, programs in forms.items() if programs}

    def multi(self) -> list[dict[str, Any]]:
        """Plural attribute programs (``all``) that match two objects or more."""
        programs, seen = [], set()
        for obj in self.scene.objects:
            for subset in _subsets(self.spec.kinds, empty=False):
                program = {"op": "all", "of": _select_of(obj, subset)}
                key = json.dumps(program, sort_keys=True)
                if key not in seen and len(self.run(program)) >= 2:
                    seen.add(key)
                    programs.append(program)
        return programs

    def absent(self) -> list[dict[str, Any]]:
        """Attribute programs that match nothing: near misses of present objects."""
        spec = self.spec
        palette = {"colour": spec.colours, "shape": spec.shapes, "size": spec.sizes}
        subsets = [("colour", "shape")] if spec.conjunction_only else _subsets(spec.kinds, empty=False)
        programs, seen = [], set()
        for obj in self.scene.objects:
            for subset in subsets:
                for kind in subset:
                    for value in palette[kind]:
                        # A near miss of an existing object: one described attribute changed.
                        program = _select_of(obj, subset)
                        program[kind] = value
                        key = json.dumps(program, sort_keys=True)
                        if key not in seen and not self.run(program):
                            seen.add(key)
                            programs.append(program)
        return programs


def choose_programs(
    forms: Mapping[str, list[dict[str, Any]]], spec: LevelSpec, rng: np.random.Generator, count: int
) -> list[dict[str, Any]]:
    """Draw up to ``count`` distinct programs: forms by the level's weights, shorter ones likelier.

    Args:
        forms: programs by form, as from :meth:`ProgramEnumerator.singular`.
        spec: the level (its ``form_weights``).
        rng: the generator.
        count: how many programs (fewer when fewer exist).

    Returns:
        The programs.
    """
    weights_by_form = dict(spec.form_weights)
    pool, weights = [], []
    for form, programs in forms.items():
        # Shorter descriptions are likelier, as people prefer them (and minimal sets force near misses).
        inner = np.array([0.5 ** _attribute_count(p) for p in programs])
        pool += programs
        weights += (weights_by_form[form] * inner / inner.sum()).tolist()
    probabilities = np.array(weights) / np.sum(weights)
    picks = rng.choice(len(pool), size=min(count, len(pool)), replace=False, p=probabilities)
    return [pool[int(i)] for i in picks]
