"""Push a distilled student to the Hugging Face Hub.

    vitkd push-to-hub runs/r32x4_r8x4_luminet --repo-id alice/resnet8x4-luminet

Pushes a run folder's reported student (with a model card rendered from the run) or a bare export
folder; see ``vitkd.model_hub.push_to_hub``. The token comes from ``hf auth login`` or HF_TOKEN.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from vitkd.cli import user_errors


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="training run folder or export folder")
    parser.add_argument("--repo-id", required=True, help="Hub model repository, 'owner/name'")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", help="branch to commit to (created if missing)")
    parser.add_argument("--commit-message", help="commit message (default names the architecture)")
    args = parser.parse_args(argv)

    from vitkd.model_hub import HubPushError, push_to_hub

    with user_errors(parser, HubPushError, FileNotFoundError, ValueError):
        url = push_to_hub(
            args.folder,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
        )
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
