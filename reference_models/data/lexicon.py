"""The closed vocabulary of the synthetic benchmark: attribute values, their words, and the word list.

Kept apart from the generator so the word-level tokenizer can be built without importing it.
"""

from __future__ import annotations

__all__ = [
    "COLOURS",
    "SHAPES",
    "SIZES",
    "SHAPE_SYNONYMS",
    "SHAPE_PLURALS",
    "SIZE_WORDS",
    "GENERIC_NOUNS",
    "GENERIC_PLURALS",
    "REGION_PHRASES",
    "EXTREME_WORDS",
    "ORDINAL_WORDS",
    "RELATION_PHRASES",
    "TEMPLATES",
    "SYNTHETIC_WORDS",
]

# Saturated, well separated colours; backgrounds and clutter use greys darker than all of them.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 90, 235),
    "yellow": (240, 220, 40),
    "purple": (155, 60, 205),
    "orange": (250, 135, 30),
    "cyan": (50, 215, 225),
    "white": (245, 245, 245),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond", "star", "hexagon")
SIZES: tuple[str, ...] = ("large", "small")

SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "ball", "disk"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "cross": ("cross", "plus"),
    "diamond": ("diamond", "rhombus"),
    "star": ("star",),
    "hexagon": ("hexagon",),
}
SHAPE_PLURALS: dict[str, str] = {
    "circle": "circles",
    "ball": "balls",
    "disk": "disks",
    "square": "squares",
    "box": "boxes",
    "block": "blocks",
    "triangle": "triangles",
    "cross": "crosses",
    "plus": "pluses",
    "diamond": "diamonds",
    "rhombus": "rhombuses",
    "star": "stars",
    "hexagon": "hexagons",
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {"large": ("big", "large"), "small": ("small", "little")}
GENERIC_NOUNS: tuple[str, ...] = ("shape", "object", "thing")
GENERIC_PLURALS: dict[str, str] = {"shape": "shapes", "object": "objects", "thing": "things"}

REGION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left",),
    "right": ("on the right",),
    "top": ("at the top",),
    "bottom": ("at the bottom",),
    "centre": ("in the middle", "in the center"),
}
# Extremes ("the leftmost ...") are ordinal 1; the first word is used below level 3.
EXTREME_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("leftmost",),
    "right": ("rightmost",),
    "top": ("topmost", "highest"),
    "bottom": ("bottommost", "lowest"),
}
ORDINAL_WORDS: dict[int, str] = {1: "first", 2: "second", 3: "third"}
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "left_of": ("left of", "to the left of"),
    "right_of": ("right of", "to the right of"),
    "above": ("above", "over"),
    "below": ("below", "under"),
}
# Sentence frames around the noun phrase; levels use a prefix of this tuple.
TEMPLATES: tuple[str, ...] = ("the {}", "{}", "find the {}", "select the {}", "segment the {}", "show me the {}")


def _all_words() -> tuple[str, ...]:
    words: list[str] = ["the", "all", "from", "please"]
    words += list(COLOURS)
    for synonyms in SHAPE_SYNONYMS.values():
        words += synonyms
    words += SHAPE_PLURALS.values()
    for size_words in SIZE_WORDS.values():
        words += size_words
    words += GENERIC_NOUNS
    words += GENERIC_PLURALS.values()
    for group in (REGION_PHRASES, EXTREME_WORDS, RELATION_PHRASES):
        for phrases in group.values():
            for phrase in phrases:
                words += phrase.split()
    words += ORDINAL_WORDS.values()
    words += ["left", "right", "top", "bottom"]
    for template in TEMPLATES:
        words += template.replace("{}", " ").split()
    unique: list[str] = []
    for word in words:
        if word not in unique:
            unique.append(word)
    return tuple(unique)


# The order fixes the word-level tokenizer's ids; a checkpoint should store the tokenizer's
# ``vocabulary`` rather than rely on these tables staying unchanged.
SYNTHETIC_WORDS: tuple[str, ...] = _all_words()
