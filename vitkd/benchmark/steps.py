"""One distillation training step three ways, on the same in-memory batches, and the loader's throughput.

The workload of a step: teacher forward without gradients, student forward and backward, the loss of
a recipe (cross-entropy weighted with ``distill.ce_weight`` plus ``kd_weight`` times the method's
loss), and an optimiser step built from the recipe's ``optim`` section. Its three implementations:

* ``engine``: vitkd's own training loop — :meth:`vitkd.engine.trainer.Trainer.train_epoch`, i.e.
  :class:`~vitkd.engine.task.DistillationTask` under ``accelerator.accumulate``/``autocast``/``backward``,
  the per-step loss bookkeeping, the scheduler and the periodic log line and finiteness check — over an
  Accelerate-prepared loader, set up by :func:`vitkd.engine.factory` as ``train`` does (``train`` also
  builds loaders from the recipe's dataset, evaluates and writes checkpoints).
* ``plain``: a minimal hand-written PyTorch step with the same modules, loss and optimiser.
* ``timm``: timm's ``LogitDistillationTask`` (KD recipes only: that is the loss it computes).

All three read the same list of pre-generated batches through ``DataLoader(batches, batch_size=None)``,
so the data costs nothing and costs it equally. Teachers have random weights (speed does not depend on
them); every student starts from the same seeded initialisation.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import Tensor, nn
from torch.utils.data import DataLoader

from vitkd.benchmark.timing import device_sync
from vitkd.data import DataConfig, DataInfo, build_loaders
from vitkd.engine.build import build_criterion, build_student, build_teacher
from vitkd.engine.checkpoint import TrainState
from vitkd.engine.factory import Parts, build_optimizer, build_task
from vitkd.engine.trainer import Trainer
from vitkd.recipe import Recipe, load_recipe

__all__ = ["IMPLEMENTATIONS", "StepRunner", "Workload", "load_workload", "loader_throughput", "step_flops",
           "step_runners"]

IMPLEMENTATIONS = ("engine", "plain", "timm")
Batch = tuple[Tensor, Tensor]


@dataclass
class Workload:
    """A recipe's training step on ``batches`` (images (B, C, H, W) float32, labels (B,) int64)."""

    recipe: Recipe
    info: DataInfo
    batches: list[Batch]

    @property
    def images_per_pass(self) -> int:
        return sum(len(labels) for _, labels in self.batches)


def load_workload(
    recipe_path: str | Path, *, num_classes: int, batch_size: int, steps: int, device: torch.device, seed: int = 0
) -> Workload:
    """The recipe at ``recipe_path`` without checkpoints (random weights, nothing downloaded), and
    ``steps`` random batches of ``batch_size`` images of its size and channels on ``device``."""
    recipe = load_recipe(recipe_path, [f"train.batch_size={batch_size}"])
    for model in (recipe.student, *recipe.teachers):
        model.checkpoint = None
    size, chans = recipe.data.effective_image_size, recipe.data.in_chans
    info = DataInfo(num_classes, [str(c) for c in range(num_classes)], size, chans,
                    recipe.data.effective_mean, recipe.data.effective_std)
    generator = torch.Generator().manual_seed(seed)
    batches = [
        (torch.randn(batch_size, chans, size, size, generator=generator).to(device),
         torch.randint(num_classes, (batch_size,), generator=generator).to(device))
        for _ in range(steps)
    ]
    return Workload(recipe, info, batches)


@dataclass
class StepRunner:
    """One implementation of a workload's step: :meth:`run` trains ``student`` once over the batches."""

    run: Callable[[], None]
    student: nn.Module
    sync: Callable[[], None]

    def seconds(self) -> float:
        """Wall-clock seconds of one :meth:`run`, queued device work included."""
        self.sync()
        start = time.perf_counter()
        self.run()
        self.sync()
        return time.perf_counter() - start


def step_runners(
    workload: Workload, accelerator: Accelerator, run_dir: Path, implementations: tuple[str, ...] = IMPLEMENTATIONS
) -> dict[str, StepRunner]:
    """``{implementation: runner}`` for the workload; ``timm`` is left out for methods other than KD.
    Every runner has its own student (same initial weights) and optimiser; the frozen teacher is shared.
    ``run_dir`` only names where the engine loop would write checkpoints (it writes none here)."""
    unknown = set(implementations) - set(IMPLEMENTATIONS)
    if unknown:
        raise ValueError(f"unknown implementation(s) {sorted(unknown)}: choose from {IMPLEMENTATIONS}")
    recipe = workload.recipe
    device = accelerator.device
    teacher = build_teacher(recipe.teachers, workload.info).to(device)
    builders = {"engine": _engine_pass, "plain": _plain_pass, "timm": _timm_pass}
    runners = {}
    for name in implementations:
        if name == "timm" and recipe.distill.method != "kd":
            continue
        torch.manual_seed(recipe.train.seed)
        student = build_student(recipe.student, workload.info).to(device)
        run, student = builders[name](workload, student, teacher, accelerator, run_dir)
        runners[name] = StepRunner(run, student, device_sync(device))
    return runners


def step_flops(workload: Workload, device: torch.device) -> float:
    """FLOPs per image of the step's model work: teacher forward, student forward and backward (torch's
    ``FlopCounterMode``: matmuls and convolutions, counted from shapes; the loss and the optimiser are
    negligible and left out). The basis of the benchmark's TFLOP/s and MFU."""
    from torch.utils.flop_counter import FlopCounterMode

    teacher = build_teacher(workload.recipe.teachers, workload.info).to(device)
    student = build_student(workload.recipe.student, workload.info).to(device).train()
    images, labels = workload.batches[0]
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            teacher(images)
        logits = student(images)
        logits = logits[0] if isinstance(logits, tuple) else logits  # two-head students: the class head
        F.cross_entropy(logits.float(), labels).backward()
    return counter.get_total_flops() / len(labels)


def _loader(workload: Workload) -> DataLoader:
    return DataLoader(workload.batches, batch_size=None)  # the batches as they are: no sampling, no collation


def _engine_pass(workload: Workload, student: nn.Module, teacher: nn.Module, accelerator: Accelerator,
                 run_dir: Path) -> tuple[Callable[[], None], nn.Module]:
    recipe = workload.recipe
    parts = Parts(student, teacher, build_task(recipe, student, teacher), build_optimizer(recipe, student),
                  _loader(workload), None, workload.info).prepare(recipe, accelerator)
    trainer = Trainer(recipe, accelerator, parts, TrainState(), run_dir)

    def run() -> None:
        trainer.train_epoch()
        trainer.end_epoch()

    return run, parts.student


def _autocast(accelerator: Accelerator) -> Callable[[], contextlib.AbstractContextManager]:
    """The precision the engine runs in, for the hand-written steps: bf16/fp16 autocast or nothing."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision)
    device_type = accelerator.device.type
    return (lambda: torch.autocast(device_type, dtype=dtype)) if dtype else contextlib.nullcontext


def _plain_pass(workload: Workload, student: nn.Module, teacher: nn.Module, accelerator: Accelerator,
                run_dir: Path) -> tuple[Callable[[], None], nn.Module]:
    recipe, d = workload.recipe, workload.recipe.distill
    optimizer = build_optimizer(recipe, student)
    criterion = build_criterion(d)
    autocast = _autocast(accelerator)
    clip = recipe.train.clip_grad

    def run() -> None:
        student.train()
        for images, labels in _loader(workload):
            with autocast():
                with torch.no_grad():
                    teacher_logits = teacher(images).float()
                logits = student(images).float()
            loss = d.ce_weight * F.cross_entropy(logits, labels) + d.kd_weight * criterion(logits, teacher_logits)
            _update(loss, student, optimizer, clip)

    return run, student


def _update(loss: torch.Tensor, student: nn.Module, optimizer: torch.optim.Optimizer, clip: float | None) -> None:
    """The optimiser update shared by the hand-written and timm steps: backward, optional clip, step."""
    loss.backward()
    if clip:
        nn.utils.clip_grad_norm_(student.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _timm_pass(workload: Workload, student: nn.Module, teacher: nn.Module, accelerator: Accelerator,
               run_dir: Path) -> tuple[Callable[[], None], nn.Module]:
    from timm.task.distillation import LogitDistillationTask

    recipe, d = workload.recipe, workload.recipe.distill
    optimizer = build_optimizer(recipe, student)
    task = LogitDistillationTask(
        student, teacher, criterion=nn.CrossEntropyLoss(), task_loss_weight=d.ce_weight,
        distill_loss_weight=d.kd_weight, temperature=d.kwargs.get("temperature", 4.0),
        device=accelerator.device, verbose=False,
    )
    autocast = _autocast(accelerator)
    clip = recipe.train.clip_grad

    def run() -> None:  # the step of timm's train.py with a task: forward in autocast, backward, step
        task.train()
        for images, labels in _loader(workload):
            with autocast():
                loss = task(images, labels)["loss"]
            _update(loss, student, optimizer, clip)

    return run, student


def loader_throughput(cfg: DataConfig, *, batch_size: int, batches: int, warmup: int) -> float:
    """Training-loader images per second over ``batches`` batches after ``warmup`` untimed ones (worker
    start-up); epochs repeat as needed."""
    train, _, _ = build_loaders(cfg, batch_size=batch_size)
    stream: Iterator = itertools.chain.from_iterable(itertools.repeat(train))
    for _ in range(warmup):
        next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return batches * batch_size / (time.perf_counter() - start)
