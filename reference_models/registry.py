"""A small registry: every reference model by name, in ``_tiny`` and ``_base`` sizes, and the
parts of the users' own (:func:`register_part`)."""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .config import ModelConfig, PartConfig
from .config.model import _USER_PARTS as _SLOT_OPTIONS
from .config.model import CONFIG_CLASSES

__all__ = [
    "register_architecture",
    "register_model",
    "register_part",
    "unregister_part",
    "registered_parts",
    "user_part_module",
    "USER_SLOTS",
    "build_model",
    "build_from_config",
    "build_for_loading",
    "list_models",
    "get_config",
    "registered_preset",
]

_ARCHITECTURES: dict[str, Callable[[ModelConfig], object]] = {}
_CONFIGS: dict[str, ModelConfig] = {}
# the flat options each registered config was made from, read again when a part is chosen
# later by name: the tiny refiner on a tiny model, not the paper's
_PRESETS: dict[str, dict[str, Any]] = {}


def register_architecture(name: str):
    """Class decorator: ``@register_architecture("lavt")`` makes configs of that architecture buildable.

    Args:
        name: the ``ModelConfig.architecture`` value the decorated class builds; the class
            is called with the config.
    """

    def wrap(cls):
        _ARCHITECTURES[name] = cls
        return cls

    return wrap


#: The slots a part of one's own may fill, each with the architectures it fits by default. A
#: neck takes the coarsest Swin map, a decoder the four maps (S2RM's decoder also classifies,
#: so it takes none of one's own), a head the decoded map.
USER_SLOTS: dict[str, tuple[str, ...]] = {
    "neck": ("lavt", "vlt", "lts", "s2rm"),
    "decoder": ("lavt", "vlt", "lts"),
    "head": ("lavt", "vlt", "lts", "s2rm", "asda"),
}
# what a kind may not be called: an empty slot and the matrix's name for a baseline's own part
_RESERVED_KINDS = ("none", "own")


class UserPart(NamedTuple):
    """A part of one's own: its slot, kind, module class and config class."""

    slot: str
    kind: str
    module: type
    config: type[PartConfig]


_USER_PARTS: dict[tuple[str, str], UserPart] = {}


def register_part(
    slot: str, kind: str, *, config: type[PartConfig] | None = None, architectures: Sequence[str] | None = None
) -> Callable[[type], type]:
    """Class decorator: a module of one's own becomes a part of ``slot``, chosen by ``kind`` as ours are.

    After it, ``build_model("lavt_tiny", neck=kind)``, ``--model-arg neck=KIND`` (with
    ``--import MODULE``), ``config.json`` files and the plug-in matrix know the part; its
    options go by dotted names (``neck.hidden=32``). Each slot states what it builds the
    module with and what the module must give back:

    - ``neck``: ``Module(dim, text_dim, config, *, size, norm)``; ``forward(vis, words,
      word_mask)`` returns the coarsest map with the words fused in, of ``vis``'s shape; the
      module states ``out_channels`` (``dim``).
    - ``decoder``: ``Module(dims, text_dim, config, *, norm)`` with the four maps' channels,
      finest first (strides 4, 8, 16, 32); ``forward(maps, words, word_mask)`` returns the
      stride-4 map the head reads; the module states ``out_channels``.
    - ``head``: ``Module(dim, text_dim, config, *, norm)``; ``forward(feats, words,
      word_mask)`` returns 2-class logits ``(b, 2, h, w)`` (background, foreground), trained
      with the 2-class Dice.

    ``words`` is ``(b, l, text_dim)``, ``word_mask`` ``(b, l)`` bool (True on real words),
    ``norm`` the model's convolution norm (``"batch"`` or ``"group"``).

    Args:
        slot: ``"neck"``, ``"decoder"`` or ``"head"``.
        kind: the part's name in options and ``config.json`` (lower case, digits, ``_``).
        config: a frozen :class:`~reference_models.config.PartConfig` dataclass of the part's
            options, each with a default (None: a part without options); its ``kind`` is set
            to ``kind``.
        architectures: the baselines it goes on (default: every one with that slot in
            :data:`USER_SLOTS`).

    Returns:
        The decorator; it returns the module class unchanged.

    Example:
        >>> from torch import nn
        >>> @register_part("head", "plain_head")
        ... class PlainHead(nn.Module):
        ...     def __init__(self, dim, text_dim, config, *, norm):
        ...         super().__init__()
        ...         self.classify = nn.Conv2d(dim, 2, 1)
        ...     def forward(self, feats, words, word_mask):
        ...         return self.classify(feats)
        >>> build_model("lavt_tiny", head="plain_head").head.user_head
        PlainHead(
          (classify): Conv2d(32, 2, kernel_size=(1, 1), stride=(1, 1))
        )
        >>> unregister_part("plain_head")
    """
    if slot not in USER_SLOTS:
        raise ValueError(f"slot: expected one of {list(USER_SLOTS)}; got {slot!r}")
    if not isinstance(kind, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", kind) or kind in _RESERVED_KINDS:
        raise ValueError(f"kind: expected a lower-case name of letters, digits and _ (not {' or '.join(_RESERVED_KINDS)}); got {kind!r}")
    fits = USER_SLOTS[slot] if architectures is None else tuple(architectures)
    if not fits or not set(fits) <= set(USER_SLOTS[slot]):
        raise ValueError(f"architectures: a {slot} of one's own goes on some of {list(USER_SLOTS[slot])}; got {architectures!r}")
    ours = {o.kind for name in fits for o in CONFIG_CLASSES[name].slots[slot] if o is not None}
    if kind in ours:
        raise ValueError(f"kind: {kind!r} is one of our {slot} parts; choose another name")

    def wrap(module: type) -> type:
        from torch import nn

        if not (isinstance(module, type) and issubclass(module, nn.Module)):
            raise ValueError(f"register_part: decorates a torch.nn.Module class; got {module!r}")
        part_config = _part_config(config, kind, module)
        before = _USER_PARTS.get((slot, kind))
        if before is not None and _where(before.module) != _where(module):
            raise ValueError(f"kind: {kind!r} is already a {slot} of one's own ({_where(before.module)}); choose another name")
        _USER_PARTS[slot, kind] = UserPart(slot, kind, module, part_config)
        for name in fits:
            _add_to_slot(name, slot, part_config)
        return module

    return wrap


def _where(module: type) -> str:
    return f"{module.__module__}.{module.__qualname__}"


def _part_config(config: type[PartConfig] | None, kind: str, module: type) -> type[PartConfig]:
    """The part's config class, checked, its ``kind`` set (a new empty one for ``None``)."""
    if config is None:
        config = dataclasses.make_dataclass(f"{module.__name__}Config", [], bases=(PartConfig,), frozen=True)
    if not (isinstance(config, type) and issubclass(config, PartConfig)):
        raise ValueError(f"config: expected a @dataclass(frozen=True) subclass of reference_models.PartConfig; got {config!r}")
    if "__dataclass_fields__" not in vars(config):  # its options would be class attributes, not fields
        raise ValueError(f"config: decorate {config.__name__} with @dataclass(frozen=True), as every part config is")
    needed = [f.name for f in dataclasses.fields(config) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if needed:
        raise ValueError(f"config: every option needs a default (a part chosen by kind is built with them); {needed} have none")
    if config.flat_names:
        raise ValueError(f"config: {config.__name__}.flat_names must stay empty: options of one's own go by dotted names (neck.hidden=32)")
    if config.kind not in ("", kind):
        raise ValueError(f"config: {config.__name__}.kind is {config.kind!r}, but the part is registered as {kind!r}")
    config.kind = kind
    return config


def _add_to_slot(architecture: str, slot: str, part: type[PartConfig]) -> None:
    """Let ``slot`` of ``architecture`` hold ``part`` (a part of the same kind added before is replaced)."""
    kept = tuple(o for o in _SLOT_OPTIONS.get((architecture, slot), ()) if o.kind != part.kind)
    _SLOT_OPTIONS[architecture, slot] = (*kept, part)


def _remove_from_slots(kind: str) -> None:
    for where, options in list(_SLOT_OPTIONS.items()):
        _SLOT_OPTIONS[where] = tuple(o for o in options if o.kind != kind)


def unregister_part(kind: str) -> None:
    """Forget a part of one's own (configs naming it no longer load): the inverse of :func:`register_part`.

    Args:
        kind: the part's kind; an unknown one raises ``ValueError``.

    Example:
        >>> unregister_part("never_registered")
        Traceback (most recent call last):
        ...
        ValueError: kind: no part of one's own is registered as 'never_registered'
    """
    found = [key for key in _USER_PARTS if key[1] == kind]
    if not found:
        raise ValueError(f"kind: no part of one's own is registered as {kind!r}")
    for key in found:
        del _USER_PARTS[key]
    _remove_from_slots(kind)


def registered_parts() -> dict[str, list[str]]:
    """The kinds of the users' own parts, by slot.

    Example:
        >>> registered_parts()
        {'neck': [], 'decoder': [], 'head': []}
    """
    return {slot: sorted(kind for s, kind in _USER_PARTS if s == slot) for slot in USER_SLOTS}


def user_part_module(part: PartConfig | None) -> type | None:
    """The module class registered for a part config of one's own (None for ours).

    Args:
        part: a part config.

    Example:
        >>> from reference_models.config import CasgConfig
        >>> user_part_module(CasgConfig()) is None
        True
    """
    for user in _USER_PARTS.values():
        if type(part) is user.config:
            return user.module
    return None


def register_model(config: ModelConfig, *, preset: dict[str, Any] | None = None) -> ModelConfig:
    """Register a named configuration (its ``name`` field is the registry key).

    Args:
        config: the configuration; a name already registered raises ``ValueError``.
        preset: the flat options the configuration was made from (``refiner_hidden=(16, 32)``
            ...), including those its parts do not read: a part chosen later by name
            (``head=sadlr``) takes its sizes from them, so ``lavt_tiny`` with ``head=sadlr``
            is ``lavt_sadlr_tiny``.
    """
    if config.name in _CONFIGS:
        raise ValueError(f"name: {config.name!r} is already registered")
    _CONFIGS[config.name] = config
    _PRESETS[config.name] = dict(preset or {})
    return config


def registered_preset(name: str) -> dict[str, Any]:
    """The flat options a registered configuration was made from (``{}`` for other names).

    Args:
        name: a config's ``name``.
    """
    _ensure_loaded()
    return dict(_PRESETS.get(name, {}))


def _ensure_loaded() -> None:
    from . import models  # noqa: F401  (registers everything on import)


def list_models() -> list[str]:
    """All registered model names, sorted."""
    _ensure_loaded()
    return sorted(_CONFIGS)


def get_config(name: str) -> ModelConfig:
    """The registered configuration of ``name``.

    Args:
        name: a name from :func:`list_models`; an unknown one raises ``ValueError``
            listing the available names.
    """
    _ensure_loaded()
    if name not in _CONFIGS:
        close = difflib.get_close_matches(str(name), list(_CONFIGS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"name: unknown model {name!r}{hint}; available: {', '.join(sorted(_CONFIGS))}")
    return _CONFIGS[name]


def resolve_text_config(config: ModelConfig) -> ModelConfig:
    """Copy a local BERT directory's sizes into the config, so the saved config rebuilds it,
    and use that directory's tokenizer.

    ``text.dim`` must already agree with the directory (a mismatch is a clear ValueError).
    """
    text = config.text
    if text.kind != "bert" or text.weights is None:
        return config
    import dataclasses
    import json
    from pathlib import Path

    path = Path(text.weights) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent}: not a Hugging Face model directory (no config.json)")
    hf = json.loads(path.read_text())
    if not isinstance(hf, dict):
        raise ValueError(f"{path}: expected a JSON object of BERT settings")
    if hf.get("hidden_size") != text.dim:
        raise ValueError(
            f"text_dim: {text.dim} does not match {path.parent}'s hidden_size {hf.get('hidden_size')}; "
            f"pass text_dim={hf.get('hidden_size')}"
        )
    resolved = dataclasses.replace(
        text,
        tokenizer="bert",  # a pretrained BERT reads its own WordPiece ids
        layers=hf["num_hidden_layers"],
        heads=hf["num_attention_heads"],
        intermediate=hf["intermediate_size"],
        vocab_size=hf["vocab_size"],
    )
    return dataclasses.replace(config, text=resolved)


def build_from_config(config: ModelConfig):
    """Build the model a config describes (random init except for the weights files it names).

    Args:
        config: any configuration, registered or not.
    """
    _ensure_loaded()
    config = resolve_text_config(config)
    if config.architecture not in _ARCHITECTURES:
        raise ValueError(f"architecture: {config.architecture!r} has no implementation; known: {sorted(_ARCHITECTURES)}")
    return _ARCHITECTURES[config.architecture](config)


def build_model(name: str, **overrides):
    """Build a registered model, optionally changing config fields.

    Args:
        name: a name from :func:`list_models` (``lavt_sadlr_tiny``, ``asda_base``, ...).
        **overrides: options to change, by flat name (``image_size=96``,
            ``text_weights="/weights/bert-base-uncased"``, ``refiner_iters=2``), dotted name
            (``**{"refiner.iters": 2}``) or slot choice; an option no part of the model reads
            is refused.

    Example:
        >>> from reference_models import build_model
        >>> model = build_model("lavt_sadlr_tiny", image_size=64)
        >>> model.config.image_size
        64
    """
    return build_from_config(get_config(name).replace(**overrides))


def build_for_loading(config: ModelConfig, **overrides):
    """Build a model whose weights will be loaded from a checkpoint right after.

    The encoders' pretrained files (``vision_weights``, ``text_weights``) are not read, since
    the checkpoint holds those weights, but the returned ``model.config`` keeps their paths:
    the tokenizer of a BERT model lives in its ``text_weights`` folder.

    Args:
        config: the saved configuration.
        **overrides: config fields to change (e.g. ``image_size``).
    """
    import dataclasses

    config = config.replace(**overrides)
    unread = dataclasses.replace(
        config, vision=dataclasses.replace(config.vision, weights=None), text=dataclasses.replace(config.text, weights=None)
    )
    model = build_from_config(unread)
    model.config = dataclasses.replace(
        model.config,
        vision=dataclasses.replace(model.config.vision, weights=config.vision.weights),
        text=dataclasses.replace(model.config.text, weights=config.text.weights),
    )
    return model
