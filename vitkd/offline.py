"""Whether the Hugging Face Hub may be contacted: the one offline check of vitkd.

``huggingface_hub`` honours ``HF_HUB_OFFLINE`` (and its legacy alias ``TRANSFORMERS_OFFLINE``);
``datasets`` additionally honours ``HF_DATASETS_OFFLINE``. Both libraries read these variables once,
at import, so a script that sets one later is not seen by them; vitkd reads them at call time and
also respects what ``huggingface_hub`` captured at import.
"""

from __future__ import annotations

import os

from huggingface_hub import constants

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline_reason() -> str | None:
    """Why the Hub must not be contacted now (e.g. ``"HF_HUB_OFFLINE=1"``), or None when it may be.

    Any of :data:`OFFLINE_VARIABLES` set to a true value (``1``, ``ON``, ``YES``, ``TRUE``) means offline,
    as does ``huggingface_hub``'s own flag when it was set at import time.
    """
    for variable in OFFLINE_VARIABLES:
        value = os.environ.get(variable, "")
        if value.upper() in constants.ENV_VARS_TRUE_VALUES:
            return f"{variable}={value}"
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE was set when huggingface_hub was imported"
    return None
