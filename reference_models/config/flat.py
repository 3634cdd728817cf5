"""Flat names of before, read into the composed configuration.

Until the configuration was composed, one flat dataclass of 70 fields described every model
(``refiner_iters``, ``aligner_masks``, ``s2rm_fusion`` ...). Those names stay: the README,
the guides, the catalogue rows and the recorded studies use them, and every ``config.json``
and checkpoint written before holds them. :func:`from_flat` reads a flat dict into the
composed config of its architecture; :func:`to_flat` writes one back, so that
:meth:`ModelConfig.replace` with flat names means what it meant. Each flat name lives in the
part configs' ``flat_names``; the few that choose a part (``plugin``, ``s2rm_fusion`` ...)
are in :data:`CHOICES`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Sequence
from typing import Any

from .model import _USER_PARTS, CONFIG_CLASSES, ModelConfig, part_from_dict, unknown_kind_hint
from .baselines import AlignerConfig
from .parts import ClipTextConfig, PartConfig, RefinerHeadConfig, as_tuples

__all__ = [
    "LEGACY_DEFAULTS", "CHOICES", "from_flat", "to_flat", "is_flat", "apply_overrides", "parse_overrides", "readers",
    "keep_user_parts",
]

#: The flat config's defaults, what a flat ``config.json`` meant by a field it did not hold.
LEGACY_DEFAULTS: dict[str, Any] = {
    "name": "custom", "architecture": "lavt", "plugin": None, "image_size": 480,
    "vision_encoder": "swin", "swin_embed_dim": 128, "swin_depths": (2, 2, 18, 2), "swin_heads": (4, 8, 16, 32),
    "swin_window": 12, "swin_windows": "timm", "clip_width": 768, "clip_layers": 12, "clip_heads": 12, "clip_patch": 16,
    "clip_embed_dim": 512, "clip_activation": "gelu", "vision_weights": None, "drop_path": 0.2,
    "text_encoder": "bert", "text_dim": 768, "text_layers": 12, "text_heads": 12, "text_intermediate": 3072,
    "vocab_size": 30522, "max_words": 20, "tokenizer": "bert", "text_weights": None, "text_dropout": 0.1,
    "norm": "batch", "decoder_dim": 512, "num_queries": 16, "transformer_layers": 2, "vlt_response": "spatial",
    "refiner_iters": 3, "refiner_hidden": (128, 512), "refiner_repeats": 1, "refiner_update": "sum",
    "refiner_pooling": "hard", "loss_weights": (0.15, 0.15, 0.7),
    "selector_layers": ((4, 6), (7, 9)), "selector_gradient": "straight_through", "aligner_masks": 32, "focal_weight": 1.0,
    "asda_selection": "adaptive", "asda_fixed_layers": (6, 9), "asda_fusion": "sfa", "asda_aggregator": "paper",
    "asda_loss": "focal_dice", "selector_head": "linear", "selector_text": "sentence", "aligner_branches": "dual",
    "aligner_word_mask": True, "aligner_blocks": "pre_norm", "aligner_output_bias": True,
    "pwam_norm_affine": True, "decoder_align_corners": False, "head_loss": "dice", "lavt_last_gate": False,
    "s2rm_pos_dim": 8, "s2rm_fusion": "coparser", "s2rm_decoder": "casg", "coparser_directions": ("l2v", "v2l"),
    "coparser_shift": True, "coparser_balance": True, "coparser_implementation": "gemm",
    "casg_language": True, "casg_channel": True, "casg_spatial": True, "casg_activation": "tanh", "casg_stages": 3,
}

# Fields whose default changed after flat configs were saved without them, by the
# architecture that reads them: a saved config that lacks one was built the old way (VLT's
# first reading; LAVT's last gate; ASDA's aligner before its logit offset).
_SAVED_BEFORE_THE_FIELD = {
    "vlt_response": ("vlt", "modulate"), "lavt_last_gate": ("lavt", True), "aligner_output_bias": ("asda", False),
}

#: The flat names that choose a slot's part, each with its slot, its values' part kinds and
#: the architectures where it chooses (None for all). A slot with several parts and no flat
#: name (LAVT's neck, say) is chosen in a flat dict by the slot's own name, ``{"neck": "coparser"}``.
CHOICES: dict[str, tuple[str, dict[Any, str | None], tuple[str, ...] | None]] = {
    "vision_encoder": ("vision", {"swin": "swin", "clip": "clip"}, None),
    "text_encoder": ("text", {"bert": "bert", "clip": "clip"}, None),
    "plugin": ("head", {None: None, "sadlr": "sadlr"}, None),
    "s2rm_fusion": ("neck", {"coparser": "coparser", "tile_concat": "tile_concat", "pwam": "pwam"}, ("s2rm",)),
    "s2rm_decoder": ("decoder", {"casg": "casg", "fpn": "fpn"}, ("s2rm",)),
    "asda_selection": ("selector", {"adaptive": "adaptive", "fixed": "fixed", "top": "top"}, ("asda",)),
    "asda_fusion": ("aggregator", {"sfa": "sfa", "concat": "concat"}, ("asda",)),
}
_CORE = ("name", "architecture", "image_size", "norm")
# With SADLR's refiner as the head of a model with ASDA's aligner (ASDA, or a baseline with
# decoder=aligner), the refiner reads the aligner's decoded map: the aligner's assembly and
# ASDA's loss are not built.
_UNREAD_WITH_A_REFINER_ON_THE_ALIGNER = {
    "aligner_masks", "aligner_branches", "aligner_word_mask", "aligner_output_bias", "asda_loss", "focal_weight",
}


def is_flat(data: dict[str, Any]) -> bool:
    """Whether a ``config.json`` dict is a flat one of before (its encoders are not parts).

    Args:
        data: the file's object.

    Example:
        >>> is_flat({"architecture": "lavt", "refiner_iters": 2}), is_flat({"architecture": "lavt", "vision": {"kind": "swin"}})
        (True, False)
    """
    return not isinstance(data.get("vision"), dict) or any(key in LEGACY_DEFAULTS and key not in _CORE for key in data)


def _choice_for(cls: type[ModelConfig], slot: str) -> str | None:
    """The flat name that chooses ``slot``'s part in this architecture (None: it has none)."""
    for name, (chosen, _, architectures) in CHOICES.items():
        if chosen == slot and (architectures is None or cls.architecture in architectures):
            return name
    return None


def _pick(cls: type[ModelConfig], slot: str, values: dict[str, Any]) -> type[PartConfig] | None:
    """The part class a flat dict chooses for ``slot`` (by its flat name, or by the slot's name)."""
    options = cls.all_slots()[slot]
    choice = _choice_for(cls, slot)
    if choice is None:
        if slot not in values:
            return options[0]
        by_kind = {o.kind if o is not None else None: o for o in options}
        if values[slot] not in by_kind:
            raise ValueError(f"{slot}: expected one of {list(by_kind)} for {cls.architecture}; got {values[slot]!r}{unknown_kind_hint(values[slot], slot)}")
        return by_kind[values[slot]]
    names = CHOICES[choice][1]
    value = values[choice]
    by_kind = {o.kind if o is not None else None: o for o in options}
    if slot == "head":  # no plugin: the baselines' classifier, or no head at all
        by_kind[None] = options[0]
    allowed = tuple(v for v, kind in names.items() if kind in by_kind)
    if value not in allowed or names[value] not in by_kind:
        what = f" for {cls.architecture}" if len(allowed) < len(names) else ""
        raise ValueError(f"{choice}: expected one of {allowed}{what}; got {value!r}")
    return by_kind[names[value]]


def from_flat(flat: dict[str, Any], *, given: set[str] | None = None, saved: bool = False) -> ModelConfig:
    """The composed config a flat dict describes.

    Args:
        flat: flat field names and values; a name it lacks takes its flat default.
        given: names the user asked for: each must be read by a part of the resulting model,
            or ``ValueError`` names the parts that read it. Other names that no part reads
            are dropped (a saved flat config holds every field, read or not).
        saved: ``flat`` was saved by the flat config: a field it lacks whose default changed
            since takes the value it was built with.
    """
    unknown = sorted(set(flat) - set(LEGACY_DEFAULTS) - set(SLOT_NAMES))
    if unknown:
        raise ValueError(f"config: unknown keys {_near_misses(unknown)}")
    values = {**LEGACY_DEFAULTS, **{k: as_tuples(v) for k, v in flat.items()}}
    architecture = values["architecture"]
    if architecture not in CONFIG_CLASSES:
        raise ValueError(f"architecture: expected one of {tuple(CONFIG_CLASSES)}; got {architecture!r}")
    if saved:
        for key, (reader, value) in _SAVED_BEFORE_THE_FIELD.items():
            if architecture == reader and key not in flat:
                values[key] = value
    cls = CONFIG_CLASSES[architecture]
    read = set(_CORE) | {slot for slot in flat if slot in SLOT_NAMES}
    parts: dict[str, Any] = {}
    for slot in cls.all_slots():
        if _choice_for(cls, slot):
            read.add(_choice_for(cls, slot))
        part_cls = _pick(cls, slot, values)
        if part_cls is None:
            parts[slot] = None
            continue
        read.update(part_cls.flat_names.values())
        parts[slot] = _make(part_cls, values)
    if isinstance(parts.get("head"), RefinerHeadConfig) and any(isinstance(p, AlignerConfig) for p in parts.values()):
        read -= _UNREAD_WITH_A_REFINER_ON_THE_ALIGNER
    unread = sorted((given or set()) - read)
    if unread:
        raise ValueError(f"{unread[0]}: no part of this {_describe(cls, parts)} model reads it; {readers(unread[0])}")
    return _core(cls, values, parts)


def keep_user_parts(before: ModelConfig, after: ModelConfig, changed: set[str]) -> ModelConfig:
    """``after`` (rebuilt from flat names) with ``before``'s parts of the users' own put back.

    A user's part has no flat names, so a round trip through them rebuilds it with its
    defaults (or, for a head, as the classifier); it stays as it was unless ``changed``
    chooses its slot again (``plugin``, ``neck`` ...).

    Args:
        before: the config before the round trip.
        after: the config :func:`from_flat` rebuilt.
        changed: the flat names the round trip was asked to change.

    Example:
        >>> from reference_models import get_config
        >>> keep_user_parts(get_config("lavt_tiny"), get_config("lavt_sadlr_tiny"), {"plugin"}).head.kind
        'sadlr'
    """
    user_parts = {part for options in _USER_PARTS.values() for part in options}
    kept = {}
    for slot, part in before.parts().items():
        chosen_by = {slot, _choice_for(type(before), slot)}
        if type(part) in user_parts and slot in after.all_slots() and not chosen_by & changed:
            kept[slot] = part
    if not kept:
        return after
    final = dataclasses.replace(after, **kept)
    # the round trip's stand-in (the classifier for a head) read names the kept part does not
    read = {name for part in final.parts().values() if part is not None for name in part.flat_names.values()}
    unread = sorted(name for name in changed - read if name in LEGACY_DEFAULTS and name not in _CORE and name not in CHOICES)
    if unread:
        raise ValueError(f"{unread[0]}: no part of this {_describe(type(final), final.parts())} model reads it; {readers(unread[0])}")
    return final


def _core(cls: type[ModelConfig], values: dict[str, Any], parts: dict[str, Any]) -> ModelConfig:
    return cls(name=values["name"], image_size=values["image_size"], norm=values["norm"], **parts)


def _make(part_cls: type[PartConfig], values: dict[str, Any]) -> PartConfig:
    kwargs = {field: values[flat] for field, flat in part_cls.flat_names.items()}
    if part_cls is ClipTextConfig:
        kwargs["context_length"] = ClipTextConfig.context_for(values["max_words"], values["vocab_size"])
    try:
        return part_cls(**kwargs)
    except ValueError as err:
        fields, _, rest = str(err).partition(": ")
        named = ", ".join(part_cls.flat_names.get(field, field) for field in fields.split(", "))
        raise ValueError(f"{named}: {rest}") from None


def _describe(cls: type[ModelConfig], parts: dict[str, Any]) -> str:
    kinds = [f"{slot}={part.kind}" for slot, part in parts.items() if part is not None and slot not in ("vision", "text")]
    return f"{cls.architecture} ({', '.join(kinds)})"


def readers(flat_name: str) -> str:
    """Which parts read a flat name, for the messages that refuse it.

    Args:
        flat_name: a flat option name.

    Example:
        >>> readers("aligner_masks")
        'read by: decoder=aligner (lavt), decoder=aligner (vlt), decoder=aligner (lts), aligner=aligner (asda)'
    """
    where = []
    for cls in CONFIG_CLASSES.values():
        for slot, options in cls.all_slots().items():
            for option in options:
                if option is not None and flat_name in option.flat_names.values():
                    where.append(f"{slot}={option.kind} ({cls.architecture})")
        if flat_name in CHOICES and CHOICES[flat_name][0] in cls.all_slots():
            where.append(f"the {CHOICES[flat_name][0]} choice ({cls.architecture})")
    unique = list(dict.fromkeys(where))
    return f"read by: {', '.join(unique)}" if unique else "no model reads it"


def to_flat(config: ModelConfig) -> dict[str, Any]:
    """The flat names of a composed config (those its parts read), for flat overrides.

    Args:
        config: any composed config.

    Returns:
        ``{flat name: value}``; slots chosen by their own name appear under it (``"neck"``).

    Example:
        >>> from reference_models import get_config
        >>> to_flat(get_config("lavt_sadlr_tiny"))["refiner_iters"]
        3
    """
    flat: dict[str, Any] = {"name": config.name, "architecture": config.architecture, "image_size": config.image_size, "norm": config.norm}
    for slot, part in config.parts().items():
        name = _choice_for(type(config), slot)
        if name:
            flat[name] = "sadlr" if isinstance(part, RefinerHeadConfig) else (None if slot == "head" else part.kind)
        elif len(config.all_slots()[slot]) > 1:  # chosen by the slot's own name
            flat[slot] = None if part is None else part.kind
        if part is None:
            continue
        for field, name in part.flat_names.items():
            value = getattr(part, field)
            if name in flat and flat[name] != value:
                raise ValueError(
                    f"{name}: the parts of this config hold different values ({flat[name]!r}, {value!r}); change them by dotted names"
                )
            flat[name] = value
    return flat


#: The names that choose a whole part by ``kind`` (``head=sadlr``); dotted names set a field.
SLOT_NAMES = ("vision", "text", "head", "fusion", "decoder", "query", "locate", "neck", "selector", "aggregator", "aligner", "loss")


def apply_overrides(config: ModelConfig, dotted: dict[str, Any], *, preset: dict[str, Any] | None = None) -> ModelConfig:
    """Apply ``slot=kind`` choices, then ``slot.field=value`` (or ``alias.field``) changes.

    A part chosen by kind takes its sizes from the config's other parts where they share a
    flat name (``decoder_dim``), then from ``preset``, then from the flat defaults. The fields
    of one part change together, so ``head.iters`` and ``head.loss_weights`` may be given at
    once and are checked as a pair.

    Args:
        config: the config to change.
        dotted: ``{"slot": kind}`` and ``{"slot.field": value}`` entries.
        preset: flat options a chosen part reads its sizes from (a registered model's,
            :func:`reference_models.registry.registered_preset`).

    Example:
        >>> from reference_models import get_config
        >>> apply_overrides(get_config("lavt_tiny"), {"head": "sadlr", "head.iters": 1, "head.loss_weights": [1.0]}).head.iters
        1
    """
    slots = config.all_slots()
    fields: dict[str, dict[str, Any]] = {}
    for key, value in sorted(dotted.items(), key=lambda kv: "." in kv[0]):
        name, _, field = key.partition(".")
        if key == "decoder" and value == "own":
            # the baseline's own decoder: its slot's first part (LAVT's, S2RM's CASG); ASDA's
            # aligner is its decoder and has a slot of its own, so there it changes nothing
            if "decoder" not in config.all_slots():
                continue
            value = config.all_slots()["decoder"][0].kind
        slot = _resolve_slot(config, name, key)
        if not field:
            config = dataclasses.replace(config, **{slot: _chosen_part(config, slot, value, preset or {})})
            continue
        part = getattr(config, slot)
        if part is None or field not in part.field_names():
            valid = list(part.field_names()) if part is not None else []
            raise ValueError(f"{key}: the {slot} part ({getattr(part, 'kind', None)}) has no field {field!r}; its fields are {valid}")
        fields.setdefault(slot, {})[field] = as_tuples(value)
    for slot, changes in fields.items():
        try:
            config = dataclasses.replace(config, **{slot: dataclasses.replace(getattr(config, slot), **changes)})
        except ValueError as err:
            raise ValueError(f"{slot}.{err}") from None
    return config


def _chosen_part(config: ModelConfig, slot: str, value: Any, preset: dict[str, Any]) -> PartConfig | None:
    """The part ``slot=value`` chooses: a whole part (a ``config.json`` dict), none, or a kind
    sized like the config it joins."""
    options = config.all_slots()[slot]
    if value is None or value == "none" or isinstance(value, dict):
        return part_from_dict(None if value == "none" else value, options, where=slot)
    part = part_from_dict({"kind": value}, options, where=slot)  # checks the kind
    current = getattr(config, slot)
    if current is not None and current.kind == part.kind:
        return current
    return _make(type(part), {**LEGACY_DEFAULTS, **{k: as_tuples(v) for k, v in preset.items()}, **to_flat(config)})


def _resolve_slot(config: ModelConfig, name: str, key: str) -> str:
    slots = config.all_slots()
    if name in slots:
        return name
    for slot, part in config.parts().items():
        if part is not None and (name == part.kind or name in part.aliases) and slot not in ("vision", "text"):
            return slot
    raise ValueError(f"{key}: {config.architecture} has no part {name!r}; its slots are {list(slots)}")


def _near_misses(unknown: Sequence[str]) -> str:
    known = list(LEGACY_DEFAULTS)
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1)
        parts.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    return ", ".join(parts)


_SEQUENCES = {key for key, value in LEGACY_DEFAULTS.items() if isinstance(value, tuple)}


def parse_overrides(items: Sequence[str], *, name: str = "--model-arg") -> dict[str, Any]:
    """Parse ``"KEY=VALUE"`` strings (the CLIs' ``--model-arg``) into config overrides.

    Keys are flat names (``refiner_iters``), dotted names (``refiner.iters``, ``head.iters``)
    or slot choices (``head=sadlr``). Values are read as JSON where they parse (``3``,
    ``0.5``, ``true``, ``[2, 2, 6, 2]``); for the flat list fields a comma-separated value
    (``2,2,6,2``) or a single value is a list too; anything else stays text
    (``norm=group``). The config that receives them checks the values and refuses a name that
    no part of its model reads.

    Args:
        items: the ``KEY=VALUE`` strings, in order (a repeated key keeps the last value).
        name: what the error messages call the argument.

    Returns:
        ``{key: value}``.

    Example:
        >>> parse_overrides(["swin_window=12", "norm=group", "swin_depths=2,2,6,2", "refiner.hidden=[16, 32]"])
        {'swin_window': 12, 'norm': 'group', 'swin_depths': (2, 2, 6, 2), 'refiner.hidden': (16, 32)}
    """
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{name}: expected KEY=VALUE; got {item!r}")
        if key not in LEGACY_DEFAULTS and "." not in key and key not in SLOT_NAMES:
            raise ValueError(
                f"{name}: unknown config key {_near_misses([key])}; use a flat name ({', '.join(sorted(LEGACY_DEFAULTS))}), "
                f"a slot ({', '.join(SLOT_NAMES)}) or slot.field"
            )
        value = _parse_value(raw)
        if key in _SEQUENCES and isinstance(value, str):
            # "2,2,6,2" (or "2, 2,"): only list fields split, so a path with a comma stays one
            value = [_parse_value(part) for part in value.split(",") if part.strip()]
        elif key in _SEQUENCES and not isinstance(value, list):
            value = [value]  # "refiner_hidden=64": a list of one
        overrides[key] = as_tuples(value)
    return overrides


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return raw.strip()
