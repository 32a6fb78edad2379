"""Reading the deployable stack (compose/, deploy/k8s/) and the settings the code reads,
for tests/integration/test_deploy.py.

Nothing here needs a Docker engine or a Kubernetes cluster: the compose file is read as YAML
(and validated by a Compose implementation when one is installed), the manifests are rendered
by kustomize and checked against the schemas bundled with ``kubernetes-validate``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from common.settings import (
    SERVICE_PORTS,
    CommonSettings,
    KafkaSettings,
    MongoSettings,
    PostgresSettings,
    RedisSettings,
    S3Settings,
)
from devstack.paths import BIN, REPO

COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
K8S_DIR = REPO / "deploy" / "k8s"

# Kubernetes versions the rendered manifests must validate against: the oldest we support
# (gRPC probes are GA since 1.27, autoscaling/v2 since 1.23) and the newest bundled schemas.
K8S_MIN_VERSION = "1.30.0"

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
TLS_FIELDS = ("tls_ca_file", "tls_cert_file", "tls_key_file")

# Settings mixins -> what the process needs running before it starts (compose services).
STORE_DEPENDENCIES: dict[type[Any], tuple[str, str]] = {
    RedisSettings: ("redis", "service_healthy"),
    KafkaSettings: ("kafka", "service_healthy"),
    MongoSettings: ("mongo", "service_healthy"),
    S3Settings: ("create_bucket", "service_completed_successfully"),
}


# --- the settings the code reads ----------------------------------------------------------------


def service_built(package: str) -> bool:
    """A process exists once its package has a ``__main__.py`` (as devstack decides)."""
    return (REPO / package / "__main__.py").exists()


def settings_class(package: str) -> type[CommonSettings] | None:
    """The settings class a process builds: defined in ``<package>/settings.py``, else in
    ``<package>/__main__.py``; None while neither defines one."""
    for module_name in (f"{package}.settings", f"{package}.__main__"):
        path = REPO / package / (module_name.rsplit(".", 1)[1] + ".py")
        if not path.exists():
            continue
        module = importlib.import_module(module_name)
        found = [
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, CommonSettings) and cls.__module__ == module.__name__
        ]
        # The most derived one: not a base of another class found there.
        leaves = [cls for cls in found if not any(other is not cls and issubclass(other, cls) for other in found)]
        if len(leaves) > 1:
            raise AssertionError(f"{module_name} defines several settings classes: {[c.__name__ for c in leaves]}")
        if leaves:
            return leaves[0]
    return None


def env_names(cls: type[Any]) -> dict[str, str]:
    """Environment variable -> field name, as pydantic-settings reads them (``SHOP_<FIELD>``)."""
    prefix = cls.model_config.get("env_prefix", "")
    names = {}
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        names[(alias if isinstance(alias, str) else f"{prefix}{name}").upper()] = name
    return names


def required_env(cls: type[Any]) -> set[str]:
    """The variables a deployment must set for the process to work off-loopback: every field
    whose default points at loopback (data stores, other services, the bind address), and the
    token key files (unset, no token is accepted, or user_svc signs with a throwaway key), the
    TLS material (service identity: without it no gRPC connection), and the secrets (no
    default outside development mode)."""
    required = set()
    for env, name in env_names(cls).items():
        default = cls.model_fields[name].default
        if isinstance(default, str) and any(host in default for host in LOOPBACK):
            required.add(env)
        if name in ("jwt_public_key_file", "jwt_private_key_file", *TLS_FIELDS):
            required.add(env)
        if cls.model_fields[name].annotation in (SecretStr, SecretStr | None):
            required.add(env)  # no default outside development mode
    return required


def store_dependencies(cls: type[Any]) -> dict[str, str]:
    """Compose services (and the condition) a process with these settings must wait for."""
    return {service: condition for mixin, (service, condition) in STORE_DEPENDENCIES.items() if issubclass(cls, mixin)}


def uses_postgres(cls: type[Any]) -> bool:
    return issubclass(cls, PostgresSettings)


def k8s_name(package: str) -> str:
    """user_svc -> user-svc (Kubernetes names and the hyphenated compose aliases)."""
    return package.replace("_", "-")


PACKAGES = tuple(SERVICE_PORTS)
# The HTTP processes (health at /healthz); the rest are gRPC services.
HTTP_PACKAGES = ("edge", "web")
GRPC_PACKAGES = tuple(name for name in SERVICE_PORTS if name not in HTTP_PACKAGES)


# --- compose -------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(text: str) -> str:
    """Compose's ``${VAR:-default}`` with every variable unset (the committed defaults)."""
    return _VAR.sub(lambda m: m.group(2) or "", text)


def compose_variables() -> set[str]:
    return {m.group(1) for m in _VAR.finditer(COMPOSE_FILE.read_text())}


@functools.cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(interpolate(COMPOSE_FILE.read_text()))
    assert isinstance(data, dict)
    return data


def compose_service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"compose has no service {name!r}"
    service = services[name]
    assert isinstance(service, dict)
    return service


def compose_env(name: str) -> dict[str, str]:
    env = compose_service(name).get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


def published_ports(name: str) -> list[tuple[int, int]]:
    """(host port, container port) of a compose service's short-syntax ``ports``."""
    pairs = []
    for entry in compose_service(name).get("ports") or []:
        parts = str(entry).split("/")[0].split(":")
        pairs.append((int(parts[-2]), int(parts[-1])))
    return pairs


def compose_tool() -> list[str] | None:
    """A Compose implementation: the docker CLI plugin, else docker-compose (v1 or v2)."""
    docker = shutil.which("docker")
    if docker and _succeeds([docker, "compose", "version"]):
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone and _succeeds([standalone, "version"]):
        return [standalone]
    return None


def _succeeds(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=60, check=False).returncode == 0
    except OSError:
        return False


# --- Dockerfile ---------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuations joined, comments out."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for line in lines:
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), rest.strip()))
    return stages


def dockerfile_args() -> dict[str, str]:
    """Global ARG defaults (before the first FROM)."""
    args = {}
    for raw in DOCKERFILE.read_text().split("\nFROM", 1)[0].splitlines():
        match = re.match(r"ARG\s+(\w+)=(\S+)", raw.strip())
        if match:
            args[match.group(1)] = match.group(2)
    return args


def runtime_stage() -> list[tuple[str, str]]:
    return dockerfile_stages()[-1]


def runtime_env() -> dict[str, str]:
    """ENV of the final stage (``ENV A=1 B=2`` form)."""
    env: dict[str, str] = {}
    for instruction, rest in runtime_stage():
        if instruction == "ENV":
            for match in re.finditer(r"(\w+)=(\S+)", rest):
                env[match.group(1)] = match.group(2)
    return env


def runtime_workdir() -> str:
    workdirs = [rest for instruction, rest in runtime_stage() if instruction == "WORKDIR"]
    assert workdirs, "the runtime stage sets no WORKDIR"
    return workdirs[-1]


# What compose/Dockerfile copies into /app: these directories, and every *_svc package.
IMAGE_CODE = ("common", "edge", "web", "gen", "migrations")
IMAGE_COPY_STEP = "cp -r common edge web gen migrations /app/"


def build_image_tree(dest: Path) -> Path:
    """The image's /app, made from this checkout by the Dockerfile's rule."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in IMAGE_CODE:
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    for package in sorted(REPO.glob("*_svc")):
        if (package / "__init__.py").exists():
            shutil.copytree(package, dest / package.name, ignore=ignore)
    return dest


def in_tree(value: str, app: Path) -> str:
    """A path list of the image (/app/...) with /app replaced by ``app``."""
    workdir = runtime_workdir().rstrip("/")
    return ":".join(str(app) + part[len(workdir) :] if part.startswith(workdir) else part for part in value.split(":"))


def image_argv(argv: list[str]) -> list[str]:
    """A command line of the compose file as this interpreter runs it like the image's: ``-S``
    keeps this venv's .pth files (which put the whole checkout on sys.path) out, so only the
    image's code and PYTHONPATH count; the installed packages come through PYTHONPATH."""
    assert argv[0] == "python", argv
    return [sys.executable, "-S", *argv[1:]]


def image_env(app: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment of a process of the image: this one's, the image's ENV with /app
    pointed at ``app``, then ``extra``; PYTHONPATH is always the image's (plus the installed
    packages), whatever ``extra`` says (devstack's environment puts the checkout on it)."""
    image = {key: in_tree(value, app) for key, value in runtime_env().items() if key != "PATH"}
    env = {**os.environ, **image, **extra}
    purelib, platlib = sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]
    env["PYTHONPATH"] = ":".join(dict.fromkeys([*image["PYTHONPATH"].split(":"), purelib, platlib]))
    return env


# --- kustomize ----------------------------------------------------------------------------------


def kustomize_tool() -> list[str] | None:
    """kustomize (v5) as built by `make deploy-check`, else on the PATH, else kubectl's own
    when it embeds kustomize v5."""
    for candidate in (BIN / "kustomize", shutil.which("kustomize")):
        if candidate and Path(candidate).exists():
            return [str(candidate), "build"]
    kubectl = shutil.which("kubectl")
    if kubectl:
        result = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True, check=False)
        match = re.search(r"Kustomize Version: v(\d+)", result.stdout)
        if match and int(match.group(1)) >= 5:
            return [kubectl, "kustomize"]
    return None


def kustomizations() -> list[Path]:
    """The base and every overlay."""
    overlays = sorted(p.parent for p in (K8S_DIR / "overlays").glob("*/kustomization.yaml"))
    return [K8S_DIR / "base", *overlays]


@functools.cache
def render(directory: Path) -> tuple[dict[str, Any], ...]:
    tool = kustomize_tool()
    assert tool is not None
    result = subprocess.run([*tool, str(directory)], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, f"{' '.join(tool)} {directory} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def by_kind(objects: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def container_env(objects: tuple[dict[str, Any], ...], container: dict[str, Any]) -> dict[str, str | None]:
    """What a container's environment holds: ConfigMap values (envFrom, resolved in the
    rendered objects), literal values, and None for values from Secrets."""
    config_maps = by_kind(objects, "ConfigMap")
    env: dict[str, str | None] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        assert ref is not None, f"envFrom other than configMapRef hides the variable names: {source}"
        assert ref["name"] in config_maps, f"ConfigMap {ref['name']} is not in the rendered manifests"
        env.update(config_maps[ref["name"]].get("data") or {})
    for item in container.get("env") or []:
        env[item["name"]] = item.get("value") if "valueFrom" not in item else None
    return env


def secret_refs(container: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        item["valueFrom"]["secretKeyRef"]
        for item in container.get("env") or []
        if "secretKeyRef" in (item.get("valueFrom") or {})
    ]
