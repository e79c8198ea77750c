"""The files of a run folder that describe it: resolved recipe, run info, metrics log, summary.

Layout (read by ``scripts/make_table.py``, the model card and ``push_to_hub``)::

    <run>/recipe.yaml     fully resolved recipe
    <run>/run_info.json   command, package versions, hardware, teacher checkpoint hashes
    <run>/metrics.jsonl   one JSON object per evaluation
    <run>/summary.json    {"report": "best"|"last", "best": {...}, "last": {...}, "teacher": {...}}
    <run>/student/        exported last-epoch student; <run>/student_best/ the best epoch's
    <run>/checkpoints/    resumable states (step_<n>)
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

__all__ = ["append_jsonl", "command_line", "file_sha256", "package_versions", "write_json", "write_yaml"]

_PACKAGES = ("vitkd", "torch", "torchvision", "timm", "accelerate", "datasets", "safetensors", "einops")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    _atomic_write(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_yaml(path: Path, data: Any) -> None:
    _atomic_write(path, yaml.safe_dump(data, sort_keys=False))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record, default=str) + "\n")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def file_sha256(path: str | Path) -> str | None:
    """SHA-256 of a checkpoint file, or of ``model.safetensors`` inside an export folder; None if not local."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
