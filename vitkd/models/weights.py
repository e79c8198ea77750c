"""Loading checkpoint files into a model, never skipping a key or a shape mismatch silently.

timm's ``load_checkpoint`` covers part of this, but it strips ``module.`` key by key, knows neither
export folders nor the ``model`` / ``model_state_dict`` / ``module`` wrappers of the CIFAR releases and
other trainers, and reports mismatches as PyTorch's bare key lists. Here every mismatch is named with
both shapes, and a wrong class count says how to fix it.
"""

from __future__ import annotations

import fnmatch
import logging
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

_logger = logging.getLogger(__name__)

STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict", "module")
WRAPPER_PREFIXES = ("module.", "student.")
FOLDER_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_LISTED = 8  # keys listed per problem in an error message


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or shapes do not fit the model it is loaded into."""


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_weights` did.

    Attributes:
        source: the checkpoint as given.
        loaded: model keys set from the checkpoint.
        ignored: keys (of model or checkpoint) matching an ``ignore`` pattern; model ones keep their values.
        missing: model keys absent from the checkpoint (left as they were; only with ``strict=False``).
        unexpected: checkpoint keys the model lacks (not loaded; only with ``strict=False``).
        mismatched: ``(key, checkpoint shape, model shape)`` of keys left as they were (``strict=False``).
        stripped_prefix: wrapper prefix removed from every checkpoint key (``"module."`` ...), or "".
    """

    source: str
    loaded: tuple[str, ...]
    ignored: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()
    stripped_prefix: str = ""

    @property
    def complete(self) -> bool:
        """True when every model key outside ``ignored`` was loaded and nothing was left over."""
        return not (self.missing or self.unexpected or self.mismatched)


def load_weights(
    model: nn.Module,
    source: str | PathLike[str],
    *,
    strict: bool = True,
    ignore: Sequence[str] = (),
) -> LoadReport:
    """Load the tensors of ``source`` into ``model`` (in place) and report what was loaded.

    Args:
        source: a ``.safetensors`` file; an export folder holding ``model.safetensors`` or
            ``pytorch_model.bin`` (timm / Hugging Face layout); or a ``.pth`` / ``.pt`` / ``.bin`` pickle
            holding a state dict, bare or under ``model``, ``state_dict``, ``model_state_dict`` or
            ``module``. A ``module.`` / ``student.`` prefix carried by every key is removed.
        strict: raise on any missing, unexpected or mis-shaped key; if False, load the keys that fit,
            log a warning and list the rest in the report.
        ignore: fnmatch patterns (e.g. ``["fc.*"]``) of keys to leave out on purpose on both sides,
            such as a head to re-initialise for fine-tuning.

    Raises:
        FileNotFoundError: ``source`` (or the weights file of a folder) does not exist.
        ValueError: the file holds no state dict, or pickled objects that ``weights_only`` refuses.
        CheckpointMismatchError: with ``strict``, keys or shapes differ; the message lists them all.
    """
    if isinstance(ignore, str):
        raise TypeError(f"ignore must be a sequence of fnmatch patterns, e.g. [{ignore!r}], not a string")
    checkpoint, prefix = read_state_dict(source)
    report = _compare(model.state_dict(), checkpoint, ignore, str(source), prefix)
    unused = [p for p in ignore if not any(fnmatch.fnmatchcase(k, p) for k in report.ignored)]
    if unused:
        _logger.warning("ignore patterns %s match no key of %s or of the model", unused, source)
    if not report.complete:
        problems = _describe_problems(model, report)
        if strict:
            raise CheckpointMismatchError(
                f"{problems}\n  pass ignore=[fnmatch patterns] to leave keys out on purpose, "
                "or strict=False to load what fits"
            )
        _logger.warning("%s\n  (strict=False: these keys were not loaded)", problems)
    model.load_state_dict({k: checkpoint[k] for k in report.loaded}, strict=False)
    return report


def read_state_dict(source: str | PathLike[str]) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a checkpoint file or export folder (see :func:`load_weights`), on CPU.

    Returns:
        the state dict with any whole-dict wrapper prefix removed, and that prefix ("" if none).
    """
    path = _weights_file(Path(source))
    if path.suffix == ".safetensors":
        state_dict = _safetensors_load(path)
    else:
        state_dict = _find_state_dict(_torch_load(path), path)
    if not state_dict:
        raise ValueError(f"checkpoint {str(path)!r} holds no tensors")
    return _strip_wrapper_prefixes(state_dict)


def _weights_file(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if not path.is_dir():
        return path
    for name in FOLDER_WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(
        f"checkpoint folder {str(path)!r} holds neither {' nor '.join(FOLDER_WEIGHT_FILES)}"
    )


def _torch_load(path: Path) -> object:
    """``torch.load(weights_only=True)``: unpickles tensors and containers, never arbitrary objects.

    Two failures get different advice: a well-formed pickle that holds other objects (re-save its state
    dict if you trust it) and a file that is no PyTorch checkpoint at all (damaged, truncated, other format).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        lines = str(error).splitlines()
        reason = next((ln.strip() for ln in lines if "Unsupported global" in ln), None)
        if reason is None:
            raise _damaged(path, next((ln.strip() for ln in reversed(lines) if ln.strip()), "unreadable")) from error
        raise ValueError(
            f"{str(path)!r} cannot be read with torch.load(weights_only=True): {reason}. vitkd does not "
            "unpickle arbitrary objects (that can run code). If you trust the file, re-save its state dict "
            "once, e.g. `sd = torch.load(path, weights_only=False)['model']; "
            "safetensors.torch.save_file(sd, 'model.safetensors')` (or torch.save(sd, ...)), and load that."
        ) from error
    except Exception as error:  # bytes that are no checkpoint make torch.load raise about anything
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise _damaged(path, reason) from error


def _damaged(path: Path, reason: str) -> ValueError:
    return ValueError(
        f"{str(path)!r} is not a readable PyTorch checkpoint ({reason}): the file is damaged or truncated (an "
        "interrupted download or copy?) or in another format. Download or export it again; check its size and "
        "SHA-256 against the source"
    )


def _safetensors_load(path: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(path, device="cpu")
    except safetensors.SafetensorError as error:
        raise ValueError(
            f"{str(path)!r} is not a readable safetensors file ({error}): it is damaged or truncated (an "
            "interrupted download or copy?). Download or export it again; check its size and SHA-256 against "
            "the source"
        ) from error


def _find_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The name -> tensor dict in ``obj``: ``obj`` itself or its entry under one of STATE_DICT_KEYS."""
    if isinstance(obj, Mapping):
        wrapper_key = next((k for k in STATE_DICT_KEYS if isinstance(obj.get(k), Mapping)), None)
        if wrapper_key is not None:
            obj = obj[wrapper_key]
    if isinstance(obj, Mapping):
        non_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        if not non_tensors:
            return dict(obj)
        found = f"a dict whose entries {_listing(non_tensors)} are not tensors"
    else:
        found = f"a {type(obj).__name__}"
    raise ValueError(
        f"{str(path)!r} holds {found}; expected a state dict (name -> tensor), bare or under one of "
        f"{', '.join(map(repr, STATE_DICT_KEYS))}"
    )


def _strip_wrapper_prefixes(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Remove ``module.`` / ``student.`` (repeatedly, e.g. ``module.student.``) when every key has it."""
    stripped = ""
    while prefix := next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state_dict)), ""):
        state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
        stripped += prefix
    return state_dict, stripped


def _compare(
    model_state: Mapping[str, torch.Tensor],
    checkpoint: Mapping[str, torch.Tensor],
    ignore: Sequence[str],
    source: str,
    stripped_prefix: str,
) -> LoadReport:
    def ignored(key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, pattern) for pattern in ignore)

    model_keys = [k for k in model_state if not ignored(k)]
    fitting = [k for k in model_keys if k in checkpoint and checkpoint[k].shape == model_state[k].shape]
    return LoadReport(
        source=source,
        loaded=tuple(fitting),
        ignored=tuple(dict.fromkeys(k for k in (*model_state, *checkpoint) if ignored(k))),
        missing=tuple(k for k in model_keys if k not in checkpoint),
        unexpected=tuple(k for k in checkpoint if k not in model_state and not ignored(k)),
        mismatched=tuple(
            (k, tuple(checkpoint[k].shape), tuple(model_state[k].shape))
            for k in model_keys
            if k in checkpoint and checkpoint[k].shape != model_state[k].shape
        ),
        stripped_prefix=stripped_prefix,
    )


def _describe_problems(model: nn.Module, report: LoadReport) -> str:
    lines = [f"checkpoint {report.source!r} does not fit {type(model).__name__}:"]
    if report.missing:
        lines.append(f"  missing from the checkpoint ({len(report.missing)}): {_listing(report.missing)}")
    if report.unexpected:
        lines.append(f"  not in the model ({len(report.unexpected)}): {_listing(report.unexpected)}")
    if report.mismatched:
        shapes = [f"{k} (checkpoint {list(c)}, model {list(m)})" for k, c, m in report.mismatched]
        lines.append(f"  shape mismatch ({len(shapes)}): {_listing(shapes)}")
    lines += _head_hints(model, report.mismatched)
    return "\n".join(lines)


def _head_hints(
    model: nn.Module, mismatched: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]]
) -> list[str]:
    """For a classifier (timm's ``pretrained_cfg['classifier']``) of another class count: how to resolve it."""
    heads = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    hints = []
    for head in (heads,) if isinstance(heads, str) else heads:
        shapes = next(((c, m) for k, c, m in mismatched if k.startswith(f"{head}.")), None)
        if shapes is not None:
            ckpt_classes, model_classes = shapes[0][0], shapes[1][0]
            hints.append(
                f"  checkpoint head '{head}' has {ckpt_classes} classes, model has {model_classes}: "
                f"pass num_classes={ckpt_classes} or ignore=['{head}.*'] to re-initialise the head. In a recipe the "
                f"class count comes from data.source: a student can start with a new head (student.reset_head: "
                f"true); a teacher needs a checkpoint trained on that dataset (teacher.checkpoint)"
            )
    return hints


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown if len(items) <= _LISTED else f"{shown} ... and {len(items) - _LISTED} more"
