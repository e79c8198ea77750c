"""Real datasets that need no network, converted once to cached 🤗 Datasets.

* ``fashion_mnist``: Zalando's Fashion-MNIST (28×28 grayscale, 10 classes) read from Debian's
  ``dataset-fashion-mnist`` idx files; splits ``train`` (60 000) and ``test`` (10 000). Without the
  package :func:`load_builtin` raises :class:`BuiltinNotInstalled` naming the Hub copy
  (``zalando-datasets/fashion_mnist``), which :mod:`vitkd.data.sources` then loads instead.
* ``digits``: scikit-learn's bundled 8×8 handwritten digits (1 797 images, 10 classes), pixel values
  0–16 rescaled to 0–255; splits ``all`` (1 797), and a fixed stratified seed-0 split of it into
  ``train`` (1 437) and ``test`` (360).

Each is written once with ``save_to_disk`` under ``<cache_dir>/<name>-v<version>`` (into a temporary
folder renamed into place, so an interrupted or concurrent conversion never leaves a half-written
dataset) and read back with ``load_from_disk``, so it reaches the loaders exactly like a Hub dataset.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_HUB_ID = "zalando-datasets/fashion_mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGITS_TEST_SIZE = 360
# Bump when the converted layout changes, so stale caches are not reused.
FORMAT_VERSION = 1


class BuiltinNotInstalled(LookupError):
    """A builtin's local files are missing; ``hub_id`` names a Hub copy of the same data."""

    def __init__(self, message: str, hub_id: str) -> None:
        super().__init__(message)
        self.hub_id = hub_id


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/vitkd``, i.e. ``~/.cache/vitkd`` by default."""
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "vitkd"


def read_idx_ubyte(path: Path) -> np.ndarray:
    """Array stored in a gzipped idx file of unsigned bytes (the MNIST format), shape from its header.

    Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions n, then n big-endian
    uint32 sizes; the data follow. Hand-written because neither numpy nor 🤗 datasets reads idx.
    """
    with gzip.open(path, "rb") as f:
        raw = f.read()
    zeros, type_code, ndim = struct.unpack_from(">HBB", raw)
    if zeros != 0 or type_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file (header {raw[:4].hex()})")
    shape = struct.unpack_from(f">{ndim}I", raw, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _pgm_bytes(image: np.ndarray) -> bytes:
    """Binary PGM (netpbm P5) file of a uint8 [H, W] grayscale image.

    Lossless and read by PIL like PNG, but written with no compression step: encoding Fashion-MNIST's
    70 000 images takes well under a second instead of the ~10 s PNG would (datasets' default for arrays).
    """
    height, width = image.shape
    return b"P5 %d %d 255\n" % (width, height) + image.tobytes()


def _image_label_dataset(images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> datasets.Dataset:
    """Dataset with an ``image`` (``Image``, PGM-encoded) and a ``label`` (``ClassLabel``) column.

    ``images``: uint8 [N, H, W] grayscale; ``labels``: ints in [0, len(class_names)).
    """
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=class_names)})
    encoded = [{"bytes": _pgm_bytes(image), "path": None} for image in images]
    return datasets.Dataset.from_dict({"image": encoded, "label": labels.tolist()}, features=features)


def _fashion_mnist_from_idx(root: Path) -> datasets.DatasetDict:
    def split(prefix: str) -> datasets.Dataset:
        images = read_idx_ubyte(root / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx_ubyte(root / f"{prefix}-labels-idx1-ubyte.gz")
        return _image_label_dataset(images, labels, list(FASHION_MNIST_CLASSES))

    return datasets.DatasetDict({"train": split("train"), "test": split("t10k")})


def _digits() -> datasets.DatasetDict:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(
            "The builtin dataset 'digits' needs scikit-learn: pip install scikit-learn"
        ) from exc
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    full = _image_label_dataset(images, digits.target, [str(c) for c in digits.target_names])
    parts = full.train_test_split(test_size=DIGITS_TEST_SIZE, stratify_by_column="label", seed=0)
    return datasets.DatasetDict({"train": parts["train"], "test": parts["test"], "all": full})


def _cached(
    name: str, build: Callable[[], datasets.DatasetDict], cache_dir: str | Path | None
) -> datasets.DatasetDict:
    """``build()`` saved once under the cache dir (atomically), then loaded from there."""
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = root / f"{name}-v{FORMAT_VERSION}"
    if not target.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{name}-", dir=root)
        try:
            build().save_to_disk(staging)
            try:
                os.rename(staging, target)
            except OSError:
                if not target.is_dir():  # not a concurrent conversion finishing first: a real failure
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return datasets.load_from_disk(str(target))


def _fashion_mnist(cache_dir: str | Path | None) -> datasets.DatasetDict:
    files = [
        FASHION_MNIST_DIR / f"{p}-{k}-ubyte.gz"
        for p in ("train", "t10k")
        for k in ("images-idx3", "labels-idx1")
    ]
    if not all(f.is_file() for f in files):
        raise BuiltinNotInstalled(
            f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR} (install it with "
            "`apt-get install dataset-fashion-mnist`)",
            FASHION_MNIST_HUB_ID,
        )
    return _cached("fashion_mnist", lambda: _fashion_mnist_from_idx(FASHION_MNIST_DIR), cache_dir)


BUILTINS: dict[str, Callable[[str | Path | None], datasets.DatasetDict]] = {
    "fashion_mnist": _fashion_mnist,
    "digits": lambda cache_dir: _cached("digits", _digits, cache_dir),
}


def load_builtin(name: str, cache_dir: str | Path | None = None) -> datasets.DatasetDict:
    """All splits of builtin dataset ``name`` (a key of :data:`BUILTINS`), converting it on first use.

    Raises :class:`BuiltinNotInstalled` when its local files are missing.
    """
    return BUILTINS[name](cache_dir)
