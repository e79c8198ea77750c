"""Logit distillation losses in pure PyTorch (no timm, no Accelerate).

``build_loss(name, **kwargs)`` makes one from its registry name; the class attributes and the calling
convention the training engine relies on are documented in :mod:`vitkd.losses.registry`.

Registered names:

- ``luminet``: :class:`LumiNetLoss`, per-class standardisation over the batch, then KL (LumiNet).
- ``kd``: :class:`KDLoss`, Hinton's soft-target KL.
- ``dkd``: :class:`DKDLoss`, decoupled target / non-target KL (needs labels).
- ``crld``: :class:`CRLDLoss`, within- and cross-view KL on two augmented views.
- ``ls_kd``: :class:`LogitStandardKDLoss`, per-sample z-score over classes, then KL.
- ``dist``: :class:`DISTLoss`, inter- and intra-class Pearson correlation.
- ``deit_hard``: :class:`DeiTHardLoss`, cross-entropy on the teacher's top class (DeiT).
- ``deit_soft``: :class:`DeiTSoftLoss`, DeiT's soft distillation (T² · KL over B·C logits).
"""

from vitkd.losses.crld import CRLDLoss
from vitkd.losses.deit import DeiTHardLoss, DeiTSoftLoss
from vitkd.losses.dist import DISTLoss
from vitkd.losses.dkd import DKDLoss
from vitkd.losses.kd import KDLoss
from vitkd.losses.ls_kd import LogitStandardKDLoss
from vitkd.losses.luminet import LumiNetLoss, perception
from vitkd.losses.registry import DistillationLoss, available_losses, build_loss, register_loss

__all__ = [
    "CRLDLoss",
    "DISTLoss",
    "DeiTHardLoss",
    "DeiTSoftLoss",
    "DKDLoss",
    "DistillationLoss",
    "KDLoss",
    "LogitStandardKDLoss",
    "LumiNetLoss",
    "available_losses",
    "build_loss",
    "perception",
    "register_loss",
]
