"""docs/grafana-dashboard.json queries only metrics that genserve exports, under the names the
exposition gives them: a renamed metric would leave a panel silently empty."""

from __future__ import annotations

import json
import re

from prometheus_client import REGISTRY

from app import metrics
from app.settings import REPO_ROOT

DASHBOARD = REPO_ROOT / "docs" / "grafana-dashboard.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_names() -> set[str]:
    """Every sample name genserve's metrics can expose, whether or not it has a sample yet."""
    saved, metrics.JOBS.counts = metrics.JOBS.counts, {}  # the job series show once read
    try:
        families = list(REGISTRY.collect())
    finally:
        metrics.JOBS.counts = saved
    return {
        family.name + suffix
        for family in families
        if family.name.startswith("genserve_")
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def test_every_panel_queries_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert exprs and all(exprs)
    used = {name for expr in exprs for name in re.findall(r"genserve_\w+", expr)}
    assert used - exported_names() == set()
    for wanted in ("genserve_time_to_first_token_seconds_bucket", "genserve_training_jobs"):
        assert wanted in used
