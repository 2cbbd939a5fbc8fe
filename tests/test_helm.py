"""The Helm chart (charts/serverless-scaling), rendered and validated here, with no cluster: `helm lint`;
a values matrix (each scaling mode with bundled or external stores, a generated or an existing
Secret, the Ingress on or off) whose every object validates against the Kubernetes 1.30 schemas
(kubernetes-validate, strict: unknown keys refused) and every ScaledObject against KEDA's CRD
schema; and what the chart promises the rest of the project: docker-compose.yml's variable names,
images and health endpoints, a Role that allows only the worker Deployment's scale, and workers
that outlive their own drain. helm comes from scripts/helm.sh (installed when missing; a test
fails, never skips, when it cannot be)."""

from __future__ import annotations

import base64
import itertools
import json
import re
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from core import keys
from core.hosts import host_name, parse_allowed
from core.settings import SECRET_MIN_LENGTH, default
from native.plan import ROOT

CHART = ROOT / "charts" / "serverless-scaling"
KEDA_SCHEMA = ROOT.parent / "shared" / "schemas" / "keda-scaledobject.schema.json"
COMPOSE_FILE = ROOT / "docker-compose.yml"
#: The Kubernetes release the objects are validated against (its schemas ship in kubernetes-validate).
KUBERNETES_VERSION = "1.30.0"
RELEASE = "demo"
NAMESPACE = "scaling"
#: The app Deployments: docker-compose.yml's service names, which the chart's components keep.
APP_SERVICES = ("api-gateway", "worker-service", "monitoring", "autoscaler")
#: The only variables the chart adds to a service's Compose environment: the passwords, which
#: Kubernetes expands into REDIS_URL and DATABASE_URL ($(REDIS_PASSWORD)), so the URLs hold none.
PASSWORD_VARIABLES = {"REDIS_PASSWORD", "POSTGRES_PASSWORD"}
#: The autoscaler's engine settings: the Docker API's on Compose, the worker Deployment's on Kubernetes.
COMPOSE_ENGINE_VARIABLES = {"DOCKER_HOST", "COMPOSE_PROJECT"}
KUBERNETES_ENGINE_VARIABLES = {"KUBERNETES_DEPLOYMENT", "KUBERNETES_NAMESPACE"}
SCALING_MODES = ("keda-metrics-api", "keda-redis", "autoscaler", "none")


def component(name: str) -> str:
    return f"{RELEASE}-serverless-scaling-{name}"


@cache
def helm() -> str:
    """scripts/helm.sh's pinned, checksum-verified helm, installed into .venv/bin when missing."""
    result = subprocess.run(
        ["bash", "-c", 'source scripts/common.sh && source scripts/helm.sh && ensure_helm >&2 && echo "$HELM"'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"could not install helm:\n{result.stderr}"
    return result.stdout.strip()


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm(), *args], cwd=ROOT, capture_output=True, text=True, check=False)


@dataclass(frozen=True)
class Case:
    """One point of the values matrix: a scaling mode, where the stores live, whose Secret, the Ingress."""

    scaling: str = "autoscaler"
    external_stores: bool = False
    existing_secret: bool = False
    ingress: bool = True

    @property
    def sets(self) -> list[str]:
        mode, _, trigger = self.scaling.partition("-")
        values = [f"scaling.mode={mode}", f"ingress.enabled={str(self.ingress).lower()}"]
        if trigger:
            values.append(f"keda.trigger={trigger}")
        if self.external_stores:
            values += [
                "redis.bundled=false",
                "postgres.bundled=false",
                "keda.redis.address=redis.example.internal:6379",
            ]
        if self.existing_secret:
            values.append("secret.existingSecret=stack-secrets")
        return values

    @property
    def id(self) -> str:
        stores = "external" if self.external_stores else "bundled"
        secret = "existing-secret" if self.existing_secret else "generated-secret"
        return f"{self.scaling}-{stores}-{secret}-ingress-{'on' if self.ingress else 'off'}"


#: Each scaling mode with each of four store/Secret/Ingress combinations (every value of each axis
#: meets every mode; the full product would render twice as often for no new pairing).
OTHER_AXES = [
    (False, False, True),
    (False, True, False),
    (True, True, True),
    (True, False, False),
]
MATRIX = [
    Case(scaling, external, secret, ingress)
    for scaling, (external, secret, ingress) in itertools.product(SCALING_MODES, OTHER_AXES)
]


@cache
def render(case: Case = Case()) -> tuple[dict[str, Any], ...]:
    sets = list(itertools.chain.from_iterable(("--set", value) for value in case.sets))
    result = run_helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *sets)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def objects(case: Case, kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in render(case) if doc["kind"] == kind}


def one(case: Case, kind: str, name: str) -> dict[str, Any]:
    found = objects(case, kind)
    assert name in found, f"no {kind} {name}; there are {sorted(found)}"
    return found[name]


def pod_spec(case: Case, service: str) -> dict[str, Any]:
    spec: dict[str, Any] = one(case, "Deployment", component(service))["spec"]["template"]["spec"]
    return spec


def container(case: Case, service: str) -> dict[str, Any]:
    containers = pod_spec(case, service)["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def config(case: Case) -> dict[str, str]:
    data: dict[str, str] = one(case, "ConfigMap", component("config"))["data"]
    return data


def env_names(case: Case, spec: dict[str, Any]) -> set[str]:
    """Every variable a container gets: its ConfigMaps (envFrom) and its own env."""
    names = {entry["name"] for entry in spec.get("env", [])}
    for source in spec.get("envFrom", []):
        assert source["configMapRef"]["name"] == component("config")
        names |= set(config(case))
    return names


def env_value(spec: dict[str, Any], name: str) -> Any:
    return next(entry.get("value", entry.get("valueFrom")) for entry in spec["env"] if entry["name"] == name)


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def compose_defaults() -> dict[str, str]:
    """NAME -> default of every `NAME: ${NAME:-default}` in docker-compose.yml."""
    pattern = re.compile(r"^\s+([A-Z_]+): \"?\$\{\1:-([^}]*)\}\"?\s*$", re.MULTILINE)
    return dict(pattern.findall(COMPOSE_FILE.read_text()))


def chart_values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


# -- the renderer ----------------------------------------------------------------------------------


def test_helm_is_the_pinned_version() -> None:
    pinned = re.search(r"^HELM_VERSION=(\S+)$", (ROOT / "scripts" / "helm.sh").read_text(), re.MULTILINE)
    assert pinned
    result = run_helm("version", "--short")
    assert result.stdout.startswith(f"v{pinned[1]}+"), result.stdout


@pytest.mark.parametrize("mode", ["autoscaler", "keda"])
def test_helm_lint(mode: str) -> None:
    result = run_helm("lint", "--strict", str(CHART), "--set", f"scaling.mode={mode}")
    assert result.returncode == 0, result.stdout + result.stderr


# -- every object, every case ----------------------------------------------------------------------


@pytest.mark.parametrize("case", MATRIX, ids=lambda case: case.id)
def test_every_object_validates(case: Case) -> None:
    docs = render(case)
    assert docs
    for doc in docs:
        assert doc["metadata"]["namespace"] == NAMESPACE
        if doc["kind"] == "ScaledObject":
            keda_validator().validate(doc)
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@cache
def keda_validator() -> jsonschema.Draft7Validator:
    if not KEDA_SCHEMA.exists():
        pytest.skip(f"no KEDA ScaledObject schema at {KEDA_SCHEMA} (this checkout has no ../shared beside it)")
    schema = json.loads(KEDA_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    # Unknown keys are refused: the schema says so at the top and in the spec.
    assert schema["additionalProperties"] is False
    assert schema["properties"]["spec"]["additionalProperties"] is False
    return jsonschema.Draft7Validator(schema)


def test_the_checks_can_fail() -> None:
    scaled = next(doc for doc in render(Case("keda-metrics-api")) if doc["kind"] == "ScaledObject")
    broken_keda = {**scaled, "spec": {**scaled["spec"], "minReplicas": 1}}
    assert list(keda_validator().iter_errors(broken_keda))
    deployment = one(Case(), "Deployment", component("worker-service"))
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("case", MATRIX, ids=lambda case: case.id)
def test_the_objects_each_case_needs(case: Case) -> None:
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in render(case)}
    for service in APP_SERVICES:
        assert ("Deployment", component(service)) in kinds
        assert ("Service", component(service)) in kinds
    for service in ("api-gateway", "worker-service"):
        assert ("PodDisruptionBudget", component(service)) in kinds
    for store in ("redis", "postgres"):
        assert (("StatefulSet", component(store)) in kinds) is not case.external_stores
        assert (("Service", component(store)) in kinds) is not case.external_stores
    assert (("Secret", component("secrets")) in kinds) is not case.existing_secret
    assert (("Ingress", component("api-gateway")) in kinds) is case.ingress
    keda = case.scaling.startswith("keda")
    assert (("ScaledObject", component("worker-service")) in kinds) is keda
    acts = case.scaling == "autoscaler"
    assert (("Role", component("autoscaler")) in kinds) is acts
    assert (("RoleBinding", component("autoscaler")) in kinds) is acts
    assert config(case)["AUTOSCALE"] == ("on" if acts else "recommend")
    # KEDA or the autoscaler owns the worker count: a Deployment naming one would reset it on upgrade.
    workers = one(case, "Deployment", component("worker-service"))["spec"]
    if case.scaling == "none":
        assert workers["replicas"] == chart_values()["workerService"]["replicas"]
    else:
        assert "replicas" not in workers


# -- what docker-compose.yml says ------------------------------------------------------------------


@pytest.mark.parametrize("case", [MATRIX[0], MATRIX[-1]], ids=lambda case: case.id)
@pytest.mark.parametrize("service", APP_SERVICES)
def test_each_service_gets_the_variables_compose_gives_it(case: Case, service: str) -> None:
    expected = set(compose()["services"][service]["environment"]) | PASSWORD_VARIABLES
    if service == "autoscaler":
        expected = (expected - COMPOSE_ENGINE_VARIABLES) | KUBERNETES_ENGINE_VARIABLES
    assert env_names(case, container(case, service)) == expected
    # The migrate step gets the environment of Compose's `migrate` service.
    (migrate,) = pod_spec(case, service)["initContainers"]
    assert migrate["command"] == compose()["services"]["migrate"]["command"]
    assert env_names(case, migrate) == set(compose()["services"]["migrate"]["environment"]) | PASSWORD_VARIABLES


def test_the_defaults_are_compose_s() -> None:
    values = chart_values()
    given = {**values["config"], **values["workerService"]["env"]}
    given |= {name: value for name, value in values["monitoring"]["env"].items() if name != "GATEWAY_PORT"}
    defaults = compose_defaults()
    assert {name: defaults[name] for name in given} == {name: str(value) for name, value in given.items()}


def test_images_are_compose_s() -> None:
    services = compose()["services"]
    for service in APP_SERVICES:
        assert container(Case(), service)["image"] == services[service]["image"]
    for store in ("redis", "postgres"):
        statefulset = one(Case(), "StatefulSet", component(store))
        assert statefulset["spec"]["template"]["spec"]["containers"][0]["image"] == services[store]["image"]


def test_the_bundled_redis_runs_compose_s_options() -> None:
    command: list[str] = compose()["services"]["redis"]["command"]
    statefulset = one(Case(), "StatefulSet", component("redis"))
    args: list[str] = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--")] == [a for a in command if a.startswith("--")]
    fixed = {flag: value for flag, value in itertools.pairwise(command) if flag.startswith("--") and "${" not in value}
    assert fixed["--save"] == ""  # the AOF alone (docker-compose.yml says why)
    assert {flag: args[args.index(flag) + 1] for flag in fixed} == fixed


@pytest.mark.parametrize("service", APP_SERVICES)
def test_probes_read_the_compose_healthcheck_endpoint(service: str) -> None:
    healthcheck = " ".join(compose()["services"][service]["healthcheck"]["test"])
    url = urlsplit(re.search(r"urlopen\('([^']+)'", healthcheck)[1])  # type: ignore[index]
    spec = container(Case(), service)
    ports = {port["name"]: port["containerPort"] for port in spec["ports"]}
    assert ports["http"] == url.port
    assert env_value(spec, "PORT") == str(url.port)
    allowed = parse_allowed(config(Case())["ALLOWED_HOSTS"])
    for probe in (spec["readinessProbe"], spec["livenessProbe"]):
        assert probe["httpGet"]["path"] == url.path
        assert probe["httpGet"]["port"] == "http"
        # The services answer only the Host names in ALLOWED_HOSTS; the kubelet's default is the pod IP.
        (header,) = probe["httpGet"]["httpHeaders"]
        assert header["name"] == "Host"
        assert host_name(header["value"]) in allowed


# -- scaling ---------------------------------------------------------------------------------------


def test_workers_outlive_their_drain() -> None:
    spec = pod_spec(Case(), "worker-service")
    grace = float(env_value(container(Case(), "worker-service"), "SHUTDOWN_GRACE_SECONDS"))
    assert grace == default("shutdown_grace_seconds")
    assert spec["terminationGracePeriodSeconds"] > grace
    refused = run_helm("template", RELEASE, str(CHART), "--set", "workerService.terminationGracePeriodSeconds=20")
    assert refused.returncode != 0
    assert "must be above SHUTDOWN_GRACE_SECONDS" in refused.stderr


def test_keda_reads_the_policy_s_desired_worker_count() -> None:
    case = Case("keda-metrics-api")
    spec = one(case, "ScaledObject", component("worker-service"))["spec"]
    assert spec["scaleTargetRef"]["name"] == component("worker-service")
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (
        int(config(case)["MIN_WORKERS"]),
        int(config(case)["MAX_WORKERS"]),
    )
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "metrics-api"
    # AverageValue with target 1: the HPA computes ceil(desired / 1) replicas, `desired` itself.
    assert trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["targetValue"] == "1"
    assert trigger["metadata"]["valueLocation"] == "desired"
    url = urlsplit(trigger["metadata"]["url"])
    assert url.hostname == f"{component('monitoring')}.{NAMESPACE}.svc.cluster.local"
    assert (url.port, url.path) == (8080, "/api/scaling")
    assert host_name(url.netloc) in parse_allowed(config(case)["ALLOWED_HOSTS"])
    from monitoring.routes import router

    assert "/api/scaling" in {getattr(route, "path", None) for route in router.routes}


def test_keda_scales_to_zero_only_when_the_policy_does() -> None:
    rendered = run_helm(
        "template", RELEASE, str(CHART), "--set", "scaling.mode=keda", "--set", "config.SCALE_TO_ZERO_AFTER_SECONDS=300"
    )
    assert rendered.returncode == 0, rendered.stderr
    scaled = next(doc for doc in yaml.safe_load_all(rendered.stdout) if doc and doc["kind"] == "ScaledObject")
    assert scaled["spec"]["minReplicaCount"] == 0


@pytest.mark.parametrize("external", [False, True])
def test_keda_redis_trigger_reads_the_queue(external: bool) -> None:
    case = Case("keda-redis", external_stores=external)
    (trigger,) = one(case, "ScaledObject", component("worker-service"))["spec"]["triggers"]
    assert trigger["type"] == "redis"
    metadata = trigger["metadata"]
    assert metadata["listName"] == keys.SINGLE.queue
    assert metadata["listLength"] == chart_values()["keda"]["redis"]["listLength"]
    assert metadata["address"] == ("redis.example.internal:6379" if external else f"{component('redis')}:6379")
    # KEDA reads *FromEnv from the scale target's container.
    assert metadata["passwordFromEnv"] in env_names(case, container(case, "worker-service"))


@pytest.mark.parametrize("config", ["config.REDIS_CLUSTER=true", "config.QUEUE_SHARDS=3"])
def test_keda_redis_trigger_refuses_a_sharded_queue(config: str) -> None:
    result = run_helm(
        "template", RELEASE, str(CHART), "--set", "scaling.mode=keda", "--set", "keda.trigger=redis", "--set", config
    )
    assert result.returncode != 0
    assert "use keda.trigger=metrics-api" in result.stderr
    sharded_by_policy = run_helm("template", RELEASE, str(CHART), "--set", "scaling.mode=keda", "--set", config)
    assert sharded_by_policy.returncode == 0, sharded_by_policy.stderr


def test_the_role_allows_only_the_worker_deployment_s_scale() -> None:
    case = Case("autoscaler")
    workers = component("worker-service")
    rules = one(case, "Role", component("autoscaler"))["rules"]
    allowed = {
        (group, resource, name, verb)
        for rule in rules
        for group, resource, name, verb in itertools.product(
            rule["apiGroups"], rule["resources"], rule["resourceNames"], rule["verbs"]
        )
    }
    assert allowed == {
        ("apps", "deployments/scale", workers, "get"),
        ("apps", "deployments/scale", workers, "patch"),
        ("apps", "deployments/scale", workers, "update"),
        ("apps", "deployments", workers, "get"),
    }
    assert all(set(rule) == {"apiGroups", "resources", "resourceNames", "verbs"} for rule in rules)
    binding = one(case, "RoleBinding", component("autoscaler"))
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": component("autoscaler"),
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": component("autoscaler"), "namespace": NAMESPACE}]
    pod = pod_spec(case, "autoscaler")
    assert pod["serviceAccountName"] == component("autoscaler")
    spec = container(case, "autoscaler")
    assert env_value(spec, "AUTOSCALE_ENGINE") == "kubernetes"
    assert env_value(spec, "KUBERNETES_DEPLOYMENT") == workers
    assert env_value(spec, "KUBERNETES_NAMESPACE") == {"fieldRef": {"fieldPath": "metadata.namespace"}}


@pytest.mark.parametrize("scaling", SCALING_MODES)
def test_only_an_acting_autoscaler_holds_an_api_token(scaling: str) -> None:
    case = Case(scaling)
    for service in APP_SERVICES:
        mounted = pod_spec(case, service)["automountServiceAccountToken"]
        assert mounted is (service == "autoscaler" and scaling == "autoscaler"), service
    for store in ("redis", "postgres"):
        assert (
            one(case, "StatefulSet", component(store))["spec"]["template"]["spec"]["automountServiceAccountToken"]
            is False
        )


# -- secrets, stores, ingress ----------------------------------------------------------------------


def secret_refs(case: Case) -> set[tuple[str, str]]:
    refs = set()
    for doc in render(case):
        for spec in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            for entry in spec.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
    return refs


def test_a_generated_secret_is_random_long_and_kept() -> None:
    secret = one(Case(), "Secret", component("secrets"))
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    values = {name: base64.b64decode(value).decode() for name, value in secret["data"].items()}
    assert set(values) == {"REDIS_PASSWORD", "POSTGRES_PASSWORD", "ADMIN_TOKEN"}
    assert all(len(value) >= SECRET_MIN_LENGTH for value in values.values())
    assert len(set(values.values())) == len(values)
    assert {name for _, name in secret_refs(Case())} == set(values)
    assert {secret for secret, _ in secret_refs(Case())} == {component("secrets")}
    # Upgrades keep the installed values: the template reads the live Secret back first.
    assert 'lookup "v1" "Secret"' in (CHART / "templates" / "secret.yaml").read_text()


def test_no_secret_sits_in_values_or_urls() -> None:
    values = chart_values()
    assert values["secret"]["existingSecret"] == ""
    for case in (Case(), Case(external_stores=True)):
        spec = container(case, "worker-service")
        assert env_value(spec, "REDIS_URL").count("$(REDIS_PASSWORD)") == 1
        assert env_value(spec, "DATABASE_URL").count("$(POSTGRES_PASSWORD)") == 1


def test_an_existing_secret_is_used_and_none_is_made() -> None:
    case = Case(existing_secret=True)
    assert not objects(case, "Secret")
    assert {secret for secret, _ in secret_refs(case)} == {"stack-secrets"}


def test_external_stores_use_the_given_urls() -> None:
    values = chart_values()
    spec = container(Case(external_stores=True), "api-gateway")
    assert env_value(spec, "REDIS_URL") == values["redis"]["external"]["url"]
    assert env_value(spec, "DATABASE_URL") == values["postgres"]["external"]["url"]
    bundled = container(Case(), "api-gateway")
    assert env_value(bundled, "REDIS_URL") == f"redis://:$(REDIS_PASSWORD)@{component('redis')}:6379/0"


def test_the_ingress_reaches_the_gateways_by_an_allowed_name() -> None:
    ingress = one(Case(), "Ingress", component("api-gateway"))
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"] == {"name": component("api-gateway"), "port": {"number": 8000}}
    assert rule["host"] in parse_allowed(config(Case())["ALLOWED_HOSTS"])
    gateway = one(Case(), "Service", component("api-gateway"))
    assert gateway["spec"]["ports"][0]["port"] == 8000


# -- ./demo.sh k8s-render --------------------------------------------------------------------------


@pytest.mark.stack
def test_demo_k8s_render_writes_both_variants(tmp_path: Path) -> None:
    result = subprocess.run(
        ["./demo.sh", "k8s-render", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with_keda = list(yaml.safe_load_all((tmp_path / "out" / "serverless-scaling.yaml").read_text()))
    without = list(yaml.safe_load_all((tmp_path / "out" / "no-keda" / "serverless-scaling.yaml").read_text()))
    assert "ScaledObject" in {doc["kind"] for doc in with_keda if doc}
    kinds = {doc["kind"] for doc in without if doc}
    assert "ScaledObject" not in kinds
    assert {"Role", "RoleBinding"} <= kinds
