"""Linear probe: frozen features of a tiny model on the builtin digits and a logistic-regression fit
checked against scikit-learn (model loading is vitkd.export's, tested in test_export.py)."""

import runpy
from pathlib import Path

import pytest
import timm
import torch
from sklearn.linear_model import LogisticRegression

import vitkd  # noqa: F401  (registers vitkd's models with timm)
from vitkd.export import data_config_for
from vitkd.models import freeze
from vitkd.probe import fit_linear, linear_probe, probe_features

REPO = Path(__file__).resolve().parents[1]
SIZE = 16  # digits are 8 px: probing at 16 instead of the model's 32 keeps the test fast


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    """An untrained cifar_resnet8: random conv features, which a linear probe can still read digits from."""
    torch.manual_seed(0)
    return freeze(timm.create_model("cifar_resnet8", num_classes=100))


@pytest.fixture(scope="module")
def features(model, one_thread):
    """Features and labels of digits' 1437 training and 360 evaluation images."""
    return probe_features(model, data_config_for(model, "digits", image_size=SIZE, num_workers=0))


def accuracy(layer, x, y) -> float:
    return 100.0 * (layer(x).argmax(1) == y).float().mean().item()


def test_probe_of_random_features_reads_digits_far_above_chance(model):
    data = data_config_for(model, "digits", image_size=SIZE, num_workers=0)
    result = linear_probe(model, data, max_iter=50)
    assert (result.num_train, result.num_eval, result.num_classes, result.feature_dim) == (1437, 360, 10, 64)
    assert result.top1 > 80.0  # chance is 10 %
    assert result.train_top1 >= result.top1 - 5.0 and 0.0 <= result.ece <= 100.0


def test_probe_with_shuffled_labels_stays_near_chance(features):
    """The control: the same features and fit, but train labels that carry no information."""
    train_x, train_y, eval_x, eval_y, _ = features
    shuffled = train_y[torch.randperm(len(train_y), generator=torch.Generator().manual_seed(0))]
    assert accuracy(fit_linear(train_x, shuffled, 10, max_iter=50), eval_x, eval_y) < 25.0
    assert accuracy(fit_linear(train_x, train_y, 10, max_iter=50), eval_x, eval_y) > 80.0


def test_fit_is_invariant_to_feature_scale(features):
    """Features are standardised before the fit (and the scaling folded back), so rescaling feature
    dimensions by positive constants leaves the probe's logits unchanged (up to float32 rounding, which
    the L-BFGS iterations carry along: 4e-3 at most here, for logits of magnitude ~10)."""
    train_x, train_y, eval_x, *_ = features
    scale = torch.logspace(-2, 2, train_x.shape[1])
    plain = fit_linear(train_x, train_y, 10, max_iter=30)
    scaled = fit_linear(train_x * scale, train_y, 10, max_iter=30)
    torch.testing.assert_close(scaled(eval_x * scale), plain(eval_x), atol=2e-2, rtol=0)


def test_fit_matches_scikit_learn_logistic_regression():
    """Same objective, independent solver: our mean CE + wd/2·‖W‖² is sklearn's ‖W‖²/2 + C·ΣCE
    with C = 1/(wd·N), on standardised features with an unpenalised intercept."""
    generator = torch.Generator().manual_seed(0)
    centres = 2.0 * torch.randn(3, 5, generator=generator)
    labels = torch.arange(300) % 3
    x = centres[labels] + torch.randn(300, 5, generator=generator) * torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0])
    weight_decay = 0.05
    ours = fit_linear(x, labels, 3, weight_decay=weight_decay, max_iter=500)
    standardised = ((x - x.mean(0)) / x.std(0)).double().numpy()
    reference = LogisticRegression(C=1.0 / (weight_decay * len(x)), tol=1e-10, max_iter=10_000)
    reference.fit(standardised, labels.numpy())
    expected = torch.from_numpy(reference.predict_proba(standardised)).float()
    torch.testing.assert_close(ours(x).softmax(1), expected, atol=2e-4, rtol=0)


def test_training_split_goes_through_the_evaluation_pipeline(model):
    """No augmentation: the cifar preset's random crops and flips would change the features each time."""
    data = data_config_for(model, "digits", image_size=SIZE, num_workers=0)
    assert data.transform == "cifar"  # the preset whose evaluation pipeline matches the model's crop_pct 1.0
    first, second = probe_features(model, data), probe_features(model, data)
    assert torch.equal(first.train_x, second.train_x) and len(first.train_y) == 1437


def test_linear_probe_script(make_run, capsys):
    folder = make_run() / "student"  # a 16 px digits student, as the engine exports it
    main = runpy.run_path(str(REPO / "scripts/linear_probe.py"))["main"]
    assert main(["--model", str(folder), "--data", "digits", "--epochs", "20", "--num-workers", "0"]) == 0
    report = capsys.readouterr().out
    assert '"num_eval": 360' in report and '"top1":' in report
