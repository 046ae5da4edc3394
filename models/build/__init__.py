"""The recipes of the committed default models, behind one entry: `python -m models.build`.

Each recipe module trains one or more of the defaults in models/pretrained/ on the official
splits of ../shared/data/README.md and writes its artifact and model card.
"""

import os
import platform
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = Path(os.environ.get("GENSERVE_DATA_DIR", REPO.parent / "shared" / "data"))
DEFAULT_OUT = REPO / "models" / "pretrained"


def environment(*modules: str) -> dict[str, str]:
    """Versions a model card records: Python and the given packages (`torch`, `sklearn`...)."""
    import importlib

    versions = {"python": platform.python_version()}
    for name in modules:
        versions[name] = importlib.import_module(name).__version__
    return versions


def work_dir(args, name: str) -> Path:  # type: ignore[no-untyped-def]
    """Where a recipe checkpoints (--work, default var/train/<name>), so a stopped run resumes."""
    return args.work or REPO / "var" / "train" / name


def train_lm_printing(model, train_ids, val_ids, cfg, device, work: Path) -> dict:  # type: ignore[no-untyped-def]
    """The shared LM loop with each evaluation printed as a JSON line, checkpointing to `work`."""
    import json

    from models.training.hooks import TrainHooks
    from models.training.lm import train

    hooks = TrainHooks(on_epoch=lambda m: print(json.dumps(m), flush=True), work_dir=work)
    return train(model, train_ids, val_ids, cfg, device, hooks)
