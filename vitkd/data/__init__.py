"""Datasets for vitkd: sources (🤗 Hub, local folders, parquet, offline builtins), transforms, loaders.

Typical use::

    from vitkd.data import DataConfig, build_loaders
    train, evaluation, info = build_loaders(DataConfig(source="fashion_mnist"), batch_size=64)
"""

from vitkd.data.config import DataConfig, DataInfo
from vitkd.data.hub_datasets import DatasetUnavailableError
from vitkd.data.loaders import build_eval_loader, build_loaders
from vitkd.data.sources import ImageReadError, load_dataset, load_splits

__all__ = [
    "DataConfig",
    "DataInfo",
    "DatasetUnavailableError",
    "ImageReadError",
    "build_eval_loader",
    "build_loaders",
    "load_dataset",
    "load_splits",
]
