"""The distillation engine: training task, Accelerate loop, checkpoints, evaluation and metrics."""

from vitkd.engine.evaluate import evaluate
from vitkd.engine.task import DistillationTask, TeacherEnsemble
from vitkd.engine.trainer import NonFiniteLossError, train

__all__ = ["DistillationTask", "NonFiniteLossError", "TeacherEnsemble", "evaluate", "train"]
