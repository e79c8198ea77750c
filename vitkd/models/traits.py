"""What a model can do, read from a weightless build on PyTorch's ``meta`` device (milliseconds, no memory).

Recipe validation asks before anything real is built: does the student return two heads (DeiT-distilled),
can it checkpoint gradients, does it name its layer groups (timm's layer-wise lr decay needs them)?
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import timm
import torch
from timm.models import split_model_name_tag

__all__ = ["ModelTraits", "model_traits"]


class ModelTraits(NamedTuple):
    two_heads: bool  # returns (cls, dist) logits in distilled training mode (``set_distilled_training``)
    grad_checkpointing: bool  # has ``set_grad_checkpointing``
    layer_groups: bool  # has ``group_matcher`` (``optim.layer_decay`` needs it)


def model_traits(name: str, **kwargs: Any) -> ModelTraits | None:
    """Traits of ``timm.create_model(name, **kwargs)``; ``None`` for a name timm does not register
    (``hf-hub:``/local references, typos): reading those would need the network or the files.

    Raises whatever ``timm.create_model`` raises for bad ``kwargs`` (e.g. ``TypeError``).
    """
    architecture, _ = split_model_name_tag(name)
    if ":" in name or not timm.is_model(architecture):
        return None
    key = (architecture, json.dumps(kwargs, sort_keys=True, default=repr))
    if key not in _CACHE:  # recipe suites validate the same few students many times
        with torch.device("meta"):
            model = timm.create_model(architecture, **kwargs)
        _CACHE[key] = ModelTraits(
            two_heads=hasattr(model, "set_distilled_training"),
            grad_checkpointing=callable(getattr(model, "set_grad_checkpointing", None)),
            layer_groups=callable(getattr(model, "group_matcher", None)),
        )
    return _CACHE[key]


_CACHE: dict[tuple[str, str], ModelTraits] = {}
