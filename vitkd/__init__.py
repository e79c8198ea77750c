"""vitkd: knowledge distillation for vision models on timm and Accelerate.

``import vitkd`` makes vitkd's models (the CIFAR zoo, the small ViTs) known to
``timm.create_model``. It does so without importing timm itself, so that
``import vitkd.losses`` stays a pure-PyTorch import for users who only want the
losses: if timm is already imported the models are registered now, otherwise they
are registered the moment timm's import finishes.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

__version__ = "0.1.0"


def _register_models() -> None:
    import vitkd.models  # noqa: F401  (registration is the import's side effect)


class _RegisterAfterTimmImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps timm's loader so vitkd.models registers right after timm loads.

    timm has no plugin entry point for model registries, and importing timm eagerly here would
    make ``import vitkd.losses`` pull in timm, so a post-import hook is the smallest honest option.
    """

    def find_spec(self, fullname, path, target=None):
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)  # one-shot: let the real finders locate timm
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register_models()

        spec.loader.exec_module = exec_then_register
        return spec


if "timm" in sys.modules:
    _register_models()
elif not any(isinstance(f, _RegisterAfterTimmImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterTimmImport())
