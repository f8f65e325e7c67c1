"""The Kubernetes manifests in deploy/kubernetes: schema-valid, wired as the harness expects, no secrets.

Schemas: the Kubernetes OpenAPI schemas bundled in the PyPI package kubernetes-validate, in strict
mode (unknown fields fail), checked with the network switched off. Kustomize output is checked with
`kubectl kustomize` when kubectl is installed; everything else reads the YAML directly.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import credentials
from harness.credentials import CredentialsError, is_loopback, is_loopback_host
from harness.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
SECRETS_DIR = K8S / "secrets"
VARIANTS = {"interactive": K8S, "ci": K8S / "ci"}  # the kustomizations a user applies
NAMESPACE = "claude-loadtest"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")  # oldest we claim and the newest the validator bundles
PLACEHOLDER = "REPLACE_ME"
API_KEY_SECRET, API_KEY = "anthropic-api-key", "ANTHROPIC_API_KEY"
INFLUX_SECRET, INFLUX_TOKEN = "influxdb-token", "INFLUXDB_V2_TOKEN"
WEB_LOGIN_SECRET, WEB_USER, WEB_PASSWORD = "web-login", credentials.WEB_USER_ENV, credentials.WEB_PASSWORD_ENV
WORKER_SECRET_SECRET, WORKER_SECRET = "worker-secret", credentials.WORKER_SECRET_ENV
SECRET_TEMPLATES = {  # Secret name: its keys, as secrets/ shows them and the pods read them
    API_KEY_SECRET: {API_KEY},
    INFLUX_SECRET: {INFLUX_TOKEN},
    WEB_LOGIN_SECRET: {WEB_USER, WEB_PASSWORD},
    WORKER_SECRET_SECRET: {WORKER_SECRET},
}
INFLUX_CONFIG = "influxdb-config"
INFLUX_CONFIG_KEYS = {"INFLUXDB_V2_URL", "INFLUXDB_V2_ORG", "INFLUXDB_V2_BUCKET"}
SCENARIOS_CONFIGMAP = "claude-loadtest-scenarios"
LOCUSTFILE_COMMAND = ["locust", "-f", "locustfile.py"]
MASTER_PORT, WEB_PORT = 5557, 8089
WORKLOAD_KINDS = {"Deployment", "Job", "StatefulSet", "DaemonSet", "Pod", "CronJob"}


# --------------------------------------------------------------------------- loading


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def kustomization_files() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


@cache
def render(directory: Path) -> tuple[dict[str, Any], ...]:
    """The resources a kustomization produces (resources only: these kustomizations use no patches)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    assert set(kustomization) <= {"apiVersion", "kind", "namespace", "resources", "images"}, (
        f"{directory}: this renderer only knows resources/namespace/images; extend it with the kustomization"
    )
    docs: list[dict[str, Any]] = []
    for entry in kustomization["resources"]:
        target = (directory / entry).resolve()
        docs.extend(render(target) if target.is_dir() else load_docs(target))
    return tuple(docs)


def by_kind(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def containers(workload: dict[str, Any], init: bool = True) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return list(spec["containers"]) + (list(spec.get("initContainers", [])) if init else [])


def locust_container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod_spec(workload)["containers"] if c["name"] == "locust"]
    return container


def command(container: dict[str, Any]) -> list[str]:
    return [str(arg) for arg in container.get("command", []) + container.get("args", [])]


def option(cmd: list[str], name: str) -> str | None:
    return cmd[cmd.index(name) + 1] if name in cmd else None


def workloads(docs: tuple[dict[str, Any], ...], component: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] in WORKLOAD_KINDS and pod_labels(doc).get("app.kubernetes.io/component") == component]


def the_master(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    (master,) = workloads(docs, "master")
    return master


def the_worker(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    (worker,) = workloads(docs, "worker")
    return worker


def project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


variants = pytest.mark.parametrize("variant", sorted(VARIANTS))


# --------------------------------------------------------------------------- schemas (offline)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to resolve or connect fails the test: the validator must work offline."""

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("network access during offline validation")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture(scope="module")
def kv() -> Any:
    import kubernetes_validate.utils  # the test extra installs it; a missing one fails, never skips

    return kubernetes_validate.utils


def test_validator_bundles_the_schemas(kv: Any) -> None:
    bundled = kv.all_versions()
    for version in KUBERNETES_VERSIONS:
        assert version in bundled, f"kubernetes-validate bundles {bundled}, not {version}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_matches_the_kubernetes_schema(kv: Any, no_network: None, path: Path, version: str) -> None:
    docs = load_docs(path)
    assert docs, f"{path} holds no resource"
    for doc in docs:
        try:
            validated = kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            where = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{path.relative_to(ROOT)} {doc['kind']}/{doc['metadata']['name']} at {where}: {exc.message}")
        except kv.SchemaNotFoundError as exc:  # the CLI only warns about this; here it is a failure
            pytest.fail(exc.message)
        assert validated == version.rsplit(".", 1)[0]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["spec"].__setitem__("replicaz", 2), "replicaz"),  # unknown field: strict mode
        (lambda d: d["spec"].__setitem__("replicas", "four"), "four"),  # wrong type
        (lambda d: pod_spec(d)["containers"][0].pop("name"), "name"),  # required field
    ],
    ids=["unknown-field", "wrong-type", "missing-required"],
)
def test_validator_is_not_vacuous(kv: Any, no_network: None, mutate: Any, expected: str) -> None:
    doc = load_docs(K8S / "common" / "worker-deployment.yaml")[0]
    mutate(doc)
    with pytest.raises(kv.ValidationError) as caught:
        kv.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
    assert expected in caught.value.message


# --------------------------------------------------------------------------- kustomizations


def test_every_manifest_is_listed_by_exactly_one_kustomization() -> None:
    listed: dict[Path, list[Path]] = {}
    for kustomization_path in kustomization_files():
        kustomization = yaml.safe_load(kustomization_path.read_text(encoding="utf-8"))
        assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
        assert kustomization["kind"] == "Kustomization"
        assert kustomization.get("namespace") == NAMESPACE, kustomization_path
        for entry in kustomization["resources"]:
            target = (kustomization_path.parent / entry).resolve()
            assert target.exists(), f"{kustomization_path.relative_to(ROOT)} lists {entry}, which does not exist"
            if target.is_dir():
                assert (target / "kustomization.yaml").is_file(), f"{entry} is a directory without kustomization.yaml"
            else:
                listed.setdefault(target, []).append(kustomization_path)
    for path in manifest_files():
        owners = listed.get(path.resolve(), [])
        if path.is_relative_to(SECRETS_DIR):
            # templates only: `kubectl apply -k` would reset a real key to the placeholder
            assert not owners, f"{path.relative_to(ROOT)} must not be in a kustomization"
        else:
            assert len(owners) == 1, f"{path.relative_to(ROOT)} is listed by {len(owners)} kustomizations"


def test_every_resource_is_in_the_namespace() -> None:
    for path in manifest_files():
        for doc in load_docs(path):
            if doc["kind"] == "Namespace":
                assert doc["metadata"]["name"] == NAMESPACE
            else:
                assert doc["metadata"].get("namespace") == NAMESPACE, f"{path.relative_to(ROOT)}: {doc['kind']}"


@variants
def test_variant_has_one_master_and_one_worker_set(variant: str) -> None:
    docs = render(VARIANTS[variant])
    master, worker = the_master(docs), the_worker(docs)
    assert master["kind"] == ("Deployment" if variant == "interactive" else "Job")
    assert worker["kind"] == "Deployment"
    assert not by_kind(docs, "Secret"), "Secrets are created in the cluster, never by a kustomization"
    assert len(by_kind(docs, "Namespace")) == 1


# --------------------------------------------------------------------------- roles


@variants
def test_master_runs_the_locustfile_as_master_with_the_mounted_scenario(variant: str) -> None:
    docs = render(VARIANTS[variant])
    master = the_master(docs)
    cmd = command(locust_container(master))
    assert cmd[:3] == LOCUSTFILE_COMMAND
    assert "--master" in cmd and "--worker" not in cmd
    host = option(cmd, "--host") or ""
    assert host.startswith("https://") and not is_loopback(host)  # the real API: needs the key secret
    scenario = option(cmd, "--scenario")
    assert scenario is not None
    mounts = {m["mountPath"]: m for m in locust_container(master)["volumeMounts"]}
    scenario_dir, scenario_key = str(Path(scenario).parent), Path(scenario).name
    assert scenario_dir in mounts and mounts[scenario_dir].get("readOnly") is True
    volumes = {v["name"]: v for v in pod_spec(master)["volumes"]}
    assert volumes[mounts[scenario_dir]["name"]]["configMap"]["name"] == SCENARIOS_CONFIGMAP
    assert scenario_key in one(docs, "ConfigMap", SCENARIOS_CONFIGMAP)["data"]
    # the workers run in other pods: the worker port must listen beyond the harness default 127.0.0.1
    assert option(cmd, "--master-bind-host") == "0.0.0.0"
    if variant == "interactive":
        assert master["spec"]["replicas"] == 1
        assert option(cmd, "--web-host") == "0.0.0.0"
        assert "--web-login" in cmd
        assert "--headless" not in cmd
        probe = locust_container(master)["readinessProbe"]["httpGet"]
        ports = {p["name"]: p["containerPort"] for p in locust_container(master)["ports"]}
        assert ports.get(probe["port"], probe["port"]) == WEB_PORT
        # with --web-login, / answers a 302 to the login page; the login page itself answers 200
        assert probe["path"] == "/login"
    else:
        assert "--headless" in cmd and "--fail-on-unreliable" in cmd
        assert option(cmd, "--expect-workers") == str(the_worker(docs)["spec"]["replicas"])
        summary = option(cmd, "--summary-json")
        assert summary is not None and any(summary.startswith(path + "/") for path in mounts), summary
        assert master["spec"]["backoffLimit"] == 0
        assert pod_spec(master)["restartPolicy"] == "Never"


@variants
def test_a_web_ui_beyond_loopback_has_a_login(variant: str) -> None:
    """The harness refuses (exit 2) a --web-host other than loopback without --web-login."""
    for workload in (doc for doc in render(VARIANTS[variant]) if doc["kind"] in WORKLOAD_KINDS):
        cmd = command(locust_container(workload))
        if "--worker" in cmd or "--headless" in cmd:
            continue  # no web UI
        assert not is_loopback_host(option(cmd, "--web-host") or "127.0.0.1") and "--web-login" in cmd, (
            f"{workload['metadata']['name']}: a web UI reached through the Service needs --web-host 0.0.0.0 and --web-login"
        )


@variants
def test_workers_run_the_locustfile_as_workers_without_a_scenario(variant: str) -> None:
    docs = render(VARIANTS[variant])
    worker = the_worker(docs)
    cmd = command(locust_container(worker))
    assert cmd[:3] == LOCUSTFILE_COMMAND
    assert "--worker" in cmd and "--master" not in cmd
    assert "--scenario" not in cmd and "--host" not in cmd  # the master ships both
    assert option(cmd, "--master-host") == one(docs, "Service", "locust-master")["metadata"]["name"]
    assert option(cmd, "--master-port") in (None, str(MASTER_PORT))
    for volume in pod_spec(worker).get("volumes", []):
        assert "configMap" not in volume, f"workers need no scenario volume: {volume}"
    for container in containers(worker):
        for mount in container.get("volumeMounts", []):
            assert "scenario" not in mount["name"] and not mount["mountPath"].startswith("/scenarios")


@variants
def test_each_worker_gets_exactly_one_cpu(variant: str) -> None:
    resources = locust_container(the_worker(render(VARIANTS[variant])))["resources"]
    assert str(resources["requests"]["cpu"]) == str(resources["limits"]["cpu"]) == "1"
    assert resources["requests"]["memory"] == resources["limits"]["memory"]  # Guaranteed QoS


@variants
def test_harness_processes_have_limits_and_write_only_to_volumes(variant: str) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "--uid 10001" in dockerfile and "WORKDIR /app" in dockerfile
    for workload in (the_master(render(VARIANTS[variant])), the_worker(render(VARIANTS[variant]))):
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 10001
        assert spec.get("automountServiceAccountToken") is False
        for container in containers(workload):
            assert container["resources"]["limits"] and container["resources"]["requests"]
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
        locust = locust_container(workload)
        writable = {m["mountPath"] for m in locust["volumeMounts"] if not m.get("readOnly")}
        output_dir = Path("/app") / (option(command(locust), "--output-dir") or "runs")  # WORKDIR /app
        assert any(output_dir.is_relative_to(mount) for mount in writable), f"{output_dir} is not on a volume"
        assert "/tmp" in writable


@variants
def test_master_and_workers_run_the_same_image_as_the_package(variant: str) -> None:
    docs = render(VARIANTS[variant])
    images = {c["image"] for w in (the_master(docs), the_worker(docs)) for c in containers(w)}
    assert images == {f"claude-loadtest-harness:{project_version()}"}  # a worker with another version refuses
    kustomization = yaml.safe_load((VARIANTS[variant] / "kustomization.yaml").read_text(encoding="utf-8"))
    assert {"name": "claude-loadtest-harness", "newTag": project_version()} in kustomization["images"]


# --------------------------------------------------------------------------- services


@variants
def test_master_service_is_cluster_internal_and_selects_only_the_master(variant: str) -> None:
    docs = render(VARIANTS[variant])
    service = one(docs, "Service", "locust-master")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert {p["port"]: p.get("targetPort", p["port"]) for p in service["spec"]["ports"]} == {
        MASTER_PORT: MASTER_PORT,
        WEB_PORT: WEB_PORT,
    }
    selector = service["spec"]["selector"].items()
    assert selector <= pod_labels(the_master(docs)).items()
    assert not selector <= pod_labels(the_worker(docs)).items()


def test_nothing_is_exposed_outside_the_cluster() -> None:
    for path in manifest_files():
        for doc in load_docs(path):
            assert doc["kind"] not in {"Ingress", "Gateway", "HTTPRoute"}, path
            if doc["kind"] == "Service":
                assert doc["spec"].get("type", "ClusterIP") == "ClusterIP", f"{path}: web UI must stay internal"
                assert not doc["spec"].get("externalIPs")
            if doc["kind"] in WORKLOAD_KINDS:
                for container in containers(doc):
                    assert all("hostPort" not in port for port in container.get("ports", []))
                assert not pod_spec(doc).get("hostNetwork")


# --------------------------------------------------------------------------- secrets


def env_sources(container: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [entry for entry in container.get("env", []) if entry["name"] == name]


@variants
def test_api_key_comes_only_from_the_secret(variant: str) -> None:
    docs = render(VARIANTS[variant])
    for workload in (doc for doc in docs if doc["kind"] in WORKLOAD_KINDS):
        for container in containers(workload):
            for source in container.get("envFrom", []):
                assert "secretRef" not in source, "secrets by name only (secretKeyRef), never envFrom"
            for entry in env_sources(container, API_KEY):
                assert "value" not in entry
                assert entry["valueFrom"] == {"secretKeyRef": {"name": API_KEY_SECRET, "key": API_KEY}}
            for entry in container.get("env", []):
                if re.search(r"KEY|TOKEN|PASSWORD|SECRET", entry["name"]):
                    assert "value" not in entry, f"{entry['name']} has a literal value"
    for workload in (the_master(docs), the_worker(docs)):
        for container in containers(workload):  # init check + locust: master's start-up check, workers' requests
            assert env_sources(container, API_KEY), f"{workload['metadata']['name']}/{container['name']}"
    for config_map in by_kind(docs, "ConfigMap"):
        assert API_KEY not in config_map["data"] and INFLUX_TOKEN not in config_map["data"]


@variants
def test_processes_write_points_with_the_influx_config_and_token(variant: str) -> None:
    docs = render(VARIANTS[variant])
    assert set(one(docs, "ConfigMap", INFLUX_CONFIG)["data"]) == INFLUX_CONFIG_KEYS
    for workload in (the_master(docs), the_worker(docs)):
        locust = locust_container(workload)
        assert {"configMapRef": {"name": INFLUX_CONFIG}} in locust["envFrom"]
        (token,) = env_sources(locust, INFLUX_TOKEN)
        assert token["valueFrom"]["secretKeyRef"] == {"name": INFLUX_SECRET, "key": INFLUX_TOKEN, "optional": True}


def secret_key_refs(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Variable name: its secretKeyRef, for every variable a container reads from a Secret."""
    return {
        entry["name"]: entry["valueFrom"]["secretKeyRef"]
        for entry in container.get("env", [])
        if "secretKeyRef" in entry.get("valueFrom", {})
    }


@variants
def test_master_and_workers_read_the_worker_secret_from_the_same_secret(variant: str) -> None:
    """A worker proves the secret to join: the master (Deployment or CI Job) and the workers must
    hold the same value, so they read it from one Secret, never optional (a process without it exits 2)."""
    docs = render(VARIANTS[variant])
    expected = {"name": WORKER_SECRET_SECRET, "key": WORKER_SECRET}
    for workload in (the_master(docs), the_worker(docs)):
        locust = locust_container(workload)
        (entry,) = env_sources(locust, WORKER_SECRET)
        assert entry["valueFrom"] == {"secretKeyRef": expected}, f"{workload['metadata']['name']}: {entry}"
    harness = [doc for doc in docs if doc["kind"] in WORKLOAD_KINDS]
    assert {secret_key_refs(locust_container(w)).get(WORKER_SECRET, {}).get("name") for w in harness} == {WORKER_SECRET_SECRET}


def test_interactive_master_reads_the_web_login_from_its_secret() -> None:
    docs = render(VARIANTS["interactive"])
    refs = secret_key_refs(locust_container(the_master(docs)))
    for key in (WEB_USER, WEB_PASSWORD):
        assert refs.get(key) == {"name": WEB_LOGIN_SECRET, "key": key}, refs.get(key)  # not optional
    for variant in VARIANTS:  # nothing else needs the login: workers and the headless Job have no UI
        for workload in (w for w in render(VARIANTS[variant]) if w["kind"] in WORKLOAD_KINDS):
            if workload is the_master(docs):
                continue
            for container in containers(workload):
                assert not env_sources(container, WEB_PASSWORD), workload["metadata"]["name"]


@variants
def test_every_secret_a_pod_reads_has_a_template(variant: str) -> None:
    for workload in (doc for doc in render(VARIANTS[variant]) if doc["kind"] in WORKLOAD_KINDS):
        for container in containers(workload):
            for variable, ref in secret_key_refs(container).items():
                assert ref["key"] == variable, f"{container['name']}: {variable} from key {ref['key']}"
                assert ref["key"] in SECRET_TEMPLATES.get(ref["name"], set()), (
                    f"{workload['metadata']['name']} reads {ref['name']}/{ref['key']}: no template in secrets/"
                )
                assert ref.get("optional", False) == (ref["name"] == INFLUX_SECRET), ref  # only InfluxDB is optional


def test_secret_templates_hold_only_placeholders() -> None:
    found = {}
    for path in sorted(SECRETS_DIR.glob("*.yaml")):
        (doc,) = load_docs(path)
        assert doc["kind"] == "Secret" and "data" not in doc, path
        assert set(doc["stringData"].values()) == {PLACEHOLDER}, path
        assert path.stem == doc["metadata"]["name"], path
        found[doc["metadata"]["name"]] = set(doc["stringData"])
        text = path.read_text()
        assert "kubectl" in text and "--from-literal" in text
        for key in doc["stringData"]:
            assert f"--from-literal={key}=" in text, f"{path.name}: no kubectl line creates {key}"
    assert found == SECRET_TEMPLATES


def test_the_harness_refuses_the_placeholders(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Secret created from a template without replacing the placeholder stops the process (exit 2)."""
    monkeypatch.setenv(WEB_USER, PLACEHOLDER)
    monkeypatch.setenv(WEB_PASSWORD, PLACEHOLDER)
    monkeypatch.setenv(WORKER_SECRET, PLACEHOLDER)
    with pytest.raises(CredentialsError, match=WEB_PASSWORD):
        credentials.web_login()
    with pytest.raises(CredentialsError, match=WORKER_SECRET):
        credentials.worker_secret()


def test_secret_creation_commands_generate_the_values() -> None:
    """Step 2 of the README creates every Secret, the web password and the worker secret generated."""
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    for name, keys in SECRET_TEMPLATES.items():
        assert f"create secret generic {name}" in readme, name
        for key in keys:
            assert f"--from-literal={key}=" in readme, key
        assert f"secrets/{name}.yaml" in readme, f"the README's table does not list secrets/{name}.yaml"
    assert readme.count("secrets.token_urlsafe") >= 2


def test_no_literal_credentials_anywhere() -> None:
    # placeholders and shell variables only (README and templates: "$web_password" is generated just before)
    allowed = {PLACEHOLDER, f"${API_KEY}", "$INFLUXDB_TOKEN", "$web_password", "$worker_secret"}
    secrets = "|".join((API_KEY, INFLUX_TOKEN, WEB_PASSWORD, WORKER_SECRET))
    checked = 0
    for path in sorted(K8S.rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"sk-ant-[A-Za-z0-9_-]{8,}", text), f"{path}: looks like an API key"
        for match in re.finditer(rf"(?:{secrets})\s*[:=]\s*\"?([^\"\s]+)", text):
            assert match.group(1) in allowed, f"{path.relative_to(ROOT)}: {match.group(0)!r}"
            checked += 1
    assert checked >= 2 * len(SECRET_TEMPLATES)  # the templates' values and the README's commands were seen


@pytest.mark.parametrize("value, ok", [("", False), (PLACEHOLDER, False), ("sk-test-not-a-real-key", True)])
def test_init_check_stops_pods_without_a_real_key(value: str, ok: bool) -> None:
    for variant in VARIANTS:
        for workload in (the_master(render(VARIANTS[variant])), the_worker(render(VARIANTS[variant]))):
            (check,) = pod_spec(workload)["initContainers"]
            cmd = command(check)
            assert cmd[:2] == ["python", "-c"]
            env = {k: v for k, v in os.environ.items() if k != API_KEY} | {API_KEY: value}
            result = subprocess.run([sys.executable, "-c", cmd[2]], env=env, capture_output=True, text=True, timeout=30)
            assert (result.returncode == 0) == ok, result.stderr
            assert "sk-test" not in result.stdout + result.stderr  # never prints the key


# --------------------------------------------------------------------------- scenarios


def scenario_files() -> Iterator[tuple[str, str]]:
    config_map = load_docs(K8S / "common" / "configmap-scenarios.yaml")[0]
    yield from config_map["data"].items()


def test_scenario_configmap_holds_valid_scenarios_in_sync_with_the_repo(tmp_path: Path) -> None:
    names = []
    for name, text in scenario_files():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        load_scenario(str(path))  # the master validates it the same way at start-up
        original = ROOT / "scenarios" / name
        if original.is_file():
            assert yaml.safe_load(text) == yaml.safe_load(original.read_text(encoding="utf-8")), (
                f"configmap-scenarios.yaml's {name} differs from scenarios/{name}: copy it again"
            )
        names.append(name)
    assert "demo.yaml" in names
