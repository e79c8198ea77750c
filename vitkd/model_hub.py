"""Model Hub upload: push an exported student (or a training run's reported student) to the Hugging Face Hub.

(Datasets from the Hub are :mod:`vitkd.data.hub_datasets`' business.)

The repository receives exactly ``model.safetensors``, ``config.json`` and ``README.md``, so anyone can
load it with ``timm.create_model('hf-hub:<owner>/<name>', pretrained=True)``.

Why not ``timm.models.push_to_hf_hub``: it takes a model and re-serialises it (``.bin`` too by default),
and writes its own generic README only when the repository has none. vitkd uploads an existing,
already checked safetensors export unchanged with a card rendered from the run, so this module drives
``huggingface_hub.HfApi`` (``create_repo`` + ``upload_folder``) directly.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import safetensors
import safetensors.torch
from huggingface_hub import HfApi, get_token
from huggingface_hub.utils import HFValidationError, validate_repo_id

from vitkd import __version__
from vitkd.export import EXPORT_FILES, read_export_config
from vitkd.model_card import render_export_card, render_model_card
from vitkd.offline import offline_reason
from vitkd.run_folder import is_finished, read_run

README = "README.md"


class HubPushError(RuntimeError):
    """A push refused before anything was sent to the Hub."""


def push_to_hub(
    export_or_run_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    api: HfApi | None = None,
) -> str:
    """Upload a student to the Hub model repository ``repo_id`` (created if needed) and return the commit URL.

    Args:
        export_or_run_dir: a run folder (its ``student_best/`` or ``student/`` export is pushed, as
            summary.json's ``report`` says, with a card rendered from the run) or a bare export folder
            (``model.safetensors`` + ``config.json``; a card is rendered from config.json).
        repo_id: ``owner/name``.
        private: create the repository private (an existing repository keeps its visibility).
        revision: branch to commit to; created from ``main`` if it does not exist.
        commit_message: defaults to a message naming the architecture (and the method for a run).
        token: Hub token; defaults to ``api.token``, then ``huggingface_hub.get_token()`` (HF_TOKEN or the
            stored login).
        api: the ``HfApi`` client to use (tests inject a stand-in).

    The local folder is only read: files are copied to a temporary staging folder that is uploaded.
    Every refusal (bad repo id, missing export file, offline mode, no token) raises HubPushError before
    any request is made.
    """
    _check_repo_id(repo_id)
    export_dir, card, default_message = _prepare(Path(export_or_run_dir), repo_id)
    _check_online()
    token = token or getattr(api, "token", None) or get_token()
    if not token:
        raise HubPushError(
            "No Hugging Face token found: run `hf auth login` (formerly `huggingface-cli login`) "
            "or set HF_TOKEN, or pass token=."
        )
    api = api or HfApi(token=token, library_name="vitkd", library_version=__version__)
    with tempfile.TemporaryDirectory(prefix="vitkd-push-") as staging:
        _stage(export_dir, card, Path(staging))
        repo_url = api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_url.repo_id, branch=revision, token=token, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_url.repo_id,
            folder_path=staging,
            commit_message=commit_message or default_message,
            revision=revision,
            token=token,
        )
    return commit.commit_url


def _check_repo_id(repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubPushError(f"repo_id {repo_id!r} is not a valid Hub id: {err}") from err
    if repo_id.count("/") != 1:
        raise HubPushError(f"repo_id must be 'owner/name' (e.g. 'alice/resnet8x4-luminet'), got {repo_id!r}.")


def _prepare(folder: Path, repo_id: str) -> tuple[Path, str, str]:
    """(export folder to upload, README text, default commit message) for a run or an export folder."""
    if not folder.is_dir():
        raise HubPushError(f"{folder} is not a folder; pass a training run folder or an export folder.")
    if is_finished(folder):
        run = read_run(folder)
        _check_export_files(run.export_dir)
        card = render_model_card([run], repo_id=repo_id)
        architecture = read_export_config(run.export_dir)["architecture"]
        message = f"Add {architecture} student distilled with {run.recipe.distill.method} (vitkd)"
        return run.export_dir, card, message
    _check_export_files(folder)
    message = f"Add {read_export_config(folder)['architecture']} export (vitkd)"
    return folder, render_export_card(folder, repo_id=repo_id), message


def _check_export_files(export_dir: Path) -> None:
    """The export holds its files as real files (no symlinks, which could upload anything the user can
    read) and ``model.safetensors`` parses into finite tensors."""
    missing = [name for name in EXPORT_FILES if not (export_dir / name).is_file()]
    if missing:
        raise HubPushError(
            f"Export folder {export_dir} lacks {', '.join(missing)}; "
            "write it with vitkd.export.export_student."
        )
    links = [str(p) for p in (export_dir, *(export_dir / name for name in EXPORT_FILES)) if p.is_symlink()]
    if links:
        raise HubPushError(f"{', '.join(links)} is a symbolic link: push refuses links (they may point anywhere); "
                           "copy the real files into the export folder")
    weights = export_dir / "model.safetensors"
    try:
        tensors = safetensors.torch.load_file(weights)
    except safetensors.SafetensorError as err:
        raise HubPushError(f"{weights} is not a readable safetensors file ({err}): re-export the student") from err
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not bool(t.isfinite().all())]
    if bad:
        raise HubPushError(f"{weights} holds NaN/inf in {', '.join(bad[:5])}: refusing to publish it")


def _check_online() -> None:
    """Refuse in offline mode (:func:`vitkd.offline.offline_reason`)."""
    reason = offline_reason()
    if reason is not None:
        raise HubPushError(f"Hugging Face Hub offline mode is on ({reason}): unset it to push.")


def _stage(export_dir: Path, card: str, staging: Path) -> None:
    """Copy exactly the files to upload into ``staging``."""
    for name in EXPORT_FILES:
        shutil.copy2(export_dir / name, staging / name)
    (staging / README).write_text(card, encoding="utf-8")
