"""🤗 Hub datasets: download only the files of the splits a run uses, and fail fast when offline.

A Hub id goes through two steps, so that only the splits in use are ever downloaded:

1. online, ``datasets.load_dataset_builder(repo, name, revision=…)`` resolves which files hold each
   split (nothing is downloaded but the dataset card), and :func:`download_hub_files` fetches the
   files of one split (plus the card) into the Hugging Face Hub cache (``HF_HUB_CACHE``) with
   ``huggingface_hub.snapshot_download``, pinned to the commit the files were resolved at;
2. the snapshot folder is then read like any local folder (:mod:`vitkd.data.sources`). Offline, the
   cached snapshot of ``revision`` is read the same way, so a run prepared on a connected machine
   reruns offline with the same cache.

``datasets.load_dataset(repo, split=…)`` alone would not do this: it downloads and prepares every
split before selecting one (ImageNet-1k's 100 000-image unlabelled test split included).

Two behaviours of ``datasets``/``huggingface_hub`` are also worked around: both capture the offline
variables at import (vitkd re-reads them at call time, :func:`vitkd.offline.offline_reason`), and with
no network they retry for ~25 s before an unhelpful error; one short probe of the Hub endpoint first
lets vitkd switch to offline mode at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import datasets
import huggingface_hub
import huggingface_hub.constants
from huggingface_hub.utils import get_session

from vitkd.offline import offline_reason

# Seconds to wait for the Hub endpoint to answer before treating it as unreachable.
PROBE_TIMEOUT_S = 5.0
# The dataset card: it holds the configurations (data.name) and features, so it travels with the data.
CARD_FILE = "README.md"


class DatasetUnavailableError(OSError):
    """A dataset cannot be loaded from the Hub or its cache, with the reason and the fix in the message."""


@contextlib.contextmanager
def hub_offline_mode(offline: bool) -> Iterator[None]:
    """Set the offline flags that ``datasets`` and ``huggingface_hub`` captured at import, then restore them.

    Those module-level flags are the only switch both libraries consult, so this is process-global state
    (not thread-safe); it is held only for the duration of one call.
    """
    saved = (
        datasets.config.HF_HUB_OFFLINE,
        datasets.config.HF_DATASETS_OFFLINE,
        huggingface_hub.constants.HF_HUB_OFFLINE,
    )
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = offline
    huggingface_hub.constants.HF_HUB_OFFLINE = offline
    try:
        yield
    finally:
        (
            datasets.config.HF_HUB_OFFLINE,
            datasets.config.HF_DATASETS_OFFLINE,
            huggingface_hub.constants.HF_HUB_OFFLINE,
        ) = saved


def hub_reachable(timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """One HEAD request to the Hub endpoint through huggingface_hub's session (so proxies apply).

    Any HTTP answer, even an error status, means the network path works; any exception (DNS failure,
    refused or timed-out connection, TLS error) means it does not.
    """
    try:
        with hub_offline_mode(False):
            get_session().head(datasets.config.HF_ENDPOINT, timeout=timeout_s)
    except Exception:  # every failure mode of the probe means the same thing: no usable network
        return False
    return True


def why_offline() -> str | None:
    """Why the Hub cannot be used now (offline variables, or an unreachable endpoint), or None."""
    reason = offline_reason()
    if reason is not None:
        return f"offline mode is on ({reason})"
    if not hub_reachable():
        return (
            f"the Hub ({datasets.config.HF_ENDPOINT}) is unreachable from this machine, so vitkd "
            "used offline mode (as HF_HUB_OFFLINE=1 would)"
        )
    return None


def _unavailable(repo_id: str, revision: str | None, detail: str) -> DatasetUnavailableError:
    at = f" at revision {revision!r}" if revision else ""
    pin = f", revision={revision!r}" if revision else ""
    return DatasetUnavailableError(
        f"Cannot load dataset {repo_id!r}{at}: {detail}. To make it available offline, fetch the splits "
        f"you use on a machine with internet access, with HF_HUB_OFFLINE unset and the same HF_HUB_CACHE "
        f"({huggingface_hub.constants.HF_HUB_CACHE}): `python -c \"from vitkd.data import load_splits; "
        f"load_splits({repo_id!r}, ['train', 'validation']{pin})\"` (your split names; add name=... for a "
        "configuration), or pass a local folder as the source (a save_to_disk folder, an image folder with "
        "class sub-folders, or parquet files)."
    )


def remote_split_files(
    repo_id: str, *, name: str | None, revision: str | None
) -> tuple[str, dict[str, list[str]]]:
    """(commit hash, {split: [paths in the repo]}) of Hub dataset ``repo_id``, configuration ``name``.

    Online only; reads the dataset card and lists files, downloads no data. Raises ValueError for an
    unknown configuration (data.name), DatasetUnavailableError for an unknown dataset or revision.
    """
    try:
        with hub_offline_mode(False):
            builder = datasets.load_dataset_builder(repo_id, name, revision=revision)
    except ValueError as exc:  # datasets lists the configurations it has when name is wrong
        if name is None:
            raise
        raise ValueError(f"data.name {name!r} of dataset {repo_id!r}: {exc}") from exc
    except datasets.exceptions.DatasetNotFoundError as exc:
        raise _unavailable(repo_id, revision, str(exc)) from exc
    if not builder.config.data_files:
        raise _unavailable(repo_id, revision, "its configuration lists no data files")
    commit, files = revision or "main", {}
    for split, urls in builder.config.data_files.items():
        for url in urls:
            commit, path = _repo_path(url, repo_id)
            files.setdefault(str(split), []).append(path)
    return commit, files


def _repo_path(url: str, repo_id: str) -> tuple[str, str]:
    """(revision, path in the repo) of a data file URL as datasets resolves them,
    ``hf://datasets/<repo_id>@<commit>/<path>`` (``zip://…::`` prefixes name a file in an archive).

    Parsed by hand because ``HfFileSystem.resolve_path`` checks the revision over the network.
    """
    prefix = f"hf://datasets/{repo_id}@"
    url = url.split("::")[-1]
    if not url.startswith(prefix):
        raise ValueError(
            f"Dataset {repo_id!r} lists data file {url!r}, which is not a file of its Hub repository; vitkd "
            "downloads repository files only: download the data yourself and pass the folder as data.source"
        )
    commit, _, path = url[len(prefix) :].partition("/")
    return commit, path


def download_hub_files(repo_id: str, commit: str, paths: list[str]) -> Path:
    """Snapshot folder of ``repo_id`` at ``commit`` holding ``paths`` and the dataset card (downloaded now)."""
    with hub_offline_mode(False):
        folder = huggingface_hub.snapshot_download(
            repo_id, repo_type="dataset", revision=commit, allow_patterns=[CARD_FILE, *paths]
        )
    return Path(folder)


def cached_hub_snapshot(repo_id: str, revision: str | None, reason: str) -> Path:
    """The cached snapshot folder of ``repo_id`` at ``revision`` (a branch, tag or commit), without network.

    Raises :class:`DatasetUnavailableError` naming ``reason`` (why the Hub is not used) when nothing of
    that revision is cached.
    """
    try:
        with hub_offline_mode(True):
            folder = huggingface_hub.snapshot_download(
                repo_id, repo_type="dataset", revision=revision, local_files_only=True
            )
    except (huggingface_hub.errors.LocalEntryNotFoundError, FileNotFoundError) as exc:
        cache = huggingface_hub.constants.HF_HUB_CACHE
        raise _unavailable(
            repo_id, revision, f"it is not in the local Hub cache ({cache}) and {reason}"
        ) from exc
    return Path(folder)
