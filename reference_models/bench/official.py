"""``bench official``: two reference systems timed beside the papers' released code.

``lavt_base`` against LAVT-RIS's model (its BERT and its ``lavt`` at 480 px, 20 words) and
``asda_base`` with ``asda_aggregator="published"`` against ASDA's released model (CLIP
ViT-B/16 at 416 px, 17 words, the 208x208 output), both with random weights, in one
process on the same inputs. Each round times one forward (``eval`` mode, under
``inference_mode``) and one training step (forward, the loss each codebase trains with,
backward, an AdamW step) of the released model, of ours, and of ours with activation
checkpointing (which the released code lacks), in alternating order
(:func:`~.measure.interleaved_seconds`), so that the load of a shared machine hits each
alike; the table holds medians and ours/released ratios.

The released code is imported from the folder the user names (``--lavt``, ``--asda``, and
``--clip`` for OpenAI's ``clip`` package that ASDA imports), never copied: it stays on
``sys.path`` only while its model is built, and its modules leave ``sys.modules`` again,
so LAVT-RIS's ``utils`` and ASDA's ``utils`` package do not meet. What the released code
imports but never calls for a randomly initialised model (mmcv and mmsegmentation, which
LAVT-RIS reads only to load checkpoints) is stood in for when it is not installed, and
ASDA's ``clip.load`` (a download of the weights) is replaced by the same architecture
built with random weights.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import io
import os
import statistics
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .measure import interleaved_seconds

__all__ = [
    "Contender",
    "OFFICIAL_SYSTEMS",
    "check_official_paths",
    "check_batch",
    "side_by_side",
    "summarise",
    "official_table",
    "OFFICIAL_HEADER",
    "format_official_row",
]

# The files each released codebase must hold: what this module imports from it.
_EXPECTED = {
    "--lavt": ("LAVT-RIS (github.com/yz93/LAVT-RIS)", ("lib/segmentation.py", "bert/modeling_bert.py")),
    "--asda": ("ASDA (github.com/swagger-coder/ASDA)", ("model/model.py", "utils/utils.py")),
    "--clip": ("OpenAI's CLIP (github.com/openai/CLIP)", ("clip/model.py",)),
}

OFFICIAL_SYSTEMS = {"lavt": "lavt_base", "asda": "asda_base"}
"""For each released system (``--lavt``, ``--asda``), the registry model of ours it is timed against."""

_OURS_OPTIONS = {"lavt": {}, "asda": {"asda_aggregator": "published"}}


@dataclass
class Contender:
    """One model of a comparison, with everything a forward and a training step need.

    Attributes:
        label: its name in the table (``"official"``, ``"ours"``).
        module: the parameters the optimizer trains, switched between ``eval`` and ``train``.
        forward: runs the model on its prebuilt inputs and returns its output.
        loss: the scalar its codebase trains with, from that output.

    Example:
        >>> net = nn.Linear(2, 1)
        >>> x = torch.randn(3, 2)
        >>> c = Contender("m", net, lambda: net(x), lambda out: out.square().mean())
        >>> c.loss(c.forward()).dim()
        0
    """

    label: str
    module: nn.Module
    forward: Callable[[], Any]
    loss: Callable[[Any], torch.Tensor]


def _steps(
    contender: Contender, optimizer: torch.optim.Optimizer, *, grad_checkpointing: bool | None = None
) -> tuple[Callable[[], None], Callable[[], None]]:
    """``(forward, step)`` of one contender; ``grad_checkpointing`` is switched for its step only."""
    module = contender.module

    def forward() -> None:
        module.eval()
        with torch.inference_mode():
            contender.forward()

    def step() -> None:
        module.train()
        if grad_checkpointing is not None:
            module.set_grad_checkpointing(grad_checkpointing)
        try:
            contender.loss(contender.forward()).backward()
        finally:
            if grad_checkpointing is not None:
                module.set_grad_checkpointing(False)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return forward, step


def summarise(times: Mapping[str, Sequence[float]], *, baseline: str, other: str) -> dict[str, float]:
    """``other`` against ``baseline``: both medians (ms), their ratio and the median paired ratio.

    Args:
        times: name -> seconds of each round, as :func:`~.measure.interleaved_seconds` gives.
        baseline: the name divided by.
        other: the name divided.

    Returns:
        ``baseline_ms``, ``other_ms``, ``ratio`` (median / median) and ``paired_ratio`` (the
        median of each round's ratio, which a load shared by the round cancels from).

    Example:
        >>> summarise({"a": [1.0, 2.0, 3.0], "b": [2.0, 2.0, 6.0]}, baseline="a", other="b")
        {'baseline_ms': 2000.0, 'other_ms': 2000.0, 'ratio': 1.0, 'paired_ratio': 2.0}
    """
    base, mine = times[baseline], times[other]
    base_median, mine_median = statistics.median(base), statistics.median(mine)
    return {
        "baseline_ms": round(base_median * 1e3, 1),
        "other_ms": round(mine_median * 1e3, 1),
        "ratio": round(mine_median / base_median, 3),
        "paired_ratio": round(statistics.median(m / b for b, m in zip(base, mine)), 3),
    }


def side_by_side(
    official: Contender, ours: Contender, *, repeats: int = 3, warmup: int = 1, checkpointing: bool = True
) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """Time the forward and the training step of both, interleaved, and compare them.

    One round runs, in this order and reversed in every other round: the released forward,
    ours, the released step, ours, and (``checkpointing``) ours with activation
    checkpointing. Each model has one AdamW (lr 1e-5; the cost of the released recipes'
    Adam or AdamW), shared by ours with and without checkpointing.

    Args:
        official: the released model.
        ours: ours; with ``checkpointing`` its module needs ``set_grad_checkpointing``.
        repeats: timed rounds.
        warmup: untimed rounds first.
        checkpointing: also time ours with activation checkpointing.

    Returns:
        ``(rows, times)``: one row per part (``"forward"``, ``"step"``) with
        ``official_ms``, ``ours_ms``, ``ratio`` and ``paired_ratio`` (ours / official),
        and for the step ``ckpt_ms``, ``ckpt_ratio``, ``ckpt_paired_ratio``; ``times`` is
        every round's seconds by name.
    """
    ours_optimizer = torch.optim.AdamW(ours.module.parameters(), lr=1e-5)
    official_forward, official_step = _steps(official, torch.optim.AdamW(official.module.parameters(), lr=1e-5))
    ours_forward, ours_step = _steps(ours, ours_optimizer)
    runs = {
        "official forward": official_forward, "ours forward": ours_forward,
        "official step": official_step, "ours step": ours_step,
    }
    if checkpointing:
        runs["ours+ckpt step"] = _steps(ours, ours_optimizer, grad_checkpointing=True)[1]
    times = interleaved_seconds(runs, warmup=warmup, repeats=repeats)
    rows = []
    for part in ("forward", "step"):
        mine = summarise(times, baseline=f"official {part}", other=f"ours {part}")
        row = {"part": part, "official_ms": mine["baseline_ms"], "ours_ms": mine["other_ms"],
               "ratio": mine["ratio"], "paired_ratio": mine["paired_ratio"]}
        if part == "step" and checkpointing:
            ckpt = summarise(times, baseline="official step", other="ours+ckpt step")
            row.update(ckpt_ms=ckpt["other_ms"], ckpt_ratio=ckpt["ratio"], ckpt_paired_ratio=ckpt["paired_ratio"])
        rows.append(row)
    return rows, times


# -- the released code ---------------------------------------------------------------------


def check_official_paths(lavt: Path | None, asda: Path | None, clip: Path | None) -> None:
    """Refuse, in one line, a folder that does not hold the released code it is named for.

    Args:
        lavt: ``--lavt``, a checkout of LAVT-RIS, or None.
        asda: ``--asda``, a checkout of ASDA, or None.
        clip: ``--clip``, a checkout of OpenAI's CLIP, or None (then ``clip`` must be
            importable when ``asda`` is given).

    Raises:
        ValueError: naming the flag and the file it lacks.
    """
    if lavt is None and asda is None:
        raise ValueError("--lavt, --asda: expected the folder of at least one released codebase")
    for flag, path in (("--lavt", lavt), ("--asda", asda), ("--clip", clip)):
        if path is None:
            continue
        what, files = _EXPECTED[flag]
        if not Path(path).is_dir():
            raise ValueError(f"{flag}: expected the folder of {what}; {path} is not a folder")
        for name in files:
            if not (Path(path) / name).is_file():
                raise ValueError(f"{flag}: expected the folder of {what}; {path} has no {name}")
    if asda is not None and clip is None and importlib.util.find_spec("clip") is None:
        raise ValueError("--clip: ASDA's code imports OpenAI's clip package, which is not installed; "
                         "pass --clip with a checkout of github.com/openai/CLIP")


def check_batch(batch: int) -> None:
    """Refuse a batch the released ASDA cannot train on: its BatchNorm1d needs two samples.

    Args:
        batch: ``--batch``.

    Example:
        >>> check_batch(1)
        Traceback (most recent call last):
        ...
        ValueError: --batch: expected at least 2 (the released ASDA trains a BatchNorm1d); got 1
    """
    if batch < 2:
        raise ValueError(f"--batch: expected at least 2 (the released ASDA trains a BatchNorm1d); got {batch}")


def _stand_in(name: str) -> types.ModuleType:
    """A module whose every attribute refuses to be called (code the benchmark never runs)."""
    module = types.ModuleType(name)
    module.__path__ = []  # a package, so that its submodules can be imported from it

    def attribute(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)

        def unavailable(*args, **kwargs):
            raise RuntimeError(f"{name}.{attr}: not installed; bench official builds the released model without it")

        return unavailable

    module.__getattr__ = attribute
    return module


@contextlib.contextmanager
def _importing_from(paths: Sequence[Path], stand_ins: Sequence[str] = ()) -> Iterator[None]:
    """Import from ``paths`` (first on ``sys.path``) for the block only, quietly.

    Afterwards ``sys.path`` is as before and every module loaded from ``paths`` (and every
    stand-in) leaves ``sys.modules``: the objects built keep what they use, and the next
    codebase's modules of the same names load fresh. ``stand_ins`` (dotted names) are
    provided by :func:`_stand_in` where their top package is not installed.
    """
    saved_path, before = list(sys.path), set(sys.modules)
    roots = [str(Path(p).resolve()) for p in paths]
    installed = {name.split(".")[0]: importlib.util.find_spec(name.split(".")[0]) is not None for name in stand_ins}
    stood_in = [name for name in stand_ins if not installed[name.split(".")[0]] and name not in sys.modules]
    sys.path[:0] = roots
    for name in stood_in:
        sys.modules[name] = _stand_in(name)
    try:
        # The released code prints as it builds and warns about deprecated imports.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.path[:] = saved_path
        for name in set(sys.modules) - before:
            origin = getattr(sys.modules[name], "__file__", None) or ""
            if name in stood_in or any(origin.startswith(root + os.sep) for root in roots):
                del sys.modules[name]


class _ReleasedLavt(nn.Module):
    """LAVT-RIS's BERT and model, called as its ``train.py`` calls them in a step."""

    def __init__(self, bert: nn.Module, lavt: nn.Module) -> None:
        super().__init__()
        self.bert, self.lavt = bert, lavt

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        words = self.bert(input_ids, attention_mask=attention_mask)[0]
        # (b, 768, words) and (b, words, 1): the layouts the released model reads
        return self.lavt(images, words.permute(0, 2, 1), l_mask=attention_mask.unsqueeze(-1))


def _released_lavt(path: Path) -> nn.Module:
    """LAVT-RIS's Swin-B (window 12, as its released weights) and BERT-base, random weights."""
    mm_code = ("mmcv", "mmcv.fileio", "mmcv.parallel", "mmcv.utils", "mmcv.runner", "mmseg", "mmseg.utils")
    with _importing_from([path], stand_ins=mm_code):
        from bert.configuration_bert import BertConfig
        from bert.modeling_bert import BertModel
        from lib import segmentation

        options = argparse.Namespace(swin_type="base", window12=True, mha="", fusion_drop=0.0)
        lavt = segmentation.lavt(pretrained="", args=options)
        bert = BertModel(BertConfig())  # BertConfig's defaults are bert-base-uncased's sizes
        bert.pooler = None  # as its train.py: the pooler is never read
    return _ReleasedLavt(bert, lavt)


def _random_clip_loader(clip_model_module: types.ModuleType) -> Callable[..., tuple[nn.Module, None]]:
    """``clip.load`` for ViT-B/16 with random weights, on the CPU (ASDA's model calls ``.cuda()`` on it)."""

    def load(name: str, *args: Any, **kwargs: Any) -> tuple[nn.Module, None]:
        if name != "ViT-B/16":
            raise ValueError(f"clip_model: bench official builds ASDA's ViT-B/16; got {name!r}")
        model = clip_model_module.CLIP(
            embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
            context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12,
        )
        model.cuda = lambda *a, **k: model  # stays on the CPU
        return model, None

    return load


def _released_asda(path: Path, clip_path: Path | None) -> tuple[nn.Module, Callable[..., torch.Tensor]]:
    """ASDA's model as its ``train.py`` builds it (ViT-B/16, fusion_dim 768, text tuned), and its loss."""
    with _importing_from([path] + ([clip_path] if clip_path is not None else [])):
        import clip
        from clip import model as clip_model_module
        from model import model as asda_code

        released_load = clip.load
        clip.load = _random_clip_loader(clip_model_module)
        try:
            model = asda_code.Model(clip_model="ViT-B/16", tunelang=True, fusion_dim=768)
        finally:
            clip.load = released_load
        dice, focal = asda_code.dice_loss, asda_code.sigmoid_focal_loss
    return model, lambda out, target: dice(out, target) + focal(out, target)


# -- the comparison ----------------------------------------------------------------------


def _ours(system: str) -> nn.Module:
    from ..registry import get_config
    from .models import build_on

    torch.manual_seed(0)
    return build_on(get_config(OFFICIAL_SYSTEMS[system]).replace(**_OURS_OPTIONS[system]), "cpu")


def _contenders(system: str, path: Path, clip_path: Path | None, batch: int) -> tuple[Contender, Contender]:
    """The released model and ours at the released input size, on the same random inputs."""
    torch.manual_seed(0)
    if system == "lavt":
        size, words, vocab = 480, 20, 30522
    else:
        size, words, vocab = 416, 17, 49408
    images = torch.randn(batch, 3, size, size)
    input_ids = torch.randint(1, vocab - 1, (batch, words))
    attention_mask = torch.ones(batch, words, dtype=torch.long)
    target = torch.rand(batch, size, size) > 0.5
    ours = _ours(system)
    if system == "lavt":
        released = _released_lavt(path)
        weight = torch.tensor([0.9, 1.1])  # LAVT-RIS's class weights (background, object)

        def released_loss(out: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(out, target.long(), weight=weight)
    else:
        released, asda_loss = _released_asda(path, clip_path)
        input_ids[:, -1] = vocab - 1  # ASDA finds the [EOS] as the largest id; ours by the mask
        # ASDA trains on its 208x208 output against the mask at that size.
        small = F.interpolate(target[:, None].float(), size=(size // 2, size // 2), mode="nearest")

        def released_loss(out: torch.Tensor) -> torch.Tensor:
            return asda_loss(out, small)

    inputs = (images, input_ids, attention_mask)
    return (
        Contender("official", released, lambda: released(*inputs), released_loss),
        Contender("ours", ours, lambda: ours(*inputs), lambda out: ours.loss(out, target)),
    )


def _millions(module: nn.Module) -> float:
    return round(sum(p.numel() for p in module.parameters()) / 1e6, 2)


def official_table(
    paths: Mapping[str, Path], *, clip_path: Path | None = None, batch: int = 2, repeats: int = 3, warmup: int = 1,
    checkpointing: bool = True, on_row: Callable[[dict], None] | None = None, progress: bool = True,
) -> list[dict[str, Any]]:
    """Every named system beside its released code (:func:`side_by_side`), one after another.

    Args:
        paths: ``"lavt"`` and/or ``"asda"`` -> the folder of the released code
            (:func:`check_official_paths` first).
        clip_path: a checkout of OpenAI's CLIP for ASDA, when ``clip`` is not installed.
        batch: samples of each forward and step (at least 2: the released ASDA has a
            BatchNorm1d, which needs two samples in training).
        repeats: timed rounds.
        warmup: untimed rounds first.
        checkpointing: also time ours with activation checkpointing.
        on_row: called with each row as it is made.
        progress: report each system's time on stderr.

    Returns:
        Rows of :func:`side_by_side` with ``system``, ``model`` (ours), ``input``, ``batch``,
        both parameter counts (millions) and ``times_ms``.
    """
    check_batch(batch)
    rows: list[dict[str, Any]] = []
    for system in [name for name in ("lavt", "asda") if name in paths]:
        start = time.perf_counter()
        made = _system_rows(system, Path(paths[system]), clip_path, batch=batch, repeats=repeats, warmup=warmup,
                            checkpointing=checkpointing)
        gc.collect()  # both models went with _system_rows; the next system needs the memory
        rows += made
        for row in made if on_row is not None else ():
            on_row(row)
        if progress:
            print(f"  measured {system} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return rows


def _system_rows(system: str, path: Path, clip_path: Path | None, *, batch: int, **options: Any) -> list[dict[str, Any]]:
    """:func:`side_by_side` of one system and its released code, as the table's rows."""
    official, ours = _contenders(system, path, clip_path, batch)
    common = {
        "system": system, "model": OFFICIAL_SYSTEMS[system], "input": 480 if system == "lavt" else 416, "batch": batch,
        "official_params_m": _millions(official.module), "ours_params_m": _millions(ours.module),
    }
    parts, times = side_by_side(official, ours, **options)
    return [
        {**common, **part, "times_ms": {n: [round(s * 1e3, 1) for s in times[n]] for n in times if n.endswith(part["part"])}}
        for part in parts
    ]


OFFICIAL_HEADER = (
    f"{'system':<6} {'ours':<10} {'input':>5} {'batch':>5} {'part':<7} {'official ms':>11} {'ours ms':>9} "
    f"{'x':>6} {'paired':>6} {'ckpt ms':>9} {'x':>6} {'paired':>6}"
)
"""The column names of :func:`format_official_row`."""


def format_official_row(row: Mapping[str, Any]) -> str:
    """One part's line: both times and ours / released (with checkpointing for the step).

    Args:
        row: a row of :func:`official_table` (the step's also has the ``ckpt_*`` columns).

    Example:
        >>> print(format_official_row(dict(system="asda", model="asda_base", input=416, batch=2, part="forward",
        ...                                official_ms=900.0, ours_ms=880.0, ratio=0.978, paired_ratio=0.99)))
        asda   asda_base    416     2 forward       900.0     880.0  0.978  0.990
    """
    line = (
        f"{row['system']:<6} {row['model']:<10} {row['input']:>5} {row['batch']:>5} {row['part']:<7} "
        f"{row['official_ms']:>11.1f} {row['ours_ms']:>9.1f} {row['ratio']:>6.3f} {row['paired_ratio']:>6.3f}"
    )
    if "ckpt_ms" in row:
        line += f" {row['ckpt_ms']:>9.1f} {row['ckpt_ratio']:>6.3f} {row['ckpt_paired_ratio']:>6.3f}"
    return line
