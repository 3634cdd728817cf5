"""The command line of ``python -m reference_models.convert``: a published release in, a
``save_pretrained`` folder out."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import parse_overrides
from ..outputs import check_output_folder
from ..training.run_folder import RunLock
from .lavt import convert_lavt, read_lavt_release

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reference_models.convert",
        description="Convert a published checkpoint into a folder that from_pretrained, evaluate and predict read.",
    )
    sub = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    lavt = sub.add_parser(
        "lavt", help="a LAVT release (yz93/LAVT-RIS: model_best_*.pth, refcoco.pth, ...)",
        description="Convert a LAVT release. Sizes come from its tensors; the folder's config reproduces LAVT's forward "
        "(pwam_norm_affine=false, decoder_align_corners=true, lavt_last_gate=true, drop_path=0.3).",
    )
    lavt.add_argument("checkpoint", type=Path, help="the release's .pth (read with torch.load(weights_only=True))")
    lavt.add_argument(
        "--out", type=Path, required=True,
        help="the folder to write (config.json, model.safetensors); a missing or empty one, or any with --overwrite "
        "(never a training run's folder)",
    )
    lavt.add_argument("--overwrite", action="store_true", help="write into a non-empty --out, replacing its config.json and model.safetensors")
    lavt.add_argument(
        "--model", default="lavt_base", choices=["lavt_base", "lavt_sadlr_base"],
        help="lavt_base: LAVT as released; lavt_sadlr_base: its backbone and decoder under a fresh SADLR refiner",
    )
    lavt.add_argument(
        "--model-arg", dest="model_args", action="append", default=[], metavar="KEY=VALUE",
        help="override a field of the written config, e.g. image_size=384 (repeatable)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line: convert one checkpoint and say what went where.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``); see ``--help``.
    """
    args = _parser().parse_args(argv)
    overrides = parse_overrides(args.model_args)
    # checked before the release (a gigabyte) is read; again under the lock, which keeps a
    # training run from starting into the folder while it is written
    check_output_folder(args.out, argument="--out", overwrite=args.overwrite, reads=(args.checkpoint,))
    release = read_lavt_release(args.checkpoint)
    check_output_folder(args.out, argument="--out", overwrite=True, reads=(args.checkpoint,))
    args.out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(args.out)
    try:
        folder, conversion = convert_lavt(release, args.out, model=args.model, overrides=overrides)
    finally:
        lock.release(remove=True)
    kept = len(release.model) + len(release.bert) - len(conversion.dropped)
    print(f"{args.checkpoint}: {kept} tensors of LAVT's model and BERT ({release.bert_entry}) converted into {args.model}")
    reasons: dict[str, list[str]] = {}
    for key, reason in conversion.dropped.items():
        reasons.setdefault(reason, []).append(key)
    for reason, keys in reasons.items():
        print(f"  dropped {len(keys)}: {reason} (e.g. {keys[0]})")
    if conversion.fresh:
        print(f"  freshly initialised {len(conversion.fresh)}: SADLR's refiner (head.refiner.*), which LAVT does not have")
    if release.extras:
        print(f"  not read: {', '.join(release.extras)}")
    print(f"wrote {folder}")
    return 0
