"""Teacher-logit cache: exact replay (bit-identical students), refusals, resumable writing, top-k rebuild.

Also the resume check of issue 13: augmented training interrupted by ``train.max_steps`` and resumed gives
the uninterrupted run's weights bit for bit.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml
from safetensors.torch import save_file

from vitkd.engine import train
from vitkd.recipe import load_recipe
from vitkd.teacher_cache import (
    CacheMismatchError,
    TeacherLogitCache,
    dense_from_topk,
    verify_cache,
    write_cache,
)

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def recipe_path(tmp_path_factory) -> Path:
    """A digits recipe with random crop + flip, KD from a cifar_resnet20 checkpoint, 2 short epochs."""
    root = tmp_path_factory.mktemp("cache")
    torch.manual_seed(0)
    save_file(timm.create_model("cifar_resnet20", num_classes=10).state_dict(), str(root / "teacher.safetensors"))
    recipe = {
        "name": "cache_test",
        "data": {"source": "digits", "transform": "cifar", "num_workers": 0, "train_fraction": 0.2},
        "teacher": {"name": "cifar_resnet20", "checkpoint": str(root / "teacher.safetensors")},
        "student": "cifar_resnet8",
        "distill": {"method": "kd", "kwargs": {"temperature": 4.0}, "ce_weight": 0.1, "kd_weight": 0.9},
        "optim": {"lr": 0.01},
        "schedule": {"decay_milestones": [2]},
        "train": {"epochs": 2, "batch_size": 32, "checkpoint_every": 0, "output_dir": str(root / "runs")},
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def dense_cache(recipe_path) -> Path:
    out = recipe_path.parent / "dense"
    write_cache(load_recipe(recipe_path), out, dtype="float32")
    return out


def student_bytes(recipe_path: Path, out: str, *overrides: str) -> bytes:
    recipe = load_recipe(recipe_path, [f"train.output_dir={recipe_path.parent / out}", *overrides])
    train(recipe)
    return (recipe_path.parent / out / "student" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("method", ["kd", "luminet"])
def test_float32_cache_trains_the_bit_identical_student(recipe_path, dense_cache, method):
    loss = [f"distill.method={method}", "distill.kwargs={}"]
    live = student_bytes(recipe_path, f"live_{method}", *loss)
    cached = student_bytes(recipe_path, f"cached_{method}", *loss, f"teacher.cache={dense_cache}")
    assert live == cached


def test_verify_recomputes_entries_with_the_live_teacher(recipe_path, dense_cache):
    assert verify_cache(load_recipe(recipe_path), dense_cache, 6) < 1e-4


def test_topk_cache_refused_by_batch_statistics_losses_and_kept_classes_exact(recipe_path):
    out = recipe_path.parent / "top3"
    write_cache(load_recipe(recipe_path), out, epochs=1, dtype="float16", topk=3)
    recipe = load_recipe(recipe_path, [f"teacher.cache={out}", "distill.method=luminet", "distill.kwargs={}",
                                       "train.epochs=1"])
    with pytest.raises(CacheMismatchError, match="top-3 logits only.*statistics of every class's logit"):
        train(recipe)
    assert verify_cache(load_recipe(recipe_path), out, 4) < 2e-2  # float16 rounding of logits of size ~1


def test_dense_from_topk_keeps_probabilities_of_kept_classes():
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(0)) * 3
    labels = torch.tensor([0, 9, 3, 3])
    values, indices = logits.topk(3, dim=1)
    rebuilt = dense_from_topk(values, indices, logits.gather(1, labels[:, None])[:, 0], labels,
                              logits.logsumexp(1), 10)
    kept = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, indices, True).scatter_(1, labels[:, None], True)
    p, q = logits.softmax(1), rebuilt.softmax(1)
    torch.testing.assert_close(q[kept], p[kept])
    for row in range(4):  # the rest shares the remaining mass evenly
        rest = q[row][~kept[row]]
        torch.testing.assert_close(rest, rest.mean().expand_as(rest))
        torch.testing.assert_close(rest.sum(), p[row][~kept[row]].sum())


def test_mismatching_cache_lists_the_differences(recipe_path, dense_cache, tmp_path):
    torch.manual_seed(1)  # the same architecture with other weights: told apart by content, not by path
    save_file(timm.create_model("cifar_resnet20", num_classes=10).state_dict(), str(tmp_path / "other.safetensors"))
    recipe = load_recipe(recipe_path, [f"teacher.cache={dense_cache}", "data.transform=none",
                                       f"teacher.checkpoint={tmp_path / 'other.safetensors'}"])
    with pytest.raises(CacheMismatchError) as err:
        train(recipe)
    message = str(err.value)
    assert "data.transform: cache 'cifar', recipe 'none'" in message
    assert "teacher[0].sha256: cache '" in message


def test_past_the_cached_epochs_refused_unless_reused(recipe_path, dense_cache):
    longer = [f"teacher.cache={dense_cache}", "train.epochs=3", "train.max_steps=1"]
    with pytest.raises(CacheMismatchError, match="holds 2 epoch.*reuse_epochs: true"):
        train(load_recipe(recipe_path, longer))
    cache = TeacherLogitCache.open(dense_cache, reuse_epochs=True)
    rows = torch.arange(5)
    assert torch.equal(cache.logits(2, rows, 0), cache.logits(0, rows, 0))
    assert not torch.equal(cache.logits(1, rows, 0), cache.logits(0, rows, 0))


def test_killed_writer_resumes_at_the_missing_epoch(recipe_path, dense_cache, tmp_path, capsys):
    out = tmp_path / "copy"
    write_cache(load_recipe(recipe_path), out, epochs=1)
    before = (out / "epoch_0000").stat().st_mtime_ns
    capsys.readouterr()
    write_cache(load_recipe(recipe_path), out, epochs=1)
    assert "0 of 1 epochs to write" in capsys.readouterr().out
    assert (out / "epoch_0000").stat().st_mtime_ns == before
    with pytest.raises(CacheMismatchError, match="holds another cache; differences: .*dtype: cache 'float32'"):
        write_cache(load_recipe(recipe_path), out, epochs=1, dtype="float16")
    manifest = json.loads((dense_cache / "manifest.json").read_text())
    assert manifest["teacher"][0]["sha256"] and manifest["epochs"] == 2 and manifest["num_classes"] == 10


def test_resume_with_augmentation_is_bit_identical(recipe_path):
    """Issue 13: scripts/distill.py interrupted by train.max_steps, then --resume, equals the full run."""
    main = runpy.run_path(str(REPO / "scripts/distill.py"))["main"]
    plain = ["--recipe", str(recipe_path), "--set", "distill.method=none", "--set", "teacher=null"]
    runs = recipe_path.parent
    main([*plain, "--set", f"train.output_dir={runs / 'full'}"])
    main([*plain, "--set", f"train.output_dir={runs / 'parts'}", "--set", "train.max_steps=11"])
    main([*plain, "--set", f"train.output_dir={runs / 'parts'}", "--resume", "auto"])
    full = (runs / "full" / "student" / "model.safetensors").read_bytes()
    assert (runs / "parts" / "student" / "model.safetensors").read_bytes() == full


def test_two_cpu_processes_write_one_cache_that_reads_like_a_single_process_one(recipe_path, dense_cache, tmp_path):
    out = tmp_path / "two"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", "29743", str(REPO / "scripts/cache_teacher.py"),
         "--recipe", str(recipe_path), "--out", str(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (out / "epoch_0001").iterdir()) == [
        "shard-00000-of-00002.safetensors", "shard-00001-of-00002.safetensors"]
    two, one = TeacherLogitCache.open(out), TeacherLogitCache.open(dense_cache)
    rows = torch.arange(two.manifest["num_rows"])
    for epoch in range(2):
        assert torch.equal(two.logits(epoch, rows, 0), one.logits(epoch, rows, 0))


def test_task_reads_the_cache_by_indices_and_refuses_batches_without_them(dense_cache):
    from vitkd.engine.task import DistillationTask
    from vitkd.losses import build_loss

    cache = TeacherLogitCache.open(dense_cache)
    student = timm.create_model("cifar_resnet8", num_classes=10)
    task = DistillationTask(student, None, build_loss("kd"), teacher_cache=cache)
    images, targets, rows = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2]), torch.tensor([5, 0, 7])
    task.set_epoch(2)  # 1-based: reads cached epoch 1
    out = task(images, targets, rows)
    assert torch.allclose(out["kd"], build_loss("kd")(student(images), cache.logits(1, rows, 0)))
    with pytest.raises(ValueError, match="needs the batch's dataset indices"):
        task(images, targets)


def test_cache_speed_times_the_three_ways_through_the_engine(tmp_path):
    from vitkd.benchmark.cache_speed import cache_speed

    r = cache_speed(Path(__file__).resolve().parents[1] / "recipes/cifar100/table1/resnet56-resnet20_kd.yaml",
                    tmp_path, per_class=2, reps=1)
    assert min(r["live_s"], r["cached_s"], r["no_teacher_s"], r["write_s"]) > 0
    assert r["cached_over_live"] == pytest.approx(r["cached_s"] / r["live_s"])
    assert r["bytes_per_sample_epoch"] == 100 * 4 + 16  # float32 logits of 100 classes + row index and label
