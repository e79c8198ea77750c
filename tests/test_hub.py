"""vitkd.model_hub.push_to_hub against a stand-in HfApi at the network boundary (nothing leaves the machine).

Run folders come from the real engine (the ``make_run`` fixture), copied so that tests may break them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from huggingface_hub import CommitInfo, RepoUrl, constants

from vitkd.cli import main as vitkd_main
from vitkd.model_card import render_export_card, render_model_card
from vitkd.model_hub import HubPushError, push_to_hub
from vitkd.run_folder import read_run

REPO_ID = "alice/resnet8-kd"

UPLOADED = ["README.md", "config.json", "model.safetensors"]


class FakeHfApi:
    """Records the HfApi calls push_to_hub makes and the files of each uploaded folder."""

    def __init__(self, token: str | None = None, fail_upload: bool = False):
        self.token = token
        self.fail_upload = fail_upload
        self.calls: list[tuple[str, dict]] = []
        self.uploaded: dict[str, bytes] = {}

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        if self.fail_upload:
            raise ConnectionError("simulated network failure")
        folder = Path(kwargs["folder_path"])
        self.uploaded = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        return CommitInfo(
            commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/{'0' * 40}",
            commit_message=kwargs["commit_message"],
            commit_description="",
            oid="0" * 40,
        )


def folder_state(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` with its bytes and modification time (ns)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Hub online mode with a token in the environment; temporary folders under tmp_path/tmp."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_env_token")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))


@pytest.fixture
def run(tmp_path, make_run) -> Path:
    """A copy of a finished run that reports its best epoch."""
    return Path(shutil.copytree(make_run(), tmp_path / "run"))


@pytest.fixture
def export(tmp_path, make_run) -> Path:
    """A copy of a bare export folder (a run's student/)."""
    return Path(shutil.copytree(make_run() / "student", tmp_path / "export"))


def test_push_run_uploads_reported_student_with_card(online, run, tmp_path):
    before = folder_state(run)
    api = FakeHfApi()
    url = push_to_hub(run, REPO_ID, private=True, api=api)
    assert url == f"https://huggingface.co/{REPO_ID}/commit/{'0' * 40}"
    assert [name for name, _ in api.calls] == ["create_repo", "upload_folder"]
    create = api.calls[0][1]
    assert create["repo_id"] == REPO_ID and create["private"] is True and create["exist_ok"] is True
    upload = api.calls[1][1]
    assert upload["repo_id"] == REPO_ID and upload["revision"] is None
    assert upload["token"] == "hf_env_token"
    assert upload["commit_message"] == "Add cifar_resnet8 student distilled with kd (vitkd)"
    assert sorted(api.uploaded) == UPLOADED
    assert api.uploaded["model.safetensors"] == (run / "student_best" / "model.safetensors").read_bytes()
    assert api.uploaded["config.json"] == (run / "student_best" / "config.json").read_bytes()
    assert api.uploaded["README.md"].decode() == render_model_card([read_run(run)], repo_id=REPO_ID)
    assert folder_state(run) == before
    assert list((tmp_path / "tmp").iterdir()) == []  # staging folder removed


def test_push_of_a_last_epoch_run_uploads_student(online, make_run):
    run = make_run("train.report=last")
    api = FakeHfApi()
    push_to_hub(run, REPO_ID, api=api)
    assert api.uploaded["model.safetensors"] == (run / "student" / "model.safetensors").read_bytes()
    assert "| top-1 accuracy (%) |" in api.uploaded["README.md"].decode()


def test_push_bare_export_with_revision_and_message(online, export):
    before = folder_state(export)
    api = FakeHfApi()
    push_to_hub(export, "alice/x", revision="v1", commit_message="first", token="hf_arg", api=api)
    assert [name for name, _ in api.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[1][1] == {"repo_id": "alice/x", "branch": "v1", "token": "hf_arg", "exist_ok": True}
    upload = api.calls[2][1]
    assert upload["revision"] == "v1" and upload["commit_message"] == "first" and upload["token"] == "hf_arg"
    assert sorted(api.uploaded) == UPLOADED
    assert api.uploaded["README.md"].decode() == render_export_card(export, repo_id="alice/x")
    assert folder_state(export) == before


def test_token_comes_from_the_api_client_before_the_environment(online, export):
    api = FakeHfApi(token="hf_client_token")
    push_to_hub(export, "alice/x", api=api)
    assert api.calls[0][1]["token"] == "hf_client_token"


def test_failed_upload_leaves_export_untouched(online, run, tmp_path):
    before = folder_state(run)
    api = FakeHfApi(fail_upload=True)
    with pytest.raises(ConnectionError, match="simulated"):
        push_to_hub(run, REPO_ID, api=api)
    assert folder_state(run) == before
    assert list((tmp_path / "tmp").iterdir()) == []


def _no_token(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-file"))


def _offline_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after huggingface_hub read its constants


def _offline_at_import(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as if HF_HUB_OFFLINE=1 at import time


@pytest.mark.parametrize(
    ("setup", "repo_id", "message"),
    [
        (_no_token, REPO_ID, r"No Hugging Face token found: run `hf auth login`.* or set HF_TOKEN"),
        (_offline_env, REPO_ID, r"offline mode is on \(HF_HUB_OFFLINE=1\)"),
        (_offline_at_import, REPO_ID, r"offline mode is on"),
        (None, "just-a-name", r"repo_id must be 'owner/name'.*got 'just-a-name'"),
        (None, "a/b/c", r"repo_id 'a/b/c' is not a valid Hub id"),
        (None, "alice/bad name", r"is not a valid Hub id"),
    ],
    ids=["no-token", "offline-env", "offline-import", "no-owner", "two-slashes", "bad-chars"],
)
def test_refusals_upload_nothing(online, monkeypatch, tmp_path, run, setup, repo_id, message):
    if setup is not None:
        setup(monkeypatch, tmp_path)
    before = folder_state(run)
    api = FakeHfApi()
    with pytest.raises(HubPushError, match=message):
        push_to_hub(run, repo_id, api=api)
    assert api.calls == []
    assert folder_state(run) == before


@pytest.mark.parametrize("missing", ["model.safetensors", "config.json"])
def test_missing_export_file_is_named(online, run, tmp_path, missing):
    (run / "student_best" / missing).unlink()
    api = FakeHfApi()
    with pytest.raises(HubPushError, match=rf"student_best lacks {missing}"):
        push_to_hub(run, REPO_ID, api=api)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / ("config.json" if missing == "model.safetensors" else "model.safetensors")).write_bytes(b"{}")
    with pytest.raises(HubPushError, match=rf"bare lacks {missing}"):
        push_to_hub(bare, REPO_ID, api=api)
    assert api.calls == []


def test_missing_folder_is_refused(online, tmp_path):
    api = FakeHfApi()
    with pytest.raises(HubPushError, match="is not a folder"):
        push_to_hub(tmp_path / "nowhere", REPO_ID, api=api)
    assert api.calls == []


def test_cli_reports_refusal_without_traceback(monkeypatch, run, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as exit_info:
        vitkd_main(["push-to-hub", os.fspath(run), "--repo-id", REPO_ID, "--private", "--revision", "v1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "vitkd push-to-hub: error: Hugging Face Hub offline mode is on" in err and "Traceback" not in err


def test_symlinked_export_files_are_refused(online, export, tmp_path):
    outside = tmp_path / "secret.safetensors"
    (export / "model.safetensors").rename(outside)
    (export / "model.safetensors").symlink_to(outside)
    api = FakeHfApi()
    with pytest.raises(HubPushError, match="model.safetensors is a symbolic link"):
        push_to_hub(export, REPO_ID, api=api)
    assert api.calls == []


def test_damaged_weights_are_refused_before_any_request(online, export):
    weights = export / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16])
    api = FakeHfApi()
    with pytest.raises(HubPushError, match="is not a readable safetensors file"):
        push_to_hub(export, REPO_ID, api=api)
    assert api.calls == []
