"""What every section reports besides its table: the machine it ran on, and the JSON file.

:func:`environment` and :func:`format_environment` give the one-line header every section
prints first; :func:`cuda_environment` adds what a GPU run must state (device, driver,
CUDA and cuDNN versions); :func:`write_json` replaces a result file atomically, so that a
run that crashes part-way keeps what it had written last.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

__all__ = ["cpu_name", "environment", "format_environment", "cuda_environment", "optional", "write_json"]


def cpu_name() -> str:
    """The CPU's model name (from ``/proc/cpuinfo`` where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device | str = "cpu", dtype: str = "float32") -> dict[str, Any]:
    """What a measurement ran on: machine, software, device, dtype, threads and date.

    Args:
        device: the device measured on.
        dtype: ``"float32"`` or ``"bf16"`` (bf16 autocast).

    Example:
        >>> env = environment()
        >>> env["device"], env["dtype"]
        ('cpu', 'float32')
    """
    device = torch.device(device)
    name = "cpu"
    if device.type == "cuda":
        name = f"cuda ({torch.cuda.get_device_name(device)})"
    return {
        "host": platform.node(),
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": name,
        "dtype": dtype,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def format_environment(section: str, env: Mapping[str, Any]) -> str:
    """The one-line header every benchmark section prints first.

    Args:
        section: the section's name.
        env: a dict from :func:`environment`.
    """
    return (
        f"# {section} | {env['host']} | {env['cpu']}, {env['logical_cpus']} logical CPUs | "
        f"torch {env['torch']} | {env['threads']} threads | device {env['device']} | {env['dtype']} | {env['date']}"
    )


def _driver_versions() -> tuple[str | None, str | None]:
    """The NVIDIA driver's version and the newest CUDA it supports, from ``nvidia-smi``.

    torch reports the CUDA it was built with, not what the driver offers; ``nvidia-smi``'s
    banner states both (``Driver Version: ...  CUDA Version: ...``).
    """
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None, None
    try:
        out = subprocess.run([smi], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    driver = re.search(r"Driver Version:\s*([\w.]+)", out)
    cuda = re.search(r"CUDA Version:\s*([\w.]+)", out)
    return (driver.group(1) if driver else None), (cuda.group(1) if cuda else None)


def cuda_environment(device: torch.device | str) -> dict[str, Any]:
    """The GPU facts a CUDA measurement states: device, memory, driver, CUDA, cuDNN, torch.

    ``cuda_build`` is the CUDA torch was built with, ``driver_cuda`` the newest the driver
    supports.

    Off CUDA the device entries are ``None`` and only the software versions are filled in
    (a dry run on CPU reports the same keys).

    Args:
        device: the device measured on.

    Example:
        >>> cuda_environment("cpu")["gpu"] is None
        True
    """
    device = torch.device(device)
    facts: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpu": None,
        "gpu_memory_gib": None,
        "compute_capability": None,
        "driver": None,
        "driver_cuda": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            compute_capability=f"{props.major}.{props.minor}",
        )
        facts["driver"], facts["driver_cuda"] = _driver_versions()
    return facts


def optional(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec``, or ``"-"`` for a missing value.

    Args:
        value: a number or ``None``.
        spec: a format specification (``">9.1f"``).

    Example:
        >>> optional(None, ">5.1f"), optional(2.345, ".1f")
        ('-', '2.3')
    """
    return format(value, spec) if value is not None else "-"


def write_json(path: Path | str, data: Any) -> None:
    """Write ``data`` as indented JSON, replacing the file in one step.

    The text goes to a sibling temporary file first and is renamed over ``path``, so a
    reader (or a run killed mid-write) never sees half a file.

    Args:
        path: the file to (re)write.
        data: anything ``json.dumps`` takes.
    """
    from ..outputs import write_output

    # a device (/dev/stdout) is written in place; a failed write names the file
    write_output(path, json.dumps(data, indent=2) + "\n", argument="--json")
