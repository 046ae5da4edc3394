"""The one checkpoint format of every training loop: resumable, atomic, never pickled.

Any number of named modules and optimizers go into one safetensors file (weights, optimizer
moments), their param groups and the loop's own counters into `checkpoint.json` beside it.
The weights go to a new file name, fsynced; `checkpoint.json`, naming that file, is then
written to a temp name, fsynced and renamed over the old one: that rename is the commit. A
crash or a full disk at any point leaves the previous checkpoint whole, and older weights
files are deleted only after the commit. Storage errors are retried as `write_retry` says.
"""

import json
import os
import uuid
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.nn as nn

from models.artifacts import fsync_dir, retry_writes, write_durably

META_FILE = "checkpoint.json"
LEGACY_WEIGHTS = "checkpoint.safetensors"  # before weights files were named per checkpoint


def save_checkpoint(
    path: Path,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict[str, Any],
) -> None:
    """Write weights, optimizer state and `state` (JSON) atomically into directory `path`."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for k, v in module.state_dict().items():
            # clones: tied weights share storage, which safetensors refuses to write twice
            tensors[f"model.{name}.{k}"] = v.detach().cpu().clone().contiguous()
    groups = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        for idx, per_param in sd["state"].items():
            for k, v in per_param.items():
                tensors[f"optim.{name}.{idx}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
        groups[name] = sd["param_groups"]
    weights = safetensors.torch.save(tensors)
    meta = {"state": state, "param_groups": groups}
    retry_writes(lambda: _commit(path, weights, meta), f"checkpoint {path}")


def _commit(path: Path, weights: bytes, meta: dict[str, Any]) -> None:
    """One attempt; on failure the previous checkpoint is untouched and nothing is left over."""
    path.mkdir(parents=True, exist_ok=True)
    name = f"weights-{uuid.uuid4().hex[:12]}.safetensors"
    tmp = path / f"{META_FILE}.tmp"
    try:
        write_durably(path / name, weights)
        write_durably(tmp, json.dumps({**meta, "weights": name}).encode())
        os.replace(tmp, path / META_FILE)
    except BaseException:
        (path / name).unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path)
    for old in [*path.glob("weights-*.safetensors"), path / LEGACY_WEIGHTS]:
        if old.name != name:
            old.unlink(missing_ok=True)


def load_checkpoint(
    path: Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]
) -> dict[str, Any] | None:
    """Restore what save_checkpoint wrote; returns its `state`, or None if there is none."""
    if not (path / META_FILE).is_file():
        return None
    meta = json.loads((path / META_FILE).read_text())
    tensors = safetensors.torch.load_file(path / meta.get("weights", LEGACY_WEIGHTS))
    for name, module in modules.items():
        prefix = f"model.{name}."
        sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        module.load_state_dict(sd, strict=True)
    for name, opt in optimizers.items():
        prefix = f"optim.{name}."
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith(prefix):
                idx, key = k[len(prefix) :].split(".", 1)
                per_param.setdefault(int(idx), {})[key] = v
        opt.load_state_dict({"state": per_param, "param_groups": meta["param_groups"][name]})
    return meta["state"]
