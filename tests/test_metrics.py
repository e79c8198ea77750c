"""Evaluation metrics against plain-Python re-derivations."""

import math

import torch

from vitkd.engine.metrics import ECE_BINS, per_sample_stats, summarise


def reference(logits, targets, bins=ECE_BINS):
    probs = torch.softmax(logits.double(), -1).tolist()
    rows = []
    for p, y in zip(probs, targets.tolist(), strict=True):
        order = sorted(range(len(p)), key=lambda c: -p[c])
        rows.append((order[0] == y, y in order[:5], -math.log(p[y]), p[order[0]]))
    n = len(rows)
    ece = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [r for r in rows if lo < r[3] <= hi]
        if members:
            acc = sum(r[0] for r in members) / len(members)
            conf = sum(r[3] for r in members) / len(members)
            ece += len(members) / n * abs(acc - conf)
    return {
        "top1": 100 * sum(r[0] for r in rows) / n,
        "top5": 100 * sum(r[1] for r in rows) / n,
        "nll": sum(r[2] for r in rows) / n,
        "ece": 100 * ece,
    }


def test_metrics_match_a_loop_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 10, generator=g) * 3
    targets = torch.randint(0, 10, (300,), generator=g)
    got = summarise(per_sample_stats(logits, targets))
    want = reference(logits, targets)
    for key, value in want.items():
        assert math.isclose(got[key], value, rel_tol=1e-5, abs_tol=1e-5), key
    assert got["samples"] == 300


def test_perfectly_confident_and_correct_model_is_calibrated():
    targets = torch.arange(8) % 4
    logits = torch.nn.functional.one_hot(targets, 4).float() * 100
    got = summarise(per_sample_stats(logits, targets))
    assert got["top1"] == 100 and got["ece"] < 1e-6 and got["nll"] < 1e-6


def test_overconfident_wrong_model_has_high_ece():
    targets = torch.zeros(10, dtype=torch.long)
    logits = torch.nn.functional.one_hot(torch.ones(10, dtype=torch.long), 3).float() * 100
    got = summarise(per_sample_stats(logits, targets))
    assert got["top1"] == 0 and got["ece"] > 99
