"""What every /classify peer shares: genserve's own sentiment artifact, loaded with genserve's
own loader, and genserve's response shape, so one wrk script drives them all.

The peer virtualenvs do not install genserve: the repository root goes on sys.path and only
`models` (torch, scikit-learn, skops, safetensors, numpy) is imported from it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ARTIFACT = Path(os.environ.get("PEER_ARTIFACT", REPO / "models" / "pretrained" / "sentiment"))
MAX_BATCH_SIZE = int(os.environ.get("PEER_MAX_BATCH_SIZE", "8"))
# seconds a batch may wait to fill (LitServe batch_timeout, Ray Serve batch_wait_timeout_s)
BATCH_TIMEOUT = float(os.environ.get("PEER_BATCH_TIMEOUT", "0.001"))


def load() -> Any:
    """The classifier, as genserve's worker builds it (torch kept to one thread, as genserve's
    worker is on a 2-core machine)."""
    import torch

    torch.set_num_threads(int(os.environ.get("PEER_TORCH_THREADS", "1")))
    from models.artifacts import load_artifact

    return load_artifact(ARTIFACT, task="classification")


def results(model: Any, texts: list[str]) -> list[dict[str, Any]]:
    """genserve's `results` for `texts`: the best label, its score, every label's score
    (app/services/classify.py rank(), without pydantic)."""
    import numpy as np

    probs = np.asarray(model.predict_proba(texts), dtype=np.float32)
    labels = model.labels
    out = []
    for row in probs:
        order = np.argsort(-row, kind="stable")
        best = int(order[0])
        out.append(
            {
                "label": labels[best],
                "score": float(row[best]),
                "scores": {labels[int(i)]: float(row[int(i)]) for i in order},
            }
        )
    return out


def texts_of(body: Any) -> list[str]:
    """`inputs` of a genserve /classify body; anything else is a ValueError (-> 422/400)."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise ValueError("body must be {'inputs': [str, ...]}")
    texts = body["inputs"]
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("inputs must be a non-empty list of strings")
    return texts
