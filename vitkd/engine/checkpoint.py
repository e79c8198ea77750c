"""Resumable checkpoints on top of ``Accelerator.save_state``: atomic, verified, and free of code execution.

Layout of one checkpoint ``<run>/checkpoints/step_<global step>/``::

    model.safetensors        student weights (Accelerate)
    optimizer.bin            optimiser state (Accelerate, torch pickle of tensors and numbers)
    random_states_<rank>.pkl RNG states of every process (Accelerate, torch pickle)
    [scaler.pt]              fp16 GradScaler state (Accelerate)
    train_state.json         :class:`TrainState` (vitkd, JSON)
    checkpoint.json          manifest: SHA-256 and size of every file above; written last = completion marker

Why the manifest and no registered custom objects: Accelerate unpickles registered objects
(``custom_checkpoint_<i>.pkl``) with ``weights_only=False``, which runs any code a crafted file
carries. vitkd registers nothing (the loop position is JSON; the timm scheduler is rebuilt from the
recipe and set to the restored epoch/step), so everything Accelerate unpickles goes through
``torch.load(weights_only=True)``; on top, :func:`load_checkpoint` refuses a folder holding any file
the manifest does not list or whose hash differs, before anything is read.

Why the renames: a kill at any moment must leave a loadable newest checkpoint. The state is written
to ``.tmp_step_N``; an existing ``step_N`` (a resumed run re-saving a step) is renamed aside to
``.old_step_N`` before the new one is renamed in and only then deleted; pruned checkpoints are
renamed to ``.trash_step_N`` before deletion. :func:`tidy_checkpoints` puts back an ``.old_`` folder
whose replacement never arrived and deletes the other leftovers.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
import pickle
import re
import shutil
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import load as accelerate_load
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = [
    "CheckpointError",
    "DiskFullError",
    "MANIFEST",
    "NonFiniteWeightsError",
    "TRAIN_STATE",
    "TrainState",
    "check_finite_weights",
    "disk_full_guard",
    "divergence_advice",
    "find_latest",
    "load_checkpoint",
    "non_finite_tensors",
    "prepare_resume",
    "resolve_resume",
    "save_checkpoint",
    "tidy_checkpoints",
    "verify_checkpoint",
]

MANIFEST = "checkpoint.json"
TRAIN_STATE = "train_state.json"
FORMAT = "vitkd-checkpoint/1"
_NAME = re.compile(r"^step_(\d+)$")
_LEFTOVER = re.compile(r"^\.(tmp|old|trash)_(step_\d+)$")
_RNG_FILE = re.compile(r"^random_states_\d+\.pkl$")


class CheckpointError(RuntimeError):
    """A checkpoint folder that is incomplete, altered or not written by vitkd; nothing was loaded."""


class NonFiniteWeightsError(RuntimeError):
    """Parameters or optimiser state hold NaN/inf; nothing was written (the last checkpoint is finite)."""


class DiskFullError(OSError):
    """The disk filled up while writing a checkpoint or export; the message names the folder and sizes."""


@dataclass
class TrainState:
    """Loop position saved with every checkpoint (as ``train_state.json``).

    ``epoch`` is 0-based; ``batches_done`` counts the micro-batches of that epoch already trained on,
    so a resumed run skips exactly those (``accelerator.skip_first_batches``). ``evals_logged`` counts
    the lines of ``metrics.jsonl`` written up to this state: a resumed run keeps only those, since it
    redoes every later evaluation.
    """

    epoch: int = 0
    batches_done: int = 0
    global_step: int = 0
    best_top1: float = float("-inf")
    best_epoch: int = 0
    evals_logged: int = 0

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        """Set every field from ``state``; refuses unknown or missing keys and wrong types (JSON numbers)."""
        if not isinstance(state, dict):
            raise CheckpointError(f"train state must be a JSON object, got {type(state).__name__}")
        hints = typing.get_type_hints(type(self))
        names = [f.name for f in dataclasses.fields(self)]
        unknown, missing = sorted(set(state) - set(names)), [n for n in names if n not in state]
        if unknown or missing:
            raise CheckpointError(f"train state keys differ from {names}: unknown {unknown}, missing {missing}")
        for name in names:
            setattr(self, name, _typed(name, state[name], hints[name]))


def _typed(name: str, value: object, hint: type) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointError(f"train state '{name}' must be a number, got {value!r}")
    if hint is int:
        if not isinstance(value, int) or value < 0:
            raise CheckpointError(f"train state '{name}' must be an integer >= 0, got {value!r}")
        return value
    if math.isnan(value):
        raise CheckpointError(f"train state '{name}' is NaN")
    return float(value)


# ----------------------------------------------------------------------------- saving


def save_checkpoint(accelerator: Accelerator, root: Path, global_step: int, keep: int, state: TrainState,
                    extra_models: Mapping[str, nn.Module] | None = None) -> Path:
    """Save the full training state to ``root/step_<global_step>`` atomically; keep the newest ``keep``.

    ``extra_models``: models outside Accelerate's state (e.g. ``{"ema": ema_student}``), each written as
    ``<name>.safetensors`` and listed in the manifest like every other file. Must be called on every process
    (each one writes its own RNG state). Raises :class:`DiskFullError` (after removing the partial folder)
    when the file system fills up.
    """
    final = root / f"step_{global_step:09d}"
    tmp = root / f".tmp_{final.name}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        tidy_checkpoints(root)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    with disk_full_guard(tmp, "checkpoint", cleanup=accelerator.is_main_process, estimate=_newest_size(root)):
        # estimate: the previous checkpoint's size (None for the first)
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _write_json(tmp / TRAIN_STATE, state.state_dict())
            for name, model in (extra_models or {}).items():
                save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / f"{name}.safetensors"))
            _write_json(tmp / MANIFEST, {"format": FORMAT, "global_step": global_step, "files": _hash_files(tmp)})
    if accelerator.is_main_process:
        _swap_in(tmp, final)
        for old in _complete(root)[:-keep]:
            _remove(old, root / f".trash_{old.name}")
    accelerator.wait_for_everyone()
    return final


def _swap_in(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` is renamed aside first and deleted last."""
    aside = final.with_name(f".old_{final.name}")
    if final.exists():
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(final, aside)
    os.replace(tmp, final)
    shutil.rmtree(aside, ignore_errors=True)


def _remove(folder: Path, trash: Path) -> None:
    """Delete ``folder`` so that no half-deleted folder ever carries a checkpoint's name."""
    os.replace(folder, trash)
    shutil.rmtree(trash)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_files(folder: Path) -> dict[str, dict]:
    return {p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in sorted(folder.iterdir())}


def _newest_size(root: Path) -> int | None:
    newest = find_latest(root)
    return sum(p.stat().st_size for p in newest.iterdir()) if newest else None


# ----------------------------------------------------------------------------- finding, tidying


def _checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def _complete(root: Path) -> list[Path]:
    return [p for p in _checkpoints(root) if (p / MANIFEST).is_file()]


def find_latest(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (one with its manifest); None when there is none."""
    found = _complete(root)
    return found[-1] if found else None


def tidy_checkpoints(root: Path) -> list[str]:
    """Finish what a killed save left behind (main process only); returns what was done, for the log.

    ``.old_step_N`` without a ``step_N`` is the complete previous checkpoint whose replacement never
    arrived: it is put back. Every other ``.tmp_``/``.old_``/``.trash_`` folder is deleted.
    """
    done = []
    if not root.is_dir():
        return done
    for path in sorted(root.iterdir()):
        match = _LEFTOVER.match(path.name)
        if not match:
            continue
        kind, name = match.groups()
        if kind == "old" and not (root / name).exists() and (path / MANIFEST).is_file():
            os.replace(path, root / name)
            done.append(f"restored {name} from an interrupted replacement")
        else:
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed leftover {path.name}")
    return done


def resolve_resume(resume: str | None, root: Path, say: Callable[[str], None] = print) -> Path | None:
    """``None`` -> no resume; ``"auto"`` -> newest complete checkpoint under ``root`` (None, said aloud, when
    there is none); else that folder, which must be a complete checkpoint."""
    if resume is None:
        return None
    if resume == "auto":
        latest = find_latest(root)
        skipped = [p.name for p in _checkpoints(root) if not (p / MANIFEST).is_file()]
        if skipped:
            say(f"--resume auto: skipping incomplete checkpoint folder(s) without {MANIFEST}: {', '.join(skipped)}")
        if latest is None:
            say(f"--resume auto: no checkpoint in {root}, starting a fresh run")
        return latest
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint folder (use --resume auto for the latest)")
    if not (path / MANIFEST).is_file():
        inner = find_latest(path / "checkpoints") or find_latest(path)
        hint = f" (did you mean {inner}?)" if inner else ""
        raise CheckpointError(
            f"--resume {resume}: not a complete vitkd checkpoint (no {MANIFEST}: it was interrupted while being "
            f"written, or is not a checkpoint folder){hint}; use --resume auto for the newest complete one"
        )
    return path


def prepare_resume(accelerator: Accelerator, resume: str | None, root: Path) -> Path | None:
    """Tidy ``root`` (main process), then :func:`resolve_resume` on every process; messages print once."""
    if accelerator.is_main_process:
        for line in tidy_checkpoints(root):
            accelerator.print(f"checkpoints: {line}")
    accelerator.wait_for_everyone()
    return resolve_resume(resume, root, say=accelerator.print)


# ----------------------------------------------------------------------------- loading


def verify_checkpoint(path: Path) -> dict:
    """Check ``path`` against its manifest before anything is unpickled; returns the manifest.

    Refuses (:class:`CheckpointError`) a missing or foreign manifest, a listed file that is missing or
    whose SHA-256 differs, and any file the manifest does not list (e.g. a ``custom_checkpoint_0.pkl``).
    """
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable {MANIFEST} ({err}); not a complete vitkd checkpoint") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"{path}/{MANIFEST} is not a {FORMAT} manifest: this folder was not written by "
                              "this version of vitkd")
    listed = manifest["files"]
    present = {p.name for p in path.iterdir()} - {MANIFEST}
    problems = [f"{name}: not written by vitkd" for name in sorted(present - set(listed))]
    problems += [f"{name}: missing" for name in sorted(set(listed) - present)]
    for name in sorted(present & set(listed)):
        entry = listed[name]
        if not isinstance(entry, dict) or _sha256(path / name) != entry.get("sha256"):
            problems.append(f"{name}: content differs from what was saved (SHA-256 mismatch)")
    if problems:
        raise CheckpointError(
            f"refusing to load checkpoint {path}: its files do not match its manifest ({'; '.join(problems)}). "
            "A damaged or altered checkpoint can run code when unpickled; resume from another step_* folder "
            "(or --resume auto after deleting this one)"
        )
    return manifest


def load_checkpoint(accelerator: Accelerator, path: Path, state: TrainState,
                    extra_models: Mapping[str, nn.Module] | None = None) -> list[str]:
    """Verify ``path`` (:func:`verify_checkpoint`), then restore ``state``, Accelerate's state and the
    ``extra_models`` :func:`save_checkpoint` wrote; returns the names of extra models the checkpoint lacks.

    Every pickle is read with ``weights_only=True``; the RNG files are pre-checked here because
    Accelerate only logs (at info level) a random-state file it cannot read and goes on.
    """
    verify_checkpoint(path)
    if accelerator.scaler is not None and not (path / "scaler.pt").is_file():
        raise CheckpointError(f"{path} was written without fp16 (no gradient-scaler state): resume it in the "
                              "precision it was trained in (bf16 or no), not fp16")
    state.load_state_dict(json.loads((path / TRAIN_STATE).read_text()))
    try:
        for rng_file in (p for p in path.iterdir() if _RNG_FILE.match(p.name)):
            accelerate_load(rng_file)
        accelerator.load_state(str(path))
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing to load checkpoint {path}: a file holds objects other than tensors and numbers "
            f"({str(err).splitlines()[0]}); vitkd loads pickles with weights_only=True only"
        ) from err
    missing = []
    for name, model in (extra_models or {}).items():
        file = path / f"{name}.safetensors"
        if file.is_file():
            model.load_state_dict(load_file(str(file), device=str(accelerator.device)))
        else:
            missing.append(name)
    return missing


# ----------------------------------------------------------------------------- finiteness


def non_finite_tensors(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> list[str]:
    """Names of the parameters/buffers of ``model`` and optimiser state tensors holding NaN or ±inf."""
    named = [(f"model.{n}", t) for n, t in model.state_dict().items() if t.is_floating_point()]
    if optimizer is not None:
        names = {id(p): n for n, p in model.named_parameters()}
        for param, slots in optimizer.state.items():
            for slot, value in slots.items():
                if torch.is_tensor(value) and value.is_floating_point():
                    named.append((f"optimizer.{names.get(id(param), '?')}.{slot}", value))
    if not named:
        return []
    finite = torch.stack([t.detach().isfinite().all() for _, t in named]).cpu()
    return [name for (name, _), ok in zip(named, finite.tolist(), strict=True) if not ok]


def check_finite_weights(
    accelerator: Accelerator, model: nn.Module, optimizer: torch.optim.Optimizer | None, *, advice: str
) -> None:
    """Raise :class:`NonFiniteWeightsError` on every process if any process holds a non-finite tensor.

    Call before every checkpoint and export (on every process). ``advice`` ends the message
    (see :func:`divergence_advice`).
    """
    bad = non_finite_tensors(accelerator.unwrap_model(model), optimizer)
    count = accelerator.reduce(torch.tensor(len(bad), device=accelerator.device), reduction="sum").item()
    if count:
        shown = ", ".join(bad[:5]) + (f" ... ({len(bad)} in all)" if len(bad) > 5 else "")
        raise NonFiniteWeightsError(
            f"training diverged: {int(count)} weight/optimiser tensors hold NaN/inf ({shown or 'on another process'}); "
            f"nothing was saved. {advice}"
        )


def divergence_advice(ckpt_root: Path, lr: float, run_dir: Path) -> str:
    """What to do after a divergence, phrased so that it works: resume overrides of optim.lr apply."""
    lower = f"{lr / 10:.3g}"
    kept = _complete(ckpt_root)
    if kept:
        older = (f"resume an older one (--resume {kept[0]})" if len(kept) > 1 else "")
        return (f"The newest checkpoint {kept[-1]} holds finite weights: continue it with a lower learning rate, e.g. "
                f"`--resume auto --set optim.lr={lower}` (optionally --set train.clip_grad=1.0, or "
                "train.mixed_precision=bf16 instead of fp16); these overrides apply on resume. If it diverges again "
                f"at once, its weights were already damaged: {older + ' or ' if older else ''}start over with the "
                f"lower lr in another train.output_dir")
    return (f"No checkpoint was written yet: start again with a lower learning rate, e.g. --set optim.lr={lower} "
            f"(optionally train.clip_grad=1.0), into another train.output_dir or after deleting {run_dir}")


# ----------------------------------------------------------------------------- disk full


_DISK_FULL_MARKERS = ("No space left", "os error 28", "unexpected pos", "PytorchStreamWriter failed")


def _is_disk_full(err: BaseException) -> bool:
    """ENOSPC as Python, safetensors (Rust) and torch.save's zip writer report it (the last without errno)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(marker in str(err) for marker in _DISK_FULL_MARKERS)


@contextmanager
def disk_full_guard(folder: Path, what: str, *, cleanup: bool = True, estimate: int | None = None) -> Iterator[None]:
    """Turn a disk-full failure while writing ``folder`` into :class:`DiskFullError` naming the folder and sizes.

    With ``cleanup`` the partial ``folder`` is deleted first (so the space is given back); other errors
    pass through unchanged.
    """
    try:
        yield
    except Exception as err:
        if not _is_disk_full(err):
            raise
        written = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
        if cleanup:
            shutil.rmtree(folder, ignore_errors=True)
        free = shutil.disk_usage(folder.parent if folder.parent.exists() else Path.cwd()).free
        need = f"about {estimate} bytes" if estimate else f"more than the {written} bytes written"
        raise DiskFullError(
            errno.ENOSPC,
            f"disk full while writing the {what} to {folder}: {free} bytes free on that file system, the {what} "
            f"needs {need}. Free space (older runs, checkpoints) or point train.output_dir to another disk, "
            "then continue with --resume auto",
        ) from err
