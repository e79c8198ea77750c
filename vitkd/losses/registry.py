"""Loss registry and the contract between a distillation loss and the training engine.

Every loss is a :class:`DistillationLoss` registered under a short name::

    @register_loss("kd")
    class KDLoss(DistillationLoss): ...

    build_loss("kd", temperature=4.0)   # -> KDLoss(temperature=4.0)
    available_losses()                   # -> ['crld', 'dist', 'dkd', 'kd', 'ls_kd', 'luminet']

Class attributes the engine (``vitkd.engine``, ``vitkd.recipe``) reads, without calling the loss:

``requires_target: ClassVar[bool]``
    ``forward`` takes the class labels (B,) as its last argument (DKD).
``num_views: ClassVar[int]``
    Augmented views per image. ``forward`` takes ``num_views`` student logit matrices, then
    ``num_views`` teacher logit matrices, in the same view order (CRLD: weak, strong).
``uses_batch_statistics: ClassVar[bool]``
    The loss uses per-class statistics over the batch axis (LumiNet, DIST): each process needs a
    batch of at least 2 samples (the training loader drops a smaller last batch).
``needs_dense_teacher_logits: ClassVar[bool]``
    The loss needs every class's teacher logit exactly (LumiNet, DIST: statistics across the batch),
    so it refuses a top-k teacher-logit cache (``vitkd.teacher_cache``).

Calling convention: ``loss(*student_views, *teacher_views, [target]) -> scalar``, each view a (B, C)
logit matrix in any floating dtype; the result is float32 (float64 for float64 inputs), and no
gradient flows into the teacher's logits. Cross-entropy on labels, loss weights and warm-up ramps are
the training task's business, not the loss's.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import ClassVar, TypeVar

from torch import nn

__all__ = ["DistillationLoss", "available_losses", "build_loss", "register_loss"]


class DistillationLoss(nn.Module):
    """Base class of vitkd's distillation losses; see the module docstring for the contract."""

    requires_target: ClassVar[bool] = False
    num_views: ClassVar[int] = 1
    uses_batch_statistics: ClassVar[bool] = False
    needs_dense_teacher_logits: ClassVar[bool] = False

    def extra_repr(self) -> str:
        """Show the constructor's hyperparameters, e.g. ``KDLoss(temperature=4.0)``."""
        return ", ".join(f"{name}={getattr(self, name)!r}" for name in _keywords(type(self)))


_LossT = TypeVar("_LossT", bound=type[DistillationLoss])
_REGISTRY: dict[str, type[DistillationLoss]] = {}


def register_loss(name: str) -> Callable[[_LossT], _LossT]:
    """Class decorator registering a :class:`DistillationLoss` subclass under ``name``."""

    def decorator(cls: _LossT) -> _LossT:
        if not (isinstance(cls, type) and issubclass(cls, DistillationLoss)):
            raise TypeError(f"register_loss({name!r}) expects a DistillationLoss subclass, got {cls!r}")
        if _REGISTRY.get(name, cls) is not cls:
            raise ValueError(f"loss name {name!r} is already registered to {_REGISTRY[name].__qualname__}")
        _REGISTRY[name] = cls
        return cls

    return decorator


def available_losses() -> list[str]:
    """Registered loss names, sorted."""
    return sorted(_REGISTRY)


def build_loss(name: str, **kwargs: object) -> DistillationLoss:
    """Instantiate the loss registered as ``name`` with keyword hyperparameters ``kwargs``.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names and the closest match).
        TypeError: a keyword the loss does not take (the message lists the loss's keywords).
    """
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown loss {name!r}; valid names: {available_losses()}.{hint}")
    cls = _REGISTRY[name]
    valid = _keywords(cls)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise TypeError(f"loss {name!r} got unknown keyword(s) {unknown}; valid keywords: {valid}")
    return cls(**kwargs)


def _keywords(cls: type[DistillationLoss]) -> list[str]:
    """Names of the hyperparameters ``cls.__init__`` takes, in signature order."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]  # drop self
    return [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
