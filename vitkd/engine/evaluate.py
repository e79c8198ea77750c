"""Evaluation over a (possibly sharded) loader, exactly once per sample across processes."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from vitkd.engine.metrics import per_sample_stats, summarise

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, accelerator: Accelerator, *, model_name: str = "the model"
             ) -> dict[str, float]:
    """Top-1/top-5 (%), NLL (nats) and ECE (%) of ``model`` on ``loader``.

    ``loader`` is an Accelerate-prepared loader; ``gather_for_metrics`` drops the samples Accelerate
    duplicates to even out the last batch, so every sample counts once. The model is left in eval
    mode; callers put it back into training mode. ``model_name`` names the model in errors (NaN logits).
    """
    model.eval()
    chunks = []
    for images, targets in loader:
        with accelerator.autocast():
            logits = model(images)
        if isinstance(logits, tuple):  # a distilled DeiT outside eval mode: average its two heads
            logits = torch.stack(logits).mean(0)
        chunks.append(accelerator.gather_for_metrics(per_sample_stats(logits, targets)))
    return summarise(torch.cat(chunks), model_name=model_name)
