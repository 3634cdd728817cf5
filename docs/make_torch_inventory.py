"""Write the local intersphinx inventories the docs link through: ``python docs/make_torch_inventory.py``.

CI has no network, so Sphinx cannot download ``https://pytorch.org/docs/stable/objects.inv``
(nor Python's, NumPy's or Pillow's). Instead ``docs/conf.py`` points ``intersphinx_mapping``
at the files this script writes into ``docs/_inventories/``: small inventories in Sphinx's
documented ``objects.inv`` version 2 format (four header lines, then zlib-compressed lines
``name domain:role priority uri display-name``), listing exactly the external names our
docstrings and type hints mention, each with its real address on the project's site.

When a nitpicky build reports ``py:class reference target not found: torch.X``, add ``X``
below (its page is on the project's site) and rerun this script; ``tests/test_docs.py``
fails while the committed files differ from what the script writes.

Names whose defining module differs from the documented one (``torch.nn.Module`` lives in
``torch.nn.modules.module``) are listed with that spelling too, because autodoc writes type
hints by the defining module.
"""

from __future__ import annotations

import argparse
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "_inventories"

# -- PyTorch -------------------------------------------------------------------------------
# Classes and functions with their own generated page: generated/<name>.html#<name>.
_TORCH_GENERATED_CLASSES = (
    "torch.nn.Module",
    "torch.nn.Linear",
    "torch.nn.Conv2d",
    "torch.nn.LayerNorm",
    "torch.nn.GroupNorm",
    "torch.nn.BatchNorm2d",
    "torch.nn.SyncBatchNorm",
    "torch.nn.Sequential",
    "torch.nn.ModuleList",
    "torch.nn.MultiheadAttention",
    "torch.nn.parameter.Parameter",
    "torch.nn.parallel.DistributedDataParallel",
    "torch.Generator",
    "torch.utils.flop_counter.FlopCounterMode",
    "torch.optim.lr_scheduler.LRScheduler",
)
_TORCH_GENERATED_FUNCTIONS = (
    "torch.compile",
    "torch.load",
    "torch.save",
    "torch.no_grad",
    "torch.nn.functional.interpolate",
    "torch.nn.functional.scaled_dot_product_attention",
)
# Names documented inside a topic page: name -> (role, page).
_TORCH_ON_PAGES = {
    "torch.Tensor": ("class", "tensors.html"),
    "torch.dtype": ("class", "tensor_attributes.html"),
    "torch.device": ("class", "tensor_attributes.html"),
    "torch.Size": ("class", "size.html"),
    "torch.autocast": ("class", "amp.html"),
    "torch.optim.Optimizer": ("class", "optim.html"),
    "torch.amp.GradScaler": ("class", "amp.html"),
    "torch.utils.data.Dataset": ("class", "data.html"),
    "torch.utils.data.DataLoader": ("class", "data.html"),
    "torch.utils.data.Sampler": ("class", "data.html"),
    "torch.utils.data.distributed.DistributedSampler": ("class", "data.html"),
    "torch.nn.Module.modules": ("method", "generated/torch.nn.Module.html"),
}
# Other spellings of the same objects: alias -> documented name.
_TORCH_ALIASES = {
    "torch.nn.modules.module.Module": "torch.nn.Module",
    "torch.nn.modules.linear.Linear": "torch.nn.Linear",
    "torch.nn.modules.conv.Conv2d": "torch.nn.Conv2d",
    "torch.nn.modules.normalization.LayerNorm": "torch.nn.LayerNorm",
    "torch.nn.modules.normalization.GroupNorm": "torch.nn.GroupNorm",
    "torch.nn.modules.batchnorm.BatchNorm2d": "torch.nn.BatchNorm2d",
    "torch.nn.modules.batchnorm.SyncBatchNorm": "torch.nn.SyncBatchNorm",
    "torch.nn.modules.container.Sequential": "torch.nn.Sequential",
    "torch.nn.modules.container.ModuleList": "torch.nn.ModuleList",
    "torch.nn.Parameter": "torch.nn.parameter.Parameter",
    "torch.utils.data.dataset.Dataset": "torch.utils.data.Dataset",
    "torch.utils.data.dataloader.DataLoader": "torch.utils.data.DataLoader",
    "torch.utils.data.sampler.Sampler": "torch.utils.data.Sampler",
    "torch.utils.data.DistributedSampler": "torch.utils.data.distributed.DistributedSampler",
    "torch.optim.optimizer.Optimizer": "torch.optim.Optimizer",
    "torch.amp.autocast_mode.autocast": "torch.autocast",
    "torch.amp.grad_scaler.GradScaler": "torch.amp.GradScaler",
    "torch._C.Generator": "torch.Generator",
}

# -- Python standard library ---------------------------------------------------------------
_PYTHON = {
    # name: (role, page)
    "int": ("class", "library/functions.html"),
    "float": ("class", "library/functions.html"),
    "bool": ("class", "library/functions.html"),
    "object": ("class", "library/functions.html"),
    "str": ("class", "library/stdtypes.html"),
    "bytes": ("class", "library/stdtypes.html"),
    "list": ("class", "library/stdtypes.html"),
    "tuple": ("class", "library/stdtypes.html"),
    "dict": ("class", "library/stdtypes.html"),
    "set": ("class", "library/stdtypes.html"),
    "frozenset": ("class", "library/stdtypes.html"),
    "None": ("data", "library/constants.html"),
    "Exception": ("exception", "library/exceptions.html"),
    "ValueError": ("exception", "library/exceptions.html"),
    "OSError": ("exception", "library/exceptions.html"),
    "RuntimeError": ("exception", "library/exceptions.html"),
    "FileNotFoundError": ("exception", "library/exceptions.html"),
    "pathlib.Path": ("class", "library/pathlib.html"),
    "os.PathLike": ("class", "library/os.html"),
    "contextlib.AbstractContextManager": ("class", "library/contextlib.html"),
    "collections.abc.Callable": ("class", "library/collections.abc.html"),
    "collections.abc.Iterable": ("class", "library/collections.abc.html"),
    "collections.abc.Iterator": ("class", "library/collections.abc.html"),
    "collections.abc.Mapping": ("class", "library/collections.abc.html"),
    "collections.abc.Sequence": ("class", "library/collections.abc.html"),
    "typing.Any": ("data", "library/typing.html"),
    "typing.Literal": ("data", "library/typing.html"),
    "typing.NamedTuple": ("class", "library/typing.html"),
    "typing.Protocol": ("class", "library/typing.html"),
    "random.Random": ("class", "library/random.html"),
    "pickle.UnpicklingError": ("exception", "library/pickle.html"),
    "argparse.ArgumentParser": ("class", "library/argparse.html"),
    "argparse.Namespace": ("class", "library/argparse.html"),
}
_PYTHON_ALIASES = {"pathlib._local.Path": "pathlib.Path", "_pickle.UnpicklingError": "pickle.UnpicklingError"}

# -- NumPy and Pillow ------------------------------------------------------------------------
_NUMPY = {
    "numpy.ndarray": ("class", "reference/generated/numpy.ndarray.html"),
    "numpy.dtype": ("class", "reference/generated/numpy.dtype.html"),
    "numpy.random.Generator": ("class", "reference/random/generator.html"),
}
_NUMPY_ALIASES = {"numpy.random._generator.Generator": "numpy.random.Generator"}
_PILLOW = {"PIL.Image.Image": ("class", "reference/Image.html")}
_PILLOW_ALIASES: dict[str, str] = {}


def _torch_entries() -> dict[str, tuple[str, str]]:
    entries = {name: ("class", f"generated/{name}.html") for name in _TORCH_GENERATED_CLASSES}
    entries.update({name: ("function", f"generated/{name}.html") for name in _TORCH_GENERATED_FUNCTIONS})
    entries.update(_TORCH_ON_PAGES)
    return entries


@dataclass(frozen=True)
class Inventory:
    """One project's local inventory: where its documentation lives and what we link to.

    Attributes:
        url: the documentation root every address is relative to.
        project: the project name written in the header.
        version: the version written in the header.
        entries: ``{name: (role, page)}``; the address is ``url + page + "#" + name``.
        aliases: ``{other spelling: listed name}``, sharing the listed name's address.
    """

    url: str
    project: str
    version: str
    entries: dict[str, tuple[str, str]]
    aliases: dict[str, str]


INVENTORIES: dict[str, Inventory] = {
    "torch": Inventory("https://pytorch.org/docs/stable/", "PyTorch", "stable", _torch_entries(), _TORCH_ALIASES),
    "python": Inventory("https://docs.python.org/3/", "Python", "3", _PYTHON, _PYTHON_ALIASES),
    "numpy": Inventory("https://numpy.org/doc/stable/", "NumPy", "stable", _NUMPY, _NUMPY_ALIASES),
    "pillow": Inventory("https://pillow.readthedocs.io/en/stable/", "Pillow", "stable", _PILLOW, _PILLOW_ALIASES),
}


def public_torch_name(cls: Any) -> str | None:
    """The documented spelling of a torch class (``torch.nn.Module`` for ``nn.Module``), else None."""
    spelled = f"{getattr(cls, '__module__', '')}.{getattr(cls, '__qualname__', '')}"
    if spelled in INVENTORIES["torch"].entries:
        return spelled
    return _TORCH_ALIASES.get(spelled)


def inventory_bytes(key: str) -> bytes:
    """One inventory in the ``objects.inv`` v2 format; identical bytes on every run."""
    inventory = INVENTORIES[key]
    lines = []
    for name, (role, page) in sorted(inventory.entries.items()):
        # "$" at the end of a location stands for the name itself (the page's anchor)
        lines.append(f"{name} py:{role} 1 {page}#$ -")
    for alias, name in sorted(inventory.aliases.items()):
        role, page = inventory.entries[name]
        lines.append(f"{alias} py:{role} 1 {page}#{name} {name}")
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {inventory.project}\n"
        f"# Version: {inventory.version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    return header.encode() + zlib.compress("\n".join(lines).encode() + b"\n", 9)


def write_all(out_dir: Path = OUT_DIR) -> list[Path]:
    """Write every inventory into ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key in INVENTORIES:
        path = out_dir / f"{key}.inv"
        path.write_bytes(inventory_bytes(key))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python docs/make_torch_inventory.py [--out DIR]``.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder to write the .inv files into")
    args = parser.parse_args(argv)
    for path in write_all(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
