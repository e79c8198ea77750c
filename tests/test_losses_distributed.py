"""LumiNetLoss(global_stats=True) on two gloo processes (CPU) versus one process on the whole batch.

Relations tested (rank r holds rows R_r of the global batch of N rows, loss_r is the batch mean over
R_r with statistics over all N rows):

* value: loss_r equals the one-process computation restricted to R_r; with equal shares,
  mean_r loss_r equals the one-process loss L on the whole batch;
* gradient: the all-reduce's backward makes d loss_r / d z_r on rank r equal d(Σ_r' loss_r') / d z_r,
  which with equal shares is world_size · dL / d z_r, so DDP's averaging over ranks yields exactly
  the one-process parameter gradient.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.testing import assert_close

from vitkd.losses import LumiNetLoss, perception

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only add overhead

WORLD_SIZE = 2
SPLITS = {"equal": [6, 6], "unequal": [5, 7]}  # rows per rank
TIMEOUT_S = 120
LOSS_KWARGS = {"temperature": 2.0, "alpha": 3.0, "global_stats": True}


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return tuple(s * torch.randn(12, 10, generator=g, dtype=torch.float64) for s in (1.0, 2.0))


def rank_rows(sizes: list[int], rank: int) -> slice:
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


def _worker(rank: int, store_path: str, out_dir: str) -> None:
    torch.set_num_threads(1)  # 12×10 tensors: intra-op threads would only contend for the cores
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store_path}",  # a file rendezvous: no port to pick or collide on
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=timedelta(seconds=TIMEOUT_S),
    )
    try:
        student, teacher = global_batch()
        results = {}
        for split, sizes in SPLITS.items():
            rows = rank_rows(sizes, rank)
            local = student[rows].clone().requires_grad_()
            loss = LumiNetLoss(**LOSS_KWARGS)(local, teacher[rows])
            loss.backward()
            results[split] = (loss.detach(), local.grad)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict]:
    """Run the two gloo workers once; return each rank's {split: (loss, grad of its logits)}."""
    tmp = tmp_path_factory.mktemp("gloo")
    context = mp.start_processes(
        _worker, args=(str(tmp / "store"), str(tmp)), nprocs=WORLD_SIZE, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {WORLD_SIZE} gloo workers did not finish within {TIMEOUT_S} s")
    return [torch.load(tmp / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


def one_process(rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """One process, statistics over the whole batch: the mean loss over ``rows`` and its gradient
    with respect to the whole batch's student logits."""
    student, teacher = global_batch()
    student.requires_grad_()
    temperature, alpha = LOSS_KWARGS["temperature"], LOSS_KWARGS["alpha"]
    log_p_s = (perception(student) / temperature).log_softmax(1)
    log_p_t = (perception(teacher) / temperature).log_softmax(1)
    per_sample = alpha**2 * (log_p_t.exp() * (log_p_t - log_p_s)).sum(1)
    loss = per_sample[rows].mean()
    (grad,) = torch.autograd.grad(loss, student)
    return loss.detach(), grad


@pytest.mark.parametrize("split", list(SPLITS))
def test_each_rank_computes_its_share_with_global_statistics(rank_results, split):
    sizes = SPLITS[split]
    for rank in range(WORLD_SIZE):
        loss, _ = rank_results[rank][split]
        expected, _ = one_process(rank_rows(sizes, rank))
        assert_close(loss, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("split", list(SPLITS))
def test_rank_gradient_is_gradient_of_summed_rank_losses(rank_results, split):
    sizes = SPLITS[split]
    summed_grad = sum(one_process(rank_rows(sizes, rank))[1] for rank in range(WORLD_SIZE))
    for rank in range(WORLD_SIZE):
        _, grad = rank_results[rank][split]
        assert_close(grad, summed_grad[rank_rows(sizes, rank)], rtol=1e-10, atol=1e-12)


def test_equal_shares_reproduce_one_process_on_the_whole_batch(rank_results):
    """What DDP needs: mean of rank losses == whole-batch loss; rank grads / world size == its grad."""
    student, teacher = global_batch()
    student.requires_grad_()
    whole = LumiNetLoss(**LOSS_KWARGS)(student, teacher)
    (whole_grad,) = torch.autograd.grad(whole, student)
    losses, grads = zip(*(result["equal"] for result in rank_results), strict=True)
    assert_close(torch.stack(losses).mean(), whole.detach(), rtol=1e-10, atol=1e-12)
    assert_close(torch.cat(grads) / WORLD_SIZE, whole_grad, rtol=1e-10, atol=1e-12)
    local_only = LumiNetLoss(**{**LOSS_KWARGS, "global_stats": False})(student[:6], teacher[:6])
    assert not torch.allclose(local_only.detach(), losses[0])  # the global statistics did matter
