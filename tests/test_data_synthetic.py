"""The procedural benchmark: unique referents, exact masks, determinism, generalized options, CLI."""

from __future__ import annotations

import hashlib
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from reference_models.data.lexicon import COLOURS
from reference_models.data.masks import polygons_to_mask
from reference_models.data.samples import SAMPLE_KEYS, collate
from reference_models.data.synthetic import (
    LEVELS,
    SyntheticReferDataset,
    execute,
    generate_scene,
    main,
    parse_expression,
)


def _cell_centre(obj, grid):
    return (obj.col + 0.5) / grid, (obj.row + 0.5) / grid


def _evaluate(program, objects, grid):
    """An independent reading of the programs, in cell-centre coordinates of the unit square."""
    op = program["op"]
    if op == "select":
        return {
            i
            for i, o in enumerate(objects)
            if program["colour"] in (None, o.colour)
            and program["shape"] in (None, o.shape)
            and program["size"] in (None, o.size)
        }
    if op == "all":
        return _evaluate(program["of"], objects, grid)
    inner = _evaluate(program["of"], objects, grid)
    if op == "region":
        tests = {
            "left": lambda x, y: x < 0.5,
            "right": lambda x, y: x > 0.5,
            "top": lambda x, y: y < 0.5,
            "bottom": lambda x, y: y > 0.5,
            "centre": lambda x, y: x == 0.5 and y == 0.5,
        }
        return {i for i in inner if tests[program["region"]](*_cell_centre(objects[i], grid))}
    if op == "ordinal":
        axis = 0 if program["from"] in ("left", "right") else 1
        sign = 1 if program["from"] in ("left", "top") else -1
        coordinate = {i: sign * _cell_centre(objects[i], grid)[axis] for i in inner}
        levels = sorted(set(coordinate.values()))
        if program["k"] > len(levels):
            return set()
        return {i for i, c in coordinate.items() if c == levels[program["k"] - 1]}
    if op == "relate":
        anchors = _evaluate(program["anchor"], objects, grid)
        if len(anchors) != 1:
            return set()
        ax, ay = _cell_centre(objects[anchors.pop()], grid)
        tests = {
            "left_of": lambda x, y: x < ax,
            "right_of": lambda x, y: x > ax,
            "above": lambda x, y: y < ay,
            "below": lambda x, y: y > ay,
        }
        return {i for i in inner if tests[program["relation"]](*_cell_centre(objects[i], grid))}
    raise AssertionError(f"unknown op {op}")


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_every_expression_has_exactly_its_referents(level):
    data = SyntheticReferDataset(
        "train", level=level, length=75, seed=11, sentences_per_ref=3, no_target_prob=0.15, multi_target_prob=0.15
    )
    kinds = set()
    for index in range(len(data)):
        scene, ref = data.ref(index)
        kinds.add(ref.kind)
        expected_count = {"single": 1, "none": 0}.get(ref.kind)
        if expected_count is not None:
            assert len(ref.targets) == expected_count
        else:
            assert len(ref.targets) >= 2
        programs = [e.program for e in ref.expressions]
        assert len({str(p) for p in programs}) == len(programs), "sentences of a ref must differ in program"
        for expression in ref.expressions:
            assert _evaluate(expression.program, scene.objects, scene.grid) == set(ref.targets), expression
            assert execute(expression.program, scene.objects, scene.grid) == frozenset(ref.targets)
            # The sentence says exactly the program.
            assert parse_expression(expression.sentence) == expression.program, expression.sentence
    assert kinds == {"single", "none", "multi"}


def test_level_one_is_colour_shape_conjunctions_over_unique_objects():
    data = SyntheticReferDataset("val", level=1, length=60, seed=2)
    for index in range(len(data)):
        scene, ref = data.ref(index)
        pairs = [(o.colour, o.shape) for o in scene.objects]
        assert len(set(pairs)) == len(pairs) and 4 <= len(pairs) <= 5
        (expression,) = ref.expressions
        target = scene.objects[ref.targets[0]]
        assert expression.sentence == f"the {target.colour} {target.shape}"


def test_targets_cover_objects_uniformly_at_level_one():
    # Every object of a scene is a target equally often, so object saliency carries no signal.
    data = SyntheticReferDataset("train", level=1, length=600, seed=5, refs_per_image=3)
    counts = np.zeros(5)
    for index in range(0, len(data), 3):
        scene, _ = data.ref(index)
        order = [data.ref(index + j)[1].targets[0] for j in range(3)]
        assert len(set(order)) == 3
        for target in order:
            counts[target] += 1 / len(scene.objects)
    first_four = counts[:4] / counts[:4].sum()
    assert np.abs(first_four - 0.25).max() < 0.05


@pytest.mark.parametrize(("level", "size"), [(1, 32), (1, 64), (2, 97), (3, 64), (4, 128)])
def test_masks_are_the_drawn_polygons(level, size):
    spec = LEVELS[level]
    for scene_index in range(6):
        layout, render = np.random.default_rng([scene_index, 1]), np.random.default_rng([scene_index, 2])
        scene = generate_scene(level, size, layout, render)
        assert scene.masks.shape == (len(scene.objects), size, size)
        assert scene.masks.sum(0).max() == 1  # disjoint
        covered = np.zeros((size, size), dtype=bool)
        for obj, mask in zip(scene.objects, scene.masks):
            assert np.array_equal(mask, polygons_to_mask([obj.polygon], size, size))
            assert mask.sum() > 0
            if spec.noise_std == 0:
                # The drawn shape is exactly the mask: every mask pixel has the object's colour.
                assert (scene.image[mask] == obj.rgb).all()
            covered |= mask
        if spec.noise_std == 0:
            # Outside the objects no pixel has any object colour.
            outside = scene.image[~covered]
            for rgb in COLOURS.values():
                assert not (outside == rgb).all(axis=1).any()


def test_sample_mask_area_is_the_target_area():
    data = SyntheticReferDataset("val", level=2, length=30, seed=4, multi_target_prob=0.3)
    for index in range(len(data)):
        scene, ref = data.ref(index)
        sample = data[index]
        assert int(sample["mask"].sum()) == int(sum(scene.masks[t].sum() for t in ref.targets))


def test_scene_layout_does_not_depend_on_image_size():
    small = SyntheticReferDataset("val", level=3, image_size=48, length=12, seed=9)
    large = SyntheticReferDataset("val", level=3, image_size=96, length=12, seed=9)

    def layout(scene):
        return [(o.colour, o.shape, o.size, o.row, o.col) for o in scene.objects]

    for index in range(12):
        (scene_a, ref_a), (scene_b, ref_b) = small.ref(index), large.ref(index)
        assert layout(scene_a) == layout(scene_b)
        assert ref_a == ref_b


def test_sample_format():
    sample = SyntheticReferDataset("val", length=3)[1]
    assert tuple(sample) == SAMPLE_KEYS
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.float32
    assert sample["input_ids"].shape == (20,) and sample["input_ids"].dtype == torch.int64
    assert sample["attention_mask"].dtype == torch.int64
    assert sample["mask"].shape == (64, 64) and sample["mask"].dtype == torch.bool
    assert isinstance(sample["sentence"], str)
    assert sample["orig_size"].tolist() == [64, 64] and sample["content_box"].tolist() == [0, 0, 64, 64]
    assert SyntheticReferDataset("val", length=3, keep_original_mask=True)[1]["orig_mask"].equal(sample["mask"])


def _digest(sample) -> str:
    h = hashlib.sha256()
    for key in ("image", "input_ids", "attention_mask", "mask"):
        h.update(sample[key].numpy().tobytes())
    h.update(sample["sentence"].encode())
    return h.hexdigest()


def test_same_seed_same_bytes_and_seeds_splits_differ():
    a = SyntheticReferDataset("train", level=2, length=12, seed=7)
    b = SyntheticReferDataset("train", level=2, length=12, seed=7)
    assert [_digest(a[i]) for i in range(12)] == [_digest(b[i]) for i in reversed(range(12))][::-1]
    c = SyntheticReferDataset("train", level=2, length=12, seed=8)
    d = SyntheticReferDataset("val", level=2, length=12, seed=7)
    assert _digest(a[0]) != _digest(c[0]) and _digest(a[0]) != _digest(d[0])


# Two workers are the point of the test, even on a one-core machine.
@pytest.mark.filterwarnings("ignore:This DataLoader will create 2 worker processes")
def test_dataloader_worker_count_does_not_change_samples():
    data = SyntheticReferDataset("train", level=3, length=16, seed=1, sentences_per_ref=2)

    def checksum(workers):
        loader = DataLoader(data, batch_size=4, num_workers=workers, collate_fn=collate)
        h = hashlib.sha256()
        for batch in loader:
            for key in ("image", "input_ids", "attention_mask", "mask", "image_id", "ref_id", "sent_id"):
                h.update(batch[key].numpy().tobytes())
            h.update("|".join(batch["sentence"]).encode())
        return h.hexdigest()

    assert checksum(0) == checksum(2)


def test_generalized_options():
    empty = SyntheticReferDataset("val", level=2, length=9, no_target_prob=1.0)
    for index in range(len(empty)):
        assert not empty[index]["mask"].any()
        assert empty.ref(index)[1].kind == "none"
    plural = SyntheticReferDataset("val", level=1, length=9, multi_target_prob=1.0)
    for index in range(len(plural)):
        scene, ref = plural.ref(index)
        assert ref.kind == "multi" and len(ref.targets) >= 2
        assert ref.expressions[0].sentence.split()[0] in ("all", "the")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level": 7}, r"level: expected one of \[1, 2, 3, 4\]"),
        ({"split": "testA"}, r"split: expected one of \['train', 'val', 'test'\]"),
        ({"image_size": 16}, "image_size"),
        ({"seed": -1}, "seed"),
        ({"no_target_prob": 0.7, "multi_target_prob": 0.7}, "no_target_prob"),
        ({"length": 0}, "length"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticReferDataset(**kwargs)


def test_parse_rejects_other_sentences():
    with pytest.raises(ValueError, match="grammar"):
        parse_expression("the man with the umbrella")


def test_cli_writes_refer_layout(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--format", "refer", "--level", "2", "--count", "5", "--quiet"]) == 0
    assert (tmp_path / "synthetic" / "refs(unc).p").is_file()
    assert (tmp_path / "synthetic" / "instances.json").is_file()
    assert len(list((tmp_path / "images" / "synthetic").glob("*.png"))) == 5 + 1 + 1
    assert "wrote" in capsys.readouterr().out


def test_cli_help_documents_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--level" in out and "--count" in out and "--format" in out and "--out" in out
