"""Loads one artifact in a throwaway process, with the loader workers use, and says whether it
loads: an imported archive must prove it builds before it is registered, without the API
process importing torch or a bad artifact touching a serving worker.

    python -m app.worker.probe DIR SHA256 TASK   ->   one JSON line: {"ok": true} or
                                                      {"ok": false, "error": "..."}
"""

from __future__ import annotations

import json
import sys


def probe(directory: str, sha256: str, task: str) -> dict[str, object]:
    """`{"ok": True}`, or `{"ok": False, "error": ...}` naming the problem but no path."""
    from models.artifacts import ArtifactError, describe_error, load_artifact

    try:
        load_artifact(directory, expected_sha256=sha256, device="cpu", task=task)
    except ArtifactError as e:
        return {"ok": False, "error": e.problem}
    except Exception as e:  # anything else a hostile artifact provokes is a refusal too
        return {"ok": False, "error": describe_error(e, directory)}
    return {"ok": True}


def main(argv: list[str]) -> int:
    import torch

    torch.set_num_threads(1)  # a check, not a serving worker: leave the cores to them
    directory, sha256, task = argv
    print(json.dumps(probe(directory, sha256, task)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
