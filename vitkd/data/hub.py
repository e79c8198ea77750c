"""Loading 🤗 Hub datasets that fail fast and clearly when the Hub cannot be used.

Two behaviours of ``datasets``/``huggingface_hub`` are worked around here:

* both read ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` once, at import; vitkd re-reads them at call
  time (a script may set them after ``import datasets``) and applies them for the duration of the call;
* with no network, ``datasets.load_dataset`` retries for about 25 s (5 retries with back-off) before
  failing with an unhelpful message. A single short probe of the Hub endpoint first lets vitkd switch to
  offline mode at once: a dataset already in the cache still loads, an uncached one fails in seconds.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import datasets
import huggingface_hub.constants
from huggingface_hub.utils import get_session

# Seconds to wait for the Hub endpoint to answer before treating it as unreachable.
PROBE_TIMEOUT_S = 5.0


class DatasetUnavailableError(OSError):
    """A dataset cannot be loaded from the Hub or its cache, with the reason and the fix in the message."""


def offline_requested() -> bool:
    """Whether the environment asks for offline mode *now*, by the rule ``datasets`` applies at import.

    ``HF_DATASETS_OFFLINE`` wins when set; otherwise ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``).
    """
    flag = os.environ.get("HF_DATASETS_OFFLINE")
    if flag is None:
        flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return flag.upper() in datasets.config.ENV_VARS_TRUE_VALUES


@contextlib.contextmanager
def hub_offline_mode(offline: bool) -> Iterator[None]:
    """Set the offline flags that ``datasets`` and ``huggingface_hub`` captured at import, then restore them.

    Those module-level flags are the only switch both libraries consult, so this is process-global state
    (not thread-safe); it is held only for the duration of one load.
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


def load_hub_dataset(repo_id: str) -> datasets.DatasetDict:
    """All splits of Hub dataset ``repo_id``, downloaded or from 🤗 datasets' cache (``HF_DATASETS_CACHE``).

    Raises :class:`DatasetUnavailableError` within seconds when offline mode is on or the Hub is
    unreachable and the dataset is not cached, naming the dataset, the reason and the ways out.
    """
    if offline_requested():
        reason = "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)"
    elif not hub_reachable():
        reason = (
            f"the Hub ({datasets.config.HF_ENDPOINT}) is unreachable from this machine, so vitkd "
            "used offline mode (as HF_HUB_OFFLINE=1 would)"
        )
    else:
        reason = None
    try:
        with hub_offline_mode(reason is not None):
            return datasets.load_dataset(repo_id)
    except (ConnectionError, FileNotFoundError) as exc:
        cache = datasets.config.HF_DATASETS_CACHE
        detail = f"it is not in the local 🤗 datasets cache ({cache}) and {reason}" if reason else str(exc)
        raise DatasetUnavailableError(
            f"Cannot load dataset {repo_id!r}: {detail}. To make it available, "
            f"run `datasets.load_dataset({repo_id!r})` once on a machine with internet access and the same "
            "HF_DATASETS_CACHE (with HF_HUB_OFFLINE unset), or pass a local folder as the source "
            "(a save_to_disk folder, an image folder with class sub-folders, or parquet files)."
        ) from exc
