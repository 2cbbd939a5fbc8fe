"""The Kubernetes actuator: the worker Deployment's `scale` subresource, from inside the cluster.

It reads and sets one number, `spec.replicas` of an autoscaling/v1 Scale at
`/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale`, so the autoscaler's Role needs
`get` and `patch` on `deployments/scale` for that one Deployment and nothing else. It connects as
in-cluster clients do: the API server at `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`,
trusted through the service account's `ca.crt`, authenticated with its `token`, in its `namespace`
unless KUBERNETES_NAMESPACE names another (all overridable in core/settings.py).

Scale-in drains: the ReplicaSet controller deletes the surplus pods, the kubelet sends each SIGTERM
and waits terminationGracePeriodSeconds (the chart sets it above SHUTDOWN_GRACE_SECONDS), in which
the worker stops claiming and finishes what it holds. Which pods go is the controller's choice, not
the least busy: preferring idle ones would mean annotating pods with
`controller.kubernetes.io/pod-deletion-cost` before each scale-in, which needs `patch` on pods, so
it is not done and the Role stays at the scale subresource. Nothing else may scale the same
Deployment (a HorizontalPodAutoscaler or KEDA ScaledObject): each would undo the other's count.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import TypedDict

import httpx
import orjson

from core.settings import Settings

SCALE_PATH = "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"
#: JSON merge patch (RFC 7386): `{"spec": {"replicas": n}}` sets that field and leaves the rest.
MERGE_PATCH = "application/merge-patch+json"
#: What the likely refusals mean for whoever reads the autoscaler's /health.
HINTS = {
    401: "the service account token was refused",
    403: "the autoscaler's Role must allow get and patch on deployments/scale of this Deployment",
    404: "no such Deployment: check KUBERNETES_DEPLOYMENT and KUBERNETES_NAMESPACE",
}
_MESSAGE_CHARS = 300


class ScaleSpec(TypedDict, total=False):
    #: left out when 0 (the API's Go type has `omitempty`)
    replicas: int


class Scale(TypedDict, total=False):
    """An autoscaling/v1 Scale, as far as the actuator reads it."""

    spec: ScaleSpec


class KubernetesError(Exception):
    """The API server refused a request; `reason` and `message` are its Status object's."""

    def __init__(self, method: str, path: str, status: int, reason: str, message: str) -> None:
        hint = f" ({HINTS[status]})" if status in HINTS else ""
        super().__init__(f"Kubernetes API {method} {path}: {status} {reason}: {message}{hint}")
        self.method = method
        self.path = path
        self.status = status
        self.reason = reason
        self.message = message

    @classmethod
    def from_response(cls, response: httpx.Response) -> KubernetesError:
        # Errors are a Status object ({"kind": "Status", "reason": "Forbidden", "message": ...});
        # something in between (a proxy) may answer in HTML instead.
        try:
            body = response.json()
        except ValueError:
            body = None
        status = body if isinstance(body, dict) else {}
        message = " ".join(str(status.get("message") or response.text).split())[:_MESSAGE_CHARS]
        reason = str(status.get("reason") or response.reason_phrase)
        request = response.request
        return cls(request.method, request.url.path, response.status_code, reason, message)


class ServiceAccountToken(httpx.Auth):
    """`Authorization: Bearer <token>` from the token file, read for each request: the kubelet
    rotates a projected token (hourly by default) by replacing the file, and a token read once
    would expire under a running autoscaler. The file is a few hundred bytes on a tmpfs volume."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.path.read_text().strip()}"
        yield request


def api_url(settings: Settings, environ: Mapping[str, str] = os.environ) -> str:
    """KUBERNETES_API_URL, or the API server's Service as the kubelet puts it in every pod's env."""
    if settings.kubernetes_api_url:
        return settings.kubernetes_api_url
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise RuntimeError(
            "AUTOSCALE_ENGINE=kubernetes: KUBERNETES_SERVICE_HOST/PORT are unset (not in a pod?); "
            "set KUBERNETES_API_URL"
        )
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def namespace(settings: Settings) -> str:
    """KUBERNETES_NAMESPACE, or the namespace of the pod's service account."""
    if settings.kubernetes_namespace:
        return settings.kubernetes_namespace
    return (Path(settings.kubernetes_service_account_dir) / "namespace").read_text().strip()


def api_client(settings: Settings, environ: Mapping[str, str] = os.environ) -> httpx.AsyncClient:
    """A client for the API server that trusts only the cluster's CA and sends the pod's token."""
    account = Path(settings.kubernetes_service_account_dir)
    return httpx.AsyncClient(
        base_url=api_url(settings, environ),
        verify=ssl.create_default_context(cafile=account / "ca.crt"),
        auth=ServiceAccountToken(account / "token"),
        headers={"Accept": "application/json"},
        timeout=10,
    )


def _replicas(response: httpx.Response) -> int:
    if not response.is_success:
        raise KubernetesError.from_response(response)
    scale: Scale = response.json()
    return scale.get("spec", {}).get("replicas", 0)


class KubernetesActuator:
    """`current()` is the Deployment's `spec.replicas`: the pods asked for, whether running or
    starting; pods that are terminating (draining) no longer count. `scale_to` sets it."""

    name = "kubernetes"

    def __init__(self, client: httpx.AsyncClient, namespace: str, deployment: str) -> None:
        self.client = client
        self.deployment = f"{namespace}/{deployment}"
        self.path = SCALE_PATH.format(namespace=namespace, name=deployment)

    @classmethod
    def from_settings(cls, client: httpx.AsyncClient, settings: Settings) -> KubernetesActuator:
        return cls(client, namespace(settings), settings.kubernetes_deployment)

    async def current(self) -> int:
        return _replicas(await self.client.get(self.path))

    async def scale_to(self, count: int, busy: Mapping[str, int]) -> list[str]:
        # `busy` goes unused: the ReplicaSet controller picks the pods to stop (see the module doc).
        patch = orjson.dumps({"spec": {"replicas": count}})
        replicas = _replicas(await self.client.patch(self.path, content=patch, headers={"Content-Type": MERGE_PATCH}))
        return [f"set deployment {self.deployment} to {replicas} replicas"]
