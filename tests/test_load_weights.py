"""load_weights: every checkpoint form loads, and every bad input is refused with a message naming it."""

from __future__ import annotations

import argparse
import json
import logging

import pytest
import safetensors.torch
import timm
import torch

from vitkd.models import CheckpointMismatchError, load_weights

NAME = "cifar_resnet8"  # 84 k parameters, head "fc"


def _model(num_classes: int = 10, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(NAME, num_classes=num_classes)


def _state(num_classes: int = 10) -> dict[str, torch.Tensor]:
    """A checkpoint state dict that differs from every fresh ``_model()`` (seed 1 instead of 0)."""
    return _model(num_classes, seed=1).state_dict()


def _assert_holds(model: torch.nn.Module, state: dict[str, torch.Tensor], keys=None) -> None:
    model_state = model.state_dict()
    for key in keys if keys is not None else state:
        assert torch.equal(model_state[key], state[key]), key


@pytest.mark.parametrize("wrapper", [None, "model", "state_dict", "model_state_dict", "module"])
def test_pickled_state_dict_bare_or_wrapped(tmp_path, wrapper):
    state = _state()
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 3}, tmp_path / "ckpt.pth")
    model = _model()
    report = load_weights(model, tmp_path / "ckpt.pth")
    assert report.complete and set(report.loaded) == set(state) and report.ignored == ()
    _assert_holds(model, state)


def test_safetensors_file(tmp_path):
    state = _state()
    safetensors.torch.save_file(state, tmp_path / "weights.safetensors")
    model = _model()
    assert load_weights(model, str(tmp_path / "weights.safetensors")).complete
    _assert_holds(model, state)


@pytest.mark.parametrize("weights_file", ["model.safetensors", "pytorch_model.bin"])
def test_export_folder(tmp_path, weights_file):
    state = _state()
    (tmp_path / "config.json").write_text(json.dumps({"architecture": NAME, "num_classes": 10}))
    if weights_file.endswith(".safetensors"):
        safetensors.torch.save_file(state, tmp_path / weights_file)
    else:
        torch.save(state, tmp_path / weights_file)
    model = _model()
    assert load_weights(model, tmp_path).complete
    _assert_holds(model, state)


@pytest.mark.parametrize("prefix", ["module.", "student.", "module.student."])
def test_wrapper_prefix_carried_by_every_key_is_stripped(tmp_path, prefix):
    state = _state()
    torch.save({"model": {prefix + k: v for k, v in state.items()}}, tmp_path / "ckpt.pth")
    model = _model()
    report = load_weights(model, tmp_path / "ckpt.pth")
    assert report.stripped_prefix == prefix and report.complete
    _assert_holds(model, state)


def test_prefix_on_some_keys_only_is_kept_and_reported(tmp_path):
    state = _state()
    state["module.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "ckpt.pth")
    with pytest.raises(CheckpointMismatchError, match=r"not in the model \(1\): module\.extra"):
        load_weights(_model(), tmp_path / "ckpt.pth")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth' does not exist"):
        load_weights(_model(), tmp_path / "nope.pth")


def test_folder_without_weights_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="holds neither model.safetensors nor pytorch_model.bin"):
        load_weights(_model(), tmp_path)


def test_wrong_key_lists_missing_and_unexpected(tmp_path):
    state = _state()
    state["head.weight"] = state.pop("fc.weight")
    torch.save(state, tmp_path / "ckpt.pth")
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as error:
        load_weights(model, tmp_path / "ckpt.pth")
    assert "missing from the checkpoint (1): fc.weight" in str(error.value)
    assert "not in the model (1): head.weight" in str(error.value)
    _assert_holds(model, before)  # a refused checkpoint changes nothing


def test_wrong_shape_names_both_shapes(tmp_path):
    state = _state()
    state["layer1.0.conv1.weight"] = torch.zeros(16, 16, 1, 1)
    torch.save(state, tmp_path / "ckpt.pth")
    with pytest.raises(CheckpointMismatchError) as error:
        load_weights(_model(), tmp_path / "ckpt.pth")
    assert "layer1.0.conv1.weight (checkpoint [16, 16, 1, 1], model [16, 16, 3, 3])" in str(error.value)
    assert "classes" not in str(error.value)  # not a head problem


def test_class_count_mismatch_names_both_counts_and_the_fixes(tmp_path):
    torch.save({"model": _state(num_classes=100)}, tmp_path / "ckpt.pth")
    with pytest.raises(CheckpointMismatchError) as error:
        load_weights(_model(num_classes=10), tmp_path / "ckpt.pth")
    assert (
        "checkpoint head 'fc' has 100 classes, model has 10: "
        "pass num_classes=100 or ignore=['fc.*'] to re-initialise the head"
    ) in str(error.value)


def test_ignore_leaves_the_head_to_its_initialisation(tmp_path):
    state = _state(num_classes=100)
    torch.save({"model": state}, tmp_path / "ckpt.pth")
    model = _model(num_classes=10)
    fresh_head = model.fc.weight.detach().clone()
    report = load_weights(model, tmp_path / "ckpt.pth", ignore=["fc.*"])
    assert report.complete and set(report.ignored) == {"fc.weight", "fc.bias"}
    assert set(report.loaded) == set(state) - {"fc.weight", "fc.bias"}
    _assert_holds(model, state, report.loaded)
    assert torch.equal(model.fc.weight, fresh_head)


def test_ignore_must_be_a_sequence_of_patterns(tmp_path):
    torch.save(_state(), tmp_path / "ckpt.pth")
    with pytest.raises(TypeError, match=r"ignore must be a sequence of fnmatch patterns, e.g. \['fc.\*'\]"):
        load_weights(_model(), tmp_path / "ckpt.pth", ignore="fc.*")


def test_non_strict_loads_what_fits_and_reports_the_rest(tmp_path, caplog):
    state = _state(num_classes=100)
    state["extra.weight"] = torch.zeros(3)
    del state["bn1.bias"]
    torch.save(state, tmp_path / "ckpt.pth")
    model = _model(num_classes=10)
    with caplog.at_level(logging.WARNING, logger="vitkd.models.weights"):
        report = load_weights(model, tmp_path / "ckpt.pth", strict=False)
    assert not report.complete
    assert report.missing == ("bn1.bias",) and report.unexpected == ("extra.weight",)
    assert report.mismatched == (("fc.weight", (100, 64), (10, 64)), ("fc.bias", (100,), (10,)))
    _assert_holds(model, state, report.loaded)
    assert "has 100 classes, model has 10" in caplog.text and "strict=False" in caplog.text


def test_pickled_objects_are_refused_with_the_way_out(tmp_path):
    torch.save({"model": _state(), "args": argparse.Namespace(lr=0.05)}, tmp_path / "ckpt.pth")
    with pytest.raises(
        ValueError, match=r"weights_only=True\): WeightsUnpickler error: .*argparse\.Namespace"
    ) as error:
        load_weights(_model(), tmp_path / "ckpt.pth")
    assert "re-save its state dict" in str(error.value) and "safetensors" in str(error.value)


def test_non_state_dict_content_is_refused(tmp_path):
    torch.save({"epoch": 3, "acc": torch.tensor(0.7)}, tmp_path / "ckpt.pth")
    with pytest.raises(ValueError, match=r"entries epoch are not tensors; expected a state dict"):
        load_weights(_model(), tmp_path / "ckpt.pth")
