"""One public factory from a validated recipe to the parts of a run.

:func:`build_parts` turns a :class:`~vitkd.recipe.Recipe` into student, frozen teacher, loss, task,
optimiser, scheduler and loaders. The trainer, ``--plan``, the speed benchmark and the recipe tests all
build through here, so "what a recipe trains" is defined once.

Learning-rate bookkeeping: timm schedulers are stepped by the trainer exactly as :func:`lr_per_epoch`
simulates — ``scheduler.step(completed_epochs)`` after each epoch, ``scheduler.step_update(updates)``
after each optimiser update for per-update schedules — so the lr this module predicts for an epoch
is the lr the optimiser really uses in it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from accelerate import Accelerator, PartialState
from timm.data import Mixup
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader

from vitkd.data import DataInfo, build_loaders
from vitkd.data.loaders import StreamingTrainLoader
from vitkd.engine.build import build_criterion, build_student, build_teacher
from vitkd.engine.task import DistillationTask
from vitkd.recipe import Recipe
from vitkd.teacher_cache import TeacherLogitCache

__all__ = [
    "Parts",
    "build_mixup",
    "build_optimizer",
    "build_parts",
    "build_scheduler",
    "build_task",
    "min_train_batch",
    "open_teacher_cache",
    "current_lr",
    "lr_per_epoch",
    "lr_per_update",
    "updates_in_epoch",
]


@dataclass
class Parts:
    """Everything a run of a recipe trains with. Before :meth:`prepare`, nothing is on a device."""

    student: nn.Module
    teacher: nn.Module | None
    task: DistillationTask
    optimizer: torch.optim.Optimizer
    train_loader: DataLoader | StreamingTrainLoader
    eval_loader: DataLoader | None
    info: DataInfo
    scheduler: Scheduler | None = None
    mixup: Mixup | None = None  # applied to each training batch before the task
    ema: ModelEmaV3 | None = None  # the EMA student (train.model_ema), made by :meth:`prepare`

    def prepare(self, recipe: Recipe, accelerator: Accelerator) -> Parts:
        """Hand student, optimiser and loaders to Accelerate, move the teacher, then build the scheduler
        (it needs the per-process number of updates per epoch, known only after sharding) and the EMA
        student (a copy of the prepared student's weights, on its device). A streamed training loader is
        already split between processes: it only learns the device."""
        streamed = isinstance(self.train_loader, StreamingTrainLoader)
        loaders = ([] if streamed else [self.train_loader]) + ([] if self.eval_loader is None else [self.eval_loader])
        self.student, self.optimizer, *loaders = accelerator.prepare(self.student, self.optimizer, *loaders)
        if streamed:
            self.train_loader.device = accelerator.device
        else:
            self.train_loader = loaders.pop(0)
        if self.eval_loader is not None:
            self.eval_loader = loaders.pop(0)
        if self.teacher is not None:
            self.teacher.to(accelerator.device)
        self.task.student = self.student
        self.scheduler = build_scheduler(recipe, self.optimizer, updates_in_epoch(recipe, len(self.train_loader)))
        ema = recipe.train.model_ema
        if ema is not None:
            student = accelerator.unwrap_model(self.student, keep_torch_compile=False)
            self.ema = ModelEmaV3(student, decay=ema.decay, use_warmup=ema.warmup)
        return self


def build_optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    """The recipe's ``optim`` section through timm's ``create_optimizer_v2``.

    Note timm's names: ``sgd`` is Nesterov SGD, ``momentum`` plain momentum SGD (docs/methods.md).
    ``optim.layer_decay`` gives each layer group its own lr scale (timm's ``param_groups_layer_decay``).
    """
    cfg = recipe.optim
    return create_optimizer_v2(
        model,
        opt=cfg.opt,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        momentum=cfg.momentum,
        filter_bias_and_bn=cfg.filter_bias_and_bn,
        layer_decay=cfg.layer_decay,
        **cfg.kwargs,
    )


def build_mixup(recipe: Recipe, num_classes: int) -> Mixup | None:
    """timm's ``Mixup`` for the recipe's ``mixup`` section, or None when both alphas are 0. It maps
    (images, labels (B,)) to (mixed images, soft targets (B, num_classes)) in place, on any device."""
    cfg = recipe.mixup
    if not cfg.enabled:
        return None
    return Mixup(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha, prob=cfg.prob,
                 switch_prob=cfg.switch_prob, mode=cfg.mode, label_smoothing=cfg.label_smoothing,
                 num_classes=num_classes)


def updates_in_epoch(recipe: Recipe, batches_per_epoch: int) -> int:
    """Optimiser updates in an epoch of ``batches_per_epoch`` micro-batches (the last accumulation
    window of an epoch may be short and still updates)."""
    return -(-batches_per_epoch // recipe.train.grad_accum_steps)


def build_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer, updates_per_epoch: int) -> Scheduler:
    """The recipe's ``schedule`` section through timm's ``create_scheduler_v2`` (epochs from ``train``)."""
    cfg = recipe.schedule
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=cfg.sched,
        num_epochs=recipe.train.epochs,
        decay_milestones=cfg.decay_milestones,
        decay_rate=cfg.decay_rate,
        warmup_epochs=cfg.warmup_epochs,
        warmup_lr=cfg.warmup_lr,
        min_lr=cfg.min_lr,
        step_on_epochs=cfg.step_on_epochs,
        updates_per_epoch=updates_per_epoch,
        **cfg.kwargs,
    )
    return scheduler


def build_task(
    recipe: Recipe, student: nn.Module, teacher: nn.Module | None, teacher_cache: TeacherLogitCache | None = None
) -> DistillationTask:
    """The recipe's ``distill`` section as a :class:`DistillationTask` around ``student`` and ``teacher``
    (or the stored logits of ``teacher_cache``)."""
    d = recipe.distill
    return DistillationTask(
        student, teacher, build_criterion(d), ce_weight=d.ce_weight, kd_weight=d.kd_weight,
        warmup_epochs=d.warmup_epochs, heads=d.heads, teacher_cache=teacher_cache,
        label_smoothing=recipe.train.label_smoothing,
    )


def min_train_batch(recipe: Recipe) -> int:
    """The smallest training batch the recipe's loss can use: 2 with batch statistics, else 1."""
    criterion = build_criterion(recipe.distill)
    return 2 if getattr(criterion, "uses_batch_statistics", False) else 1


def open_teacher_cache(recipe: Recipe) -> TeacherLogitCache | None:
    """The recipe's ``teacher.cache`` opened (not yet checked against the recipe), or None."""
    caches = [t.cache for t in recipe.teachers if t.cache is not None]
    if not caches:
        return None
    return TeacherLogitCache.open(caches[0].dir, reuse_epochs=caches[0].reuse_epochs)


def build_parts(
    recipe: Recipe, *, loaders: tuple[DataLoader, DataLoader | None, DataInfo] | None = None
) -> Parts:
    """Student, teacher, task, optimiser and loaders of ``recipe`` (not yet prepared: see :meth:`Parts.prepare`).

    ``loaders``: (train, eval, info) to use instead of building them from ``recipe.data`` (benchmarks
    feed in-memory batches; ``eval`` may be None).

    With ``teacher.cache`` no teacher is built: the task reads the cache (checked against the recipe and
    the loss first), and the loader draws augmentations with the cache's seed. The teacher is built
    under a forked RNG, so the random stream training continues with is the same with or without it.
    """
    cfg = recipe.train
    cache = open_teacher_cache(recipe)
    if loaders is None:
        loaders = build_loaders(recipe.data, batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size,
                                seed=cfg.seed, min_batch=min_train_batch(recipe),
                                data_seed=cache.data_seed if cache is not None else None,
                                num_processes=PartialState().num_processes,  # repeated augmentation shards
                                batches_multiple=cfg.grad_accum_steps)  # streamed epochs: whole windows
    train_loader, eval_loader, info = loaders
    student = build_student(recipe.student, info)
    if cfg.grad_checkpointing:
        student.set_grad_checkpointing(True)
    if cfg.channels_last:
        student = student.to(memory_format=torch.channels_last)
    teacher = None
    if cache is None:
        with torch.random.fork_rng(devices=[]):
            teacher = build_teacher(recipe.teachers, info)
    if cfg.channels_last and teacher is not None:
        teacher = teacher.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(recipe, student)
    task = build_task(recipe, student, teacher, cache)
    if cache is not None:
        cache.check(recipe, info, num_rows=len(train_loader.dataset), criterion=task.criterion)
    return Parts(student, teacher, task, optimizer, train_loader, eval_loader, info,
                 mixup=build_mixup(recipe, info.num_classes))


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The lr of the optimiser's unscaled group (the largest: layer-wise decay only scales groups down)."""
    return max(group["lr"] for group in optimizer.param_groups)


def lr_per_update(recipe: Recipe, updates_per_epoch: int) -> list[list[float]]:
    """``[epoch][update]`` -> the lr of every optimiser update, stepping the recipe's real scheduler the way
    the trainer does (epoch-index 0 is the 1-based epoch 1)."""
    if updates_per_epoch < 1:
        raise ValueError(f"updates_per_epoch must be >= 1, got {updates_per_epoch}")
    # a stand-in model: layer decay only scales groups down, and current_lr reads the unscaled group
    optimizer = build_optimizer(dataclasses.replace(recipe, optim=dataclasses.replace(recipe.optim, layer_decay=None)),
                                nn.Linear(1, 1))
    scheduler = build_scheduler(recipe, optimizer, updates_per_epoch)
    lrs: list[list[float]] = []
    updates = 0
    for epoch in range(recipe.train.epochs):
        epoch_lrs = []
        for _ in range(updates_per_epoch):
            epoch_lrs.append(current_lr(optimizer))
            updates += 1
            if not recipe.schedule.step_on_epochs:
                scheduler.step_update(updates)
        lrs.append(epoch_lrs)
        scheduler.step(epoch + 1)
    return lrs


def lr_per_epoch(recipe: Recipe, updates_per_epoch: int = 1) -> list[float]:
    """The lr of the first update of each epoch (index 0 = 1-based epoch 1); for per-epoch schedules the
    lr of the whole epoch. ``updates_per_epoch`` matters only for per-update schedules."""
    return [epoch[0] for epoch in lr_per_update(recipe, updates_per_epoch)]
