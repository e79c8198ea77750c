"""Recipe keys for timm's training stack: augmentation, Mixup/CutMix, label smoothing, EMA, layer decay,
and the combinations refused before anything is built."""

import pytest
import torch
import yaml
from PIL import Image
from timm.data.auto_augment import RandAugment
from timm.data.random_erasing import RandomErasing
from torchvision.transforms import Compose

from vitkd.data.config import DataConfig
from vitkd.data.transforms import train_stages
from vitkd.recipe import RecipeError, recipe_from_dict

BASE = """
name: options
data: {source: digits, transform: none, image_size: 16}
teacher: {name: cifar_resnet8}
student: cifar_resnet8
distill: {method: kd, kwargs: {temperature: 4.0}}
train: {batch_size: 16}
"""


def recipe(**changes):
    data = yaml.safe_load(BASE)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return recipe_from_dict(data)


def flat(stages):
    """Every transform in a list of (possibly composed) transforms."""
    out = []
    for t in stages:
        out.extend(flat(t.transforms) if isinstance(t, Compose) else [t])
    return out


def test_timm_augmentation_keys_reach_create_transform():
    cfg = DataConfig(source="digits", transform="imagenet", image_size=32, auto_augment="rand-m9-mstd0.5-inc1",
                     re_prob=0.25, re_mode="pixel", re_count=2, interpolation="bicubic")
    stages = train_stages(cfg)
    augment, finish = flat(stages.augment), flat(stages.finish)
    (rand_augment,) = [t for t in augment if isinstance(t, RandAugment)]
    assert rand_augment.num_layers == 2 and all(op.magnitude == 9 and op.magnitude_std == 0.5
                                                for op in rand_augment.ops)
    (erasing,) = [t for t in finish if isinstance(t, RandomErasing)]
    assert (erasing.probability, erasing.mode, erasing.max_count) == (0.25, "pixel", 2)
    crop = augment[0]
    assert "bicubic" in str(crop.interpolation).lower()
    out = Compose([*stages.augment, *stages.finish])(Image.new("RGB", (40, 40), (120, 30, 200)))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32  # the pipeline runs end to end


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"transform": "cifar", "auto_augment": "rand-m9-mstd0.5-inc1"}, "only the 'imagenet' preset"),
    ({"transform": "imagenet", "auto_augment": "rand-q9"}, "not a timm policy"),
    ({"transform": "imagenet", "re_prob": 1.5}, "re_prob"),
    ({"transform": "imagenet", "re_mode": "zeros"}, "re_mode"),
    ({"transform": "imagenet", "interpolation": "cubic"}, "interpolation"),
    ({"repeated_aug": -1}, "repeated_aug"),
])
def test_bad_augmentation_keys_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(source="digits", **kwargs)


def test_mixup_section_and_training_keys_round_trip():
    r = recipe(mixup={"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "label_smoothing": 0.1},
               train__model_ema={"decay": 0.99996}, train__report="ema", train__channels_last=True)
    assert r.mixup.enabled and r.mixup.switch_prob == 0.5 and r.mixup.mode == "batch"
    assert r.train.model_ema.decay == 0.99996 and not r.train.model_ema.warmup
    assert not recipe().mixup.enabled and recipe().train.model_ema is None


@pytest.mark.parametrize(("changes", "message"), [
    ({"distill__method": "dkd", "distill__kwargs": {}, "mixup": {"mixup_alpha": 0.8}}, "needs hard labels"),
    ({"mixup": {"cutmix_alpha": 1.0}, "train__batch_size": 15}, "even train.batch_size"),
    ({"mixup": {"mixup_alpha": 0.8}, "train__label_smoothing": 0.1}, "mixup.label_smoothing"),
    ({"mixup": {"mixup_alpha": 0.8, "mode": "batches"}}, "Did you mean 'batch'"),
    ({"mixup": {"mixup_alpha": -1.0}}, "mixup.mixup_alpha must be >= 0"),
    ({"mixup": {"mixup_alpha": 0.8, "prob": 2.0}}, r"mixup.prob must lie in \[0.0, 1.0\]"),
    ({"distill__method": "crld", "distill__kwargs": {}, "data__two_view": True, "mixup": {"mixup_alpha": 0.8}},
     "two views"),
    ({"train__label_smoothing": 1.0}, "train.label_smoothing"),
    ({"train__report": "ema"}, "no EMA student"),
    ({"train__model_ema": {"decay": 1.0}}, "train.model_ema.decay"),
    ({"optim__layer_decay": 0.65}, "layer groups"),
])
def test_impossible_training_options_fail_before_building(changes, message):
    with pytest.raises(RecipeError, match=message):
        recipe(**changes)


def test_layer_decay_and_grad_checkpointing_accepted_where_the_model_supports_them():
    vit = {"name": "vitkd_deit_nano_patch4_32", "kwargs": {"img_size": 16}}
    r = recipe(student=vit, optim__layer_decay=0.65, train__grad_checkpointing=True)
    assert r.optim.layer_decay == 0.65 and r.train.grad_checkpointing


def test_deit_recipes_state_deits_training_recipe():
    from pathlib import Path

    from vitkd.recipe import load_recipe

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    for name in ("deit_s_to_tiny", "deit_s_to_tiny_distilled", "deit_s_to_tiny_distilled_luminet"):
        r = load_recipe(recipes / f"{name}.yaml")
        assert (r.mixup.mixup_alpha, r.mixup.cutmix_alpha, r.mixup.label_smoothing) == (0.8, 1.0, 0.1), name
        assert (r.data.auto_augment, r.data.re_prob, r.data.repeated_aug) == ("rand-m9-mstd0.5-inc1", 0.25, 3)
        assert (r.optim.opt, r.optim.weight_decay, r.schedule.sched, r.schedule.warmup_epochs) == ("adamw", 0.05,
                                                                                                    "cosine", 5)
        global_batch = r.train.batch_size * r.train.gpus
        assert r.optim.lr == pytest.approx(5e-4 * global_batch / 512) and r.train.epochs == 300
        assert r.student.kwargs["drop_path_rate"] == 0.1
    hard = load_recipe(recipes / "deit_s_to_tiny_distilled.yaml").distill
    assert (hard.method, hard.heads, hard.ce_weight, hard.kd_weight) == ("deit_hard", "split", 0.5, 0.5)
    lumi = load_recipe(recipes / "deit_s_to_tiny_distilled_luminet.yaml").distill
    assert (lumi.method, lumi.heads, lumi.kwargs) == ("luminet", "split", {"alpha": 2.0, "temperature": 0.7})


def test_repeated_aug_reaches_the_repeated_augmentation_sampler():
    from vitkd.data import build_loaders
    from vitkd.data.loaders import RepeatedAugSampler

    def sampler(repeats):
        cfg = DataConfig(source="digits", transform="none", image_size=8, num_workers=0, repeated_aug=repeats)
        return build_loaders(cfg, batch_size=32)[0].batch_sampler.sampler

    assert isinstance(sampler(3), RepeatedAugSampler) and sampler(3).repeats == 3
    assert getattr(sampler(0), "repeats", 1) == 1


def test_plan_shows_the_training_options():
    from vitkd.plan import format_plan, make_plan

    r = recipe(mixup={"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "label_smoothing": 0.1},
               train__model_ema={"decay": 0.99996}, data__num_workers=0)
    plan = make_plan(r)
    options = plan["training_options"]
    assert options["mixup"]["enabled"] and options["mixup"]["cutmix_alpha"] == 1.0
    assert options["model_ema"] == {"decay": 0.99996, "warmup": False} and options["repeated_aug"] == 0
    assert "Mixup 0.8 / CutMix 1.0" in format_plan(plan)
