"""The architecture and ``model_args`` an exported model records in its timm ``config.json``."""

from __future__ import annotations

import inspect
from typing import Any

import timm
from timm.models import split_model_name_tag

from vitkd.models.vit import VIT_EXPORT_ARCH

# create_model's own parameters steer creation (weights, cfgs, layer flags) and are no architecture
# arguments; config.json keeps num_classes and the input channels in fields of their own.
_NOT_MODEL_ARGS = (set(inspect.signature(timm.create_model).parameters) - {"model_name", "kwargs"}) | {
    "num_classes",
    "in_chans",
}


def export_spec(model_name: str, **model_kwargs: Any) -> tuple[str, dict[str, Any]]:
    """``(architecture, model_args)`` to record for ``timm.create_model(model_name, **model_kwargs)``.

    ``timm.create_model(architecture, num_classes=..., in_chans=..., **model_args)`` rebuilds the same
    state dict and forward. vitkd's ViTs are recorded as timm's own ViT architecture plus their
    geometry, so that timm without vitkd loads them; every other model (timm's, the CIFAR zoo) keeps
    its name, without a pretrained tag, and its architecture kwargs. Kwargs that ``create_model``
    consumes itself (``pretrained``, ``pretrained_cfg``, ``checkpoint_path`` ...), ``num_classes``,
    ``in_chans`` and ``None`` values (which timm drops) are left out.

    Raises:
        ValueError: ``model_name`` is a hub / local-dir reference or not a registered timm model.
    """
    if ":" in model_name:
        raise ValueError(
            f"export_spec needs a registered architecture name, got the reference {model_name!r}: "
            "pass the 'architecture' and 'model_args' of its config.json instead"
        )
    architecture, _ = split_model_name_tag(model_name)
    if not timm.is_model(architecture):
        raise ValueError(
            f"unknown model {model_name!r}: timm has no such architecture "
            "(vitkd's models are registered by `import vitkd`)"
        )
    model_args = {k: v for k, v in model_kwargs.items() if k not in _NOT_MODEL_ARGS and v is not None}
    if architecture in VIT_EXPORT_ARCH:
        timm_architecture, geometry = VIT_EXPORT_ARCH[architecture]
        return timm_architecture, {**geometry, **model_args}
    return architecture, model_args
