"""Classification metrics over a whole evaluation set: top-1, top-5, NLL and expected calibration error.

Each batch is reduced to a few numbers per sample (:func:`per_sample_stats`), which are gathered
across processes, so evaluation moves B×4 values instead of B×C logits.

Hand-written rather than torchmetrics (not a dependency): these few lines give top-k, NLL and ECE from one
gathered (N, 4) tensor with Accelerate's ``gather_for_metrics`` (which drops the samples it padded), and the
per-sample statistics also feed the benchmark's reliability diagrams.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ECE_BINS", "NonFiniteLogitsError", "per_sample_stats", "summarise"]

ECE_BINS = 15

class NonFiniteLogitsError(ValueError):
    """A model produced NaN/inf logits on the evaluation set (e.g. a teacher checkpoint holding NaN)."""


# columns of the per-sample statistics tensor
_TOP1, _TOP5, _NLL, _CONF = range(4)


def per_sample_stats(logits: Tensor, targets: Tensor) -> Tensor:
    """(B, C) logits and (B,) targets -> (B, 4) float32: [top-1 hit, top-5 hit, NLL (nats), confidence]."""
    logits = logits.float()
    log_probs = F.log_softmax(logits, dim=-1)
    k = min(5, logits.shape[-1])
    topk = logits.topk(k, dim=-1).indices
    hits = topk == targets[:, None]
    nll = -log_probs.gather(1, targets[:, None]).squeeze(1)
    confidence = log_probs.max(dim=-1).values.exp()
    return torch.stack([hits[:, 0].float(), hits.any(dim=-1).float(), nll, confidence], dim=1)


def summarise(stats: Tensor, bins: int = ECE_BINS, *, model_name: str = "the model") -> dict[str, float]:
    """(N, 4) statistics of the whole set -> {"top1", "top5" (%), "nll" (nats), "ece" (%), "samples"}.

    Raises :class:`NonFiniteLogitsError` naming ``model_name`` when any sample's logits were NaN/inf
    (their confidence is NaN), instead of a meaningless ECE.

    ECE: equal-width confidence bins on (0, 1]; sum over bins of |accuracy − mean confidence| weighted
    by the bin's share of samples (Guo et al., 2017).
    """
    if stats.numel() == 0:
        raise ValueError("no evaluation samples: the eval split is empty")
    bad = int((~stats[:, _CONF].isfinite()).sum())
    if bad:
        raise NonFiniteLogitsError(
            f"{model_name} produced NaN/inf logits for {bad} of {stats.shape[0]} evaluation samples: its weights "
            "hold non-finite values or overflow in this precision; check the checkpoint it was loaded from "
            "(e.g. with vitkd.models.load_weights and torch.isfinite), or evaluate in float32"
        )
    stats = stats.double()
    correct, confidence = stats[:, _TOP1], stats[:, _CONF]
    bin_index = (confidence * bins).ceil().clamp(1, bins).long() - 1
    acc_sum = torch.bincount(bin_index, weights=correct, minlength=bins)
    conf_sum = torch.bincount(bin_index, weights=confidence, minlength=bins)
    ece = (acc_sum - conf_sum).abs().sum() / stats.shape[0]
    return {
        "top1": 100.0 * correct.mean().item(),
        "top5": 100.0 * stats[:, _TOP5].mean().item(),
        "nll": stats[:, _NLL].mean().item(),
        "ece": 100.0 * ece.item(),
        "samples": int(stats.shape[0]),
    }
