"""Checkpoints: atomic replacement, completion marker, leftovers, no code execution, finiteness, disk full.

Checkpoints are written by the real ``save_checkpoint`` on a prepared tiny model and optimiser.
"""

import errno
import json
import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from safetensors.torch import load_file
from torch import nn

from vitkd.engine import checkpoint as ckpt
from vitkd.engine.checkpoint import (
    MANIFEST,
    CheckpointError,
    DiskFullError,
    NonFiniteWeightsError,
    TrainState,
    check_finite_weights,
    find_latest,
    load_checkpoint,
    non_finite_tensors,
    resolve_resume,
    save_checkpoint,
    tidy_checkpoints,
)


class _Setup:
    def __init__(self, seed: int = 0):
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
        self.accelerator = Accelerator(cpu=True)
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.state = TrainState()

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            loss = self.model(torch.randn(5, 4)).logsumexp(-1).mean()
            self.accelerator.backward(loss)
            self.optimizer.step()
            self.optimizer.zero_grad()
            self.state.global_step += 1

    def save(self, root: Path, keep: int = 5) -> Path:
        return save_checkpoint(self.accelerator, root, self.state.global_step, keep, self.state)


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_save_then_load_restores_weights_optimizer_and_state_without_custom_pickles(tmp_path):
    run = _Setup()
    run.step(3)
    run.state.best_top1, run.state.epoch = 55.5, 2
    folder = run.save(tmp_path)
    assert folder.name == "step_000000003"
    names = {p.name for p in folder.iterdir()}
    assert {MANIFEST, "train_state.json", "model.safetensors", "optimizer.bin", "random_states_0.pkl"} <= names
    assert not [n for n in names if n.startswith("custom_checkpoint")]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert set(manifest["files"]) == names - {MANIFEST}
    saved, momentum = _params(run.model), run.optimizer.state_dict()["state"][0]["momentum_buffer"].clone()

    other = _Setup(seed=1)
    load_checkpoint(other.accelerator, folder, other.state)
    assert other.state == run.state
    for key, value in _params(other.model).items():
        assert torch.equal(value, saved[key]), key
    assert torch.equal(other.optimizer.state_dict()["state"][0]["momentum_buffer"], momentum)


def test_keep_prunes_oldest_and_leaves_no_temporary_folders(tmp_path):
    run = _Setup()
    for _ in range(4):
        run.step()
        run.save(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000000003", "step_000000004"]


def test_kill_between_renames_of_a_resave_loses_nothing(tmp_path, monkeypatch):
    """Re-saving an existing step renames the old aside first; a kill right after that is repaired."""
    run = _Setup()
    run.step(2)
    run.save(tmp_path)
    real_replace, calls = os.replace, []

    def killed_after_first_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", killed_after_first_rename)
    with pytest.raises(KeyboardInterrupt):
        run.save(tmp_path)
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    assert not (tmp_path / "step_000000002").exists()  # the window the old code lost the checkpoint in
    assert find_latest(tmp_path) is None
    done = tidy_checkpoints(tmp_path)
    assert any("restored step_000000002" in line for line in done)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000000002"]
    load_checkpoint(_Setup().accelerator, find_latest(tmp_path), TrainState())


def test_resume_auto_skips_incomplete_folders_and_says_so(tmp_path):
    run = _Setup()
    run.step()
    first = run.save(tmp_path)
    run.step()
    second = run.save(tmp_path)
    (second / MANIFEST).unlink()  # as if killed before the marker
    lines = []
    assert resolve_resume("auto", tmp_path, say=lines.append) == first
    assert "skipping incomplete" in lines[0] and second.name in lines[0]
    with pytest.raises(CheckpointError, match="not a complete vitkd checkpoint"):
        resolve_resume(str(second), tmp_path)
    lines.clear()
    assert resolve_resume("auto", tmp_path / "nothing", say=lines.append) is None
    assert lines == [f"--resume auto: no checkpoint in {tmp_path / 'nothing'}, starting a fresh run"]


def test_tidy_removes_leftover_temporary_and_half_pruned_folders(tmp_path):
    run = _Setup()
    run.step()
    run.save(tmp_path)
    for name in (".tmp_step_000000009", ".trash_step_000000000", ".old_step_000000001"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"partial")
    tidy_checkpoints(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000000001"]


class _Evil:
    """Unpickling this creates the file ``path`` (stands for arbitrary code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _plant(folder: Path, marker: Path, forge_manifest: bool) -> None:
    for pkl in [*folder.glob("*.pkl"), folder / "custom_checkpoint_0.pkl", folder / "optimizer.bin"]:
        with pkl.open("wb") as f:
            pickle.dump(_Evil(marker), f)
    if forge_manifest:  # an attacker who also rewrites the hashes
        manifest = json.loads((folder / MANIFEST).read_text())
        manifest["files"] = ckpt._hash_files(folder)
        del manifest["files"][MANIFEST]
        (folder / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("forge_manifest", [False, True])
def test_code_in_a_crafted_checkpoint_never_runs(tmp_path, forge_manifest):
    run = _Setup()
    run.step()
    folder = run.save(tmp_path / "ckpt")
    marker = tmp_path / "pwned"
    _plant(folder, marker, forge_manifest)
    with pytest.raises(CheckpointError, match="refusing to load checkpoint") as err:
        load_checkpoint(_Setup().accelerator, folder, TrainState())
    assert not marker.exists()
    if not forge_manifest:
        assert "custom_checkpoint_0.pkl: not written by vitkd" in str(err.value)
        assert "random_states_0.pkl: content differs" in str(err.value)


_STATE = {"epoch": 1, "batches_done": 0, "global_step": 2, "best_top1": 1.0, "best_epoch": 0, "evals_logged": 0}


@pytest.mark.parametrize("state, message", [
    ({**_STATE, "__class__": 1}, "unknown"),
    ({k: v for k, v in _STATE.items() if k != "best_epoch"}, "missing"),
    ({**_STATE, "epoch": "1"}, "number"),
    ({**_STATE, "epoch": 1.5}, "integer"),
    ({**_STATE, "epoch": -1}, "integer"),
    ({**_STATE, "epoch": True}, "number"),
])
def test_train_state_accepts_only_its_own_typed_fields(state, message):
    target = TrainState()
    with pytest.raises(CheckpointError, match=message):
        target.load_state_dict(state)
    assert target == TrainState()


def test_train_state_round_trips_minus_infinity_through_json():
    state = TrainState()
    restored = TrainState(epoch=9)
    restored.load_state_dict(json.loads(json.dumps(state.state_dict())))
    assert restored == state


def test_non_finite_weights_and_optimizer_state_are_named_and_nothing_is_saved(tmp_path):
    run = _Setup()
    run.step()
    assert non_finite_tensors(run.model, run.optimizer) == []
    with torch.no_grad():
        run.model[2].weight[0, 0] = float("nan")
    run.optimizer.state[run.model[0].bias]["momentum_buffer"][1] = float("inf")
    assert non_finite_tensors(run.model, run.optimizer) == ["model.2.weight", "optimizer.0.bias.momentum_buffer"]
    with pytest.raises(NonFiniteWeightsError, match=r"2 weight/optimiser tensors hold NaN/inf .*ADVICE"):
        check_finite_weights(run.accelerator, run.model, run.optimizer, advice="ADVICE")


def test_divergence_advice_names_a_working_resume_command(tmp_path):
    assert "No checkpoint was written yet" in ckpt.divergence_advice(tmp_path / "c", 0.5, tmp_path)
    run = _Setup()
    run.step()
    run.save(tmp_path / "c")
    advice = ckpt.divergence_advice(tmp_path / "c", 0.5, tmp_path)
    assert "--resume auto --set optim.lr=0.05" in advice and "step_000000001" in advice


def test_disk_full_while_saving_names_folder_and_sizes_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    run = _Setup()
    run.step()
    good = run.save(tmp_path)
    run.step()

    def full(path):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "model.safetensors").write_bytes(b"x" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 91712 vs 91600")

    monkeypatch.setattr(run.accelerator, "save_state", full)
    with pytest.raises(DiskFullError, match=r"disk full while writing the checkpoint to .*tmp_step_000000002: \d+ "
                                            r"bytes free .*needs about \d+ bytes") as err:
        run.save(tmp_path)
    assert err.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name]


def test_disk_full_on_a_real_small_file_system(tmp_path):
    """A 64 KiB tmpfs (needs root to mount; skipped elsewhere): the real writers fail, the message is clear."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        run = _Setup()
        run.model = nn.Linear(200, 200)  # 160 KB of weights: cannot fit
        run.optimizer = torch.optim.SGD(run.model.parameters(), lr=0.1)
        run.model, run.optimizer = run.accelerator.prepare(run.model, run.optimizer)
        with pytest.raises(DiskFullError, match=str(mount / "ckpt")):
            run.save(mount / "ckpt")
        assert not list((mount / "ckpt").iterdir())
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_checkpoint_weights_match_the_model_file_accelerate_wrote(tmp_path):
    run = _Setup()
    run.step()
    folder = run.save(tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    assert torch.equal(tensors["0.weight"], run.model[0].weight.detach())
