"""The distillation engine: training task, Accelerate loop, checkpoints, evaluation and metrics."""

from vitkd.engine.evaluate import evaluate
from vitkd.engine.task import DistillationTask, TeacherEnsemble
from vitkd.engine.trainer import NonFiniteLossError, RunPreempted, train

__all__ = ["DistillationTask", "NonFiniteLossError", "RunPreempted", "TeacherEnsemble", "evaluate", "train"]
