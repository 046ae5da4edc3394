"""Runner slots are GPU-aware: slot i trains on the i-th visible GPU (round-robin), and sees
that one only, so that jobs spread over a machine's GPUs instead of all using the first."""

from __future__ import annotations

import os
from multiprocessing import Pipe

import pytest

import app.jobs.supervisor as supervisor
from app.settings import Settings


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_each_slot_gets_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    cuda = settings(runner_device="cuda", runner_slots=3)
    assert [cuda.runner_gpu(i) for i in range(3)] == ["3", "5", "3"]
    assert settings(runner_device="cpu", runner_slots=2).runner_gpu(0) is None
    # a lone runner sees them all: its data-parallel jobs take one per rank
    assert settings(runner_device="cuda", runner_slots=1).runner_gpu(0) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert cuda.runner_gpu(0) is None  # no GPU visible: CPU training


def test_a_runner_sees_only_its_gpu_before_torch_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_main(settings: Settings, runner_id: str, alive: object) -> None:
        seen["visible"] = os.environ["CUDA_VISIBLE_DEVICES"]

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setattr(supervisor, "runner_main", fake_main)
    reader, _ = Pipe(duplex=False)
    supervisor._run(settings(runner_device="cuda"), "t0k3n", reader, "5")
    assert seen == {"visible": "5"}
