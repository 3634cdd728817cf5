"""The REFER pre-flight: every malformed field, link, file and picture is one line naming it."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reference_models.data.errors import CorruptImageError, DataError
from reference_models.data.images import load_image
from reference_models.data.masks import rle_encode
from reference_models.data.preflight import check_refer
from reference_models.data.refer import ReferDataset
from reference_models.data.safe_pickle import BadPickleError
from reference_models.data.tokenizers import WordTokenizer

IMAGES = "images/mscoco/images/train2014"


def _refs() -> list[dict]:
    def ref(ref_id, image_id, ann_id, split):
        sentences = [{"sent_id": ref_id * 10 + j, "raw": f"Raw {ref_id}-{j}", "sent": f"raw {ref_id} {j}",
                      "tokens": ["raw", str(ref_id)]} for j in range(2)]
        return {"ref_id": ref_id, "image_id": image_id, "ann_id": ann_id, "split": split, "category_id": 1,
                "sentences": sentences, "sent_ids": [s["sent_id"] for s in sentences]}

    return [ref(1, 11, 101, "train"), ref(2, 12, [102], "train"), ref(3, 12, -1, "val")]


def _instances() -> dict:
    rle = np.zeros((36, 24), dtype=bool)
    rle[5:20, 4:12] = True
    return {
        "images": [
            {"id": 11, "file_name": "COCO_train2014_000000000011.jpg", "height": 30, "width": 40},
            {"id": 12, "file_name": "COCO_train2014_000000000012.jpg", "height": 36, "width": 24},
        ],
        "annotations": [
            {"id": 101, "image_id": 11, "segmentation": [[2, 2, 20, 2, 20, 10, 2, 10]], "category_id": 1},
            {"id": 102, "image_id": 12, "segmentation": rle_encode(rle), "category_id": 1},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }


def _write(root: Path, refs: list | bytes | None = None, instances: dict | str | None = None) -> Path:
    folder = root / "refcoco"
    folder.mkdir(parents=True, exist_ok=True)
    refs = _refs() if refs is None else refs
    (folder / "refs(unc).p").write_bytes(refs if isinstance(refs, bytes) else pickle.dumps(refs, protocol=2))
    instances = _instances() if instances is None else instances
    (folder / "instances.json").write_text(instances if isinstance(instances, str) else json.dumps(instances))
    return root


@pytest.fixture
def root(tmp_path) -> Path:
    pictures = tmp_path / IMAGES
    pictures.mkdir(parents=True)
    for entry in _instances()["images"]:
        Image.new("RGB", (entry["width"], entry["height"]), (90, 120, 150)).save(pictures / entry["file_name"])
    return _write(tmp_path)


def _build(root: Path, split: str = "train", **kwargs) -> ReferDataset:
    return ReferDataset(root, "refcoco", "unc", split, tokenizer=WordTokenizer(), image_size=32, **kwargs)


def test_the_fixture_is_valid(root):
    data = _build(root)
    assert [ref["ref_id"] for ref in data.refs] == [1, 2] and data[0]["image"].shape == (3, 32, 32)
    assert not _build(root, "val")[0]["mask"].any()


def _set(index: int, key: str, value) -> Callable[[list], None]:
    def change(refs):
        refs[index][key] = value
    return change


def _set_sentence(key: str, value) -> Callable[[list], None]:
    def change(refs):
        refs[0]["sentences"][1][key] = value
    return change


REF_CASES = {
    "image_id None": (_set(0, "image_id", None), r"ref 1 \(refs\[0\]\): 'image_id': expected an int; got None"),
    "nested ann_id": (_set(0, "ann_id", [[101]]), r"ref 1 \(refs\[0\]\): 'ann_id': expected an int or a flat list of ints; got \[\[101\]\]"),
    "raw None": (_set_sentence("raw", None), r"ref 1 \(refs\[0\]\): 'sentences'\[1\]\['raw'\]: expected a str; got None"),
    "sent a list": (_set_sentence("sent", ["a"]), r"ref 1 \(refs\[0\]\): 'sentences'\[1\]\['sent'\]: expected a str; got \['a'\]"),
    "tokens": (_set_sentence("tokens", "a b"), r"ref 1 \(refs\[0\]\): 'sentences'\[1\]\['tokens'\]: expected a list of str; got 'a b'"),
    "sent_id": (_set_sentence("sent_id", "3"), r"ref 1 \(refs\[0\]\): 'sentences'\[1\]\['sent_id'\]: expected an int; got '3'"),
    "ref_id str": (_set(1, "ref_id", "2"), r"refs\[1\]: 'ref_id': expected an int; got '2'"),
    "bool image_id": (_set(1, "image_id", True), r"ref 2 \(refs\[1\]\): 'image_id': expected an int; got True"),
    "split int": (_set(2, "split", 3), r"ref 3 \(refs\[2\]\): 'split': expected a str; got 3"),
    "no sentences": (_set(0, "sentences", []), r"ref 1 \(refs\[0\]\): 'sentences': expected a non-empty list of sentences; got \[\]"),
    "sentence str": (_set(0, "sentences", ["the cat"]), r"ref 1 \(refs\[0\]\): 'sentences'\[0\]: expected a dict with 'raw' or 'sent'; got 'the cat'"),
    "sent_ids": (_set(0, "sent_ids", [1, None]), r"ref 1 \(refs\[0\]\): 'sent_ids': expected a list of ints; got \[1, None\]"),
    "missing image_id": (lambda refs: refs[0].pop("image_id"), r"refs\[0\]: missing 'image_id'"),
    "ref a list": (lambda refs: refs.__setitem__(1, [1, 2]), r"refs\[1\]: expected a dict; got a list"),
}


def _refused(root: Path, pattern: str, split: str = "train", **files) -> None:
    """Write the changed files; building the split must fail with one line matching ``pattern``."""
    _write(root, **files)
    with pytest.raises(DataError, match=pattern) as caught:
        _build(root, split)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("case", list(REF_CASES))
def test_malformed_refs_name_the_file_ref_and_field(root, case):
    change, message = REF_CASES[case]
    refs = _refs()
    change(refs)
    # The val split: a broken ref of another split still fails, as the file is checked whole.
    _refused(root, r"refcoco/refs\(unc\)\.p: " + message, "val", refs=refs)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (pickle.dumps({"refs": []}, protocol=2), r"expected a list of refs; got a dict"),
        (b"not a pickle at all", r"not a readable pickle"),
        (pickle.dumps(_refs(), protocol=2)[:-40], r"not a readable pickle \(truncated"),
        (b"", r"not a readable pickle \(truncated"),
    ],
)
def test_unreadable_refs_pickles_name_the_file(root, data, message):
    _write(root, refs=data)
    with pytest.raises(DataError, match=r"refs\(unc\)\.p: " + message) as caught:
        _build(root)
    assert isinstance(caught.value, BadPickleError) == ("not a readable" in message)


def test_refs_in_json_are_checked_the_same_way(root):
    (root / "refcoco" / "refs(unc).p").unlink()
    refs = _refs()
    refs[0]["image_id"] = None
    (root / "refcoco" / "refs(unc).json").write_text(json.dumps(refs))
    with pytest.raises(DataError, match=r"refs\(unc\)\.json: ref 1 \(refs\[0\]\): 'image_id': expected an int"):
        _build(root)
    for text, message in (("[{", "not valid JSON"), ("[" * 100_000 + "]" * 100_000, "not valid JSON")):
        (root / "refcoco" / "refs(unc).json").write_text(text)
        with pytest.raises(DataError, match=r"refs\(unc\)\.json: " + message):
            _build(root)


def _image(key: str, value) -> Callable[[dict], None]:
    def change(instances):
        instances["images"][0][key] = value
    return change


def _annotation(key: str, value) -> Callable[[dict], None]:
    def change(instances):
        instances["annotations"][0][key] = value
    return change


INSTANCE_CASES = {
    "images a dict": (lambda i: i.__setitem__("images", {"11": i["images"][0]}), r"'images': expected a list of entries"),
    "not a dict": (lambda i: i.__setitem__("images", [[11]]), r"images\[0\]: expected a dict; got a list"),
    "absolute file_name": (_image("file_name", "/etc/passwd"), r"image 11 \(images\[0\]\): 'file_name': expected a relative path inside"),
    "dotted file_name": (_image("file_name", "../../secret.jpg"), r"image 11 \(images\[0\]\): 'file_name': .*without '\.\.'"),
    "windows file_name": (_image("file_name", "C:\\data\\x.jpg"), r"image 11 \(images\[0\]\): 'file_name': expected a relative path inside"),
    "windows dots": (_image("file_name", "a\\..\\..\\x.jpg"), r"image 11 \(images\[0\]\): 'file_name': expected a relative path inside"),
    "empty file_name": (_image("file_name", ""), r"image 11 \(images\[0\]\): 'file_name': expected a relative path; got ''"),
    "height str": (_image("height", "30"), r"image 11 \(images\[0\]\): 'height': expected a positive whole number of pixels; got '30'"),
    "width zero": (_image("width", 0), r"image 11 \(images\[0\]\): 'width': expected a positive whole number of pixels; got 0"),
    "width fraction": (_image("width", 40.5), r"image 11 \(images\[0\]\): 'width': expected a positive whole number of pixels; got 40.5"),
    "huge image": (_image("width", 10**9), r"image 11 \(images\[0\]\): 1000000000x30 pixels \(width x height\) is beyond Pillow's limit"),
    "image id None": (_image("id", None), r"images\[0\]: 'id': expected an int; got None"),
    "duplicate image": (lambda i: i["images"].append(dict(i["images"][0])), r"image 11 \(images\[2\]\): the image id 11 appears twice"),
    "ann image_id": (_annotation("image_id", "11"), r"annotation 101 \(annotations\[0\]\): 'image_id': expected an int"),
    "no segmentation": (lambda i: i["annotations"][0].pop("segmentation"), r"annotation 101 .*no 'segmentation'"),
    "odd polygon": (_annotation("segmentation", [[2, 2, 20, 2, 20]]), r"annotation 101 of ref 1: 'segmentation': polygons\[0\]: expected an even number"),
    "polygon strings": (_annotation("segmentation", [["a", 2, 20, 2, 20, 10]]), r"annotation 101 of ref 1: 'segmentation': polygons\[0\]: expected numbers"),
    "segmentation str": (_annotation("segmentation", "polygon"), r"annotation 101 of ref 1: 'segmentation': expected polygons or RLE; got str"),
    "rle size": (_annotation("segmentation", {"size": [30, 41], "counts": [1230]}), r"annotation 101 of ref 1: 'segmentation': RLE size \[30, 41\] does not match the image size \[30, 40\]"),
    "rle size None": (_annotation("segmentation", {"size": None, "counts": "abc"}), r"annotation 101 of ref 1: 'segmentation': rle: 'size' must be \[height, width\]; got None"),
    "rle counts": (_annotation("segmentation", {"size": [30, 40], "counts": "\x7f\x7f"}), r"annotation 101 of ref 1: 'segmentation': compressed RLE counts: invalid character"),
    "rle sum": (_annotation("segmentation", {"size": [30, 40], "counts": [5, 5]}), r"annotation 101 of ref 1: 'segmentation': rle: run lengths sum to 10, but size 30x40 has 1200 pixels"),
    "rle counts type": (_annotation("segmentation", {"size": [30, 40], "counts": [1200.0]}), r"annotation 101 of ref 1: 'segmentation': rle: 'counts' must be a string or a list of ints; got \[1200.0\]"),
    "ann elsewhere": (_annotation("image_id", 12), r"annotation 101 of ref 1: it is on image 12, the ref on image 11"),
}


@pytest.mark.parametrize("case", list(INSTANCE_CASES))
def test_malformed_instances_name_the_file_entry_and_field(root, case):
    change, message = INSTANCE_CASES[case]
    instances = _instances()
    change(instances)
    _refused(root, r"refcoco/instances\.json: " + message, instances=instances)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set(0, "image_id", 99), r"refs\(unc\)\.p: ref 1: 'image_id' 99 is not an image of .*instances\.json"),
        (_set(1, "ann_id", [102, 555]), r"refs\(unc\)\.p: ref 2: 'ann_id' 555 is not an annotation of .*instances\.json"),
    ],
)
def test_refs_must_name_entries_that_exist(root, change, message):
    refs = _refs()
    change(refs)
    _refused(root, message, refs=refs)


def test_instances_json_that_is_not_json_names_the_file(root):
    _refused(root, r"instances\.json: not valid JSON", instances='{"images": [')
    _refused(root, r"instances\.json: expected a COCO dict with 'images' and 'annotations'; got a list", instances="[1, 2]")


def test_pictures_are_checked_by_their_headers(root):
    picture = root / IMAGES / "COCO_train2014_000000000012.jpg"
    picture.write_bytes(b"this is not a JPEG")
    with pytest.raises(CorruptImageError, match=r"000000000012\.jpg: cannot read the picture's header .*\(image 12, ref 2\)"):
        _build(root)
    _build(root, check_images=False)  # the lazy path defers it to the sample
    Image.new("RGB", (36, 24)).save(picture)  # width and height swapped
    with pytest.raises(DataError, match=r"000000000012\.jpg: image 12 \(ref 2\): the picture is 36x24 \(width x height\) "
                       r"but .*instances\.json says 24x36$"):
        _build(root)


def _rotated_jpeg(path: Path, stored: np.ndarray) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=100, subsampling=0)


def test_exif_orientation_is_a_choice_the_sizes_must_agree_with(root):
    # A 40x30 (width x height) stored picture, bright in the polygon's box [2, 20) x [2, 10).
    stored = np.zeros((30, 40, 3), dtype=np.uint8)
    stored[2:10, 2:20] = 255
    _rotated_jpeg(root / IMAGES / "COCO_train2014_000000000011.jpg", stored)
    # REFER's way: the pixels as stored, where the annotation lies.
    sample = _build(root, keep_original_mask=True)[0]
    assert sample["orig_size"].tolist() == [30, 40]
    picture = np.asarray(Image.open(root / IMAGES / "COCO_train2014_000000000011.jpg").convert("L"))
    assert picture[sample["orig_mask"].numpy()].min() > 200 and picture[~sample["orig_mask"].numpy()].max() < 60
    # Sizes given turned (annotations made on the turned picture) must ask for the turn ...
    instances = _instances()
    instances["images"][0].update(height=40, width=30)
    instances["annotations"][0]["segmentation"] = [[20, 2, 28, 2, 28, 20, 20, 20]]
    _write(root, instances=instances)
    with pytest.raises(DataError, match=r"the picture is 40x30 .* says 30x40; it matches turned by its EXIF "
                       r"orientation: build the dataset with exif_orientation=True"):
        _build(root)
    # ... and with it the picture is turned and its bright box meets the turned annotation.
    sample = _build(root, exif_orientation=True, keep_original_mask=True)[0]
    assert sample["orig_size"].tolist() == [40, 30]
    mask = sample["orig_mask"].numpy()
    assert mask[2:20, 20:28].all() and mask.sum() == 18 * 8
    turned = np.asarray(load_image(root / IMAGES / "COCO_train2014_000000000011.jpg").convert("L"))
    assert turned[mask].min() > 200 and turned[~mask].max() < 60
    _write(root, instances=_instances())
    with pytest.raises(DataError, match=r"the picture is 30x40 \(width x height, turned by its EXIF orientation\) but "
                       r".* says 40x30; it matches as stored: build the dataset with exif_orientation=False"):
        _build(root, exif_orientation=True)


def test_a_progress_bar_only_when_asked_or_on_a_terminal(root, capsys, monkeypatch):
    args = (root / "refcoco" / "refs(unc).p", root / "refcoco" / "instances.json", root / IMAGES, "train")
    check_refer(*args, progress=True)
    assert "checking pictures" in capsys.readouterr().err
    monkeypatch.setenv("CI", "1")
    check_refer(*args)
    assert capsys.readouterr().err == ""


def test_files_are_checked_once_per_content(root, monkeypatch):
    from reference_models.data import preflight

    calls = []
    real = preflight.loads_plain_pickle
    monkeypatch.setattr(preflight, "loads_plain_pickle", lambda data, **kw: calls.append(kw["source"]) or real(data, **kw))
    monkeypatch.setattr(preflight, "_CHECKED", type(preflight._CHECKED)())
    _build(root, "train"), _build(root, "val")
    assert len(calls) == 1  # train and val read one refs file: unpickled and checked once
    refs = _refs()
    refs[2]["image_id"] = None
    _refused(root, r"ref 3 \(refs\[2\]\): 'image_id': expected an int", refs=refs)  # new content: checked anew
    _write(root)
    _build(root, "val")
    assert len(calls) == 2  # the first content again: remembered
