"""Evaluation over a (possibly sharded) loader, exactly once per sample across processes."""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from vitkd.engine.metrics import per_sample_stats, summarise

__all__ = ["evaluate", "load_model"]


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, accelerator: Accelerator) -> dict[str, float]:
    """Top-1/top-5 (%), NLL (nats) and ECE (%) of ``model`` on ``loader``.

    ``loader`` is an Accelerate-prepared loader; ``gather_for_metrics`` drops the samples Accelerate
    duplicates to even out the last batch, so every sample counts once. The model is left in eval
    mode; callers put it back into training mode.
    """
    model.eval()
    chunks = []
    for images, targets in loader:
        with accelerator.autocast():
            logits = model(images)
        if isinstance(logits, tuple):  # a distilled DeiT outside eval mode: average its two heads
            logits = torch.stack(logits).mean(0)
        chunks.append(accelerator.gather_for_metrics(per_sample_stats(logits, targets)))
    return summarise(torch.cat(chunks))


def load_model(source: str | Path, *, arch: str | None = None, num_classes: int | None = None,
               in_chans: int = 3) -> nn.Module:
    """A model to evaluate from an export folder (``config.json`` + ``model.safetensors``, loaded with
    ``timm.create_model('local-dir:…')``) or from a weights file / checkpoint folder plus ``arch``."""
    import timm

    from vitkd.models import load_weights

    source = Path(source)
    if (source / "config.json").is_file():
        return timm.create_model(f"local-dir:{source}", pretrained=True)
    if arch is None or num_classes is None:
        raise ValueError(f"{source} is not an export folder (no config.json): pass the architecture "
                         "(--arch, or --recipe whose student it is) so the weights can be loaded into it")
    model = timm.create_model(arch, num_classes=num_classes, in_chans=in_chans)
    load_weights(model, source)
    return model
