"""Convert a LAVT release (Yang et al., CVPR 2022, its published ``.pth``) into a
``save_pretrained`` folder of our ``lavt_base`` or ``lavt_sadlr_base``.

The file is read with ``torch.load(weights_only=True)``, allowing ``argparse.Namespace``
(LAVT's ``train.py`` saves its arguments beside the weights): nothing in it can run code.
The sizes come from the tensors' shapes; the model's other fields from ``--model``, with the
fields that reproduce LAVT's forward (:data:`LAVT_COMPATIBLE`). Every tensor must find its
place and every place its tensor (SADLR's refiner aside, which starts fresh): anything else
fails, naming the keys.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..registry import build_from_config, get_config
from ..weights import archive_problem, views_problem
from .keys import map_lavt_key

__all__ = ["ConversionError", "LAVT_COMPATIBLE", "LavtRelease", "Conversion", "read_lavt_release", "lavt_config", "map_release", "convert_lavt"]

#: The fields under which our ``lavt`` computes what LAVT's published code computes.
LAVT_COMPATIBLE: dict[str, Any] = {
    "pwam_norm_affine": False,  # nn.InstanceNorm1d without affine in its PWAM
    "decoder_align_corners": True,  # its decoder's and final F.interpolate
    "lavt_last_gate": True,  # its last stage's res_gate, built and saved, never read
    "swin_windows": "segmentation",  # lib/backbone.py pads to whole windows, then shifts
    "drop_path": 0.3,  # lib/segmentation.py: drop_path_rate=0.3
    "image_size": 480,  # args.py --img_size
    "max_words": 20,  # its data loader pads BERT's tokens to 20
    "tokenizer": "bert",  # bert-base-uncased WordPiece
    "text_dropout": 0.1,  # BERT's own dropout, as it fine-tuned it
    "norm": "batch",
}

_LAST_GATE = "gates.3."  # LAVT's fourth stage: its gate feeds no later stage
_BERT_HEAD_WIDTH = 64  # every BERT of Google's release (base, large, the small ones) uses 64


class ConversionError(ValueError):
    """A file that is not a LAVT release, or one that does not fit the model (one line)."""


@dataclass
class LavtRelease:
    """The tensors of a LAVT release: ``model`` (its ``lavt`` model) and ``bert`` (its BERT).

    Attributes:
        path: the file they came from.
        model: LAVT's model state dict (``backbone.*``, ``classifier.*``).
        bert: its BERT's state dict (the ``bert_model`` entry, or the ``text_encoder.*`` of
            the ``lavt_one`` layout, prefix removed).
        bert_entry: where ``bert`` was found, as errors name its keys (``bert_model`` or
            ``model.text_encoder``).
        extras: the entries beside the weights that were not read (``optimizer``, ``args``, ...).
    """

    path: Path
    model: dict[str, torch.Tensor]
    bert: dict[str, torch.Tensor]
    bert_entry: str = "bert_model"
    extras: list[str] = field(default_factory=list)


_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"  # torch's legacy (pre-1.6) format is a pickle stream


def _load(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    with path.open("rb") as handle:
        head = handle.read(len(_ZIP_MAGIC))
    if not head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        raise ConversionError(f"{path}: not a LAVT release (not a torch checkpoint: neither a zip archive nor a pickle)")
    problem = archive_problem(path)  # before torch inflates its records
    if problem:
        raise ConversionError(f"{path}: {problem}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise
    except Exception as err:  # torch raises many types for foreign or damaged bytes
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if found:
            raise ConversionError(
                f"{path}: needs more than torch.load(weights_only=True) to read (it pickles {found[1]}); refusing to run code from it"
            ) from None
        raise ConversionError(f"{path}: not a LAVT release (torch cannot read it: truncated or corrupt? {type(err).__name__})") from None


def _tensors(entry: Any) -> dict[str, torch.Tensor] | None:
    if not isinstance(entry, Mapping) or not entry or not all(isinstance(v, torch.Tensor) for v in entry.values()):
        return None
    keys = list(entry)
    if all(k.startswith("module.") for k in keys):  # saved through DistributedDataParallel
        return {k[len("module."):]: v for k, v in entry.items()}
    return dict(entry)


def read_lavt_release(path: str | os.PathLike) -> LavtRelease:
    """Read and recognise a LAVT release.

    Args:
        path: the ``.pth`` of LAVT's ``train.py`` (``{"model", "bert_model", "optimizer",
            "epoch", "args", "lr_scheduler"}``), or of its ``lavt_one`` model (BERT inside
            ``model`` as ``text_encoder.*``).

    Raises:
        FileNotFoundError: no such file.
        ConversionError: a file that is not a LAVT release (a Swin or BERT checkpoint, one of
            ours, bytes torch cannot read, or one that needs more than weights), in one line
            naming the file.
    """
    path = Path(path)
    data = _load(path)
    if isinstance(data, Mapping) and "model_config" in data:
        raise ConversionError(f"{path}: a reference_models checkpoint, not a LAVT release; evaluate and predict read it as it is")
    model = _tensors(data.get("model")) if isinstance(data, Mapping) else None
    if model is None:
        flat = _tensors(data)
        hint = " (a Swin checkpoint? pass it as --vision-weights)" if flat and any("blocks." in k for k in flat) else ""
        raise ConversionError(f"{path}: not a LAVT release: expected a dict whose 'model' holds LAVT's weights{hint}")
    if not any(k.startswith("backbone.layers.0.fusion.") for k in model):
        hint = " (a Swin checkpoint? pass it as --vision-weights)" if any("blocks." in k for k in model) else ""
        raise ConversionError(f"{path}: not a LAVT release: its 'model' has no PWAM weights (backbone.layers.0.fusion.*){hint}")
    bert, entry = _tensors(data.get("bert_model")), "bert_model"
    if bert is None:  # the lavt_one layout
        bert, entry = {k[len("text_encoder."):]: v for k, v in model.items() if k.startswith("text_encoder.")}, "model.text_encoder"
        model = {k: v for k, v in model.items() if not k.startswith("text_encoder.")}
    if not bert:
        raise ConversionError(f"{path}: not a complete LAVT release: no 'bert_model' beside 'model' (nor text_encoder.* inside it)")
    problem = views_problem({**model, **{f"{entry}.{k}": v for k, v in bert.items()}}, path.stat().st_size)
    if problem:  # before converting makes the views real
        raise ConversionError(f"{path}: {problem}")
    extras = sorted(str(k) for k in data if k not in ("model", "bert_model"))
    return LavtRelease(path, model, bert, entry, extras)


def _count(keys: list[str], pattern: str) -> int:
    found = {int(m[1]) for k in keys if (m := re.match(pattern, k))}
    if found != set(range(len(found))):
        raise ConversionError(f"expected consecutive indices in {pattern}; got {sorted(found)}")
    return len(found)


def _shape(state: dict[str, torch.Tensor], key: str, path: Path) -> tuple[int, ...]:
    if key not in state:
        raise ConversionError(f"{path}: not a complete LAVT release: {key} is missing")
    return tuple(state[key].shape)


def _swin_sizes(release: LavtRelease) -> dict[str, Any]:
    model, path = release.model, release.path
    keys = list(model)
    stages = _count(keys, r"backbone\.layers\.(\d+)\.")
    if stages != 4:
        raise ConversionError(f"{path}: expected LAVT's 4 Swin stages; got {stages}")
    depths = tuple(_count(keys, rf"backbone\.layers\.{i}\.blocks\.(\d+)\.") for i in range(stages))
    tables = [_shape(model, f"backbone.layers.{i}.blocks.0.attn.relative_position_bias_table", path) for i in range(stages)]
    side = math.isqrt(tables[0][0])
    if side * side != tables[0][0] or side % 2 == 0:
        raise ConversionError(f"{path}: a relative-position table of {tables[0][0]} rows is not (2 * window - 1)^2")
    embed_dim = _shape(model, "backbone.patch_embed.proj.weight", path)[0]
    hidden = _shape(model, "backbone.layers.0.blocks.0.mlp.fc1.weight", path)[0]
    if hidden != 4 * embed_dim:
        raise ConversionError(f"{path}: Swin's MLP is {hidden / embed_dim:g} times as wide as its tokens; ours is 4")
    return {
        "swin_embed_dim": embed_dim,
        "swin_depths": depths,
        "swin_heads": tuple(t[1] for t in tables),
        "swin_window": (side + 1) // 2,
        "decoder_dim": _shape(model, "classifier.conv1_4.weight", path)[0],
    }


def _bert_sizes(release: LavtRelease, text_heads: int | None) -> dict[str, Any]:
    bert, path = release.bert, release.path
    vocab, dim = _shape(bert, "embeddings.word_embeddings.weight", path)
    words_in = _shape(release.model, "backbone.layers.0.fusion.image_lang_att.f_key.0.weight", path)[1]
    if words_in != dim:
        raise ConversionError(f"{path}: its PWAM reads {words_in}-d words but its BERT is {dim}-d")
    if text_heads is None:
        if dim % _BERT_HEAD_WIDTH:
            raise ConversionError(
                f"{path}: cannot tell the heads of a {dim}-d BERT (not a multiple of 64): pass --model-arg text_heads=N"
            )
        text_heads = dim // _BERT_HEAD_WIDTH
    return {
        "text_dim": dim,
        "vocab_size": vocab,
        "text_layers": _count(list(bert), r"encoder\.layer\.(\d+)\."),
        "text_heads": text_heads,
        "text_intermediate": _shape(bert, "encoder.layer.0.intermediate.dense.weight", path)[0],
    }


def lavt_config(release: LavtRelease, model: str = "lavt_base", overrides: Mapping[str, Any] | None = None) -> ModelConfig:
    """The configuration a release converts into.

    Args:
        release: from :func:`read_lavt_release`.
        model: a registered ``lavt`` model whose other fields are kept (``lavt_base``, or
            ``lavt_sadlr_base`` for SADLR's refiner on LAVT).
        overrides: config fields that win over everything (``--model-arg``), e.g.
            ``image_size`` or ``text_heads`` for a BERT whose width is not 64 per head.

    Returns:
        ``model``'s configuration with the release's sizes and :data:`LAVT_COMPATIBLE`;
        LAVT's weighted cross-entropy (``head_loss="weighted_ce"``) for its classifier,
        SADLR's Dice for the refiner.
    """
    base = get_config(model)
    if base.architecture != "lavt":
        raise ConversionError(f"--model: expected a LAVT model (lavt_base or lavt_sadlr_base); got {model!r} ({base.architecture})")
    overrides = dict(overrides or {})
    sizes = {**_swin_sizes(release), **_bert_sizes(release, overrides.get("text_heads"))}
    loss = {"head_loss": "weighted_ce"} if base.head.kind == "classifier" else {}
    fields = {**sizes, **LAVT_COMPATIBLE, **loss, "vision_weights": None, "text_weights": None, **overrides}
    return base.replace(**fields)


@dataclass
class Conversion:
    """What :func:`map_release` did.

    Attributes:
        state: our state dict, every tensor of the release in its place.
        dropped: the release's keys left out, each with the reason.
        fresh: our keys the release cannot fill (SADLR's refiner), left as initialised.
    """

    state: dict[str, torch.Tensor]
    dropped: dict[str, str]
    fresh: list[str]


def map_release(release: LavtRelease, own: Mapping[str, torch.Tensor], *, refiner: bool) -> Conversion:
    """Place every tensor of ``release`` in a model whose state dict is ``own``.

    Args:
        release: from :func:`read_lavt_release`.
        own: the target model's state dict (names and shapes).
        refiner: the target has SADLR's refiner: LAVT's classifier is dropped and the
            refiner's weights may stay fresh.

    Raises:
        ConversionError: keys no rule places, places left empty (the refiner's aside) or
            shapes that differ, each listed by name, in one line.
    """
    state: dict[str, torch.Tensor] = {}
    dropped: dict[str, str] = {}
    unknown: list[str] = []
    origin: dict[str, str] = {}  # our key -> the release's, which messages name
    sources = [(k, k, v) for k, v in release.model.items()]
    sources += [(f"{release.bert_entry}.{k}", f"text_encoder.{k}", v) for k, v in release.bert.items()]
    for shown, key, tensor in sources:
        mapped = map_lavt_key(key, tensor, refiner=refiner)
        if mapped is not None and mapped.key is not None and mapped.key not in own and mapped.key.startswith(_LAST_GATE):
            mapped = mapped._replace(key=None, reason="the last stage's language gate, never read (lavt_last_gate=false)")
        if mapped is None or (mapped.key is not None and mapped.key not in own):
            unknown.append(shown)
        elif mapped.key is None:
            dropped[shown] = mapped.reason
        else:
            state[mapped.key] = mapped.tensor
            origin[mapped.key] = shown
    fresh = [k for k in own if k not in state and refiner and k.startswith("head.refiner.")]
    missing = [k for k in own if k not in state and k not in fresh]
    mismatched = [f"{k} ({tuple(v.shape)} vs {tuple(own[k].shape)})" for k, v in state.items() if v.shape != own[k].shape]
    wrong_type, non_finite = _bad_values(state, own, origin)
    problems = [
        f"{label}: {_listed(keys)}"
        for label, keys in (
            ("keys with no place in the model", unknown),
            ("weights the file does not hold", missing),
            ("shapes that differ (file vs model)", mismatched),
            ("weights that are not real floating-point numbers (file vs model)", wrong_type),
            ("weights holding NaN or infinite values", non_finite),
        )
        if keys
    ]
    if problems:
        raise ConversionError(f"{release.path}: does not convert: " + "; ".join(problems))
    return Conversion(state, dropped, fresh)


def _bad_values(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], origin: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """The mapped tensors whose kind differs from the model's (an int, bool or complex tensor
    where a float is expected: copying would cast it silently), and the float ones holding
    NaN or infinity (they would train into skipped steps and non-finite checkpoints)."""
    wrong_type, non_finite = [], []
    for key, tensor in state.items():
        if tensor.is_floating_point() != own[key].is_floating_point() or tensor.is_complex():
            wrong_type.append(f"{origin[key]} ({str(tensor.dtype).removeprefix('torch.')} vs {str(own[key].dtype).removeprefix('torch.')})")
        elif tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            non_finite.append(origin[key])
    return wrong_type, non_finite


def _listed(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def convert_lavt(path: str | os.PathLike | LavtRelease, out: str | os.PathLike, *, model: str = "lavt_base",
                 overrides: Mapping[str, Any] | None = None) -> tuple[Path, Conversion]:
    """Convert a LAVT release into a ``save_pretrained`` folder.

    Args:
        path: the release's file, or the release :func:`read_lavt_release` already read
            from it (a release is a gigabyte: read it once).
        out: the folder to write (``config.json`` and ``model.safetensors``).
        model: ``lavt_base`` (LAVT as released) or ``lavt_sadlr_base`` (its backbone and
            decoder under a freshly initialised SADLR refiner).
        overrides: config fields that win (see :func:`lavt_config`).

    Returns:
        The folder, and what was mapped, dropped and left fresh.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     torch.save({"model": {"w": torch.zeros(1)}}, Path(tmp) / "x.pth")
        ...     convert_lavt(Path(tmp) / "x.pth", Path(tmp) / "out")
        Traceback (most recent call last):
        ...
        reference_models.convert.lavt.ConversionError: ...x.pth: not a LAVT release: its 'model' has no PWAM weights (backbone.layers.0.fusion.*)
    """
    release = path if isinstance(path, LavtRelease) else read_lavt_release(path)
    config = lavt_config(release, model, overrides)
    net = build_from_config(config)
    conversion = map_release(release, net.state_dict(), refiner=config.head.kind == "sadlr")
    net.load_state_dict(conversion.state, strict=False)
    return net.save_pretrained(out), conversion
