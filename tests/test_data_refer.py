"""The REFER loader: exported synthetic data reads back identically; bad data fails clearly."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from PIL import Image, ImageFile

from reference_models.data.errors import BadSampleError, DataError
from reference_models.data.masks import rle_encode
from reference_models.data.refer import ReferDataset
from reference_models.data.safe_pickle import UnsafePickleError, load_plain_pickle
from reference_models.data.samples import SAMPLE_KEYS, collate
from reference_models.data.synthetic import SyntheticReferDataset, export_refer
from reference_models.data.tokenizers import WordTokenizer
from reference_models.data.transforms import normalize, to_original_size

OPTIONS = {"level": 3, "seed": 5, "refs_per_image": 2, "sentences_per_ref": 2}
COUNTS = {"train": 3, "val": 2, "test": 2}


def _export(root: Path, **kwargs) -> Path:
    options = {**OPTIONS, **kwargs}
    export_refer(root, counts=COUNTS, progress=False, **options)
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("refer"))


def _generator(split, **kwargs):
    options = {**OPTIONS, **kwargs}
    return SyntheticReferDataset(split, level=options.pop("level"), image_size=64, length=100, **options)


@pytest.mark.parametrize(
    ("mask_format", "refs_format", "generalized"),
    [
        ("polygon", "pickle", False),
        ("rle", "json", False),
        ("rle-uncompressed", "pickle", True),
        ("mixed", "json", True),
    ],
)
def test_round_trip_gives_identical_samples(tmp_path, mask_format, refs_format, generalized):
    extra = {"no_target_prob": 0.2, "multi_target_prob": 0.2} if generalized else {}
    root = _export(tmp_path, mask_format=mask_format, refs_format=refs_format, **extra)
    suffix = ".p" if refs_format == "pickle" else ".json"
    assert (root / "synthetic" / f"refs(unc){suffix}").is_file()
    kinds = set()
    for split, images in COUNTS.items():
        data = ReferDataset(
            root, "synthetic", "unc", split, tokenizer=WordTokenizer(), image_size=64, all_sentences=True
        )
        generator = _generator(split, **extra)
        seen = 0
        for index in range(len(data)):
            sample = data[index]
            assert tuple(sample) == SAMPLE_KEYS
            scene_index = sample["image_id"] % 1_000_000
            scene, refs = generator.scene(scene_index)
            slot = sample["ref_id"] - sample["image_id"] * OPTIONS["refs_per_image"]
            ref = refs[slot % len(refs)]
            kinds.add(ref.kind)
            choice = sample["sent_id"] - sample["ref_id"] * OPTIONS["sentences_per_ref"]
            assert sample["sentence"] == ref.expressions[choice].sentence
            expected = scene.masks[list(ref.targets)].any(0) if ref.targets else np.zeros((64, 64), dtype=bool)
            assert torch.equal(sample["mask"], torch.from_numpy(expected))
            assert torch.equal(sample["image"], normalize(scene.image))
            seen += 1
        per_image = OPTIONS["refs_per_image"]
        refs = [generator.scene(i)[1] for i in range(images)]
        assert seen == sum(len(refs_i[slot % len(refs_i)].expressions) for refs_i in refs for slot in range(per_image))
    if generalized:
        assert {"none", "multi"} <= kinds


def test_reference_masks_at_original_size(exported):
    data = ReferDataset(
        exported,
        "synthetic",
        "unc",
        "val",
        tokenizer=WordTokenizer(),
        image_size=48,
        resize="letterbox",
        keep_original_mask=True,
    )
    generator = _generator("val")
    total_inter = total_union = 0
    for index in range(len(data)):
        sample = data[index]
        scene, refs = generator.scene(sample["image_id"] % 1_000_000)
        ref = refs[(sample["ref_id"] - sample["image_id"] * OPTIONS["refs_per_image"]) % len(refs)]
        assert torch.equal(sample["orig_mask"], torch.from_numpy(scene.masks[list(ref.targets)].any(0)))
        assert sample["mask"].shape == (48, 48) and sample["orig_size"].tolist() == [64, 64]
        back = to_original_size(sample["mask"], sample["content_box"], sample["orig_size"], interpolation="nearest")
        inter = (back & sample["orig_mask"]).sum().item()
        union = (back | sample["orig_mask"]).sum().item()
        assert inter / union > 0.5  # small shapes lose their rim going 64 -> 48 -> 64
        total_inter, total_union = total_inter + inter, total_union + union
    assert total_inter / total_union > 0.75
    batch = collate([data[0], data[1]])
    assert batch["image"].shape == (2, 3, 48, 48) and isinstance(batch["orig_mask"], (list, torch.Tensor))


def test_training_mode_draws_one_sentence_per_ref(exported):
    data = ReferDataset(exported, "synthetic", "unc", "train", tokenizer=WordTokenizer(), image_size=64, seed=3)
    assert not data.all_sentences and len(data) == len(data.refs) == COUNTS["train"] * OPTIONS["refs_per_image"]
    first = [data[i]["sent_id"] for i in range(len(data))]
    assert first == [data[i]["sent_id"] for i in range(len(data))]  # deterministic
    for index, sent_id in enumerate(first):
        assert sent_id in data.refs[index]["sent_ids"]
    epochs = set()
    for epoch in range(6):
        data.set_epoch(epoch)
        epochs.add(tuple(data[i]["sent_id"] for i in range(len(data))))
    assert len(epochs) > 1  # other epochs show other sentences


# -- bad data -------------------------------------------------------------------------------------


def test_missing_instances_names_the_file(tmp_path):
    root = _export(tmp_path)
    (root / "synthetic" / "instances.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"synthetic/instances\.json"):
        ReferDataset(root, "synthetic", "unc", "val", tokenizer=WordTokenizer())


def test_missing_image_names_the_file(tmp_path):
    root = _export(tmp_path)
    victim = root / "images" / "synthetic" / "val_000001.png"
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=r"val_000001\.png: the picture of image \d+ \(ref \d+\) not found"):
        ReferDataset(root, "synthetic", "unc", "val", tokenizer=WordTokenizer())
    lazy = ReferDataset(root, "synthetic", "unc", "val", tokenizer=WordTokenizer(), check_images=False)
    with pytest.raises(BadSampleError, match=r"val_000001\.png: sample \d+ \(ref \d+\) cannot be read: the picture file is gone"):
        for index in range(len(lazy)):
            lazy[index]


@pytest.mark.parametrize("pad_truncated", [False, True])
def test_a_picture_that_fails_to_decode_is_a_bad_sample(tmp_path, monkeypatch, pad_truncated):
    # Pillow's global switch to pad truncated files with grey (which other libraries set) must
    # not make the half picture load.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", pad_truncated)
    root = _export(tmp_path)
    victim = root / "images" / "synthetic" / "val_000000.png"
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])
    data = ReferDataset(root, "synthetic", "unc", "val", tokenizer=WordTokenizer())  # the header is intact
    with pytest.raises(BadSampleError) as caught:
        data[0]
    error = caught.value
    assert (error.index, error.path, error.ref_id) == (0, str(victim), data.refs[0]["ref_id"])
    assert error.reason.startswith("cannot decode the picture (OSError: image file is truncated")
    assert str(error).startswith(f"{victim}: sample 0 (ref {error.ref_id}) cannot be read: ")
    assert isinstance(error, DataError) and isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))  # as a DataLoader worker hands it back
    assert type(copy) is BadSampleError and str(copy) == str(error)
    assert (copy.index, copy.path, copy.reason, copy.ref_id) == (error.index, error.path, error.reason, error.ref_id)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is pad_truncated  # restored
    data[len(data) - 1]  # the other pictures are fine
    if not pad_truncated:
        # torch re-raises a worker's error as type(error)(text): the parts come back from the text.
        loader = DataLoader(data, batch_size=1, num_workers=1, collate_fn=collate)
        with pytest.raises(BadSampleError) as caught:
            next(iter(loader))
        assert (caught.value.index, caught.value.path, caught.value.reason, caught.value.ref_id) == (
            error.index, error.path, error.reason, error.ref_id
        )


class _OpensAFile:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class _RunsAShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", [_OpensAFile, _RunsAShell])
def test_malicious_refs_pickle_is_refused_without_running(tmp_path, payload):
    root = _export(tmp_path)
    marker = tmp_path / "pwned"
    refs_file = root / "synthetic" / "refs(unc).p"
    refs_file.write_bytes(pickle.dumps([{"ref_id": 0, "evil": payload(marker)}], protocol=2))
    with pytest.raises(UnsafePickleError, match=r"refs\(unc\)\.p"):
        ReferDataset(root, "synthetic", "unc", "val", tokenizer=WordTokenizer())
    assert not marker.exists()
    # The payload is live: an ordinary unpickler would have run it.
    control = tmp_path / "control"
    result = pickle.loads(pickle.dumps(payload(control), protocol=2))
    if hasattr(result, "close"):
        result.close()  # the file object the payload opened
    assert control.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("refcocoz", "unc", "val"),
            r"dataset: expected one of \['refclef', 'refcoco', 'refcoco\+', 'refcocog', 'synthetic'\]",
        ),
        (("refcocog", "unc", "val"), r"split_by: refcocog is split by one of \['google', 'umd'\]"),
        (
            ("refcoco", "unc", "testC"),
            r"split: refcoco \(unc\) has splits \['train', 'val', 'testA', 'testB', 'test'\]",
        ),
    ],
)
def test_unknown_names_list_the_valid_ones(tmp_path, args, message):
    with pytest.raises(ValueError, match=message):
        ReferDataset(tmp_path, *args, tokenizer=WordTokenizer())


def test_missing_refs_file_names_both_candidates(tmp_path):
    (tmp_path / "refcoco").mkdir()
    with pytest.raises(FileNotFoundError, match=r"refs\(google\)\.p.*refs\(google\)\.json"):
        ReferDataset(tmp_path, "refcoco", "google", "val", tokenizer=WordTokenizer())


# -- the real datasets' layout --------------------------------------------------------------------


def _coco_like(root: Path) -> Path:
    """A two-image RefCOCO-style tree: refs with REFER split names, polygons and an RLE."""
    image_dir = root / "images" / "mscoco" / "images" / "train2014"
    image_dir.mkdir(parents=True)
    (root / "refcoco").mkdir()
    images = []
    for image_id, (height, width) in ((11, (30, 40)), (12, (36, 24))):
        name = f"COCO_train2014_{image_id:012d}.jpg"
        Image.new("RGB", (width, height), (90, 120, 150)).save(image_dir / name, quality=95)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
    rle = np.zeros((36, 24), dtype=bool)
    rle[5:20, 4:12] = True
    annotations = [
        {
            "id": 101,
            "image_id": 11,
            "segmentation": [[2, 2, 20, 2, 20, 10, 2, 10], [15, 5, 30, 5, 30, 25, 15, 25]],
            "category_id": 1,
        },
        {"id": 102, "image_id": 12, "segmentation": rle_encode(rle), "category_id": 1},
    ]
    instances = {"images": images, "annotations": annotations, "categories": []}
    (root / "refcoco" / "instances.json").write_text(json.dumps(instances))

    def ref(ref_id, image_id, ann_id, split):
        sentences = [
            {"sent_id": ref_id * 10 + j, "raw": f"Raw Sentence {ref_id}-{j}", "sent": f"sentence {ref_id} {j}"}
            for j in range(2)
        ]
        return {
            "ref_id": ref_id,
            "image_id": image_id,
            "ann_id": ann_id,
            "split": split,
            "sentences": sentences,
            "sent_ids": [s["sent_id"] for s in sentences],
        }

    refs = [ref(1, 11, 101, "train"), ref(2, 11, 101, "testA"), ref(3, 12, 102, "testB"), ref(4, 12, [-1], "val")]
    (root / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    return root


def test_refcoco_layout_splits_and_masks(tmp_path):
    root = _coco_like(tmp_path)
    tok = WordTokenizer()
    test = ReferDataset(root, "refcoco", "unc", "test", tokenizer=tok, image_size=32)
    assert sorted(r["ref_id"] for r in test.refs) == [2, 3]
    test_a = ReferDataset(root, "refcoco", "unc", "testA", tokenizer=tok, image_size=32)
    assert [r["ref_id"] for r in test_a.refs] == [2] and len(test_a) == 2
    sample = test_a[0]
    assert sample["sentence"] == "Raw Sentence 2-0" and sample["orig_size"].tolist() == [30, 40]
    # Overlapping polygon parts are one foreground region; COCO's rule covers exactly the
    # pixels of an integer rectangle ([2, 20) x [2, 10) and [15, 30) x [5, 25) here).
    mask = test_a.ref_mask(test_a.refs[0])
    assert mask[6, 18] and mask[20, 25] and mask.sum() == 18 * 8 + 15 * 20 - 5 * 5
    test_b = ReferDataset(root, "refcoco", "unc", "testB", tokenizer=tok, image_size=32, text_field="sent")
    assert test_b[1]["sentence"] == "sentence 3 1"
    assert test_b.ref_mask(test_b.refs[0]).sum() == 15 * 8
    val = ReferDataset(root, "refcoco", "unc", "val", tokenizer=tok, image_size=32)
    assert not val[0]["mask"].any()  # ann_id [-1]: no target
    google = [r for r in load_plain_pickle(root / "refcoco" / "refs(unc).p") if r["split"] != "val"]
    (root / "refcoco" / "refs(google).p").write_bytes(pickle.dumps(google, protocol=2))
    with pytest.raises(ValueError, match=r"no refs in split 'val'; the file has splits \['testA', 'testB', 'train'\]"):
        ReferDataset(root, "refcoco", "google", "val", tokenizer=tok)


def test_image_dir_can_be_moved(tmp_path):
    root = _coco_like(tmp_path / "data")
    moved = tmp_path / "elsewhere"
    (root / "images" / "mscoco" / "images" / "train2014").rename(moved)
    with pytest.raises(FileNotFoundError, match="COCO_train2014_000000000011.jpg"):
        ReferDataset(root, "refcoco", "unc", "train", tokenizer=WordTokenizer())
    data = ReferDataset(root, "refcoco", "unc", "train", tokenizer=WordTokenizer(), image_dir=moved, image_size=32)
    assert data[0]["image"].shape == (3, 32, 32)


def test_export_refuses_to_overwrite_and_replaces_when_asked(tmp_path):
    root = tmp_path / "refer"
    export_refer(root, counts={"train": 3, "val": 1, "test": 1}, progress=False)
    images = root / "images" / "synthetic"
    before = sorted(p.name for p in images.iterdir())
    instances = (root / "synthetic" / "instances.json").read_bytes()
    with pytest.raises(ValueError, match="out_dir: .* already holds an export .*pass overwrite=True"):
        export_refer(root, counts={"train": 1, "val": 1, "test": 1}, progress=False)
    # Refused: nothing was touched.
    assert sorted(p.name for p in images.iterdir()) == before
    assert (root / "synthetic" / "instances.json").read_bytes() == instances
    # An option that fails is found before anything is deleted.
    with pytest.raises(ValueError, match="image_size: expected an int >= 32; got 16"):
        export_refer(root, counts={"train": 1, "val": 1, "test": 1}, image_size=16, overwrite=True, progress=False)
    assert sorted(p.name for p in images.iterdir()) == before
    (images / "notes.txt").write_text("mine")
    export_refer(root, counts={"train": 1, "val": 1, "test": 1}, overwrite=True, progress=False)
    # Replaced: no stale picture of the larger export is left; the user's own file stays.
    assert sorted(p.name for p in images.iterdir()) == ["notes.txt", "test_000000.png", "train_000000.png", "val_000000.png"]
    assert len(json.loads((root / "synthetic" / "instances.json").read_text())["images"]) == 3
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="out_dir: .*file is a file; expected a folder"):
        export_refer(tmp_path / "file", counts=1, progress=False)
