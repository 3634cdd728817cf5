"""One training run from start to summary: :func:`train`.

The order matters: everything that can be refused (options, device, model, data) is checked
before the run folder is created, so a bad command leaves nothing behind. From then on the
folder is locked for the run, and whatever stops the run (a signal, too many unreadable
samples, a diverged loss) stops it with one line that says how to continue.

One batch, from the command line to the loss: ``python -m reference_models.train`` ->
:func:`~reference_models.training.cli.main` -> :func:`train` -> ``_Run.__init__`` builds the
model, the data (:func:`~reference_models.training.data.build_run_data`) and the
optimisation -> ``_Run.run`` -> ``_Run._epoch`` takes the epoch's loader and hands it, with
the loop's state, to :func:`~reference_models.training.loop.train_epoch`, where the batch
meets the model and the loss. This module hears of each step only through the loop's hooks
(``on_batch``, ``at_boundary``, ``on_step``, ``on_skipped``).

Units: ``metrics.jsonl``, ``summary.json`` and checkpoints hold :class:`rislayers.RISMetrics`'
fractions (0.5 is 50 %), as ``evaluate --json`` does; everything printed shows percent.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shlex
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..checkpoint import CheckpointError
from ..cli import Stopped
from ..devices import pick_device
from ..encoders import pixel_statistics
from ..weights import remove_stale_temporaries
from .checkpoints import Progress, load_resume_state, save_training_checkpoint, set_rng_state
from .config import TrainConfig, resume_config
from .data import build_run_data, describe_data
from .distributed import init_distributed
from .loop import LoopState, Optimisation, build_optimisation, steps_of, train_epoch
from .model import build_run_model
from .pictures import write_pictures
from .precision import apply_backend_settings
from .run_folder import MetricsLog, RunLock, append_rows, create_default_out, refuse_existing_run, write_config
from .signals import StopRequest
from .validation import evaluate_model

__all__ = ["train", "summary_table", "BAD_SAMPLES_FILE"]

#: Where a run lists the samples it skipped because their pictures cannot be decoded.
BAD_SAMPLES_FILE = "bad_samples.jsonl"


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    progress: bool | None = None,
    given: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Run (or resume) training; returns the summary written to ``summary.json``.

    Everything is checked (options, device, model, data) before the run folder is created.

    Args:
        cfg: the training configuration (``None`` fields take the recipe).
        out_dir: the run folder (default ``runs/<model>-<time>``, suffixed ``-2``, ... if
            taken). A fresh run refuses a folder that already holds a run, and any run a
            folder another live run has locked.
        resume: continue from ``out_dir/last.pt``; its saved configuration wins, except the
            settings of the machine and of fault handling (``device``, ``workers``,
            ``threads``, ``compile``, ``checkpoint_minutes``, ``max_bad_samples``,
            ``max_bad_steps``, ``grad_checkpointing``, ``fused_optimizer``,
            ``cudnn_benchmark``), which the caller may change.
        progress: show tqdm bars (default: on the main process when stderr is a terminal
            or when not running under CI).
        given: the fields of ``cfg`` the caller set (the command line's flags); on resume,
            the machine settings among them are used and the others, which the saved
            configuration overrules, are named in a warning. Default: the fields that
            differ from :class:`TrainConfig`'s defaults.

    Raises:
        ValueError: a bad option, device, image size or run folder.
        reference_models.cli.Stopped: the run stopped early (SIGINT/SIGTERM, too many
            unreadable samples, too many non-finite steps); its message says how to continue.
    """
    with contextlib.ExitStack() as cleanup:
        return _Run(cfg, out_dir, resume=resume, progress=progress, given=given, cleanup=cleanup).run()


class _Run:
    """The state of one run: built by ``__init__`` (nothing written yet), trained by :meth:`run`.

    Every attribute is set in ``__init__``; :meth:`run` only changes their values.
    """

    def __init__(self, cfg: TrainConfig, out_dir, *, resume: bool, progress: bool | None, given, cleanup: contextlib.ExitStack) -> None:
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.resume, self.cleanup = resume, cleanup
        state: dict[str, Any] | None = None
        ignored: list[str] = []
        if resume:
            state, cfg, ignored = self._saved_run(cfg, given)
        self.cfg = cfg = cfg.resolved()

        self.device = pick_device(cfg.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.dist = init_distributed(self.device)
        if progress is None:
            progress = self.dist.main and (sys.stderr.isatty() or not os.environ.get("CI"))
        self.progress_bars = bool(progress and self.dist.main)
        if self.dist.main and ignored:
            print(f"warning: {self.out_dir} keeps its saved configuration; ignoring {', '.join(ignored)}", file=sys.stderr)
        # only the main process writes the folder, so only it judges what the folder holds
        if self.dist.main and not resume and self.out_dir is not None:
            refuse_existing_run(self.out_dir)

        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        model = build_run_model(cfg, state, source=str(self.out_dir / "last.pt") if resume else "last.pt")
        if cfg.grad_checkpointing:
            _switch_checkpointing(model)
        apply_backend_settings(cfg, self.device)
        self.model_config = model.config
        self.pixel_stats = pixel_statistics(model)
        model.to(self.device)
        if self.dist.world > 1 and self.device.type == "cuda" and cfg.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.data = build_run_data(cfg, model, self.dist, self.device)
        self.plan = steps_of(cfg, len(self.data.sampler))
        opt = build_optimisation(model, cfg, self.device, self.dist, self.plan.steps_per_epoch)
        self.loop = LoopState(opt, self._restore(state, opt), self.plan, cfg, self.device)

        # what the run changes as it goes
        self.lock: RunLock | None = None  # a fresh run's lock (a resumed run's is held by cleanup)
        self.created_folder = False
        self.log: MetricsLog | None = None  # opened once the folder is claimed
        self.stop = StopRequest()
        self.bar = None  # the current epoch's progress bar
        self.start = time.perf_counter()
        self.last_save = time.monotonic()
        self.kept: list[dict] = []
        self.new_bad, self.skipped_in_a_row = 0, 0
        self.stop_reason: str | None = None
        self.saved = resume  # a resumed run's folder already holds its last.pt

    @property
    def opt(self) -> Optimisation:
        return self.loop.opt

    @property
    def progress(self) -> Progress:
        return self.loop.progress

    def _saved_run(self, cfg: TrainConfig, given) -> tuple[dict[str, Any], TrainConfig, list[str]]:
        """Lock the folder and read its ``last.pt``: ``(state, configuration, ignored options)``."""
        if self.out_dir is None:
            raise ValueError("--out: expected the run folder to resume (the one holding last.pt); got none")
        if int(os.environ.get("RANK", "0")) == 0 and self.out_dir.is_dir():
            self._lock()
        state = load_resume_state(self.out_dir)
        try:
            saved = TrainConfig.from_dict(state["train_config"])
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{self.out_dir / 'last.pt'}: its train_config is not valid ({err})") from None
        return (state, *resume_config(cfg, saved, given))

    def _lock(self) -> RunLock:
        """Hold the folder's lock until the run ends; clear what a killed write left."""
        lock = RunLock(self.out_dir)
        self.cleanup.callback(lock.release)
        remove_stale_temporaries(self.out_dir)
        return lock

    def _restore(self, state: dict[str, Any] | None, opt: Optimisation) -> Progress:
        """The counters to start from: zero, or the resumed checkpoint's (with its states)."""
        if state is None:
            return Progress()
        opt.optimizer.load_state_dict(state["optimizer"])
        opt.scheduler.load_state_dict(state["scheduler"])
        opt.scaler.load_state_dict(state["scaler"])
        saved_world = state.get("world", 1)
        if saved_world != self.dist.world:
            raise ValueError(
                f"world size: the run in {self.out_dir} was trained by {saved_world} process(es); resume it with "
                f"{saved_world} (now {self.dist.world}), or the data order and the schedule would change"
            )
        progress = Progress.from_state(state)
        set_rng_state(state["rng"])
        return progress

    def _announce(self) -> None:
        """The run's first lines: where it goes, the model, the device, the data and the steps."""
        if not self.dist.main:
            return
        cfg, plan, p = self.cfg, self.plan, self.progress
        processes = f" x {self.dist.world} processes" if self.dist.world > 1 else ""
        accum = f", {cfg.grad_accum} micro-batches a step" if cfg.grad_accum > 1 else ""
        parameters = sum(t.numel() for t in self.opt.model.parameters())
        lines = [
            f"run folder: {self.out_dir}",
            f"model: {cfg.model} ({parameters / 1e6:.2f} M parameters) on {self.device}{processes}",
            f"data: {describe_data(cfg)}",
            f"steps: {plan.total_steps} in {plan.epochs} epoch(s) of {plan.steps_per_epoch} (batch {cfg.batch_size}{processes}{accum}), "
            "validated after each epoch; metrics printed in percent",
        ]
        if self.resume and (p.step >= plan.total_steps or p.epoch >= plan.epochs):
            lines.append(f"{self.out_dir} finished at step {p.step}; nothing to do")
        elif self.resume:
            lines.append(f"resuming {self.out_dir} from step {p.step} of {plan.total_steps} (epoch {p.epoch + 1} of {plan.epochs})")
        print("\n".join(lines), file=sys.stderr)

    def _claim_folder(self) -> None:
        """Create (or reopen) the run folder, lock it, write ``config.json``, open the log."""
        self.created_folder = self.out_dir is None or not self.out_dir.exists()
        if self.out_dir is None:
            # rank 0 claims the name; the others learn it, so every summary names one folder
            claimed = [str(create_default_out(self.cfg.model)) if self.dist.main else None]
            if self.dist.world > 1:
                dist.broadcast_object_list(claimed, src=0)
            self.out_dir = Path(claimed[0])
        if self.dist.main:
            lock = None
            if not self.resume:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                lock = self._lock()
            self.lock = lock
            try:
                write_config(self.out_dir, {"train": self.cfg.to_dict(), "model": self.model_config.to_dict()}, resume=self.resume)
            except ValueError:
                if lock is not None:  # another run claimed the folder first: leave it as it was
                    lock.release(remove=True)
                raise
        self.log = MetricsLog(self.out_dir / "metrics.jsonl", up_to_step=self.progress.step, enabled=self.dist.main)

    def checkpoint(self, name: str, *, resumable: bool = True) -> None:
        """Write ``name`` in the run folder (the main process only)."""
        self.last_save = time.monotonic()
        if not self.dist.main:
            return
        self.saved = True
        opt = self.opt
        save_training_checkpoint(
            self.out_dir / name, model=opt.model, optimizer=opt.optimizer, scheduler=opt.scheduler, scaler=opt.scaler,
            progress=self.progress, seconds=self.progress.seconds + time.perf_counter() - self.start, world=self.dist.world,
            train_config=self.cfg.to_dict(), model_config=self.model_config.to_dict(), resumable=resumable,
        )

    # -- the loop's hooks (see loop.StepHooks) ----------------------------------------------

    def on_batch(self, batch: dict[str, Any]) -> None:
        self._record_unreadable(batch)
        self.bar.update()

    def _record_unreadable(self, batch: dict[str, Any]) -> None:
        """List the samples the batch had to replace in ``bad_samples.jsonl``, and count them."""
        skipped = [dict(r, step=self.progress.step, rank=self.dist.rank) for rows in batch.get("unreadable", ()) for r in rows]
        if skipped:
            append_rows(self.out_dir / "bad_samples.jsonl", skipped)
            self.new_bad += len(skipped)

    def at_boundary(self, non_finite: torch.Tensor) -> tuple[bool, bool]:
        flags = torch.stack([non_finite.to(torch.float64), torch.tensor(float(self.stop.requested), device=non_finite.device),
                             torch.tensor(float(self.new_bad), device=non_finite.device)])
        if self.dist.world > 1:
            dist.all_reduce(flags)  # every process must skip and stop at the same step
        skip, signalled, bad = bool(flags[0] > 0), bool(flags[1] > 0), int(flags[2])
        self.progress.bad_samples += bad
        self.new_bad = 0
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if skip else 0
        if signalled and self.stop_reason is None:
            self.stop_reason = "signal"
        if self.progress.bad_samples > self.cfg.max_bad_samples and self.stop_reason is None:
            self.stop_reason = "bad samples"
        if self.skipped_in_a_row >= self.cfg.max_bad_steps:
            self.stop_reason = "diverged"
        return skip, self.stop_reason is not None

    def on_skipped(self) -> None:
        p = self.progress
        p.skipped_steps += 1
        self.log.append({"step": p.step, "epoch": p.epoch, "skipped": "non-finite loss or gradient", "skipped_in_a_row": self.skipped_in_a_row})

    def on_step(self, loss: torch.Tensor) -> None:
        step, cfg = self.progress.step, self.cfg
        if step % cfg.log_every == 0 or step == 1:
            value = float(loss)
            self.log.append({"step": step, "epoch": self.progress.epoch, "loss": value, "lr": self.opt.scheduler.get_last_lr()[0]})
            self.bar.set_postfix(loss=f"{value:.4f}")
        if cfg.save_every and step % cfg.save_every == 0:
            self.checkpoint("last.pt")
        elif cfg.checkpoint_minutes and time.monotonic() - self.last_save >= 60 * cfg.checkpoint_minutes:
            self.checkpoint("last.pt")

    # -- epochs ----------------------------------------------------------------------------

    def _epoch(self) -> str:
        """Train the rest of the current epoch; returns how it ended (see :func:`train_epoch`)."""
        from tqdm.auto import tqdm

        cfg, p, plan = self.cfg, self.progress, self.plan
        loader = self.data.train_loader(p.epoch, skip=p.batch_in_epoch * cfg.batch_size)
        self.opt.train_model.train()
        # the bar's total is what this epoch will run, so a run that --max-steps ends
        # mid-epoch still closes at 100%
        epoch_batches = min(plan.batches_per_epoch, p.batch_in_epoch + (plan.total_steps - p.step) * cfg.grad_accum)
        self.bar = tqdm(
            desc=f"epoch {p.epoch + 1}/{plan.epochs}", disable=not self.progress_bars, dynamic_ncols=True,
            initial=p.batch_in_epoch, total=epoch_batches,
        )
        try:
            return train_epoch(self.loop, loader, hooks=self)
        finally:
            self.bar.close()

    def _validate(self, *, epoch_finished: bool) -> None:
        """Validate, log, print, and write ``best.pt`` (on a new best) and ``last.pt``."""
        p = self.progress
        p.last_val, self.kept = evaluate_model(
            self.opt.model, self.data.val_loader, self.device, cfg=self.cfg, dist_info=self.dist,
            keep=self.cfg.grid_samples if self.dist.main else 0, progress=self.progress_bars, on_batch=self._record_unreadable,
        )
        self.log.append({"step": p.step, "epoch": p.epoch, "val": p.last_val})
        if self.progress_bars:
            # an epoch cut short by --max-steps is still the one its bar showed
            label = f"epoch {p.epoch}" if epoch_finished else f"epoch {p.epoch + 1} (stopped at step {p.step})"
            print(f"{label}: {_percent_figures(p.last_val)}", file=sys.stderr)
        if p.last_val["oIoU"] > p.best:
            p.best = p.last_val["oIoU"]
            self.checkpoint("best.pt", resumable=False)
        self.checkpoint("last.pt")

    def run(self) -> dict[str, Any]:
        """Train to the last step, validating after every epoch; write the summary and pictures."""
        self._claim_folder()
        self._announce()
        self.start = time.perf_counter()
        self.last_save = time.monotonic()
        try:
            self._train()
        except BaseException:
            if not self.saved:
                self._forget_folder()
            raise
        return self._finish()

    def _forget_folder(self) -> None:
        """Remove what a fresh run that failed before its first checkpoint wrote.

        Nothing was computed that a rerun would not compute again, and a folder holding
        ``config.json`` without ``last.pt`` would refuse that rerun.
        """
        if not self.dist.main or self.out_dir is None:
            return
        for name in ("config.json", "metrics.jsonl", BAD_SAMPLES_FILE):
            (self.out_dir / name).unlink(missing_ok=True)
        if self.lock is not None:
            self.lock.release(remove=True)
        if self.created_folder and self.out_dir.is_dir() and not any(self.out_dir.iterdir()):
            self.out_dir.rmdir()

    def _train(self) -> None:
        p = self.progress
        with self.stop:
            done = p.step >= self.plan.total_steps
            while not done and p.epoch < self.cfg.epochs:
                ended = self._epoch()
                done = ended == "done"
                if ended == "stop":
                    self._stop()
                epoch_finished = p.batch_in_epoch >= self.plan.batches_per_epoch
                if epoch_finished:
                    p.epoch, p.batch_in_epoch = p.epoch + 1, 0
                if epoch_finished or done:
                    self._validate(epoch_finished=epoch_finished)
                if self.stop.requested:  # a signal during validation
                    self.stop_reason = "signal"
                    self._stop()

    def _resume_command(self) -> str:
        launcher = f"torchrun --nproc_per_node {self.dist.world} -m" if self.dist.world > 1 else "python -m"
        return f"{launcher} reference_models.train --out {shlex.quote(str(self.out_dir))} --resume"

    def _stop(self) -> None:
        """Save what the run has (unless it diverged) and stop with one line."""
        p, out = self.progress, self.out_dir
        if self.stop_reason == "diverged":
            kept = "last.pt keeps the last good checkpoint" if self.saved else f"no checkpoint had been written, so {out} was cleared"
            raise Stopped(
                f"stopped at step {p.step}: {self.skipped_in_a_row} steps in a row had a non-finite loss or gradient "
                f"(each skipped and logged in metrics.jsonl); {kept}. Try a lower --lr or --amp bf16 instead of fp16 "
                "in a new run",
                1,
            )
        # stopped on an epoch's last step: the counters stay at its end, so the resumed run
        # trains nothing more in it and validates it, as this run would have
        self.checkpoint("last.pt")
        if self.dist.world > 1:
            dist.barrier()
        if self.stop_reason == "bad samples":
            raise Stopped(
                f"stopped at step {p.step}: {p.bad_samples} samples could not be read (more than --max-bad-samples "
                f"{self.cfg.max_bad_samples}); they are listed in {out / BAD_SAMPLES_FILE}. Fix or remove them, or allow "
                f"more, and continue with: {self._resume_command()} --max-bad-samples N",
                2,
            )
        raise Stopped(f"{self.stop.signal_name} at step {p.step}: saved {out / 'last.pt'}; continue with: {self._resume_command()}", self.stop.exit_code)

    def _finish(self) -> dict[str, Any]:
        p = self.progress
        p.bad_samples += self.new_bad  # those of the last validation
        summary = {
            "model": self.cfg.model,
            "val": p.last_val,
            "best_val_oIoU": p.best,
            "seconds": round(p.seconds + time.perf_counter() - self.start, 1),
            "steps": p.step,
            "epochs": p.epoch,
            "text_blind": self.cfg.text_blind,
            "bad_samples": p.bad_samples,
            "skipped_steps": p.skipped_steps,
            "out": str(self.out_dir),
            "units": "fractions: 0.5 is 50 % (printed tables show percent)",
        }
        if self.dist.main:
            write_pictures(self.out_dir, self.log.records, self.kept, self.pixel_stats)
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if self.dist.world > 1:
            dist.barrier()
        return summary


def _switch_checkpointing(model: nn.Module) -> None:
    """``--grad-checkpointing``: switch it on in every part that has it, or refuse a model
    with none (the flag would change nothing)."""
    switch = getattr(model, "set_grad_checkpointing", None)
    if not callable(switch) or not switch(True):
        raise ValueError(f"--grad-checkpointing: {type(model).__name__} has no part that checkpoints")


def _percent_figures(metrics: dict[str, float]) -> str:
    """``oIoU 12.34, mIoU 10.00, ... (percent)`` from :class:`rislayers.RISMetrics`' fractions.

    Example:
        >>> _percent_figures({"oIoU": 0.5, "P@0.5": 0.125})
        'oIoU 50.00, P@0.5 12.50 (percent)'
    """
    return ", ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items()) + " (percent)"


def summary_table(summary: dict[str, Any]) -> str:
    """A run's summary as the command line prints it: the validation figures in percent.

    Args:
        summary: what :func:`train` returns (and ``summary.json`` holds, in fractions).

    Example:
        >>> print(summary_table({"model": "lavt_tiny", "val": {"oIoU": 0.5, "mIoU": 0.25}, "best_val_oIoU": 0.5,
        ...                      "steps": 8, "epochs": 2, "seconds": 3.5, "out": "runs/x"}))
        lavt_tiny: 8 steps (2 full epochs) in 3.5 s; runs/x/summary.json
        val oIoU 50.00, mIoU 25.00 (percent); best val oIoU 50.00
    """
    epochs = f"{summary['epochs']} full epoch" + ("" if summary["epochs"] == 1 else "s")
    head = f"{summary['model']}: {summary['steps']} steps ({epochs}) in {summary['seconds']} s; {Path(summary['out']) / 'summary.json'}"
    best = summary.get("best_val_oIoU")
    tail = f"; best val oIoU {100 * best:.2f}" if isinstance(best, (int, float)) and best >= 0 else ""
    figures = _percent_figures(summary["val"]) if summary.get("val") else "not validated"
    return f"{head}\nval {figures}{tail}"
