"""The composed model configuration: parts read whole, options never silently ignored.

Every registry model reads every field of its (composed) config while it is built; an option
that no part of the chosen model reads is refused in one line naming the parts that read
it; flat names of before, dotted names and slot choices all reach the same fields.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from reference_models import build_model, get_config, list_models
from reference_models.config import (
    CONFIG_CLASSES, LEGACY_DEFAULTS, ModelConfig, PartConfig, RefinerHeadConfig, from_flat, parse_overrides, to_flat,
)
from reference_models.config.flat import SLOT_NAMES, readers
from reference_models.registry import build_from_config

ROOT = Path(__file__).resolve().parents[1]
TINY = [name for name in list_models() if name.endswith("_tiny")]


def _part_classes() -> set[type]:
    seen, todo = set(), list(PartConfig.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.add(cls)
            todo.extend(cls.__subclasses__())
    return seen


def _leaves(config: ModelConfig) -> set[tuple[str, str]]:
    """``(slot, field)`` for every field of every part, and ``("", core field)``."""
    fields = {("", f.name) for f in dataclasses.fields(config) if not isinstance(getattr(config, f.name), PartConfig)}
    for slot, part in config.parts().items():
        if part is not None:
            fields |= {(slot, name) for name in part.field_names()}
    return fields - {("", slot) for slot in config.all_slots()}


@pytest.fixture
def reads(monkeypatch):
    """Record ``(id(config or part), field)`` for every field read while the fixture is live."""
    seen: set[tuple[int, str]] = set()
    for cls in _part_classes() | set(CONFIG_CLASSES.values()):
        names = {f.name for f in dataclasses.fields(cls)}

        def tracked(self, name, _names=names, _base=object.__getattribute__):
            if name in _names:
                seen.add((id(self), name))
            return _base(self, name)

        monkeypatch.setattr(cls, "__getattribute__", tracked, raising=False)
    return seen


@pytest.mark.parametrize("name", list_models())
def test_building_a_registry_model_reads_every_field_of_its_config(name, reads):
    config = get_config(name)
    if not name.endswith("_tiny"):
        # A base model takes ~20 s to build here: its twin with one block per stage and a
        # one-layer text encoder has the same parts and fields, so it reads the same ones.
        data = config.to_dict()
        data["image_size"] = 64
        data["text"]["layers"] = 1
        if data["vision"]["kind"] == "swin":
            data["vision"]["depths"] = [1] * len(data["vision"]["depths"])
        config = ModelConfig.from_dict(data)
    ids = {"": id(config), **{slot: id(part) for slot, part in config.parts().items() if part is not None}}
    reads.clear()
    model = build_from_config(config)
    unread = sorted(f"{slot}.{field}".lstrip(".") for slot, field in _leaves(config) if (ids[slot], field) not in reads)
    assert not unread, f"{name}: fields no part read while building: {unread}"
    assert model.config == config


def test_the_core_is_small_and_every_architecture_has_its_own_config():
    core = [f.name for f in dataclasses.fields(ModelConfig)]
    assert len(core) + 1 <= 12, core  # + the architecture, a class attribute
    assert set(CONFIG_CLASSES) == {"lavt", "vlt", "lts", "s2rm", "asda"}
    for name in list_models():
        assert type(get_config(name)) is CONFIG_CLASSES[get_config(name).architecture]


@pytest.mark.parametrize(
    ("architecture", "option", "reader"),
    [
        ("lavt", {"aligner_masks": 4}, "aligner=aligner (asda)"),
        ("asda", {"refiner_iters": 2}, "head=sadlr (asda)"),
        ("vlt", {"coparser_shift": False}, "neck=coparser (s2rm)"),
        ("s2rm", {"num_queries": 8}, "query=vlt (vlt)"),
        ("lts", {"decoder_align_corners": True}, "decoder=lavt (lavt)"),
    ],
)
def test_an_option_no_part_reads_is_refused_in_one_line(architecture, option, reader):
    with pytest.raises(ValueError) as err:
        ModelConfig.create(architecture, **option)
    message = str(err.value)
    assert "\n" not in message and message.startswith(next(iter(option)))
    if reader:
        assert reader in message, message


def test_an_option_of_an_unbuilt_part_is_refused_through_replace_too():
    with pytest.raises(ValueError, match=r"^coparser_shift: no part of this s2rm \(neck=tile_concat"):
        get_config("s2rm_tiny").replace(s2rm_fusion="tile_concat", coparser_shift=False)
    with pytest.raises(ValueError, match=r"^refiner_iters: .*read by: head=sadlr"):
        build_model("lavt_tiny", refiner_iters=2)


def test_flat_dotted_alias_and_slot_names_reach_the_same_field():
    flat = get_config("lavt_sadlr_tiny").replace(refiner_iters=2, loss_weights=(0.4, 0.6))
    dotted = get_config("lavt_sadlr_tiny").replace(**{"head.iters": 2, "head.loss_weights": [0.4, 0.6]})
    alias = get_config("lavt_sadlr_tiny").replace(**{"refiner.iters": 2, "refiner.loss_weights": [0.4, 0.6]})
    assert flat == dotted == alias and flat.head.iters == 2
    swapped = get_config("lavt_tiny").replace(head="sadlr")
    assert isinstance(swapped.head, RefinerHeadConfig) and swapped.head == get_config("lavt_sadlr_tiny").head
    assert ModelConfig.create("lavt", head="sadlr").head == RefinerHeadConfig()  # no registered sizes: the paper's


@pytest.mark.parametrize("baseline", ["lavt", "vlt", "lts", "s2rm"])
def test_a_head_chosen_by_name_on_a_tiny_model_is_the_registered_tiny_plugin_model(baseline):
    # the statement: lavt_sadlr_tiny is lavt_tiny with head=sadlr (the tiny refiner's
    # widths, not the paper's)
    chosen = dataclasses.replace(get_config(f"{baseline}_tiny").replace(head="sadlr"), name="x")
    registered = dataclasses.replace(get_config(f"{baseline}_sadlr_tiny"), name="x")
    assert chosen == registered
    flat = dataclasses.replace(get_config(f"{baseline}_tiny").replace(plugin="sadlr"), name="x")
    assert flat == registered
    assert parse_overrides(["refiner.iters=2", "head=sadlr", "swin_depths=1,1,1,1"]) == {
        "refiner.iters": 2, "head": "sadlr", "swin_depths": (1, 1, 1, 1)
    }
    with pytest.raises(ValueError, match=r"^head\.iters: expected an integer from 1 to 1024; got 0$"):
        get_config("lavt_sadlr_tiny").replace(**{"head.iters": 0})
    with pytest.raises(ValueError, match=r"^refiner_iters: expected an integer from 1 to 1024; got 0$"):
        get_config("lavt_sadlr_tiny").replace(refiner_iters=0)
    with pytest.raises(ValueError, match=r"^decoder\.masks: the decoder part \(lavt\) has no field 'masks'"):
        get_config("lavt_tiny").replace(**{"decoder.masks": 4})


@pytest.mark.parametrize("name", list_models())
def test_config_json_nests_the_parts_and_round_trips(name, tmp_path):
    config = get_config(name)
    config.save(tmp_path / "config.json")
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["architecture"] == config.architecture and isinstance(data["vision"], dict) and "kind" in data["vision"]
    assert ModelConfig.load(tmp_path / "config.json") == config
    assert from_flat(to_flat(config)) == config  # the flat view names every field that matters


@pytest.mark.parametrize(
    ("key", "limit"),
    [("max_words", 10**9), ("vocab_size", 10**12), ("text_layers", 100000), ("image_size", 100000), ("swin_embed_dim", 10**6)],
)
def test_every_size_has_an_upper_bound_that_names_it(key, limit):
    with pytest.raises(ValueError, match=rf"^{key}: expected an integer from 1 to \d+; got {limit}$"):
        get_config("lavt_tiny").replace(**{key: limit})


@pytest.mark.parametrize("data", [[], None, 5, "x", {"architecture": "lavt", "vision": {"kind": [[[[[[1]]]]]]}}])
def test_a_config_json_of_the_wrong_shape_is_one_line(tmp_path, data):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as err:
        ModelConfig.load(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_every_flat_name_is_read_by_some_part_and_every_documented_one_exists():
    for key in set(LEGACY_DEFAULTS) - {"name", "architecture", "image_size", "norm"}:
        assert readers(key) != "no model reads it", key
    documented = set()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        documented |= set(re.findall(r"--model-arg\s+([a-z_.]+)=", path.read_text()))
    assert documented, "no --model-arg in the docs: the pattern is stale"
    for key in sorted(documented):
        assert key in LEGACY_DEFAULTS or "." in key or key in SLOT_NAMES, key
        core = key in ("name", "architecture", "image_size", "norm")
        assert core or "." in key or key in SLOT_NAMES or readers(key) != "no model reads it", key


@pytest.mark.parametrize("name", ["lavt_tiny", "vlt_tiny", "lts_tiny", "s2rm_tiny", "asda_tiny", "lavt_base"])
def test_decoder_own_is_the_baselines_own_decoder_on_every_model(name):
    config = get_config(name)
    assert config.replace(decoder="own") == config
    if name.startswith("lavt"):  # and it swaps a plug-in decoder back
        assert config.replace(decoder="casg").replace(decoder="own").decoder == config.decoder
