"""Scenes of the synthetic benchmark: difficulty levels, shapes, layout and rendering.

A scene is a few coloured shapes, one per cell of a square grid, drawn by filling each
object's mask; every mask is :func:`~reference_models.data.masks.polygons_to_mask` of the
object's polygon (the polygon exported to ``instances.json``), and objects never overlap, so
each mask has exactly the area of the drawn shape. The levels are described in
:mod:`reference_models.data.synthetic`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .lexicon import COLOURS, SHAPES, TEMPLATES
from .masks import polygons_to_mask

__all__ = ["LevelSpec", "LEVELS", "DEFAULT_LEVEL", "level_spec", "SceneObject", "Scene", "generate_scene"]


@dataclass(frozen=True)
class LevelSpec:
    """Everything that makes one difficulty level.

    The levels themselves are described in :mod:`reference_models.data.synthetic`.

    Attributes:
        level: the level number (1-4).
        name: a one-word label (``"attributes"``, ``"position"``, ...).
        grid: cells per side of the layout grid (one object per cell at most).
        min_objects: fewest objects in a scene.
        max_objects: most objects in a scene.
        colours: colour names objects are drawn from.
        shapes: shape names objects are drawn from.
        sizes: size names (``"large"``, ``"small"``); one size means size never varies.
        form_weights: ``(expression form, weight)`` pairs: how often each form
            (``attributes``, ``region``, ``extreme``, ``ordinal``, ``relation``) is chosen.
        conjunction_only: every expression names colour and shape together.
        unique_objects: no two objects share all attributes.
        max_identical: most objects with identical attributes (when not unique).
        near_miss: probability that a new object copies an earlier one with one attribute
            changed (a distractor that only that attribute tells apart).
        synonyms: shape words may be replaced by synonyms.
        templates: how many sentence frames of :data:`~reference_models.data.lexicon.TEMPLATES`
            are used.
        background: ``"plain"``, ``"shade"``, ``"gradient"`` or ``"clutter"``.
        colour_jitter: largest per-channel offset added to an object's colour.
        noise_std: standard deviation of the Gaussian pixel noise.
        rotation_jitter: largest rotation of a shape, in degrees.
    """

    level: int
    name: str
    grid: int
    min_objects: int
    max_objects: int
    colours: tuple[str, ...]
    shapes: tuple[str, ...]
    sizes: tuple[str, ...]
    form_weights: tuple[tuple[str, float], ...]
    conjunction_only: bool = False
    unique_objects: bool = False
    max_identical: int = 1
    near_miss: float = 0.8
    synonyms: bool = False
    templates: int = 1
    background: str = "plain"
    colour_jitter: int = 0
    noise_std: float = 0.0
    rotation_jitter: float = 0.0

    @property
    def forms(self) -> tuple[str, ...]:
        """Expression forms used at this level."""
        return tuple(form for form, _ in self.form_weights)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Attribute kinds that vary between objects (size only with two sizes)."""
        return ("colour", "shape") + (("size",) if len(self.sizes) > 1 else ())


LEVELS: dict[int, LevelSpec] = {
    1: LevelSpec(
        level=1,
        name="attributes",
        grid=3,
        min_objects=4,
        max_objects=5,
        colours=("red", "green", "blue", "yellow"),
        shapes=("circle", "square", "triangle", "cross"),
        sizes=("large",),
        form_weights=(("attributes", 1.0),),
        conjunction_only=True,
        unique_objects=True,
    ),
    2: LevelSpec(
        level=2,
        name="position",
        grid=3,
        min_objects=5,
        max_objects=6,
        colours=("red", "green", "blue", "yellow", "purple", "orange"),
        shapes=("circle", "square", "triangle", "cross", "diamond"),
        sizes=("large", "small"),
        form_weights=(("attributes", 1.0), ("region", 1.0), ("extreme", 1.0)),
        max_identical=2,
        templates=2,
        background="shade",
    ),
    3: LevelSpec(
        level=3,
        name="relations",
        grid=4,
        min_objects=6,
        max_objects=8,
        colours=("red", "green", "blue", "yellow", "purple", "orange", "cyan"),
        shapes=("circle", "square", "triangle", "cross", "diamond", "star"),
        sizes=("large", "small"),
        form_weights=(("attributes", 1.0), ("region", 1.0), ("extreme", 1.0), ("ordinal", 1.0), ("relation", 2.0)),
        max_identical=2,
        synonyms=True,
        templates=4,
        background="gradient",
        colour_jitter=12,
        noise_std=4.0,
    ),
    4: LevelSpec(
        level=4,
        name="clutter",
        grid=4,
        min_objects=8,
        max_objects=10,
        colours=tuple(COLOURS),
        shapes=SHAPES,
        sizes=("large", "small"),
        form_weights=(("attributes", 0.5), ("region", 1.0), ("extreme", 1.0), ("ordinal", 1.5), ("relation", 2.5)),
        max_identical=3,
        near_miss=0.85,
        synonyms=True,
        templates=len(TEMPLATES),
        background="clutter",
        colour_jitter=18,
        noise_std=8.0,
        rotation_jitter=20.0,
    ),
}
DEFAULT_LEVEL = 1

# Circumradius of an object relative to a grid cell, and the guaranteed gap: every vertex lies
# within RADIUS * cell of the centre, centres stay (RADIUS + GAP) * cell inside their cell, so
# objects in neighbouring cells are at least 2 * GAP * cell apart.
_RADIUS = {"large": 0.36, "small": 0.22}
_GAP = 0.08


def _unit_shapes() -> dict[str, np.ndarray]:
    def ring(count: int, radius: float, start: float) -> np.ndarray:
        angles = start + 2 * math.pi * np.arange(count) / count
        return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)

    triangle = np.array([[0.0, -1.0], [math.sqrt(3) / 2, 0.5], [-math.sqrt(3) / 2, 0.5]]) + [0.0, 0.25]
    arm, reach = 0.32, math.sqrt(1 - 0.32**2)
    cross = np.array(
        [
            [-arm, -reach], [arm, -reach], [arm, -arm], [reach, -arm], [reach, arm], [arm, arm],
            [arm, reach], [-arm, reach], [-arm, arm], [-reach, arm], [-reach, -arm], [-arm, -arm],
        ]
    )  # fmt: skip
    star = ring(10, 1.0, -math.pi / 2)
    star[1::2] *= 0.45
    shapes = {
        "circle": ring(32, 0.95, 0.0),
        "square": ring(4, 1.0, math.pi / 4),
        "triangle": triangle,
        "cross": cross,
        "diamond": np.array([[0.0, -1.0], [0.72, 0.0], [0.0, 1.0], [-0.72, 0.0]]),
        "star": star,
        "hexagon": ring(6, 1.0, 0.0),
    }
    # Centre on the bounding box and scale so the farthest vertex is at distance 1.
    for name, points in shapes.items():
        points = points - (points.max(0) + points.min(0)) / 2
        shapes[name] = points / np.linalg.norm(points, axis=1).max()
    return shapes


_UNIT_SHAPES = _unit_shapes()


@dataclass(frozen=True)
class SceneObject:
    """One shape of a scene: its attributes, grid cell, drawn colour and polygon (pixels).

    Attributes:
        colour: colour name.
        shape: shape name.
        size: size name.
        row: grid row (0 at the top).
        col: grid column (0 at the left).
        rgb: the colour actually drawn (after jitter).
        polygon: the outline as flat ``(x0, y0, x1, y1, ...)`` pixel coordinates (COCO style).
    """

    colour: str
    shape: str
    size: str
    row: int
    col: int
    rgb: tuple[int, int, int]
    polygon: tuple[float, ...]

    def attributes(self) -> dict[str, str]:
        """``{"colour": ..., "shape": ..., "size": ...}``."""
        return {"colour": self.colour, "shape": self.shape, "size": self.size}


@dataclass(frozen=True, eq=False)
class Scene:
    """A generated picture with its objects.

    Attributes:
        level: the level it was drawn at.
        grid: cells per side.
        size: picture side in pixels.
        objects: the shapes.
        image: ``(size, size, 3)`` uint8 picture.
        masks: ``(num_objects, size, size)`` bool, one exact mask per object.
    """

    level: int
    grid: int
    size: int
    objects: tuple[SceneObject, ...]
    image: np.ndarray
    masks: np.ndarray


def level_spec(level: int) -> LevelSpec:
    """The :class:`LevelSpec` of a level.

    Args:
        level: a key of :data:`LEVELS`.

    Returns:
        The level's specification.

    Raises:
        ValueError: for an unknown level (the message lists the levels).

    Example:
        >>> level_spec(1).name, level_spec(1).kinds
        ('attributes', ('colour', 'shape'))
    """
    if level not in LEVELS:
        raise ValueError(f"level: expected one of {sorted(LEVELS)}; got {level!r}")
    return LEVELS[level]


def _sample_attributes(spec: LevelSpec, rng: np.random.Generator, count: int) -> list[dict[str, str]]:
    palette = {"colour": spec.colours, "shape": spec.shapes, "size": spec.sizes}
    chosen: list[dict[str, str]] = []

    def allowed(candidate: dict[str, str]) -> bool:
        same = sum(1 for other in chosen if other == candidate)
        return same < (1 if spec.unique_objects else spec.max_identical)

    for _ in range(count):
        candidate: dict[str, str] = {}
        for _attempt in range(100):
            if chosen and rng.random() < spec.near_miss:
                # A near miss: copy an object and change one attribute, so that object needs
                # the changed attribute (or its position) to be told apart.
                candidate = dict(chosen[int(rng.integers(len(chosen)))])
                kind = spec.kinds[int(rng.integers(len(spec.kinds)))]
                others = [v for v in palette[kind] if v != candidate[kind]]
                candidate[kind] = others[int(rng.integers(len(others)))]
            else:
                candidate = {kind: values[int(rng.integers(len(values)))] for kind, values in palette.items()}
            if allowed(candidate):
                break
        else:
            raise RuntimeError(f"level {spec.level}: could not place {count} distinct objects")
        chosen.append(candidate)
    return chosen


def _background(spec: LevelSpec, size: int, rng: np.random.Generator) -> Image.Image:
    if spec.background == "plain":
        return Image.new("RGB", (size, size), (35, 35, 35))
    if spec.background == "shade":
        grey = int(rng.integers(20, 71))
        return Image.new("RGB", (size, size), (grey, grey, grey))
    start, stop = rng.integers(15, 81, size=2)
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    ramp = (xs * math.cos(angle) + ys * math.sin(angle) - min(0, math.cos(angle)) - min(0, math.sin(angle))) / (
        abs(math.cos(angle)) + abs(math.sin(angle))
    )
    grey = np.round(start + (stop - start) * ramp).astype(np.uint8)
    picture = Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), mode="RGB")
    if spec.background == "clutter":
        # Low-contrast grey strokes and specks: texture that is never a referent.
        draw = ImageDraw.Draw(picture)
        for _ in range(int(rng.integers(6, 13))):
            shade = int(rng.integers(60, 111))
            x0, y0, x1, y1 = (rng.uniform(0, size, size=4)).tolist()
            if rng.random() < 0.5:
                draw.line([(x0, y0), (x1, y1)], fill=(shade, shade, shade), width=max(1, size // 64))
            else:
                r = rng.uniform(0.5, 2.0) * size / 64
                draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=(shade, shade, shade))
    return picture


def generate_scene(
    level: int, size: int, layout_rng: np.random.Generator, render_rng: np.random.Generator
) -> Scene:
    """Draw one scene: attributes and positions from ``layout_rng``, pixels from ``render_rng``.

    The layout does not depend on ``size``, so one seed gives the same scene at any resolution.

    Args:
        level: difficulty level (a key of :data:`LEVELS`).
        size: picture side in pixels (>= 32).
        layout_rng: generator for attributes and cells.
        render_rng: generator for background, colour jitter and noise.

    Returns:
        The :class:`Scene`.

    Example:
        >>> scene = generate_scene(1, 64, np.random.default_rng(0), np.random.default_rng(1))
        >>> scene.image.shape, scene.masks.shape[1:], len(scene.objects) in (4, 5)
        ((64, 64, 3), (64, 64), True)
    """
    spec = level_spec(level)
    if not isinstance(size, int) or size < 32:
        raise ValueError(f"image_size: expected an int >= 32; got {size!r}")
    count = int(layout_rng.integers(spec.min_objects, spec.max_objects + 1))
    attributes = _sample_attributes(spec, layout_rng, count)
    cells = layout_rng.choice(spec.grid * spec.grid, size=count, replace=False)
    cell = 1.0 / spec.grid
    placements = []
    for attrs, cell_index in zip(attributes, cells.tolist()):
        row, col = divmod(int(cell_index), spec.grid)
        radius = _RADIUS[attrs["size"]] * cell
        slack = 0.5 * cell - radius - _GAP * cell
        cx = (col + 0.5) * cell + layout_rng.uniform(-slack, slack)
        cy = (row + 0.5) * cell + layout_rng.uniform(-slack, slack)
        angle = 0.0
        if spec.rotation_jitter:
            angle = math.radians(layout_rng.uniform(-spec.rotation_jitter, spec.rotation_jitter))
        placements.append((attrs, row, col, cx, cy, radius, angle))

    picture = _background(spec, size, render_rng)
    pixels = np.array(picture, dtype=np.uint8)
    objects, masks = [], []
    for attrs, row, col, cx, cy, radius, angle in placements:
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        points = _UNIT_SHAPES[attrs["shape"]] @ rotation.T * radius + [cx, cy]
        # Rounded like COCO polygons; the mask is drawn from exactly these numbers.
        polygon = tuple(round(float(v), 2) for v in (points * size).ravel())
        mask = polygons_to_mask([polygon], size, size)
        base = np.array(COLOURS[attrs["colour"]])
        jitter = render_rng.integers(-spec.colour_jitter, spec.colour_jitter + 1, size=3) if spec.colour_jitter else 0
        rgb = tuple(int(v) for v in np.clip(base + jitter, 0, 255))
        pixels[mask] = rgb
        objects.append(SceneObject(attrs["colour"], attrs["shape"], attrs["size"], row, col, rgb, polygon))
        masks.append(mask)
    stacked = np.stack(masks)
    if stacked.sum(0).max() > 1:
        raise RuntimeError(f"level {level}, size {size}: objects overlap (a generator bug)")
    if spec.noise_std:
        noisy = pixels.astype(np.float32) + render_rng.normal(0.0, spec.noise_std, size=pixels.shape)
        pixels = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    return Scene(level, spec.grid, size, tuple(objects), pixels, stacked)
