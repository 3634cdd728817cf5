"""Cost reports: ``python -m reference_models.bench {flops,latency,layers,train,memory,gpu}``.

Every section prints a one-line header (machine, torch version, threads, device, dtype,
date) and a table; ``--json FILE`` writes the header's fields and the table's rows.
One module per section, each holding its measurement and its table:

- :mod:`~reference_models.bench.flops`: multiply-accumulates of every ``_base`` model at the
  paper's input size, beside the papers' figures;
- :mod:`~reference_models.bench.latency`: batch-1 forward time, each plug-in system timed
  interleaved with its baseline and shown as a ratio;
- :mod:`~reference_models.bench.layers`: every rislayers layer at its paper's size, forward
  and forward+backward, with peak memory;
- :mod:`~reference_models.bench.train`: training samples per second of full optimisation
  steps (``--grad-checkpointing``: :mod:`~reference_models.bench.checkpointing`, each step
  without and with activation checkpointing);
- :mod:`~reference_models.bench.memory`: the memory per image of a training step, and the
  largest batch that fits cards of 12 to 80 GB;
- :mod:`~reference_models.bench.gpu`: the GPU check, every measurement that needs a CUDA
  device in one guarded run of about eight minutes (``--dry-run``: on the CPU, tiny sizes);
  its ``switches`` part is :mod:`~reference_models.bench.gpu_switches`.

Shared by them: :mod:`~reference_models.bench.measure` (timing, peak memory, autocast),
:mod:`~reference_models.bench.report` (the header, the JSON file),
:mod:`~reference_models.bench.models` (a model built on its device, random inputs),
:mod:`~reference_models.bench.guard` (a failing or overrunning unit becomes a row),
:mod:`~reference_models.bench.coparser` (the S2RM coparser's "gemm" against the literal
"shift", also printed by ``benchmarks/coparser.py``) and
:mod:`~reference_models.bench.cli` (the flags).
"""

from .cli import main
from .flops import PAPER_GMACS, count_macs, flops_table, macs_by_part
from .latency import LATENCY_SYSTEMS, latency_models, latency_table
from .layers import LayerCase, layer_cases, layers_table
from .train import train_models, train_table

__all__ = [
    "PAPER_GMACS",
    "LATENCY_SYSTEMS",
    "count_macs",
    "macs_by_part",
    "flops_table",
    "latency_models",
    "latency_table",
    "LayerCase",
    "layer_cases",
    "layers_table",
    "train_models",
    "train_table",
    "main",
]
