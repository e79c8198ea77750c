"""Split specs: a split name with an optional slice in 🤗 datasets' syntax (``train[:10%]``), and aliases."""

from __future__ import annotations

import re
from collections.abc import Sequence

import datasets
from datasets.data_files import SPLIT_KEYWORDS

# Split names that mean the same thing (datasets' own keyword table, e.g. validation/valid/val/dev).
SPLIT_ALIASES = tuple(tuple(keywords) for keywords in SPLIT_KEYWORDS.values())


def parse_split(spec: str) -> tuple[str, str]:
    """(split name, slice) of a split spec: ``"train[:10%]"`` → ``("train", "[:10%]")``, ``"test"`` → ``("test", "")``.

    The slice follows 🤗 datasets' split syntax (``[:5000]``, ``[10%:20%]``, ``[-100:]``); ValueError
    when datasets rejects it.
    """
    match = re.fullmatch(r"([\w.-]+)(\[[^\]]*\])?", spec.strip()) if isinstance(spec, str) else None
    if match is None:
        raise ValueError(f"Split {spec!r} is not a split name with an optional slice, e.g. 'train[:10%]'")
    try:
        datasets.ReadInstruction.from_spec(spec.strip())
    except (ValueError, AssertionError) as exc:
        raise ValueError(f"Split {spec!r}: {exc} (examples: 'train[:10%]', 'train[:5000]')") from exc
    return match[1], match[2] or ""


def resolve_split(split_names: Sequence[str], requested: str, source: str) -> str:
    """Name under which ``requested`` exists in ``split_names``, accepting aliases (``val`` ↔ ``validation``)."""
    if requested in split_names:
        return requested
    for aliases in SPLIT_ALIASES:
        if requested in aliases:
            present = [name for name in aliases if name in split_names]
            if present:
                return present[0]
    raise ValueError(f"Split {requested!r} not found in {source!r}; available splits: {sorted(split_names)}")


def take_slice(ds: datasets.Dataset, split: str, slice_spec: str) -> datasets.Dataset:
    """Rows of ``ds`` (split ``split``) selected by ``slice_spec`` (``"[:10%]"``; ``""`` keeps all), in order."""
    if not slice_spec:
        return ds
    (rows,) = datasets.ReadInstruction.from_spec(split + slice_spec).to_absolute({split: len(ds)})
    return ds.select(range(rows.from_, rows.to))


def stream_rows(split: str, slice_spec: str) -> tuple[int, int | None]:
    """(first row, end row or None) of a slice of a stream; a stream's length is unknown, so only
    absolute, non-negative bounds work (``[:5000]``, ``[1000:2000]``)."""
    if not slice_spec:
        return 0, None
    if "%" in slice_spec or "-" in slice_spec:
        raise ValueError(
            f"data.train_split {split + slice_spec!r}: a streamed split has no known length, so only "
            "absolute non-negative slices work (e.g. '[:5000]'); set data.streaming: false for others"
        )
    bounds = slice_spec.strip("[]").split(":")
    start = int(bounds[0]) if bounds[0] else 0
    stop = int(bounds[1]) if len(bounds) > 1 and bounds[1] else None
    return start, stop
