"""Resumable checkpoints on top of ``Accelerator.save_state``, written atomically and kept bounded.

Accelerate writes a state folder in place; a crash halfway would leave a folder that looks like the
latest checkpoint but cannot be loaded. Here every process writes into a hidden temporary folder and
the main process renames it to ``step_<global step>`` only once all processes are done, so a folder
with the final name is always complete.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from accelerate import Accelerator

__all__ = ["TrainState", "find_latest", "resolve_resume", "save_checkpoint"]

_NAME = re.compile(r"^step_(\d+)$")


@dataclass
class TrainState:
    """Loop position saved with every checkpoint (registered with ``accelerator.register_for_checkpointing``).

    ``epoch`` is 0-based; ``batches_done`` counts the micro-batches of that epoch already trained on,
    so a resumed run skips exactly those (``accelerator.skip_first_batches``).
    """

    epoch: int = 0
    batches_done: int = 0
    global_step: int = 0
    best_top1: float = float("-inf")
    best_epoch: int = 0

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def save_checkpoint(accelerator: Accelerator, root: Path, global_step: int, keep: int) -> Path:
    """Save the full training state to ``root/step_<global_step>`` atomically; keep the newest ``keep``.

    Must be called on every process (each one writes its own RNG state).
    """
    final = root / f"step_{global_step:09d}"
    tmp = root / f".tmp_step_{global_step:09d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in _checkpoints(root)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def _checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def find_latest(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (temporary folders are never returned)."""
    found = _checkpoints(root)
    return found[-1] if found else None


def resolve_resume(resume: str | None, root: Path) -> Path | None:
    """``None`` -> no resume; ``"auto"`` -> latest under ``root`` or None; else an existing folder."""
    if resume is None:
        return None
    if resume == "auto":
        return find_latest(root)
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint folder (use --resume auto for the latest)")
    return path
