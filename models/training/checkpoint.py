"""The one checkpoint format of every training loop: resumable, atomic, never pickled.

Any number of named modules and optimizers go into one safetensors file (weights, optimizer
moments), their param groups and the loop's own counters into JSON beside it. Each file is
written to a temp name and renamed, so a crash leaves the previous checkpoint whole.
"""

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.nn as nn


def save_checkpoint(
    path: Path,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict[str, Any],
) -> None:
    """Write weights, optimizer state and `state` (JSON) atomically into directory `path`."""
    path.mkdir(parents=True, exist_ok=True)
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
    safetensors.torch.save_file(tensors, path / "checkpoint.safetensors.tmp")
    (path / "checkpoint.safetensors.tmp").replace(path / "checkpoint.safetensors")
    meta = json.dumps({"state": state, "param_groups": groups})
    (path / "checkpoint.json.tmp").write_text(meta)
    (path / "checkpoint.json.tmp").replace(path / "checkpoint.json")


def load_checkpoint(
    path: Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]
) -> dict[str, Any] | None:
    """Restore what save_checkpoint wrote; returns its `state`, or None if there is none."""
    if not (path / "checkpoint.json").is_file():
        return None
    meta = json.loads((path / "checkpoint.json").read_text())
    tensors = safetensors.torch.load_file(path / "checkpoint.safetensors")
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
