"""The distillation loop on Accelerate: one function from a validated recipe to a finished run folder.

:func:`train` sets up through :func:`vitkd.engine.factory.build_parts`, then runs
:class:`Trainer`: one visible epoch/step loop (as in Accelerate's ``complete_cv_example.py``) with
named hooks for evaluation, checkpoints and export. Only the student, its optimiser and the loaders
are prepared by Accelerate (a streamed training split's loader is split between processes by 🤗 datasets
instead: :class:`~vitkd.data.loaders.StreamingTrainLoader`); the teacher is frozen and never enters DDP, the optimiser or a checkpoint.
The timm scheduler is stepped explicitly (by epoch, or by update): Accelerate's scheduler wrapper calls
``step()`` without the epoch timm needs. It is not checkpointed: a resumed run rebuilds it from the
recipe given now and sets the lr for the restored position (so ``--resume --set optim.lr=X`` uses X;
see :mod:`vitkd.engine.resume`), and nothing Accelerate unpickles is a custom object.

Precision and process layout follow Accelerate: ``accelerate launch`` / ``accelerate config`` decide
(they set ``ACCELERATE_MIXED_PRECISION``); ``train.mixed_precision`` is used only when no launcher did,
and a recipe value that differs from the launcher's is reported once. A multi-process launch on a
machine without CUDA (``torchrun --nproc_per_node 2``) forms one multi-process CPU run.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import set_seed

from vitkd.data.loaders import StreamingTrainLoader
from vitkd.engine.checkpoint import (
    TrainState,
    check_finite_weights,
    disk_full_guard,
    divergence_advice,
    load_checkpoint,
    non_finite_tensors,
    prepare_resume,
    save_checkpoint,
)
from vitkd.engine.evaluate import evaluate
from vitkd.engine.factory import Parts, build_parts, current_lr, updates_in_epoch
from vitkd.engine.resume import (
    check_fresh_run_dir,
    check_resume_recipe,
    record_resume,
    sync_schedule,
)
from vitkd.engine.run_lock import run_lock
from vitkd.export import export_student
from vitkd.models.teacher import teacher_input_record
from vitkd.preflight import check_runnable
from vitkd.recipe import Recipe, TrainConfig, recipe_to_dict, validate_precision
from vitkd.run_folder import RunFolder, command_line, file_sha256, package_versions, tracker_config

__all__ = ["NonFiniteLossError", "RunPreempted", "Trainer", "make_accelerator", "train"]

logger = logging.getLogger(__name__)


class RunPreempted(Exception):
    """A SIGTERM/SIGINT stopped the run at a step boundary after saving a checkpoint; the message says how
    to continue. The command line reports it and exits 0 (schedulers treat preemption as success)."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf; the last good checkpoint is left as it was."""


@dataclass
class LossMeter:
    """Sums of the loss components and the learning rates seen since :meth:`reset` (tensors: no device
    sync per step), plus the training time they took."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: int = 0
    samples: int = 0
    lrs: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def add(self, out: dict[str, torch.Tensor], batch: int, lr: float | None = None) -> None:
        """Count one micro-batch of ``batch`` samples; ``lr``: the lr of the update it ended, if any."""
        for key, value in out.items():
            if key != "output":
                self.sums[key] = self.sums.get(key, 0.0) + value.detach().float()
        self.steps += 1
        self.samples += batch
        if lr is not None:
            self.lrs.append(lr)

    def means(self) -> dict[str, float]:
        return {k: (v / max(self.steps, 1)).item() for k, v in self.sums.items()}

    def seconds(self) -> float:
        return time.perf_counter() - self.started


def make_accelerator(cfg: TrainConfig, run_dir: Path) -> Accelerator:
    """The run's Accelerator with the precedence described in the module docstring."""
    # One process may run several recipes (sweeps, notebooks, tests), but Accelerate keeps precision and
    # accumulation settings in process-wide singletons that refuse a second, different configuration.
    # Reset those two (not the distributed PartialState, which stays valid) so each run gets its own.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    launcher_precision = os.environ.get("ACCELERATE_MIXED_PRECISION")
    # Without this flag Accelerate treats `torchrun --nproc_per_node N` on a CUDA-less machine as N
    # independent single-process runs; with it they form one gloo process group.
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        cpu=cfg.cpu or multi_cpu,
        mixed_precision=None if launcher_precision else (cfg.mixed_precision or "no"),
        dynamo_backend="inductor" if cfg.compile else None,  # None: the launcher's setting (default: off)
        gradient_accumulation_steps=cfg.grad_accum_steps,
        log_with=cfg.log_with or None,
        project_dir=str(run_dir),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    if launcher_precision and cfg.mixed_precision not in (None, launcher_precision):
        accelerator.print(
            f"warning: the launcher set mixed precision '{launcher_precision}' and the recipe "
            f"'{cfg.mixed_precision}': running '{accelerator.mixed_precision}' (launcher settings win; pass "
            f"--mixed_precision {cfg.mixed_precision} to accelerate launch for the recipe's)"
        )
    return accelerator


def train(recipe: Recipe, *, resume: str | None = None, command: str | None = None) -> dict:
    """Run ``recipe`` to the end (or ``train.max_steps``) and return the summary written to the run folder.

    ``resume``: ``None`` starts fresh (refusing a folder that already holds a run's results), ``"auto"``
    continues from the latest complete checkpoint if there is one, a path continues from that checkpoint;
    the recipe may differ from the run's only in the keys of :data:`vitkd.engine.resume.RESUMABLE_KEYS`.
    The run folder is locked for the run (:mod:`vitkd.engine.run_lock`).
    A SIGTERM/SIGINT stops at the next step boundary with a checkpoint and raises :class:`RunPreempted`
    (no export is written; a loop over runs stops too).
    """
    check_runnable(recipe)  # every problem of the recipe at once, before any data is read
    accelerator = make_accelerator(recipe.train, recipe.run_dir())
    validate_precision(accelerator.mixed_precision, accelerator.device.type)
    with run_lock(accelerator, recipe.run_dir()):
        return _train_locked(recipe, accelerator, resume, command)


def _train_locked(recipe: Recipe, accelerator: Accelerator, resume: str | None, command: str | None) -> dict:
    cfg, run_dir = recipe.train, recipe.run_dir()
    if resume is None:
        check_fresh_run_dir(RunFolder(run_dir))
    resume_from = prepare_resume(accelerator, resume, RunFolder(run_dir).checkpoints)
    changes = check_resume_recipe(RunFolder(run_dir), recipe_to_dict(recipe)) if resume_from is not None else {}
    set_seed(cfg.seed)
    _warn_on_process_count(accelerator, cfg.gpus)

    parts = build_parts(recipe).prepare(recipe, accelerator)
    state = TrainState()
    if resume_from is not None:
        missing = load_checkpoint(accelerator, resume_from, state, _extra_models(parts))
        sync_schedule(parts.optimizer, parts.scheduler, epoch=state.epoch, global_step=state.global_step,
                      step_on_epochs=recipe.schedule.step_on_epochs)
        if "ema" in missing:  # a checkpoint written before vitkd stored the EMA student
            parts.ema.set(accelerator.unwrap_model(parts.student, keep_torch_compile=False))
            accelerator.print(f"warning: {resume_from} holds no EMA weights: train.model_ema restarts from the "
                              "resumed student's weights")
    if resume is not None and accelerator.is_main_process:  # evaluations after the checkpoint are redone
        RunFolder(run_dir).keep_metrics(state.evals_logged)
        if resume_from is not None:
            accelerator.print(record_resume(RunFolder(run_dir), resume_from, state.global_step, changes))
    accelerator.wait_for_everyone()  # every process reads the kept records (Trainer.last)
    teacher_name = "teacher " + " + ".join(t.name for t in recipe.teachers)
    teacher_metrics = (evaluate(parts.teacher, parts.eval_loader, accelerator, model_name=teacher_name)
                       if parts.teacher is not None else None)
    if accelerator.is_main_process:
        _write_run_header(run_dir, recipe, accelerator, parts, command, teacher_metrics)
    if cfg.log_with:
        accelerator.init_trackers(recipe.name, config=tracker_config(recipe))

    trainer = Trainer(recipe, accelerator, parts, state, run_dir)
    with _stop_on_signals(trainer):
        summary = trainer.fit()
    if summary.get("preempted"):
        accelerator.end_training()
        raise RunPreempted(f"stopped by a signal at step {state.global_step}; checkpoint saved. Continue with: "
                           f"{command or 'scripts/distill.py --recipe <recipe>'} --resume auto")
    if teacher_metrics is not None:
        summary["teacher"] = teacher_metrics
    accelerator.print(_final_line(summary, run_dir))
    if accelerator.is_main_process:
        RunFolder(run_dir).write_summary(summary)
        if recipe.hub.push:
            from vitkd.model_hub import push_to_hub

            push_to_hub(run_dir, recipe.hub.repo_id, private=recipe.hub.private, revision=recipe.hub.revision)
    accelerator.end_training()
    return summary


class Trainer:
    """The epoch/step loop of a prepared run. Public so benchmarks drive the very same step:
    :meth:`fit` (the whole run), :meth:`train_epoch` (one pass over the train loader), :meth:`end_epoch`
    and :meth:`step` (one micro-batch)."""

    def __init__(self, recipe: Recipe, accelerator: Accelerator, parts: Parts, state: TrainState, run_dir: Path):
        self.recipe, self.cfg = recipe, recipe.train
        self.accelerator, self.parts, self.state = accelerator, parts, state
        self.run_dir, self.folder = run_dir, RunFolder(run_dir)
        self.ckpt_root = self.folder.checkpoints
        self.updates_per_epoch = updates_in_epoch(recipe, len(parts.train_loader))
        self.update_lr = current_lr(parts.optimizer)
        self.window = LossMeter()  # since the last log line / finiteness check
        records = self.folder.read_metrics()  # a resumed run's evaluations up to its checkpoint
        self.last: dict = records[-1] if records else {}
        self.best: dict | None = None
        self.saved_step: int | None = None
        self.stop_requested = False

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        state, cfg = self.state, self.cfg
        epoch_meter = LossMeter()
        while state.epoch < cfg.epochs and not self._hit_max_steps():
            epoch_meter = self.train_epoch()
            if self.stop_requested:
                self.checkpoint()
                return {"preempted": True, "step": state.global_step}
            if state.batches_done < len(self.parts.train_loader):  # stopped by max_steps mid-epoch
                break
            self.end_epoch()
            if state.epoch % cfg.eval_every == 0 or state.epoch == cfg.epochs:
                self.evaluate_and_log(epoch_meter)
            if cfg.checkpoint_every and state.epoch % cfg.checkpoint_every == 0:
                self.checkpoint()
        if self.last.get("step") != state.global_step:  # final weights not evaluated yet (max_steps, resume)
            self.evaluate_and_log(epoch_meter)
        self.checkpoint()
        self.export(self.folder.student)
        if self.parts.ema is not None:
            self.export(self.folder.student_ema, self.parts.ema.module)
        return self._summary()

    def train_epoch(self) -> LossMeter:
        """Train on the rest of the current epoch (all of it unless resumed mid-epoch); returns its meter."""
        acc, state, parts = self.accelerator, self.state, self.parts
        parts.student.train()
        parts.task.set_epoch(state.epoch + 1)
        parts.train_loader.set_epoch(state.epoch)
        loader = parts.train_loader
        if state.batches_done and isinstance(loader, StreamingTrainLoader):
            loader = loader.skip_first_batches(state.batches_done)
        elif state.batches_done:
            loader = acc.skip_first_batches(loader, state.batches_done)
        meter = LossMeter()
        for batch in loader:
            out = self.step(batch)
            state.batches_done += 1
            lr = self.update_lr if acc.sync_gradients else None
            meter.add(out, batch[1].shape[0], lr)
            self.window.add(out, batch[1].shape[0], lr)
            if not acc.sync_gradients:
                continue
            state.global_step += 1
            if not self.recipe.schedule.step_on_epochs:
                parts.scheduler.step_update(state.global_step)
            if state.global_step % self.cfg.log_every == 0:
                self.log_progress()
            if self.cfg.checkpoint_every_steps and state.global_step % self.cfg.checkpoint_every_steps == 0:
                self.checkpoint()
            if self._hit_max_steps() or self._stop_agreed():
                break
        return meter

    def end_epoch(self) -> None:
        """Count a finished epoch and step the scheduler to the next one."""
        self.state.epoch += 1
        self.state.batches_done = 0
        self.parts.scheduler.step(self.state.epoch)

    def step(self, batch: tuple) -> dict[str, torch.Tensor]:
        """Forward, backward and (at the end of an accumulation window) the optimiser update of one
        micro-batch ``(images, targets[, indices])``; returns the task's dict of losses.

        Mixup/CutMix (``parts.mixup``) mixes the images and turns the labels into soft targets first, so
        teacher and student see the same mixed images; the EMA student follows each optimiser update."""
        acc, parts = self.accelerator, self.parts
        images, targets, *rest = batch
        if parts.mixup is not None:
            images, targets = parts.mixup(images, targets)
        if self.cfg.channels_last:
            images = _channels_last(images)
        with acc.accumulate(parts.student):
            with acc.autocast():
                out = self._losses((images, targets, *rest))
            acc.backward(out["loss"])
            if acc.sync_gradients:
                if self.cfg.clip_grad:
                    acc.clip_grad_norm_(parts.student.parameters(), self.cfg.clip_grad)
                self.update_lr = current_lr(parts.optimizer)  # the lr this update uses
            parts.optimizer.step()
            parts.optimizer.zero_grad(set_to_none=True)
            if parts.ema is not None and acc.sync_gradients:
                student = acc.unwrap_model(parts.student, keep_torch_compile=False)
                parts.ema.update(student, step=self.state.global_step + 1)
        return out

    # ------------------------------------------------------------------ hooks
    def log_progress(self) -> None:
        """One log line (not a progress bar: logs are often files) and the tracker scalars."""
        acc, state = self.accelerator, self.state
        means = self._checked_window_means()
        seconds = self.window.seconds()
        images_per_s = self.window.samples * acc.num_processes / max(seconds, 1e-9)
        updates_per_s = self.window.steps / self.cfg.grad_accum_steps / max(seconds, 1e-9)
        lr = self.window.lrs[-1]
        self.window = LossMeter()
        total = self._total_updates()
        eta = (total - state.global_step) / max(updates_per_s, 1e-9)
        losses = " ".join(f"{k} {v:.4f}" for k, v in means.items())
        acc.print(f"epoch {state.epoch + 1}/{self.cfg.epochs} | step {state.global_step}/{total} | {losses} | "
                  f"lr {lr:.4g} | {images_per_s:.0f} img/s | eta {_duration(eta)}")
        acc.log({f"train/{k}": v for k, v in {**means, "lr": lr, "images_per_s": images_per_s}.items()},
                step=state.global_step)

    def evaluate_and_log(self, meter: LossMeter) -> None:
        """Evaluate the student, append the epoch's line to metrics.jsonl, export it if it is the best."""
        acc, state = self.accelerator, self.state
        means = meter.means()
        _check_finite(means, state, self._advice())
        # the last update may have poisoned the weights although its loss was finite: say so, with the
        # divergence advice, rather than fail in the metrics on NaN logits
        check_finite_weights(acc, self.parts.student, self.parts.optimizer, advice=self._advice())
        train_time = meter.seconds()
        started = time.perf_counter()
        metrics = evaluate(self.parts.student, self.parts.eval_loader, acc)
        if self.parts.ema is not None:
            metrics |= {f"ema_{k}": v for k, v in evaluate(self.parts.ema.module, self.parts.eval_loader, acc).items()}
        eval_time = time.perf_counter() - started
        record = {
            "epoch": state.epoch,
            "step": state.global_step,
            "lr": meter.lrs[0] if meter.lrs else current_lr(self.parts.optimizer),
            "lr_last": meter.lrs[-1] if meter.lrs else current_lr(self.parts.optimizer),
            **{f"train_{k}": v for k, v in means.items()},
            **metrics,
            "train_time_s": train_time,
            "eval_time_s": eval_time,
            "images_per_s": meter.samples * acc.num_processes / max(train_time, 1e-9),
        }
        self.last = record
        if metrics["top1"] > state.best_top1:
            state.best_top1, state.best_epoch = metrics["top1"], state.epoch
            self.best = record
            self.export(self.folder.student_best)
        state.evals_logged += 1
        if acc.is_main_process:
            self.folder.append_metrics(record)
            acc.print(_epoch_line(record, state, self.cfg.epochs, len(self.parts.train_loader)))
        acc.log({f"eval/{k}": v for k, v in metrics.items()}
                | {"train/lr_epoch": record["lr"], "train/epoch_images_per_s": record["images_per_s"]},
                step=state.global_step)

    def checkpoint(self) -> None:
        """Save the resumable state (once per step), after checking the losses since the last check."""
        if self.saved_step == self.state.global_step:
            return
        self._checked_window_means()  # never save weights that a NaN step has already touched
        check_finite_weights(self.accelerator, self.parts.student, self.parts.optimizer, advice=self._advice())
        save_checkpoint(self.accelerator, self.ckpt_root, self.state.global_step, self.cfg.keep_checkpoints,
                        self.state, _extra_models(self.parts))
        self.saved_step = self.state.global_step

    def export(self, out_dir: Path, model: torch.nn.Module | None = None) -> None:
        """Export the unwrapped student (or ``model``, e.g. the EMA student) to ``out_dir`` (safetensors + timm
        config; main process only), only with finite weights."""
        check_finite_weights(self.accelerator, self.parts.student, self.parts.optimizer, advice=self._advice())
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            model = self.accelerator.unwrap_model(self.parts.student) if model is None else model
            size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
            with disk_full_guard(out_dir, "student export", cleanup=False, estimate=size):
                export_student(model, out_dir, self.recipe.student, self.parts.info)
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ helpers
    def _losses(self, batch: tuple) -> dict[str, torch.Tensor]:
        """The task's losses; a loss refusing the NaN/inf logits of a diverged student (its own ValueError)
        becomes the documented :class:`NonFiniteLossError`."""
        try:
            return self.parts.task(*batch)
        except ValueError as err:
            if not non_finite_tensors(self.accelerator.unwrap_model(self.parts.student)):
                raise
            raise NonFiniteLossError(
                f"training diverged at epoch {self.state.epoch + 1}, step {self.state.global_step}: the student's "
                f"weights hold NaN/inf ({err}). {self._advice()}"
            ) from err

    def _advice(self) -> str:
        return divergence_advice(self.ckpt_root, self.recipe.optim.lr, self.run_dir)

    def _total_updates(self) -> int:
        total = self.cfg.epochs * self.updates_per_epoch
        return min(total, self.cfg.max_steps) if self.cfg.max_steps else total

    def _hit_max_steps(self) -> bool:
        return self.cfg.max_steps is not None and self.state.global_step >= self.cfg.max_steps

    def _stop_agreed(self) -> bool:
        """Whether any process was asked to stop (all processes must stop at the same step). With several
        processes they agree every ``log_every`` updates only: the all-reduce syncs the device, which a
        per-step check would pay on every update."""
        if self.accelerator.num_processes == 1:
            return self.stop_requested
        if self.state.global_step % self.cfg.log_every:
            return False
        flag = torch.tensor([float(self.stop_requested)], device=self.accelerator.device)
        self.stop_requested = bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)
        return self.stop_requested

    def _checked_window_means(self) -> dict[str, float]:
        """Mean loss components since the last check; raises if any process saw a non-finite loss."""
        means = self.window.means()
        if "loss" in self.window.sums:  # summed over processes: one diverged rank stops them all
            total = self.accelerator.reduce(self.window.sums["loss"].clone(), reduction="sum").item()
            _check_finite({"loss (all processes)": total, **means}, self.state, self._advice())
        return means

    def _summary(self) -> dict:
        keys = ("epoch", "step", "top1", "top5", "nll", "ece", "samples")
        best = self.best or _best_from_log(self.folder.read_metrics(), self.state.best_epoch)
        ema = {k: self.last[f"ema_{k}"] if f"ema_{k}" in self.last else self.last[k] for k in keys}
        return {
            "report": self.cfg.report,
            "best": {k: best[k] for k in keys} if best else None,
            "last": {k: self.last[k] for k in keys},
            **({"ema": ema} if self.parts.ema is not None else {}),
            "epochs_completed": self.state.epoch,
            "steps": self.state.global_step,
        }


def _extra_models(parts: Parts) -> dict[str, torch.nn.Module]:
    """What a checkpoint holds beside Accelerate's state: the EMA student, when there is one."""
    return {"ema": parts.ema.module} if parts.ema is not None else {}


class _stop_on_signals:
    """While active, SIGTERM/SIGINT ask ``trainer`` to stop at the next step boundary (cluster schedulers
    send SIGTERM before killing); a second signal interrupts at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.trainer.stop_requested:
            raise KeyboardInterrupt
        self.trainer.stop_requested = True
        logger.warning("received %s: stopping at the next step with a checkpoint", signal.Signals(signum).name)

    def __enter__(self):
        try:
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        except ValueError:  # not the main thread: signals stay as they are
            self.previous = {}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _channels_last(images: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Images (B, C, H, W), or a tuple of views of them, in NHWC memory layout."""
    if isinstance(images, tuple):
        return tuple(view.contiguous(memory_format=torch.channels_last) for view in images)
    return images.contiguous(memory_format=torch.channels_last)


def _check_finite(values: dict[str, float], state: TrainState, advice: str) -> None:
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        raise NonFiniteLossError(
            f"training loss became non-finite at epoch {state.epoch + 1}, step {state.global_step}: {bad}. {advice}"
        )


def _best_from_log(records: list[dict], epoch: int) -> dict | None:
    """After a resume the best record lives only in metrics.jsonl (written by an earlier process)."""
    matches = [r for r in records if r["epoch"] == epoch]
    return matches[-1] if matches else None


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _final_line(summary: dict, run_dir: Path) -> str:
    last, best = summary["last"], summary["best"]
    line = (f"done: {summary['steps']} updates, {summary['epochs_completed']} full epoch(s) | student top-1 "
            f"{last['top1']:.2f} % (last), {best['top1']:.2f} % (best, epoch {best['epoch']})")
    if "ema" in summary:
        line += f" | EMA student {summary['ema']['top1']:.2f} %"
    if "teacher" in summary:
        line += f" | teacher top-1 {summary['teacher']['top1']:.2f} %"
    return f"{line} | ECE {last['ece']:.2f} % | student exported to {RunFolder(run_dir).student}"


def _epoch_line(record: dict, state: TrainState, epochs: int, batches: int) -> str:
    where = f"epoch {record['epoch']}/{epochs}"
    if state.batches_done:  # evaluated inside an epoch (max_steps): say how far, not "epoch 0"
        where = f"epoch {state.epoch + 1}/{epochs} (stopped after {state.batches_done}/{batches} batches)"
    losses = " ".join(f"{k[6:]} {v:.4f}" for k, v in record.items() if k.startswith("train_") and k != "train_time_s")
    ema = f"EMA top1 {record['ema_top1']:.2f} | " if "ema_top1" in record else ""
    return (
        f"{where} | {losses} | lr {record['lr']:.4g} | "
        f"top1 {record['top1']:.2f} top5 {record['top5']:.2f} nll {record['nll']:.4f} ece {record['ece']:.2f} | "
        f"{ema}best {state.best_top1:.2f}@{state.best_epoch} | {record['images_per_s']:.0f} img/s train, "
        f"eval {record['eval_time_s']:.1f} s"
    )


def _warn_on_process_count(accelerator: Accelerator, gpus: int) -> None:
    if accelerator.num_processes != gpus and accelerator.is_main_process:
        logger.warning(
            "the recipe was written for train.gpus=%d process(es) but this run has %d: the global batch and the "
            "per-process batch statistics differ from the recipe's (scale train.batch_size, or set "
            "distill.kwargs.global_stats for LumiNet)", gpus, accelerator.num_processes,
        )


def _write_run_header(run_dir, recipe, accelerator, parts: Parts, command, teacher_metrics) -> None:
    info = parts.info
    folder = RunFolder(run_dir)
    folder.write_recipe(recipe)
    cfg = recipe.train
    launcher_precision = os.environ.get("ACCELERATE_MIXED_PRECISION")
    folder.write_run_info({
        "command": command or command_line(),
        "versions": package_versions(),
        "hardware": {
            "num_processes": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type),
            "device": str(accelerator.device),
            "device_name": torch.cuda.get_device_name() if accelerator.device.type == "cuda" else "cpu",
            "mixed_precision": accelerator.mixed_precision,
            "mixed_precision_from": "launcher" if launcher_precision else "recipe",
            "per_device_batch": cfg.batch_size,
            "grad_accum_steps": cfg.grad_accum_steps,
            "global_batch": cfg.batch_size * accelerator.num_processes * cfg.grad_accum_steps,
        },
        "data": {"num_classes": info.num_classes, "image_size": info.image_size, "in_chans": info.in_chans,
                 "eval_data_config": info.data_config},
        "teacher_sha256": {t.name: file_sha256(t.checkpoint) if t.checkpoint else None
                           for t in recipe.teachers},
        "teacher_eval": teacher_metrics,
        "teacher_input": teacher_input_record(parts.teacher) if parts.teacher is not None else None,
    })
