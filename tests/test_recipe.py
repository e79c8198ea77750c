"""Recipe schema: YAML + extends + --set overrides, typed, with errors that name the key and the fix."""

import textwrap

import pytest

from vitkd.recipe import Recipe, RecipeError, load_recipe, recipe_from_dict, recipe_to_dict

BASE = """
data: {source: digits, transform: none, image_size: 32}
teacher: {name: cifar_resnet8}
student: cifar_resnet8
distill: {method: luminet, kwargs: {temperature: 4.0, alpha: 31.0}, ce_weight: 2.0, warmup_epochs: 20}
optim: {lr: 0.05, weight_decay: 5e-4}
train: {epochs: 3, batch_size: 16}
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_loads_sections_with_types_and_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path, "base.yaml", BASE))
    assert isinstance(recipe, Recipe)
    assert recipe.name == "base"
    assert recipe.student.name == "cifar_resnet8"  # string shorthand for {name: ...}
    assert recipe.teachers[0].name == "cifar_resnet8"
    assert recipe.optim.weight_decay == pytest.approx(5e-4)  # "5e-4" is a string to PyYAML
    assert recipe.schedule.decay_milestones == [151, 181, 211]  # the papers' decay after 150/180/210
    assert recipe.train.epochs == 3 and recipe.train.batch_size == 16


def test_extends_merges_mappings_and_keeps_child_name(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", """
        extends: base.yaml
        distill: {kwargs: {alpha: 33.0}}
        train: {epochs: 5}
    """)
    recipe = load_recipe(child)
    assert recipe.name == "child"
    assert recipe.distill.kwargs == {"temperature": 4.0, "alpha": 33.0}
    assert recipe.distill.ce_weight == 2.0
    assert recipe.train.epochs == 5 and recipe.train.batch_size == 16


def test_extends_cycle_and_missing_parent(tmp_path):
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tmp_path / "a.yaml")
    write(tmp_path, "c.yaml", "extends: nowhere.yaml\n")
    with pytest.raises(RecipeError, match="nowhere.yaml"):
        load_recipe(tmp_path / "c.yaml")


def test_set_overrides_are_typed(tmp_path):
    path = write(tmp_path, "base.yaml", BASE)
    recipe = load_recipe(path, ["train.epochs=7", "optim.lr=1e-3", "distill.kwargs.temperature=8", "train.max_steps=null"])
    assert recipe.train.epochs == 7
    assert recipe.optim.lr == pytest.approx(1e-3)
    assert recipe.distill.kwargs["temperature"] == 8
    assert load_recipe(path, ["student.checkpoint=w.safetensors"]).student.checkpoint == "w.safetensors"
    with pytest.raises(RecipeError, match=r"train\.epochs: expected int, got 'ten'"):
        load_recipe(path, ["train.epochs=ten"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epohcs=3", "Did you mean 'epochs'"),
        ("trian.epochs=3", "Did you mean 'train'"),
        ("distill.metod=kd", "Did you mean 'method'"),
        ("train.epochs", "key=value"),
    ],
)
def test_set_typos_suggest_the_closest_key(tmp_path, override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path, "base.yaml", BASE), [override])


def test_unknown_key_in_file_names_it(tmp_path):
    path = write(tmp_path, "bad.yaml", BASE + "train: {epochs: 3, batch_sise: 8}\n")
    with pytest.raises(RecipeError, match=r"recipe\.train\.batch_sise.*Did you mean 'batch_size'"):
        load_recipe(path)


def raw(**changes):
    import yaml

    data = yaml.safe_load(BASE)
    data["name"] = "t"
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return data


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"distill__method": "lumient"}, "Did you mean 'luminet'"),
        ({"distill__method": "crld", "distill__kwargs": {}}, "data.two_view: true"),
        ({"distill__method": "none"}, "teacher is given"),
        ({"teacher": None}, "needs a teacher"),
        ({"distill__kwargs": {"temprature": 4.0}}, "valid keywords"),
        ({"train__batch_size": 1}, "at least 2 samples"),
        ({"train__mixed_precision": "bf61"}, "Did you mean 'bf16'"),
        ({"train__report": "final"}, "best"),
        ({"train__epochs": 0}, "train.epochs must be >= 1"),
        ({"hub__push": True}, "hub.repo_id"),
        ({"distill__heads": "split"}, "no distillation head"),
        ({"data__transform": "cifarr"}, "transform"),
    ],
)
def test_impossible_combinations_fail_before_building(changes, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(raw(**changes))


def test_teacher_list_is_an_ensemble_and_round_trips():
    recipe = recipe_from_dict(raw(teacher=[{"name": "cifar_resnet8"}, "cifar_wrn_16_1"]))
    assert [t.name for t in recipe.teachers] == ["cifar_resnet8", "cifar_wrn_16_1"]
    assert recipe_from_dict(recipe_to_dict(recipe)) == recipe


def test_invalid_yaml_is_a_recipe_error_naming_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntrain: {output_dir: runs/a/seed{seed}}\n")  # braces unquoted in a flow mapping
    with pytest.raises(RecipeError, match=r"bad.yaml is not valid YAML \(quote values"):
        load_recipe(path)
