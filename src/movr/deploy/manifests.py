"""Kubernetes manifests as data: one app deployment per region, and the global load balancer in front of them.

Each region of the spec is its own GKE cluster running the same objects (namespace `movr`): a Deployment
of `movr serve` that knows its region (`MOVR_REGION`) and reads the preset from a ConfigMap, a Service,
a ServiceExport (GKE multi-cluster Services: the Service becomes one ServiceImport across the fleet), a
PodDisruptionBudget and a HorizontalPodAutoscaler. The database URL and the secret key come from a
Secret the operator creates in each cluster: no secret value is ever rendered.

The load balancer is a GKE multi-cluster Gateway (GatewayClass `gke-l7-global-external-managed-mc`, a
global external Application Load Balancer): one anycast address; each request goes to the nearest
region whose pods are healthy and have capacity. Its HTTPRoute sets `X-Client-Geo-Location` to
`{client_region_subdivision}, {client_city}` - variables the load balancer fills from the client's IP
address, as in the MovR tutorial - and the app takes the city after the first comma
(`movr.web.location`). Gateway and HTTPRoute are upstream Gateway API kinds; ServiceExport, ServiceImport
and HealthCheckPolicy are GKE's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from movr import __version__
from movr.deploy.containerfile import APP_PORT, APP_UID
from movr.geo.client_location import GEO_HEADER

NAMESPACE = "movr"
APP = "movr"
CONFIG_MAP = "movr-config"
CONFIG_DIR = "/etc/movr"
PRESET_FILE = "preset.toml"
SPEC_FILE = "placement.toml"
# The Secret each cluster's operator creates (docs/deploy.md): keys database-url, secret-key,
# metrics-token, and optionally ca.crt (the CockroachDB cluster's CA, for sslmode=verify-full).
SECRET = "movr"
DATABASE_URL_KEY = "database-url"
SECRET_KEY_KEY = "secret-key"
# The route sends every path to the app, /metrics included: behind a public load balancer it must ask
# for a bearer token (MOVR_METRICS_TOKEN, see movr.web.metrics).
METRICS_TOKEN_KEY = "metrics-token"
CA_KEY = "ca.crt"
CA_DIR = "/etc/movr-db"
SERVICE_PORT = 80

GATEWAY_CLASS = "gke-l7-global-external-managed-mc"
# GKE fills these load balancer variables per request; the app reads the city after the first comma.
GEO_HEADER_VALUE = "{client_region_subdivision}, {client_city}"
# Google's load balancer appends "<client-ip>,<load-balancer-ip>" to X-Forwarded-For: the client is the
# second address from the right (werkzeug's ProxyFix counts hops from the right).
PROXY_HOPS = 2
# A global static IP and a certificate the operator creates with gcloud (docs/deploy.md).
ADDRESS_NAME = "movr-ip"
CERTIFICATE_NAME = "movr-cert"

# One pod per zone at least: the app tier survives a zone failure like the data does.
MIN_REPLICAS = 3
MAX_REPLICAS = 12
CPU_TARGET_PERCENT = 70
WORKERS = 2

SELECTOR = {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": "web"}


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object and the file it is written to (numbered in the order `kubectl apply -f DIR` needs)."""

    filename: str
    document: dict[str, Any]


def labels(region: str | None = None) -> dict[str, str]:
    extra = {"movr/region": region} if region else {}
    return {**SELECTOR, "app.kubernetes.io/part-of": "movr-global", "app.kubernetes.io/version": __version__, **extra}


def _meta(name: str, region: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE, "labels": labels(region), **extra}


def namespace() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": labels()}}


def region_manifests(region: str, image: str, config: dict[str, str], config_digest: str) -> list[Manifest]:
    """The objects of one region's cluster. `config` is the ConfigMap's data (file name -> text)."""
    return [
        Manifest("00-namespace.yaml", namespace()),
        Manifest("10-configmap.yaml", config_map(region, config)),
        Manifest("20-deployment.yaml", deployment(region, image, config_digest)),
        Manifest("30-service.yaml", service(region)),
        Manifest("40-serviceexport.yaml", service_export(region)),
        Manifest("50-poddisruptionbudget.yaml", pod_disruption_budget(region)),
        Manifest("60-horizontalpodautoscaler.yaml", autoscaler(region)),
    ]


def gateway_manifests() -> list[Manifest]:
    """The objects of the config cluster (the fleet's cluster that hosts the multi-cluster Gateway)."""
    return [
        Manifest("00-namespace.yaml", namespace()),
        Manifest("10-gateway.yaml", gateway()),
        Manifest("20-httproute.yaml", http_route()),
        Manifest("30-httproute-redirect.yaml", http_redirect_route()),
        Manifest("40-healthcheckpolicy.yaml", health_check_policy()),
    ]


def config_map(region: str, config: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(CONFIG_MAP, region), "data": dict(config)}


def _secret_env(name: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": key}}}


def deployment(region: str, image: str, config_digest: str) -> dict[str, Any]:
    http = {"path": "/healthz", "port": "http"}
    container = {
        "name": APP,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        # No command: the image's own (`movr serve`, see the Containerfile) is the one that was tested.
        "ports": [{"name": "http", "containerPort": APP_PORT, "protocol": "TCP"}],
        "env": [
            {"name": "PORT", "value": str(APP_PORT)},
            {"name": "MOVR_REGION", "value": region},
            {"name": "MOVR_PRESET", "value": f"{CONFIG_DIR}/{PRESET_FILE}"},
            {"name": "MOVR_PROXY_HOPS", "value": str(PROXY_HOPS)},
            {"name": "MOVR_SECURE_COOKIES", "value": "1"},
            {"name": "MOVR_WORKERS", "value": str(WORKERS)},
            _secret_env("MOVR_DATABASE_URL", DATABASE_URL_KEY),
            _secret_env("MOVR_SECRET_KEY", SECRET_KEY_KEY),
            _secret_env("MOVR_METRICS_TOKEN", METRICS_TOKEN_KEY),
        ],
        # Started: the process answers. Ready: its database answers (the load balancer's check is the same).
        # Alive: the process answers - a slow database must not get live servers restarted.
        "startupProbe": {"httpGet": http, "periodSeconds": 2, "failureThreshold": 30},
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
        "livenessProbe": {"httpGet": http, "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3},
        "resources": {
            "requests": {"cpu": "500m", "memory": "512Mi"},
            "limits": {"memory": "1Gi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "database-ca", "mountPath": CA_DIR, "readOnly": True},
            # The Prometheus multiprocess directory (and gunicorn's worker heartbeat files, with --server gunicorn).
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod = {
        "metadata": {"labels": labels(region), "annotations": {"movr/config-sha256": config_digest}},
        "spec": {
            # A Service named `movr` would otherwise put MOVR_PORT=tcp://... and friends into the environment.
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 30,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": APP_UID,
                "runAsGroup": APP_UID,
                "fsGroup": APP_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": dict(SELECTOR)},
                }
            ],
            "containers": [container],
            "volumes": [
                {"name": "config", "configMap": {"name": CONFIG_MAP}},
                {
                    "name": "database-ca",
                    "secret": {"secretName": SECRET, "optional": True, "items": [{"key": CA_KEY, "path": CA_KEY}]},
                },
                {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            ],
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(APP, region),
        # No `replicas`: the HorizontalPodAutoscaler owns the count (re-applying must not reset it).
        "spec": {
            "selector": {"matchLabels": dict(SELECTOR)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": pod,
        },
    }


def service(region: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(APP, region),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(SELECTOR),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def service_export(region: str) -> dict[str, Any]:
    return {"apiVersion": "net.gke.io/v1", "kind": "ServiceExport", "metadata": _meta(APP, region)}


def pod_disruption_budget(region: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(APP, region),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(SELECTOR)}},
    }


def autoscaler(region: str) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(APP, region),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP},
            "minReplicas": MIN_REPLICAS,
            "maxReplicas": MAX_REPLICAS,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": CPU_TARGET_PERCENT},
                    },
                }
            ],
        },
    }


# --- the global load balancer ----------------------------------------------------------------------------

SERVICE_IMPORT = {"group": "net.gke.io", "kind": "ServiceImport", "name": APP}


def gateway() -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": _meta(APP),
        "spec": {
            "gatewayClassName": GATEWAY_CLASS,
            "addresses": [{"type": "NamedAddress", "value": ADDRESS_NAME}],
            "listeners": [
                {
                    "name": "https",
                    "protocol": "HTTPS",
                    "port": 443,
                    "tls": {"mode": "Terminate", "options": {"networking.gke.io/pre-shared-certs": CERTIFICATE_NAME}},
                    "allowedRoutes": {"namespaces": {"from": "Same"}},
                },
                {"name": "http", "protocol": "HTTP", "port": 80, "allowedRoutes": {"namespaces": {"from": "Same"}}},
            ],
        },
    }


def http_route() -> dict[str, Any]:
    """Every request to the nearest healthy region, with the client's location in the app's header."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": _meta(APP),
        "spec": {
            "parentRefs": [{"name": APP, "sectionName": "https"}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            # `set`, not `add`: a value the client sent is replaced, not appended to.
                            "requestHeaderModifier": {"set": [{"name": GEO_HEADER, "value": GEO_HEADER_VALUE}]},
                        }
                    ],
                    "backendRefs": [{**SERVICE_IMPORT, "port": SERVICE_PORT}],
                }
            ],
        },
    }


def http_redirect_route() -> dict[str, Any]:
    """Plain HTTP answers with a redirect to HTTPS: session cookies are Secure (MOVR_SECURE_COOKIES=1)."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": _meta(f"{APP}-https-redirect"),
        "spec": {
            "parentRefs": [{"name": APP, "sectionName": "http"}],
            "rules": [
                {"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}]}
            ],
        },
    }


def health_check_policy() -> dict[str, Any]:
    """The load balancer's health check asks /readyz: a region whose database is unreachable gets no clients."""
    return {
        "apiVersion": "networking.gke.io/v1",
        "kind": "HealthCheckPolicy",
        "metadata": _meta(APP),
        "spec": {
            "default": {
                "checkIntervalSec": 5,
                "timeoutSec": 3,
                "healthyThreshold": 2,
                "unhealthyThreshold": 2,
                "config": {
                    "type": "HTTP",
                    "httpHealthCheck": {"portSpecification": "USE_SERVING_PORT", "requestPath": "/readyz"},
                },
            },
            "targetRef": dict(SERVICE_IMPORT),
        },
    }
