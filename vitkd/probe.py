"""Linear probing (the paper's Fig. 4a): how well a frozen model's features transfer to another dataset.

The model is frozen; every image of the probe dataset goes through ``forward_features`` and
``forward_head(pre_logits=True)`` once, through the evaluation pipeline of the model's own data config
(input size, mean/std, crop_pct, interpolation: :func:`vitkd.export.data_config_for`), without
augmentation; then a linear classifier is fitted to the cached features by full-batch L-BFGS (multinomial logistic regression with an L2 penalty on the weights, on
standardised features) and scored on the evaluation split.

    model = load_model("runs/cifar100/wrn_40_2-wrn_16_2_luminet/seed0/student")
    result = linear_probe(model, data_config_for(model, "zh-plus/tiny-imagenet", eval_split="valid"))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from vitkd.data import DataConfig, build_eval_loader
from vitkd.engine.metrics import per_sample_stats, summarise

__all__ = [
    "ProbeFeatures",
    "ProbeResult",
    "extract_features",
    "fit_linear",
    "linear_probe",
    "probe_features",
]


@dataclass(frozen=True)
class ProbeResult:
    """Scores of the fitted probe: ``top1``/``top5``/``ece`` (%) and ``nll`` (nats) on the evaluation
    split, ``train_top1`` (%) on the features it was fitted to, and the sizes involved."""

    top1: float
    top5: float
    nll: float
    ece: float
    train_top1: float
    feature_dim: int
    num_classes: int
    num_train: int
    num_eval: int


@torch.no_grad()
def extract_features(
    model: nn.Module, loader: DataLoader, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """Pre-logit features (N, D) float32 and labels (N,) int64 of every batch of ``loader``, on CPU.

    ``model`` is put in eval mode and moved to ``device`` (in place).
    """
    model.eval().to(device)
    features, labels = [], []
    for images, targets in loader:
        pooled = model.forward_head(model.forward_features(images.to(device)), pre_logits=True)
        features.append(pooled.float().cpu())
        labels.append(targets)
    return torch.cat(features), torch.cat(labels)


def fit_linear(
    features: Tensor, labels: Tensor, num_classes: int, *, weight_decay: float = 1e-4, max_iter: int = 100
) -> nn.Linear:
    """Multinomial logistic regression on (N, D) ``features`` by full-batch L-BFGS.

    Minimises ``CE + weight_decay/2 · ‖W‖²`` on features standardised with their own per-dimension
    mean/std (so one ``weight_decay`` suits any feature scale); the standardisation is then folded into
    the returned layer, which takes raw features. ``max_iter``: L-BFGS iterations, each one pass over
    the features. Deterministic: the layer starts at zero.
    """
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        shapes = f"{tuple(features.shape)} and {tuple(labels.shape)}"
        raise ValueError(f"expected features (N, D) and labels (N,), got {shapes}")
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    x = (features - mean) / std
    layer = nn.Linear(features.shape[1], num_classes)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(layer(x), labels) + 0.5 * weight_decay * layer.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():  # W (x - mean) / std + b  ==  (W / std) x + (b - (W / std) mean)
        layer.weight.div_(std)
        layer.bias.sub_(layer.weight @ mean)
    return layer.requires_grad_(False)


class ProbeFeatures(NamedTuple):
    """Cached pre-logit features (N, D) float32 and labels (N,) int64 of both splits, on CPU."""

    train_x: Tensor
    train_y: Tensor
    eval_x: Tensor
    eval_y: Tensor
    num_classes: int


def probe_features(
    model: nn.Module, data: DataConfig, *, batch_size: int = 256, device: torch.device | str = "cpu"
) -> ProbeFeatures:
    """Features of every image of ``data``'s training split (``data.train_split``) and evaluation split
    (see :func:`vitkd.data.build_eval_loader`), each image once, both through the evaluation pipeline
    (no augmentation; :func:`vitkd.export.data_config_for` gives the model's own)."""
    train_split = dataclasses.replace(data, eval_split=data.train_split, max_eval_samples=None)
    train_loader, info = build_eval_loader(train_split, batch_size=batch_size)
    eval_loader, eval_info = build_eval_loader(data, batch_size=batch_size)
    if eval_info.class_names != info.class_names:
        raise ValueError(f"the splits of {data.source!r} have different classes: {info.class_names} vs "
                         f"{eval_info.class_names}")
    return ProbeFeatures(
        *extract_features(model, train_loader, device), *extract_features(model, eval_loader, device),
        num_classes=info.num_classes,
    )


def linear_probe(
    model: nn.Module,
    data: DataConfig,
    *,
    batch_size: int = 256,
    max_iter: int = 100,
    weight_decay: float = 1e-4,
    device: torch.device | str = "cpu",
) -> ProbeResult:
    """Fit a linear classifier on ``model``'s frozen features of ``data``'s training split and score it
    on its evaluation split."""
    f = probe_features(model, data, batch_size=batch_size, device=device)
    layer = fit_linear(f.train_x, f.train_y, f.num_classes, weight_decay=weight_decay, max_iter=max_iter)
    with torch.no_grad():
        scores = summarise(per_sample_stats(layer(f.eval_x), f.eval_y))
        train_top1 = summarise(per_sample_stats(layer(f.train_x), f.train_y))["top1"]
    return ProbeResult(
        top1=scores["top1"], top5=scores["top5"], nll=scores["nll"], ece=scores["ece"],
        train_top1=train_top1, feature_dim=f.train_x.shape[1], num_classes=f.num_classes,
        num_train=len(f.train_y), num_eval=len(f.eval_y),
    )
