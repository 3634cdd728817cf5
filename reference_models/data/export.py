"""Writing the generated benchmark in the REFER on-disk layout: :func:`export_refer` and the
command line ``python -m reference_models.data.synthetic``."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .lexicon import SHAPES
from .masks import rle_encode
from .scenes import DEFAULT_LEVEL, LEVELS, Scene, level_spec
from . import synthetic

# synthetic.py re-exports this module's names, so it is imported whole and read at call
# time: ``python -m reference_models.data.synthetic`` runs it as __main__ and imports it again.

__all__ = ["export_refer", "main"]

_MASK_FORMATS = ("polygon", "rle", "rle-uncompressed", "mixed")


def _segmentation(scene: Scene, index: int, mask_format: str, ann_position: int) -> Any:
    fmt = _MASK_FORMATS[ann_position % 3] if mask_format == "mixed" else mask_format
    if fmt == "polygon":
        return [list(scene.objects[index].polygon)]
    return rle_encode(scene.masks[index], compressed=fmt == "rle")


def _check_export_options(
    level: int, counts, mask_format: str, refs_format: str, seed: int, refs_per_image: int, sentences_per_ref: int,
    no_target_prob: float, multi_target_prob: float,
) -> dict[str, int]:
    """Refuse bad options before anything is written; returns the images per split."""
    if mask_format not in _MASK_FORMATS:
        raise ValueError(f"mask_format: expected one of {_MASK_FORMATS}; got {mask_format!r}")
    if refs_format not in ("pickle", "json"):
        raise ValueError(f"refs_format: expected 'pickle' or 'json'; got {refs_format!r}")
    level_spec(level)
    if isinstance(counts, int):
        counts = {"train": counts, "val": max(1, counts // 5), "test": max(1, counts // 5)}
    for split, count in counts.items():
        synthetic._check_options(split, seed, refs_per_image, sentences_per_ref, no_target_prob, multi_target_prob)
        if not isinstance(count, int) or not 0 <= count <= synthetic._ID_STRIDE:
            raise ValueError(f"counts[{split!r}]: expected an int in [0, {synthetic._ID_STRIDE}]; got {count!r}")
    return dict(counts)


def _prepare_folders(root: Path, overwrite: bool) -> tuple[Path, Path]:
    """The annotation and picture folders, emptied of an earlier export when ``overwrite``."""
    data_dir, image_dir = root / "synthetic", root / "images" / "synthetic"
    for folder in (root, data_dir, image_dir):
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"out_dir: {folder} is a file; expected a folder to write the export into")
    previous = [p for p in (data_dir, image_dir) if p.is_dir() and any(p.iterdir())]
    # The annotation files are written last, atomically: without them a folder holds the
    # pictures of an export that failed (a full disk), which a rerun replaces unasked.
    finished = data_dir.is_dir() and any((data_dir / name).is_file() for name in _EXPORT_FILES)
    if previous and finished and not overwrite:
        raise ValueError(
            f"out_dir: {root} already holds an export ({', '.join(str(p) for p in previous)} not empty); "
            "pass overwrite=True (--overwrite) to replace it, or choose another folder"
        )
    for folder in (data_dir, image_dir):
        # the annotation files go first, so an export stopped while clearing reads as unfinished;
        # only what an export writes is deleted, anything else the user put there stays
        for path in sorted(folder.iterdir(), key=lambda p: p.suffix == ".png") if folder.is_dir() else ():
            if path.is_file() and (path.name in _EXPORT_FILES or path.name.endswith(".tmp") or _EXPORTED_PICTURE.fullmatch(path.name)):
                path.unlink()
    data_dir.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    return data_dir, image_dir


def _annotations(scene: Scene, image_id: int, mask_format: str, first_position: int) -> list[dict[str, Any]]:
    """COCO annotations of every object of the scene."""
    rows = []
    for index, obj in enumerate(scene.objects):
        ys, xs = np.nonzero(scene.masks[index])
        rows.append(
            {
                "id": image_id * synthetic._MAX_OBJECTS_PER_IMAGE + index,
                "image_id": image_id,
                "category_id": SHAPES.index(obj.shape) + 1,
                "segmentation": _segmentation(scene, index, mask_format, first_position + index),
                "area": int(scene.masks[index].sum()),
                "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1],
                "iscrowd": 0,
                "attributes": obj.attributes(),
            }
        )
    return rows


def _refs(scene: Scene, scene_refs, image_id: int, split: str, file_name: str, refs_per_image: int, sentences_per_ref: int) -> list[dict[str, Any]]:
    """REFER refs (with their sentences and programs) of one picture."""
    rows = []
    for slot in range(refs_per_image):
        ref = scene_refs[slot % len(scene_refs)]
        ref_id = image_id * refs_per_image + slot
        ann_ids = [image_id * synthetic._MAX_OBJECTS_PER_IMAGE + t for t in ref.targets]
        single = ref.kind == "single"
        category = SHAPES.index(scene.objects[ref.targets[0]].shape) + 1 if single else 0
        sentences = [
            {
                "sent_id": ref_id * sentences_per_ref + j,
                "raw": expression.sentence,
                "sent": expression.sentence,
                "tokens": expression.sentence.split(),
                "program": expression.program,
            }
            for j, expression in enumerate(ref.expressions)
        ]
        rows.append(
            {
                "ref_id": ref_id,
                "image_id": image_id,
                "ann_id": ann_ids[0] if single else (ann_ids or [-1]),
                "category_id": category,
                "split": split,
                "file_name": file_name,
                "sent_ids": [s["sent_id"] for s in sentences],
                "sentences": sentences,
            }
        )
    return rows


def _write_annotation_files(
    data_dir: Path, description: str, images: list[dict[str, Any]], annotations: list[dict[str, Any]],
    refs: list[dict[str, Any]], refs_format: str,
) -> None:
    """Write ``instances.json`` (COCO: images, annotations, one category per shape) and the refs
    file (``refs(unc).p`` or ``refs(unc).json``) into ``data_dir``, each atomically.

    Args:
        data_dir: the dataset folder (``out_dir/synthetic``).
        description: the ``info.description`` of ``instances.json``.
        images: the COCO image entries, in order.
        annotations: the COCO annotations of every picture's objects.
        refs: the REFER refs of every picture.
        refs_format: ``pickle`` or ``json`` (already checked).
    """
    instances = {
        "info": {"description": description},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": shape, "supercategory": "shape"} for i, shape in enumerate(SHAPES)],
    }
    _write_atomically(data_dir / "instances.json", json.dumps(instances).encode("utf-8"))
    if refs_format == "pickle":
        _write_atomically(data_dir / "refs(unc).p", pickle.dumps(refs, protocol=2))
    else:
        _write_atomically(data_dir / "refs(unc).json", json.dumps(refs).encode("utf-8"))


def export_refer(
    out_dir: str | Path,
    *,
    level: int = DEFAULT_LEVEL,
    counts: int | Mapping[str, int] = 100,
    image_size: int = 64,
    seed: int = 0,
    refs_per_image: int = 3,
    sentences_per_ref: int = 2,
    no_target_prob: float = 0.0,
    multi_target_prob: float = 0.0,
    mask_format: str = "polygon",
    refs_format: str = "pickle",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write generated images, expressions and masks in the REFER on-disk layout.

    Writes ``out_dir/synthetic/refs(unc).p`` (or ``.json``), ``out_dir/synthetic/instances.json``
    (COCO images, annotations with polygons or RLE, categories = shapes) and PNG pictures under
    ``out_dir/images/synthetic/``; read it back with
    ``ReferDataset(out_dir, "synthetic", "unc", split, ...)``. Scene ``i`` of a split is the
    same scene :class:`~reference_models.data.synthetic.SyntheticReferDataset` shows with the same seed and options. Each
    sentence also stores its ``program``; single-target refs have an int ``ann_id``, plural and
    no-target refs a list (``[-1]`` = no target, as in gRefCOCO).

    Args:
        out_dir: the REFER data root to write.
        level: difficulty level.
        counts: images per split, or one int K for K train and max(1, K // 5) val and test images.
        image_size: picture side.
        seed: base seed.
        refs_per_image: refs per picture.
        sentences_per_ref: sentences per ref (fewer when a target has fewer descriptions).
        no_target_prob: probability of a no-target ref.
        multi_target_prob: probability of a multi-target ref.
        mask_format: ``polygon``, ``rle`` (compressed), ``rle-uncompressed`` or ``mixed``.
        refs_format: ``pickle`` (``refs(unc).p``) or ``json``.
        overwrite: replace an earlier export in ``out_dir`` (its annotation files and
            pictures are deleted first, so no stale image is left). Without it an existing
            export is an error and nothing is touched.
        progress: show a tqdm progress bar.

    Returns:
        The dataset folder ``out_dir/synthetic``.
    """
    counts = _check_export_options(level, counts, mask_format, refs_format, seed, refs_per_image, sentences_per_ref, no_target_prob, multi_target_prob)
    from tqdm.auto import tqdm

    generate = dict(
        level=level,
        size=image_size,
        seed=seed,
        refs_per_image=refs_per_image,
        sentences_per_ref=sentences_per_ref,
        no_target_prob=no_target_prob,
        multi_target_prob=multi_target_prob,
    )
    # One scene first: the scene generator checks the remaining options (the picture size),
    # and an earlier export must not be deleted for an option that then fails.
    synthetic._generate("train", 0, **generate)
    data_dir, image_dir = _prepare_folders(Path(out_dir), overwrite)
    images, annotations, refs = [], [], []
    bar = tqdm(total=sum(counts.values()), desc=f"synthetic level {level}", unit="image", disable=not progress)
    for split, count in counts.items():
        for scene_index in range(count):
            scene, scene_refs = synthetic._generate(split, scene_index, **generate)
            image_id = synthetic._SPLIT_CODES[split] * synthetic._ID_STRIDE + scene_index
            file_name = f"{split}_{scene_index:06d}.png"
            _save_picture(scene.image, image_dir / file_name)
            images.append({"id": image_id, "file_name": file_name, "height": image_size, "width": image_size})
            annotations.extend(_annotations(scene, image_id, mask_format, len(annotations)))
            refs.extend(_refs(scene, scene_refs, image_id, split, file_name, refs_per_image, sentences_per_ref))
            bar.update(1)
    bar.close()
    description = f"rislayers synthetic referring segmentation, level {level}, seed {seed}"
    _write_annotation_files(data_dir, description, images, annotations, refs, refs_format)
    return data_dir


_EXPORT_FILES = ("instances.json", "refs(unc).p", "refs(unc).json")
#: The pictures an export writes (``train_000012.png``): the only ones a rerun deletes.
_EXPORTED_PICTURE = re.compile(r"(train|val|test)_\d{6}\.png")


def _save_picture(image: np.ndarray, path: Path) -> None:
    try:
        Image.fromarray(image, mode="RGB").save(path)
    except OSError as err:
        # PIL's write errors (a full disk) carry no file name: the message must say where
        raise OSError(err.errno, err.strerror or str(err), str(path)) from None


def _write_atomically(path: Path, data: bytes) -> None:
    # A crash mid-write leaves the temporary file, never a truncated annotation file.
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m reference_models.data.synthetic") -> int:
    """Command line: export a synthetic dataset in the REFER layout.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``); see ``--help``.
        prog: the command's name in its usage and errors (it runs as two modules).
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Generate the procedural referring-segmentation benchmark and write it to disk "
        "in the REFER layout (refs(unc).p, instances.json, PNG images).",
    )
    parser.add_argument("--out", required=True, type=Path, help="output data root (created if missing)")
    parser.add_argument("--format", default="refer", choices=["refer"], help="on-disk layout (default: refer)")
    parser.add_argument("--level", type=int, default=DEFAULT_LEVEL, choices=sorted(LEVELS), help="difficulty level")
    parser.add_argument("--count", type=int, default=100, help="number of training images (default: 100)")
    parser.add_argument("--eval-count", type=int, default=None, help="val and test images each (default: count // 5)")
    parser.add_argument("--image-size", type=int, default=64, help="picture side in pixels (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default: 0)")
    parser.add_argument("--refs-per-image", type=int, default=3, help="referred targets per image (default: 3)")
    parser.add_argument(
        "--sentences-per-ref", type=int, default=2,
        help="at most this many sentences per target: fewer when a target has fewer distinct descriptions (default: 2)",
    )
    parser.add_argument("--mask-format", default="polygon", choices=list(_MASK_FORMATS), help="annotation masks")
    parser.add_argument("--refs-format", default="pickle", choices=["pickle", "json"], help="refs(unc).p or .json")
    parser.add_argument("--no-target-prob", type=float, default=0.0, help="share of no-target expressions")
    parser.add_argument("--multi-target-prob", type=float, default=0.0, help="share of multi-target expressions")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error(f"--count: expected >= 1; got {args.count}")
    eval_count = max(1, args.count // 5) if args.eval_count is None else args.eval_count
    try:
        folder = export_refer(
            args.out,
            level=args.level,
            counts={"train": args.count, "val": eval_count, "test": eval_count},
            image_size=args.image_size,
            seed=args.seed,
            refs_per_image=args.refs_per_image,
            sentences_per_ref=args.sentences_per_ref,
            no_target_prob=args.no_target_prob,
            multi_target_prob=args.multi_target_prob,
            mask_format=args.mask_format,
            refs_format=args.refs_format,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except ValueError as error:
        message = str(error).replace("overwrite=True (--overwrite)", "--overwrite")
        for name, flag in (("out_dir: ", "--out: "), ("image_size: ", "--image-size: "), ("seed: ", "--seed: ")):
            message = message.replace(name, flag, 1)
        parser.error(message)
    print(f"wrote {folder} ({args.count} train, {eval_count} val, {eval_count} test images)")
    return 0


if __name__ == "__main__":
    # ``python -m reference_models.data.export``: the same command as ``...data.synthetic``,
    # wrapped the same way (a read-only folder, /proc or a full disk is one line)
    from ..cli import run

    raise SystemExit(run(lambda: main(prog="python -m reference_models.data.export"), "python -m reference_models.data.export"))
