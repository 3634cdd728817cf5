"""A procedural referring-segmentation benchmark that cannot be solved without the sentence.

Each image shows a few coloured shapes on a grid; each referring expression is a small
*program* executed on the scene, and it is only kept when it picks out exactly the intended
object (or, for the generalized options, no object or several). The sentence is the program
read aloud, so :func:`parse_expression` recovers the program from the sentence. Targets are
drawn uniformly among the describable objects of a scene and several expressions are made per
image, so the same picture carries different masks and a model that ignores the sentence
cannot do better than guessing an object.

Levels (``level=1`` is the default and what ``python -m reference_models.train`` uses):

1. *attributes*: 4-5 large shapes on a 3x3 grid, 4 colours x 4 shapes, plain background,
   every object a distinct colour-shape pair with near-miss distractors (same colour or same
   shape); every expression is the conjunction "the <colour> <shape>".
2. *position*: 5-6 shapes, 6 colours, 5 shapes, two sizes, up to two identical objects,
   shaded background; shortest identifying attribute sets, regions ("the circle on the
   left", "in the middle") and extremes ("the leftmost blue shape").
3. *relations*: 6-8 shapes on a 4x4 grid, 7 colours, 6 shapes, colour jitter and pixel noise;
   adds ordinals ("the second square from the top"), relations to a uniquely described
   anchor ("the circle left of the red star"), synonyms and sentence frames.
4. *clutter*: 8-10 shapes, 8 colours, 7 shapes, rotated shapes, up to three identical
   objects, a cluttered background and stronger noise; favours ordinals and relations.

Positional words have exact grid semantics: ``left`` is the left half of the columns (the
left third on a 3x3 grid), ordinals count distinct columns/rows, ``left of`` means a column
further left. Pictures are drawn by filling each object's mask, which is
:func:`~reference_models.data.masks.polygons_to_mask` of the polygon exported to
``instances.json``; objects never overlap, so every mask has exactly the area of its drawn
shape and the REFER loader reads back identical masks.

Text-blind ceiling (``python -m reference_models.data.ceiling``, 500 expressions per level,
seed 0, 64x64): the best of "random object", "largest object" and "union of all objects"
reaches mIoU 0.223 / 0.182 / 0.144 / 0.112 on levels 1-4 (all <= 0.30; details in
:mod:`reference_models.data.ceiling`).

Command line: ``python -m reference_models.data.synthetic --out DIR --format refer --level N
--count K`` writes K training images (and K/5 validation and test images) in the REFER layout
(``DIR/synthetic/refs(unc).p``, ``DIR/synthetic/instances.json``, ``DIR/images/synthetic/``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .programs import ProgramEnumerator, choose_programs, execute, parse_expression, realise
from .samples import make_sample
from .scenes import DEFAULT_LEVEL, LEVELS, LevelSpec, Scene, SceneObject, generate_scene, level_spec
from .tokenizers import Tokenizer, WordTokenizer
from .transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "SPLITS",
    "LEVELS",
    "DEFAULT_LEVEL",
    "LevelSpec",
    "SceneObject",
    "Scene",
    "Expression",
    "SyntheticRef",
    "generate_scene",
    "execute",
    "parse_expression",
    "SyntheticReferDataset",
    "export_refer",
    "main",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")
_SPLIT_CODES = {split: code for code, split in enumerate(SPLITS)}
# Image ids are unique across splits, as in REFER: split code * _ID_STRIDE + scene index.
_ID_STRIDE = 1_000_000
_MAX_OBJECTS_PER_IMAGE = 16
# Tags that keep the random streams of one scene apart (layout/expressions, pixels, sample).
_STREAM_LAYOUT, _STREAM_RENDER, _STREAM_SAMPLE = 1, 2, 3


class Expression(NamedTuple):
    """A referring expression: its program (JSON-like dict) and its sentence.

    Attributes:
        program: the program, executable by :func:`~reference_models.data.programs.execute`.
        sentence: the program read aloud.
    """

    program: dict[str, Any]
    sentence: str


class SyntheticRef(NamedTuple):
    """A referred target with its expressions.

    Attributes:
        targets: indices of the referred objects in the scene (empty for ``"none"``).
        expressions: the sentences that refer to exactly these targets.
        kind: ``"single"`` (one object), ``"multi"`` (several) or ``"none"`` (no object).
    """

    targets: tuple[int, ...]
    expressions: tuple[Expression, ...]
    kind: str


# -- expressions -----------------------------------------------------------------------------


def _expressions(
    programs: Sequence[dict[str, Any]], spec: LevelSpec, rng: np.random.Generator
) -> tuple[Expression, ...]:
    return tuple(Expression(program, realise(program, rng, spec)) for program in programs)


def _make_refs(
    scene: Scene,
    spec: LevelSpec,
    rng: np.random.Generator,
    *,
    refs_per_image: int,
    sentences_per_ref: int,
    no_target_prob: float,
    multi_target_prob: float,
) -> list[SyntheticRef]:
    enumerator = ProgramEnumerator(scene, spec)
    order = rng.permutation(len(scene.objects)).tolist()
    cache: dict[int, dict[str, list[dict[str, Any]]]] = {}
    position = 0
    refs: list[SyntheticRef] = []
    for _ in range(refs_per_image):
        draw = rng.random()
        if draw < no_target_prob:
            candidates = enumerator.absent()
            if candidates:
                chosen = [candidates[int(i)] for i in rng.permutation(len(candidates))[:sentences_per_ref]]
                refs.append(SyntheticRef((), _expressions(chosen, spec, rng), "none"))
                continue
        elif draw < no_target_prob + multi_target_prob:
            candidates = enumerator.multi()
            if candidates:
                program = candidates[int(rng.integers(len(candidates)))]
                targets = tuple(sorted(enumerator.run(program)))
                chosen = [program] + [
                    p for p in candidates if p is not program and enumerator.run(p) == frozenset(targets)
                ][: sentences_per_ref - 1]
                refs.append(SyntheticRef(targets, _expressions(chosen, spec, rng), "multi"))
                continue
        # A single target: the next describable object of a random order (cycling when needed).
        for _attempt in range(len(order)):
            target = order[position % len(order)]
            position += 1
            if target not in cache:
                cache[target] = enumerator.singular(target)
            if cache[target]:
                programs = choose_programs(cache[target], spec, rng, sentences_per_ref)
                refs.append(SyntheticRef((target,), _expressions(programs, spec, rng), "single"))
                break
        else:
            return []
    return refs


def _streams(seed: int, split: str, scene_index: int) -> tuple[np.random.Generator, np.random.Generator]:
    code = _SPLIT_CODES[split]
    return (
        np.random.default_rng([_STREAM_LAYOUT, seed, code, scene_index]),
        np.random.default_rng([_STREAM_RENDER, seed, code, scene_index]),
    )


def _generate(
    split: str,
    scene_index: int,
    *,
    level: int,
    size: int,
    seed: int,
    refs_per_image: int,
    sentences_per_ref: int,
    no_target_prob: float,
    multi_target_prob: float,
) -> tuple[Scene, list[SyntheticRef]]:
    spec = level_spec(level)
    layout_rng, render_rng = _streams(seed, split, scene_index)
    # A scene where no object can be described (rare above level 1) is redrawn from the same streams.
    for _attempt in range(50):
        scene = generate_scene(level, size, layout_rng, render_rng)
        refs = _make_refs(
            scene,
            spec,
            layout_rng,
            refs_per_image=refs_per_image,
            sentences_per_ref=sentences_per_ref,
            no_target_prob=no_target_prob,
            multi_target_prob=multi_target_prob,
        )
        if refs:
            return scene, refs
    raise RuntimeError(f"level {level}: no describable scene for {split} scene {scene_index}")


def _check_options(
    split: str, seed: int, refs_per_image: int, sentences_per_ref: int, no_target_prob: float, multi_target_prob: float
) -> None:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}; got {split!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0; got {seed!r}")
    if not isinstance(refs_per_image, int) or refs_per_image < 1:
        raise ValueError(f"refs_per_image: expected an int >= 1; got {refs_per_image!r}")
    if not isinstance(sentences_per_ref, int) or sentences_per_ref < 1:
        raise ValueError(f"sentences_per_ref: expected an int >= 1; got {sentences_per_ref!r}")
    for name, value in (("no_target_prob", no_target_prob), ("multi_target_prob", multi_target_prob)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}: expected a probability in [0, 1]; got {value!r}")
    if no_target_prob + multi_target_prob > 1.0:
        raise ValueError(f"no_target_prob + multi_target_prob: expected <= 1; got {no_target_prob + multi_target_prob}")


# -- dataset -----------------------------------------------------------------------------------


class SyntheticReferDataset(Dataset):
    """The procedural benchmark as a map-style dataset (generated on the fly, no files).

    Sample ``index`` shows scene ``index // refs_per_image`` with its ref
    ``index % refs_per_image``; everything is seeded from ``(seed, split, index)`` alone, so
    samples are identical for any worker count and order. Samples have the keys of
    :mod:`reference_models.data.samples` (the same as :class:`~reference_models.data.refer.ReferDataset`).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint random streams).
        level: difficulty level, 1-4 (see the module docstring).
        image_size: picture side (scenes are drawn at this size, >= 32).
        length: number of samples (default 10000 for train, 1000 otherwise).
        seed: base seed (>= 0).
        tokenizer: default :class:`~reference_models.data.tokenizers.WordTokenizer`.
        refs_per_image: expressions (targets) per picture.
        sentences_per_ref: sentences generated per target; a sample shows one at random.
        no_target_prob: probability that a ref describes an absent object (empty mask).
        multi_target_prob: probability that a ref is a plural over several objects.
        mean: normalisation mean.
        std: normalisation standard deviation.
        keep_original_mask: add ``orig_mask`` (here equal to ``mask``).

    Example:
        >>> data = SyntheticReferDataset("val", level=1, image_size=64, length=8, seed=0)
        >>> sample = data[0]
        >>> sample["image"].shape, sample["mask"].shape, sample["input_ids"].shape
        (torch.Size([3, 64, 64]), torch.Size([64, 64]), torch.Size([20]))
    """

    def __init__(
        self,
        split: str = "train",
        *,
        level: int = DEFAULT_LEVEL,
        image_size: int = 64,
        length: int | None = None,
        seed: int = 0,
        tokenizer: Tokenizer | None = None,
        refs_per_image: int = 3,
        sentences_per_ref: int = 1,
        no_target_prob: float = 0.0,
        multi_target_prob: float = 0.0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        keep_original_mask: bool = False,
    ) -> None:
        _check_options(split, seed, refs_per_image, sentences_per_ref, no_target_prob, multi_target_prob)
        self.spec = level_spec(level)
        if not isinstance(image_size, int) or image_size < 32:
            raise ValueError(f"image_size: expected an int >= 32; got {image_size!r}")
        length = (10_000 if split == "train" else 1_000) if length is None else length
        if not isinstance(length, int) or length < 1 or length > _ID_STRIDE * refs_per_image:
            raise ValueError(f"length: expected an int in [1, {_ID_STRIDE * refs_per_image}]; got {length!r}")
        if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
            raise ValueError(f"tokenizer: expected a tokenizer with max_length and __call__; got {tokenizer!r}")
        self.split, self.level, self.image_size, self.length, self.seed = split, level, image_size, length, seed
        self.tokenizer: Tokenizer = WordTokenizer() if tokenizer is None else tokenizer
        self.refs_per_image, self.sentences_per_ref = refs_per_image, sentences_per_ref
        self.no_target_prob, self.multi_target_prob = float(no_target_prob), float(multi_target_prob)
        self.mean, self.std = tuple(mean), tuple(std)
        self.keep_original_mask = keep_original_mask
        # Consecutive samples share a scene; a small per-process cache avoids redrawing it.
        self._cache: OrderedDict[int, tuple[Scene, list[SyntheticRef]]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": OrderedDict()}

    def scene(self, scene_index: int) -> tuple[Scene, list[SyntheticRef]]:
        """The scene number ``scene_index`` of this split and its refs."""
        if scene_index in self._cache:
            self._cache.move_to_end(scene_index)
            return self._cache[scene_index]
        result = _generate(
            self.split,
            scene_index,
            level=self.level,
            size=self.image_size,
            seed=self.seed,
            refs_per_image=self.refs_per_image,
            sentences_per_ref=self.sentences_per_ref,
            no_target_prob=self.no_target_prob,
            multi_target_prob=self.multi_target_prob,
        )
        self._cache[scene_index] = result
        if len(self._cache) > 8:
            self._cache.popitem(last=False)
        return result

    def __len__(self) -> int:
        return self.length

    def image_id(self, scene_index: int) -> int:
        """The REFER image id of a scene (unique across splits)."""
        return _SPLIT_CODES[self.split] * _ID_STRIDE + scene_index

    def ref(self, index: int) -> tuple[Scene, SyntheticRef]:
        """The scene and ref shown by sample ``index`` (programs, targets, sentences)."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        scene_index, slot = divmod(index, self.refs_per_image)
        scene, refs = self.scene(scene_index)
        return scene, refs[slot % len(refs)]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += self.length
        scene, ref = self.ref(index)
        choice = 0
        if len(ref.expressions) > 1:
            rng = np.random.default_rng([_STREAM_SAMPLE, self.seed, _SPLIT_CODES[self.split], index])
            choice = int(rng.integers(len(ref.expressions)))
        mask = scene.masks[list(ref.targets)].any(0) if ref.targets else np.zeros((scene.size, scene.size), dtype=bool)
        scene_index = index // self.refs_per_image
        ref_id = self.image_id(scene_index) * self.refs_per_image + index % self.refs_per_image
        return make_sample(
            Image.fromarray(scene.image, mode="RGB"),
            mask,
            ref.expressions[choice].sentence,
            tokenizer=self.tokenizer,
            image_size=self.image_size,
            resize="square",
            mean=self.mean,
            std=self.std,
            image_id=self.image_id(scene_index),
            ref_id=ref_id,
            sent_id=ref_id * self.sentences_per_ref + choice,
            keep_original_mask=self.keep_original_mask,
        )

    def __repr__(self) -> str:
        return (
            f"SyntheticReferDataset(split={self.split!r}, level={self.level}, image_size={self.image_size}, "
            f"length={self.length}, seed={self.seed})"
        )


def __getattr__(name: str):
    # The REFER-layout export and its command line live in .export, which builds on this
    # module; they stay part of its interface (``export_refer``, ``python -m
    # reference_models.data.synthetic``) without a circular import.
    if name in ("export_refer", "main"):
        from . import export

        return getattr(export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    from ..cli import run
    from .export import main

    # as every command: a read-only folder, /proc or a full disk is one line, not a traceback
    raise SystemExit(run(main, "python -m reference_models.data.synthetic"))
