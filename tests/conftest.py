"""Shared fixtures."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Run a module single-threaded: batch-2 forwards of small nets gain nothing from intra-op threads,
    and lose a lot to oversubscription when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- run folders from the real engine

BASE_RECIPE = """\
name: fixture
data: {source: digits, transform: none, image_size: 16, num_workers: 0, persistent_workers: false,
       train_fraction: 0.2, max_eval_samples: 100}
teacher: {name: cifar_resnet8, checkpoint: TEACHER}
student: cifar_resnet8
distill: {method: kd, kwargs: {temperature: 4.0}}
optim: {lr: 0.05}
schedule: {sched: multistep, decay_milestones: [100]}
train: {epochs: 2, batch_size: 16, checkpoint_every: 0, log_every: 100, cpu: true}
"""


@pytest.fixture(scope="session")
def make_run(tmp_path_factory):
    """``make_run(*sets, seed=0) -> Path``: a finished run folder written by ``vitkd.engine.train``.

    The run distils an untrained ``cifar_resnet8`` teacher into a ``cifar_resnet8`` student on 20 % of
    scikit-learn's digits at 16 px for two short epochs (about a second); ``sets`` are ``--set`` overrides
    of that recipe (e.g. ``"distill.method=luminet"``, ``"train.report=last"``). Runs are cached for the
    session: the same arguments give the same folder, so treat it as read-only (copy it to modify it).
    """
    import timm
    from safetensors.torch import save_file

    from vitkd.engine import train
    from vitkd.recipe import load_recipe

    root = tmp_path_factory.mktemp("runs")
    torch.manual_seed(123)
    teacher = root / "teacher.safetensors"
    save_file(timm.create_model("cifar_resnet8", num_classes=10).state_dict(), str(teacher))
    recipe_file = root / "fixture.yaml"
    recipe_file.write_text(BASE_RECIPE.replace("TEACHER", str(teacher)))
    cache: dict[tuple, object] = {}
    experiments: dict[tuple, int] = {}  # sets -> folder number

    def make(*sets: str, seed: int = 0):
        key = (sets, seed)
        if key not in cache:
            out = root / f"experiment{experiments.setdefault(sets, len(experiments))}" / f"seed{seed}"
            recipe = load_recipe(recipe_file, [*sets, f"train.seed={seed}", f"train.output_dir={out}"])
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                train(recipe, command=f"scripts/distill.py --recipe fixture.yaml --set train.seed={seed}")
            finally:
                torch.set_num_threads(threads)
            cache[key] = out
        return cache[key]

    return make


@pytest.fixture(scope="session")
def assert_same_export():
    """``assert_same_export(run_a, run_b, export="student")``: both runs exported bit-identical weights
    (the same tensor names, every tensor equal)."""
    from safetensors.torch import load_file

    def check(run_a, run_b, export: str = "student") -> None:
        a, b = (load_file(str(run / export / "model.safetensors")) for run in (run_a, run_b))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key

    return check


@pytest.fixture(scope="session")
def teacher_file(tmp_path_factory):
    """An (untrained) cifar_resnet8 teacher saved as safetensors: the engine's mechanics need no accuracy."""
    import timm
    from safetensors.torch import save_file

    import vitkd  # noqa: F401  (registers the CIFAR zoo with timm)

    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    save_file(timm.create_model("cifar_resnet8", num_classes=10).state_dict(), str(path))
    return path
