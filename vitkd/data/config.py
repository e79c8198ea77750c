"""The recipe's ``data:`` section (:class:`DataConfig`) and what built loaders report (:class:`DataInfo`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform, rand_augment_transform

from vitkd.data.splits import parse_split, stream_rows

# The CIFAR models' pretrained cfg and the data presets share one definition of the CIFAR-100 statistics.
from vitkd.models.cifar_base import CIFAR100_MEAN, CIFAR100_STD


class Preset(NamedTuple):
    """Defaults a transform preset brings: output side in pixels and per-channel RGB mean/std."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


PRESETS: dict[str, Preset] = {
    "cifar": Preset(32, CIFAR100_MEAN, CIFAR100_STD),
    "autoaugment": Preset(32, CIFAR100_MEAN, CIFAR100_STD),
    "imagenet": Preset(224, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
    "none": Preset(32, CIFAR100_MEAN, CIFAR100_STD),
}


@dataclass
class StrongAugConfig:
    """The strong view of two-view training (CRLD, ``data.two_view``), as the CRLD authors' code draws it.

    After the preset's crop and flip: ``num_ops`` operations drawn with replacement from AutoContrast,
    Brightness, Color, Contrast, Equalize, Identity, Posterize, Rotate, Sharpness, ShearX, ShearY,
    Solarize, TranslateX, TranslateY, each applied with its own magnitude drawn uniformly from its range:
    enhancement factors in ``enhance``, ±``rotate`` degrees, ±``shear``, ±``translate`` · side, posterize
    bits in ``posterize`` (truncated), solarize threshold in [0, 256]; then Cutout, a square of side
    uniform in [0, ``cutout``] · width filled with ``cutout_fill`` (RGB 0–255; its mean for grayscale).
    """

    num_ops: int = 2
    enhance: tuple[float, float] = (0.05, 0.95)
    rotate: float = 30.0
    shear: float = 0.3
    translate: float = 0.3
    posterize: tuple[int, int] = (4, 8)
    cutout: float = 0.5
    cutout_fill: tuple[int, int, int] = (125, 123, 114)

    def __post_init__(self) -> None:
        self.enhance, self.posterize = tuple(self.enhance), tuple(self.posterize)
        self.cutout_fill = tuple(self.cutout_fill)
        if self.num_ops < 0:
            raise ValueError(f"data.strong_aug.num_ops must be >= 0, got {self.num_ops!r}")
        if len(self.enhance) != 2 or not 0 <= self.enhance[0] <= self.enhance[1]:
            raise ValueError(f"data.strong_aug.enhance must be [low, high] with 0 <= low <= high, got {self.enhance!r}")
        if len(self.posterize) != 2 or not 1 <= self.posterize[0] <= self.posterize[1] <= 8:
            raise ValueError(f"data.strong_aug.posterize must be [low, high] bits in 1..8, got {self.posterize!r}")
        for name in ("rotate", "shear", "translate"):
            if getattr(self, name) < 0:
                raise ValueError(f"data.strong_aug.{name} must be >= 0 (a ± range), got {getattr(self, name)!r}")
        if not 0 <= self.cutout <= 1:
            raise ValueError(f"data.strong_aug.cutout must be in [0, 1] (fraction of the side), got {self.cutout!r}")
        if len(self.cutout_fill) != 3 or not all(0 <= c <= 255 for c in self.cutout_fill):
            raise ValueError(f"data.strong_aug.cutout_fill must be 3 values in 0..255, got {self.cutout_fill!r}")


@dataclass
class DataConfig:
    """Where the images come from and how they become tensors; validated on construction.

    ``source`` is a builtin name (``"fashion_mnist"``, ``"digits"``), a local path (a
    ``save_to_disk`` folder, an image folder, parquet files) or a 🤗 Hub dataset id. ``name`` is the
    dataset configuration (a Hub dataset's or a folder README.md's ``configs``) and ``revision`` the
    Hub branch, tag or commit to load. ``train_split``/``eval_split`` may carry 🤗 datasets' slice
    syntax (``"train[:10%]"``, ``"train[:5000]"``); only the splits named (or, without
    ``eval_split``, the first labelled one of validation/…/test) are read or downloaded.
    ``streaming: true`` streams the training split instead of downloading it (Hub-scale datasets; the
    evaluation split is still loaded): it is sharded across processes, shuffled with a buffer, read in
    epochs of the split's declared size (or an absolute slice, ``[:5000]``: the only slices that work;
    see :class:`~vitkd.data.loaders.StreamingTrainLoader`); ``train_fraction`` does not apply. ``None`` for
    ``image_size``/``mean``/``std`` means "the transform preset's value" (see :data:`PRESETS`); the
    values actually used are :attr:`effective_image_size`, :attr:`effective_mean`, :attr:`effective_std`.
    ``cache_dir`` holds the builtins converted to 🤗 Datasets (default ``~/.cache/vitkd``) and the Arrow
    caches of local image folders/parquet files (default: 🤗 datasets' cache); Hub datasets always
    live in 🤗 datasets' own cache (``HF_DATASETS_CACHE``), where ``datasets`` downloads them.

    timm's training augmentation, for the ``imagenet`` preset (timm's ``create_transform``, whose
    arguments these are): ``auto_augment`` (e.g. ``rand-m9-mstd0.5-inc1``: RandAugment, 2 ops, magnitude 9
    ± N(0, 0.5), increasing severity), random erasing ``re_prob`` / ``re_mode`` (``const``, ``rand``,
    ``pixel``) / ``re_count``, ``color_jitter`` (brightness = contrast = saturation factor; timm skips it
    when ``auto_augment`` is set) and the resize ``interpolation``. ``repeated_aug``: copies per
    image, each augmented differently, spread over processes (timm/DeiT's repeated augmentation, the
    sampler :class:`vitkd.data.loaders.RepeatedAugSampler`; DeiT: 3; 0 = off).
    """

    source: str
    name: str | None = None
    revision: str | None = None
    streaming: bool = False
    train_split: str = "train"
    eval_split: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    transform: str = "cifar"
    image_size: int | None = None
    in_chans: int = 3
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    two_view: bool = False
    strong_aug: StrongAugConfig = field(default_factory=StrongAugConfig)
    train_fraction: float = 1.0
    max_eval_samples: int | None = None
    num_workers: int = 2
    persistent_workers: bool = True
    pin_memory: bool = False
    cache_dir: str | None = None
    auto_augment: str | None = None
    re_prob: float = 0.0
    re_mode: str = "const"
    re_count: int = 1
    color_jitter: float | None = None
    interpolation: str = "bilinear"
    repeated_aug: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise ValueError(f"data.source must be a non-empty string, got {self.source!r}")
        for key in ("name", "revision"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"data.{key} must be a non-empty string or None, got {value!r}")
        if not isinstance(self.streaming, bool):
            raise ValueError(f"data.streaming must be true or false, got {self.streaming!r}")
        self._check_splits()
        if self.transform not in PRESETS:
            raise ValueError(f"data.transform must be one of {sorted(PRESETS)}, got {self.transform!r}")
        if self.in_chans not in (1, 3):
            raise ValueError(f"data.in_chans must be 1 or 3, got {self.in_chans!r}")
        if self.image_size is not None and (not isinstance(self.image_size, int) or self.image_size < 1):
            raise ValueError(f"data.image_size must be a positive int or None, got {self.image_size!r}")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"data.train_fraction must be in (0, 1], got {self.train_fraction!r}")
        if self.max_eval_samples is not None and self.max_eval_samples < 1:
            raise ValueError(f"data.max_eval_samples must be >= 1 or None, got {self.max_eval_samples!r}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers!r}")
        self._check_timm_augmentation()
        self.mean = self._channel_stats("mean", self.mean)
        self.std = self._channel_stats("std", self.std)
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"data.std must be positive, got {self.std!r}")

    def _check_splits(self) -> None:
        """Split specs parse (``train[:10%]``); a streamed training split takes absolute slices only."""
        for key in ("train_split", "eval_split"):
            spec = getattr(self, key)
            if spec is None and key == "eval_split":
                continue
            try:
                parse_split(spec)
            except ValueError as exc:
                raise ValueError(f"data.{key}: {exc}") from exc
        if self.streaming:
            stream_rows(*parse_split(self.train_split))
            if self.train_fraction < 1.0:
                raise ValueError(
                    "data.train_fraction does not apply to a streamed training split; use a slice such as "
                    "data.train_split: 'train[:5000]'"
                )

    def _check_timm_augmentation(self) -> None:
        """timm's augmentation keys: their ranges, and only with the preset built by timm."""
        if not 0.0 <= self.re_prob <= 1.0:
            raise ValueError(f"data.re_prob must be in [0, 1], got {self.re_prob!r}")
        if self.re_mode not in RE_MODES:
            raise ValueError(f"data.re_mode must be one of {list(RE_MODES)}, got {self.re_mode!r}")
        if self.re_count < 1:
            raise ValueError(f"data.re_count must be >= 1, got {self.re_count!r}")
        if self.color_jitter is not None and self.color_jitter < 0:
            raise ValueError(f"data.color_jitter must be >= 0 or None, got {self.color_jitter!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"data.interpolation must be one of {list(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.repeated_aug < 0:
            raise ValueError(f"data.repeated_aug must be >= 0 (0 = off), got {self.repeated_aug!r}")
        if self.repeated_aug > 1 and self.streaming:
            raise ValueError("data.repeated_aug needs an indexed training split (its sampler repeats rows); "
                             "set data.streaming: false or data.repeated_aug: 0")
        if self.auto_augment is not None:
            _check_auto_augment(self.auto_augment)
        used = {"auto_augment": self.auto_augment is not None, "re_prob": self.re_prob > 0,
                "color_jitter": self.color_jitter is not None, "interpolation": self.interpolation != "bilinear"}
        if self.transform != "imagenet" and any(used.values()):
            keys = ", ".join(f"data.{k}" for k, on in used.items() if on)
            raise ValueError(f"{keys} configure timm's create_transform, which only the 'imagenet' preset uses "
                             f"(data.transform is {self.transform!r}): set data.transform: imagenet or remove them")

    def _channel_stats(self, name: str, values: tuple[float, ...] | None) -> tuple[float, ...] | None:
        """Tuple-ise a YAML list and check it has one value per channel."""
        if values is None:
            return None
        values = tuple(float(v) for v in values)
        if len(values) != self.in_chans:
            raise ValueError(
                f"data.{name} needs one value per channel (in_chans={self.in_chans}), got {values!r}"
            )
        return values

    @property
    def effective_image_size(self) -> int:
        """Side of the square images the loaders produce, in pixels."""
        return self.image_size or PRESETS[self.transform].image_size

    @property
    def effective_mean(self) -> tuple[float, ...]:
        """Per-channel mean subtracted after scaling to [0, 1]; a 1-channel preset uses the RGB average."""
        return self.mean or self._preset_stats(PRESETS[self.transform].mean)

    @property
    def effective_std(self) -> tuple[float, ...]:
        """Per-channel std divided out after mean subtraction (same rule as :attr:`effective_mean`)."""
        return self.std or self._preset_stats(PRESETS[self.transform].std)

    def _preset_stats(self, rgb: tuple[float, float, float]) -> tuple[float, ...]:
        return rgb if self.in_chans == 3 else (sum(rgb) / 3,)


@dataclass(frozen=True)
class DataInfo:
    """What the model side needs to know about the data ``build_loaders`` produced.

    Besides the classes, it carries the evaluation pipeline's preprocessing in timm's terms
    (:attr:`data_config`), so that the export's ``pretrained_cfg``, the model card, evaluation and the
    linear probe use the protocol the student was evaluated with: ``image_size`` (pixels, square),
    ``mean``/``std`` per channel of the [0, 1] input, ``crop_pct`` (centre-crop fraction after resizing
    the shorter side to ``image_size / crop_pct``; 1.0 = no crop), ``crop_mode`` and ``interpolation``.
    """

    num_classes: int
    class_names: list[str]
    image_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float = 1.0
    crop_mode: str = "center"
    interpolation: str = "bilinear"

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of one evaluation image, in pixels."""
        return self.in_chans, self.image_size, self.image_size

    @property
    def data_config(self) -> dict:
        """timm's data config of the evaluation pipeline (the keys of ``resolve_model_data_config``)."""
        return {
            "input_size": self.input_size,
            "mean": tuple(self.mean),
            "std": tuple(self.std),
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
            "interpolation": self.interpolation,
        }


RE_MODES = ("const", "rand", "pixel")  # timm RandomErasing: zero (the mean), per-channel or per-pixel noise
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")  # of every resize, training and evaluation


def _check_auto_augment(policy: str) -> None:
    """A timm policy string (``rand-…``, ``augmix-…``, ``original``/``v0``/``3a``…), parsed by timm now."""
    build = {"rand": rand_augment_transform, "augmix": augment_and_mix_transform}.get(policy.split("-")[0])
    try:
        (build or auto_augment_transform)(policy, {})
    except (AssertionError, KeyError, ValueError, IndexError) as err:
        raise ValueError(f"data.auto_augment {policy!r} is not a timm policy (e.g. 'rand-m9-mstd0.5-inc1', "
                         f"'augmix-m5-w4-d2', 'original'): {err!r}") from err
