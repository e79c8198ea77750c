"""Writing benchmark results: Markdown tables, JSON files, and what machine produced them."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["machine_info", "markdown_table", "write_outputs"]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, numeric_from: int = 1) -> str:
    """A Markdown table; columns from index ``numeric_from`` on are right-aligned.

    Every row must have as many cells as ``header``; cells are written with ``str``.
    """
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {list(row)!r} has {len(row)} cells but the header has {len(header)}")
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = [_line(header), _line(align), *(_line(row) for row in rows)]
    return "\n".join(lines) + "\n"


def _line(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def write_outputs(out_dir: str | Path, stem: str, data: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``<out_dir>/<stem>.json`` (``data``, strict JSON: NaN/inf are refused) and ``<stem>.md``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    md_path.write_text(markdown)
    return json_path, md_path


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, load average (1/5/15 min), torch version and threads, GPU name if any."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _cpu_model() -> str:
    """The ``model name`` line of /proc/cpuinfo (Linux), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
