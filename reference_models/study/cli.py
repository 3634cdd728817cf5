"""``python -m reference_models.study NAME... [--seeds N] [--out DIR] [--quick]``.

Trains every available row named (experiment names or table prefixes) once per seed, at
the tiny size with the study's settings, evaluates each run, and rewrites
``DIR/results.json``, ``DIR/results.md`` and ``DIR/results.png`` after every finished run.
Run it again with the same ``--out`` to continue a stopped study: finished runs are kept.

A study can also continue from its ``results.json`` alone (a recorded
``docs/results/<name>.json`` copied to ``DIR/results.json``): the runs its rows hold
(``runs``: each seed's figures) whose folders are gone count as finished and are not run
again; runs whose folders exist are brought to *finished* from their folders as usual.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..cli import add_import_option, import_modules
from ..checkpoint import read_json_object
from ..experiments import get_experiment
from .plan import DEFAULT_SETTINGS, QUICK_SETTINGS, StudyPlan, StudySettings, plan_study, run_folder
from .report import write_markdown, write_plot
from .results import run_entry, runs_of_row, study_results, text_blind_ceiling_of, write_results_json
from . import runner

__all__ = ["build_parser", "settings_from_args", "recorded_runs", "run_study", "main"]

#: The file of a study folder that fixes its settings for every later invocation.
SETTINGS_FILE = "study.json"


class _OneLineParser(argparse.ArgumentParser):
    """A parser whose errors are one line (no usage block), like the other tools' errors."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


_DESCRIPTION = (
    "Train every available row named (experiment names or table prefixes) once per seed, at the tiny "
    "size with the study's settings, evaluate each run, and rewrite DIR/results.json, results.md and "
    "results.png after every finished run. Run it again with the same --out to continue a stopped study: "
    "finished runs are kept. --list shows the runs and a rough time first."
)

#: Training samples of 64 px a second on two CPU cores, for --list's rough time: the README's
#: default run (1000 steps of 32 in about 5 minutes) and the recorded studies (sadlr-table4a-2000:
#: 9 runs of 64000 samples in about 70 minutes) give 100 to 140.
_SAMPLES_PER_SECOND = 120
#: What a run costs besides its steps: start-up, validation and the evaluation (seconds).
_SECONDS_PER_RUN = 20


def _estimated_seconds(settings: StudySettings, runs: int) -> float:
    """A rough time for ``runs`` runs on two CPU cores (a GPU is faster): steps x batch, by pixels.

    Args:
        settings: the study's settings (steps, batch size and image size count).
        runs: how many runs are still to do.

    Example:
        >>> round(_estimated_seconds(StudySettings(steps=1000, batch_size=16, image_size=64), 9) / 60)
        23
    """
    samples = settings.steps * settings.batch_size * (settings.image_size / 64) ** 2
    return runs * (samples / _SAMPLES_PER_SECOND + _SECONDS_PER_RUN)


def _duration(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return f"{minutes} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def _print_list(plan: StudyPlan, out: Path) -> None:
    """The run folders on stdout (one a line), then how many and how long on stderr."""
    runs = plan.runs()
    todo = 0
    for experiment, seed in runs:
        folder = run_folder(out, experiment, seed)
        todo += runner.run_state(folder) != "finished"
        print(folder)
    s = plan.settings
    print(
        f"{len(runs)} runs ({len(plan.rows)} rows x {s.seeds} seeds, {len(runs) - todo} already finished), "
        f"each {s.steps} steps of {s.batch_size} at {s.image_size} px: roughly {_duration(_estimated_seconds(s, todo))} "
        "on 2 CPU cores (less on a GPU)",
        file=sys.stderr,
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (see ``--help``)."""
    d = DEFAULT_SETTINGS
    p = _OneLineParser(prog="python -m reference_models.study", description=_DESCRIPTION)
    p.add_argument("names", nargs="*", metavar="NAME", help="experiment names or table prefixes, e.g. sadlr/table4c")
    p.add_argument("--out", type=Path, default=None, help="the study folder (default: studies/<first NAME with / as ->)")
    p.add_argument("--seeds", type=int, default=None, help=f"runs per row, seeds 0..N-1 (default: {d.seeds}; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke size: 2 steps of 4 samples, 8 evaluations, 1 seed")
    p.add_argument("--level", type=int, default=None, help=f"synthetic level (default: {d.level})")
    p.add_argument("--steps", type=int, default=None, help=f"optimizer steps per run (default: {d.steps})")
    p.add_argument("--image-size", type=int, default=None, help=f"input side in pixels (default: {d.image_size})")
    p.add_argument("--batch-size", type=int, default=None, help=f"samples per step (default: {d.batch_size})")
    p.add_argument("--lr", type=float, default=None, help="learning rate of every run (default: the tiny recipe's)")
    p.add_argument("--eval-size", type=int, default=None, help=f"validation expressions per evaluation (default: {d.eval_size})")
    p.add_argument("--workers", type=int, default=None, help=f"DataLoader workers (default: {d.workers}; 0 with --quick)")
    p.add_argument("--device", default=None, help="'auto', 'cpu', 'cuda', 'cuda:N' (default: auto)")
    p.add_argument("--list", action="store_true", help="print the run folders, their number and a rough time, and exit")
    add_import_option(p)  # rows (register_experiment) and parts (register_part) of one's own
    return p


def settings_from_args(args: argparse.Namespace) -> StudySettings:
    """The study's settings: ``--quick``'s or the defaults, with the given flags applied.

    Args:
        args: the parsed command line.
    """
    base = QUICK_SETTINGS if args.quick else DEFAULT_SETTINGS
    given = {name: getattr(args, name) for name in ("seeds", "level", "steps", "image_size", "batch_size", "eval_size", "workers", "device", "lr")}
    return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})


def _settings_differ(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return [f"{k} {saved.get(k)!r} -> {v!r}" for k, v in wanted.items() if saved.get(k) != v]


def _claim(out: Path, settings: StudySettings) -> None:
    """Record the settings in a new study folder; refuse a folder studied with other ones."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: expected a folder; got the file {out}")
    wanted = settings.run_identity()
    recorded = _read_results(out)
    if recorded is not None and (changed := _settings_differ(recorded.get("settings") or {}, wanted)):
        raise ValueError(f"--out: {out / 'results.json'} holds a study with other settings ({', '.join(changed)}); choose another --out")
    path = out / SETTINGS_FILE
    if path.is_file():
        try:
            saved = read_json_object(path)
        except ValueError as err:
            raise ValueError(f"--out: {err} (the study's settings, written by this command: damaged since?)") from None
        if changed := _settings_differ(saved, wanted):
            raise ValueError(f"--out: {out} holds a study with other settings ({', '.join(changed)}); choose another --out")
        return
    runner.write_atomic(path, json.dumps(wanted, indent=2) + "\n")


def _read_results(out: Path) -> dict[str, Any] | None:
    """``out/results.json``, or ``None`` without one; one that cannot be read is refused."""
    path = out / "results.json"
    if not path.is_file():
        return None
    try:
        results = read_json_object(path)
    except ValueError as err:
        raise ValueError(f"--out: {path} is not a study's results.json ({str(err).removeprefix(f'{path}: ')})") from None
    if problem := _results_problem(results):
        raise ValueError(f"--out: {path} is not a study's results.json ({problem})")
    return results


def _results_problem(results: dict[str, Any]) -> str | None:
    """What keeps ``results.json``'s rows and their runs from being read, or ``None``."""
    if not isinstance(results.get("rows"), list):
        return "no rows"
    if not isinstance(results.get("settings", {}), dict):
        return f"settings: expected an object; got {type(results['settings']).__name__}"
    for index, row in enumerate(results["rows"]):
        if not isinstance(row, dict) or not isinstance(row.get("experiment"), str):
            return f"rows[{index}]: expected an object with an \"experiment\" name; got {str(row)[:60]}"
        if problem := _runs_problem(row):
            return f"rows[{index}] ({row['experiment']}): {problem}"
    return None


def _runs_problem(row: dict[str, Any]) -> str | None:
    """What keeps a ``results.json`` row's runs (:func:`runs_of_row`) from being read, or ``None``."""
    for number, run in enumerate(row["runs"] if isinstance(row.get("runs"), list) else []):
        seed = run.get("seed") if isinstance(run, dict) else None
        problem = "seed: expected an integer" if not isinstance(seed, int) or isinstance(seed, bool) else runner.record_problem(run)
        if problem:
            return f"runs[{number}]: {problem}"
    try:
        runs_of_row(row)
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as err:  # a row of before: metrics' runs lists
        return f"its runs cannot be read ({type(err).__name__}: {str(err)[:80]})"
    return None


def recorded_runs(plan: StudyPlan, out: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """The runs ``out/results.json`` holds whose folders are gone: ``{(row, seed): run entry}``.

    Only rows and seeds of ``plan`` count; a run whose folder exists is left to the folder.

    Args:
        plan: the study's plan.
        out: the study folder.
    """
    results = _read_results(Path(out))
    if results is None:
        return {}
    wanted = {(experiment.name, seed) for experiment, seed in plan.runs()}
    kept: dict[tuple[str, int], dict[str, Any]] = {}
    for row in results["rows"]:  # each checked by _read_results
        for seed, entry in runs_of_row(row).items():
            key = (row.get("experiment"), seed)
            if key in wanted and entry["metrics"] and not run_folder(out, get_experiment(key[0]), seed).exists():
                kept[key] = entry
    return kept


def _write_all(plan: StudyPlan, measured: dict[str, list[dict[str, Any]]], ceiling: dict[str, float], out: Path) -> dict[str, Any]:
    results = study_results(plan, measured, ceiling)
    write_results_json(results, out)
    write_markdown(results, out)
    write_plot(results, out)
    return results


def run_study(plan: StudyPlan, out: Path, *, progress: bool | None = None) -> dict[str, Any]:
    """Bring every run of ``plan`` to *finished*, rewriting the result files after each.

    Args:
        plan: the rows, seeds and settings.
        out: the study folder (created if missing); its ``results.json``'s runs whose
            folders are gone are kept (:func:`recorded_runs`).
        progress: show a tqdm bar over the runs (default: when stderr is a terminal and
            ``CI`` is not set).

    Returns:
        The final ``results.json`` dict.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _claim(out, plan.settings)
    s = plan.settings
    ceiling = text_blind_ceiling_of(s.level, s.image_size, s.eval_size, s.eval_seed)
    if progress is None:
        progress = sys.stderr.isatty() and not os.environ.get("CI")
    recorded = recorded_runs(plan, out)
    # what earlier invocations finished counts from the start, in seed order
    results = _write_all(plan, _in_seed_order(plan, out, recorded), ceiling, out)
    bar = tqdm(plan.runs(), desc="study", unit="run", disable=not progress, dynamic_ncols=True)
    for experiment, seed in bar:
        folder = run_folder(out, experiment, seed)
        bar.set_postfix_str(f"{experiment.name} seed {seed}")
        if (experiment.name, seed) in recorded or runner.run_state(folder) == "finished":
            continue
        record, what = runner.run_one(experiment, seed, s, folder)
        results = _write_all(plan, _in_seed_order(plan, out, recorded), ceiling, out)
        print(f"{experiment.name} seed {seed}: {what}, oIoU {100 * record['metrics']['oIoU']:.2f}", file=sys.stderr)
    bar.close()
    return results


def _in_seed_order(plan: StudyPlan, out: Path, recorded: dict[tuple[str, int], dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The finished runs' entries, read back from their folders (else ``recorded``), per row in seed order."""
    measured: dict[str, list[dict[str, Any]]] = {}
    for experiment, seed in sorted(plan.runs(), key=lambda run: run[1]):
        folder = run_folder(out, experiment, seed)
        if (experiment.name, seed) in recorded:
            measured.setdefault(experiment.name, []).append(recorded[experiment.name, seed])
        elif runner.run_state(folder) == "finished":
            measured.setdefault(experiment.name, []).append(run_entry(runner.read_evaluation(folder), seed))
    return measured


def main(argv: list[str] | None = None) -> int:
    """Command line: run (or continue) a study and write its results.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``); see ``--help``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        import_modules(args.imports)
        settings = settings_from_args(args)
        plan = plan_study(args.names, settings)
    except ValueError as err:
        parser.error(str(err))
    for experiment, reason in plan.skipped:
        print(f"skipping {experiment.name}: {reason}", file=sys.stderr)
    if not plan.rows:
        parser.error(f"NAME: none of the rows named is available ({', '.join(args.names)})")
    out = args.out if args.out is not None else Path("studies") / args.names[0].strip("/").replace("/", "-")
    if args.list:
        _print_list(plan, out)
        return 0
    try:
        _claim(out, settings)  # refused here, before anything trains, as one line
    except ValueError as err:
        parser.error(str(err))
    run_study(plan, out)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'}")
    return 0
