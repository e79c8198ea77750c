"""The distillation loop on Accelerate: one function from a validated recipe to a finished run folder.

Only the student, its optimiser and the loaders are prepared by Accelerate. The teacher is frozen,
moved to the device and run under ``accelerator.autocast``; it never enters DDP, the optimiser or a
checkpoint. The timm scheduler is stepped by epoch (or by update) explicitly and registered for
checkpointing: Accelerate's scheduler wrapper calls ``step()`` without the epoch timm needs.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import set_seed
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from tqdm.auto import tqdm

from vitkd.data import DataInfo, build_loaders
from vitkd.engine import run_files
from vitkd.engine.build import build_criterion, build_student, build_teacher, export_run_student
from vitkd.engine.checkpoint import TrainState, resolve_resume, save_checkpoint
from vitkd.engine.evaluate import evaluate
from vitkd.engine.task import DistillationTask
from vitkd.recipe import Recipe, recipe_to_dict

__all__ = ["NonFiniteLossError", "train"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf; the last good checkpoint is left as it was."""


@dataclass
class _Running:
    """Sums of the logged loss components since the last log line (tensors: no sync per step)."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: int = 0
    samples: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, out: dict[str, torch.Tensor], batch: int) -> None:
        for key, value in out.items():
            if key != "output":
                self.sums[key] = self.sums.get(key, 0.0) + value.detach().float()
        self.steps += 1
        self.samples += batch

    def means(self) -> dict[str, float]:
        return {k: (v / max(self.steps, 1)).item() for k, v in self.sums.items()}


def train(recipe: Recipe, *, resume: str | None = None, command: str | None = None) -> dict:
    """Run ``recipe`` to the end (or ``train.max_steps``) and return the summary written to the run folder.

    ``resume``: ``None`` starts fresh (refusing a folder that already holds checkpoints), ``"auto"``
    continues from the latest checkpoint if there is one, a path continues from that checkpoint.
    """
    cfg = recipe.train
    run_dir = recipe.run_dir()
    # One process may run several recipes (sweeps, notebooks, tests), but Accelerate keeps precision and
    # accumulation settings in process-wide singletons that refuse a second, different configuration.
    # Reset those two (not the distributed PartialState, which stays valid) so each run gets its own.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    accelerator = Accelerator(
        cpu=cfg.cpu,
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum_steps,
        log_with=cfg.log_with or None,
        project_dir=str(run_dir),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    resume_from = _check_run_dir(run_dir, resume)
    set_seed(cfg.seed)
    _warn_on_process_count(accelerator, cfg.gpus)

    train_loader, eval_loader, info = build_loaders(
        recipe.data, batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size, seed=cfg.seed
    )
    student = build_student(recipe.student, info)
    teacher = build_teacher(recipe.teachers, info)
    if teacher is not None:
        teacher.to(accelerator.device)
    optimizer = create_optimizer_v2(
        student,
        opt=recipe.optim.opt,
        lr=recipe.optim.lr,
        weight_decay=recipe.optim.weight_decay,
        momentum=recipe.optim.momentum,
        filter_bias_and_bn=recipe.optim.filter_bias_and_bn,
        **recipe.optim.kwargs,
    )
    student, optimizer, train_loader, eval_loader = accelerator.prepare(student, optimizer, train_loader, eval_loader)
    updates_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum_steps)
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=recipe.schedule.sched,
        num_epochs=cfg.epochs,
        decay_milestones=recipe.schedule.decay_milestones,
        decay_rate=recipe.schedule.decay_rate,
        warmup_epochs=recipe.schedule.warmup_epochs,
        warmup_lr=recipe.schedule.warmup_lr,
        min_lr=recipe.schedule.min_lr,
        step_on_epochs=recipe.schedule.step_on_epochs,
        updates_per_epoch=updates_per_epoch,
        **recipe.schedule.kwargs,
    )
    state = TrainState()
    accelerator.register_for_checkpointing(scheduler, state)
    task = DistillationTask(
        student,
        teacher,
        build_criterion(recipe.distill),
        ce_weight=recipe.distill.ce_weight,
        kd_weight=recipe.distill.kd_weight,
        warmup_epochs=recipe.distill.warmup_epochs,
        heads=recipe.distill.heads,
    )

    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        accelerator.print(f"resumed from {resume_from} (epoch {state.epoch + 1}, step {state.global_step})")
    teacher_metrics = evaluate(teacher, eval_loader, accelerator) if teacher is not None else None
    if accelerator.is_main_process:
        _write_run_header(run_dir, recipe, accelerator, info, command, teacher_metrics)
    if cfg.log_with:
        accelerator.init_trackers(recipe.name, config=_flat_scalars(recipe_to_dict(recipe)))

    loop = _Loop(recipe, accelerator, task, optimizer, scheduler, train_loader, eval_loader, state, run_dir, info)
    summary = loop.run()
    if teacher_metrics is not None:
        summary["teacher"] = teacher_metrics
    accelerator.print(_final_line(summary, run_dir))
    if accelerator.is_main_process:
        run_files.write_json(run_dir / "summary.json", summary)
        if recipe.hub.push:
            from vitkd.hub import push_to_hub

            push_to_hub(run_dir, recipe.hub.repo_id, private=recipe.hub.private, revision=recipe.hub.revision)
    accelerator.end_training()
    return summary


class _Loop:
    """The epoch/step loop of :func:`train`, split out so each part stays short."""

    def __init__(self, recipe, accelerator, task, optimizer, scheduler, train_loader, eval_loader, state, run_dir, info):
        self.recipe, self.cfg = recipe, recipe.train
        self.accelerator, self.task = accelerator, task
        self.optimizer, self.scheduler = optimizer, scheduler
        self.train_loader, self.eval_loader = train_loader, eval_loader
        self.state: TrainState = state
        self.run_dir, self.info = run_dir, info
        self.ckpt_root = run_dir / "checkpoints"
        self.window = _Running()  # loss sums since the last finiteness check
        self.last: dict = {}
        self.best: dict | None = None
        self.saved_step: int | None = None

    @property
    def student(self):
        return self.task.student

    def run(self) -> dict:
        state = self.state
        running = _Running()
        while state.epoch < self.cfg.epochs and not self._hit_max_steps():
            running = self._train_epoch()
            if state.batches_done < len(self.train_loader):  # stopped by max_steps mid-epoch
                break
            state.epoch += 1
            state.batches_done = 0
            self.scheduler.step(state.epoch)
            if state.epoch % self.cfg.eval_every == 0 or state.epoch == self.cfg.epochs:
                self._evaluate_and_log(running)
            if self.cfg.checkpoint_every and state.epoch % self.cfg.checkpoint_every == 0:
                self._checkpoint()
        if self.last.get("step") != state.global_step:  # final weights not evaluated yet (max_steps, resume)
            self._evaluate_and_log(running)
        self._checkpoint()
        export_run_student(self.accelerator, self.student, self.recipe, self.info, self.run_dir / "student")
        return self._summary()

    def _hit_max_steps(self) -> bool:
        return self.cfg.max_steps is not None and self.state.global_step >= self.cfg.max_steps

    def _train_epoch(self) -> _Running:
        acc, state, cfg = self.accelerator, self.state, self.cfg
        self.student.train()
        self.task.set_epoch(state.epoch + 1)
        self.train_loader.set_epoch(state.epoch)
        loader = self.train_loader
        if state.batches_done:
            loader = acc.skip_first_batches(self.train_loader, state.batches_done)
        running = _Running()
        bar = tqdm(
            total=len(self.train_loader),
            initial=state.batches_done,
            desc=f"epoch {state.epoch + 1}/{cfg.epochs}",
            disable=not acc.is_local_main_process,
            dynamic_ncols=True,
        )
        for images, targets in loader:
            with acc.accumulate(self.student):
                with acc.autocast():
                    out = self.task(images, targets)
                acc.backward(out["loss"])
                if acc.sync_gradients and cfg.clip_grad:
                    acc.clip_grad_norm_(self.student.parameters(), cfg.clip_grad)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            state.batches_done += 1
            running.add(out, targets.shape[0])
            self.window.add(out, targets.shape[0])
            bar.update(1)
            if not acc.sync_gradients:
                continue
            state.global_step += 1
            if not self.recipe.schedule.step_on_epochs:
                self.scheduler.step_update(state.global_step)
            if state.global_step % cfg.log_every == 0:
                self._log_window(bar)
            if cfg.checkpoint_every_steps and state.global_step % cfg.checkpoint_every_steps == 0:
                self._checkpoint()
            if self._hit_max_steps():
                break
        bar.close()
        return running

    def _log_window(self, bar) -> None:
        means = self._checked_window_means()
        elapsed = time.perf_counter() - self.window.started
        images_per_s = self.window.samples * self.accelerator.num_processes / max(elapsed, 1e-9)
        self.window = _Running()
        lr = self.optimizer.param_groups[0]["lr"]
        bar.set_postfix({**{k: f"{v:.4f}" for k, v in means.items()}, "lr": f"{lr:.3g}", "img/s": f"{images_per_s:.0f}"})
        self.accelerator.log({f"train/{k}": v for k, v in {**means, "lr": lr, "images_per_s": images_per_s}.items()},
                             step=self.state.global_step)

    def _checked_window_means(self) -> dict[str, float]:
        """Mean loss components since the last check; raises if any process saw a non-finite loss."""
        means = self.window.means()
        if "loss" in self.window.sums:  # summed over processes: one diverged rank stops them all
            total = self.accelerator.reduce(self.window.sums["loss"].clone(), reduction="sum").item()
            _check_finite({"loss (all processes)": total, **means}, self.state, self.ckpt_root)
        return means

    def _checkpoint(self) -> None:
        if self.saved_step == self.state.global_step:
            return
        self._checked_window_means()  # never save weights that a NaN step has already touched
        save_checkpoint(self.accelerator, self.ckpt_root, self.state.global_step, self.cfg.keep_checkpoints)
        self.saved_step = self.state.global_step

    def _evaluate_and_log(self, running: _Running) -> None:
        acc, state = self.accelerator, self.state
        means = running.means()
        _check_finite(means, state, self.ckpt_root)
        metrics = evaluate(self.student, self.eval_loader, acc)
        elapsed = time.perf_counter() - running.started
        record = {
            "epoch": state.epoch,
            "step": state.global_step,
            "lr": self.optimizer.param_groups[0]["lr"],
            **{f"train_{k}": v for k, v in means.items()},
            **metrics,
            "epoch_time_s": elapsed,
            "images_per_s": running.samples * acc.num_processes / max(elapsed, 1e-9),
        }
        self.last = record
        improved = metrics["top1"] > state.best_top1
        if improved:
            state.best_top1, state.best_epoch = metrics["top1"], state.epoch
            self.best = record
            export_run_student(acc, self.student, self.recipe, self.info, self.run_dir / "student_best")
        if acc.is_main_process:
            run_files.append_jsonl(self.run_dir / "metrics.jsonl", record)
            acc.print(_epoch_line(record, state, self.cfg.epochs))
        acc.log({f"eval/{k}": v for k, v in metrics.items()}, step=state.global_step)

    def _summary(self) -> dict:
        keys = ("epoch", "step", "top1", "top5", "nll", "ece", "samples")
        best = self.best or _best_from_log(self.run_dir / "metrics.jsonl", self.state.best_epoch)
        return {
            "report": self.cfg.report,
            "best": {k: best[k] for k in keys} if best else None,
            "last": {k: self.last[k] for k in keys},
        }


def _check_finite(values: dict[str, float], state: TrainState, ckpt_root: Path) -> None:
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        raise NonFiniteLossError(
            f"training loss became non-finite at epoch {state.epoch + 1}, step {state.global_step}: {bad}. "
            f"The last good checkpoint in {ckpt_root} is intact; lower optim.lr, set train.clip_grad, or use "
            "bf16 instead of fp16, then resume with --resume auto"
        )


def _best_from_log(path: Path, epoch: int) -> dict | None:
    """After a resume the best record lives only in metrics.jsonl (written by an earlier process)."""
    import json

    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    matches = [r for r in records if r["epoch"] == epoch]
    return matches[-1] if matches else None


def _final_line(summary: dict, run_dir: Path) -> str:
    last, best = summary["last"], summary["best"]
    line = f"done: student top-1 {last['top1']:.2f} % (last), {best['top1']:.2f} % (best, epoch {best['epoch']})"
    if "teacher" in summary:
        line += f" | teacher top-1 {summary['teacher']['top1']:.2f} %"
    return f"{line} | ECE {last['ece']:.2f} % | student exported to {run_dir / 'student'}"


def _epoch_line(record: dict, state: TrainState, epochs: int) -> str:
    losses = " ".join(f"{k[6:]} {v:.4f}" for k, v in record.items() if k.startswith("train_"))
    return (
        f"epoch {record['epoch']}/{epochs} | {losses} | lr {record['lr']:.3g} | "
        f"top1 {record['top1']:.2f} top5 {record['top5']:.2f} nll {record['nll']:.4f} ece {record['ece']:.2f} | "
        f"best {state.best_top1:.2f}@{state.best_epoch} | {record['images_per_s']:.0f} img/s"
    )


def _check_run_dir(run_dir: Path, resume: str | None) -> Path | None:
    ckpt_root = run_dir / "checkpoints"
    if resume is None and any(ckpt_root.glob("step_*")):
        raise FileExistsError(
            f"{run_dir} already holds checkpoints: pass --resume auto to continue that run, or choose another "
            "train.output_dir (e.g. --set train.output_dir=runs/new)"
        )
    return resolve_resume(resume, ckpt_root)


def _warn_on_process_count(accelerator: Accelerator, gpus: int) -> None:
    if accelerator.num_processes != gpus and accelerator.is_main_process:
        logger.warning(
            "the recipe was written for train.gpus=%d process(es) but this run has %d: the global batch and the "
            "per-process batch statistics differ from the recipe's (scale train.batch_size, or set "
            "distill.kwargs.global_stats for LumiNet)", gpus, accelerator.num_processes,
        )


def _write_run_header(run_dir, recipe, accelerator, info: DataInfo, command, teacher_metrics) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    run_files.write_yaml(run_dir / "recipe.yaml", recipe_to_dict(recipe))
    cfg = recipe.train
    run_files.write_json(run_dir / "run_info.json", {
        "command": command or run_files.command_line(),
        "versions": run_files.package_versions(),
        "hardware": {
            "num_processes": accelerator.num_processes,
            "device": str(accelerator.device),
            "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() and not cfg.cpu else "cpu",
            "mixed_precision": accelerator.mixed_precision,
            "per_device_batch": cfg.batch_size,
            "grad_accum_steps": cfg.grad_accum_steps,
            "global_batch": cfg.batch_size * accelerator.num_processes * cfg.grad_accum_steps,
        },
        "data": {"num_classes": info.num_classes, "image_size": info.image_size, "in_chans": info.in_chans},
        "teacher_sha256": {t.name: run_files.file_sha256(t.checkpoint) if t.checkpoint else None
                           for t in recipe.teachers},
        "teacher_eval": teacher_metrics,
    })


def _flat_scalars(data: dict, prefix: str = "") -> dict:
    """Nested recipe -> {"a.b": scalar} for trackers that only take scalars (lists become strings)."""
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat_scalars(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat
