"""`movr deploy render`: the deploy kit of a placement spec, checked offline as far as offline tools go.

Core Kubernetes kinds are validated strictly (unknown fields are errors) against the Kubernetes 1.31
schemas that `kubernetes-validate` ships. The kinds it has no schema for - the Gateway API's Gateway and
HTTPRoute, GKE's ServiceExport and HealthCheckPolicy - are checked against schemas transcribed below from
the upstream Gateway API v1 CRDs and GKE's documentation, for the fields the kit uses. The Containerfile
must pass hadolint. What the objects refer to (labels, ports, volumes, the Secret, the ConfigMap, the
ServiceImport, the Gateway's listeners) must resolve, and the load balancer's geo header must be read by
the app as the client's city.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from movr.cli import main
from movr.deploy.containerfile import APP_PORT, APP_UID, COMMAND, HEALTHCHECK
from movr.deploy.image import ImageError, check_image
from movr.deploy.manifests import (
    CONFIG_DIR,
    DATABASE_URL_KEY,
    GEO_HEADER_VALUE,
    METRICS_TOKEN_KEY,
    SECRET,
    SECRET_KEY_KEY,
)
from movr.deploy.render import GATEWAY_DIR, render_kit, spec_toml
from movr.geo import parse_preset, preset_names
from movr.geo.client_location import resolve
from movr.placement.spec import load_spec
from movr.web.serve import serve_command

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_SPEC = ROOT / "src" / "movr" / "placement" / "specs" / "example.toml"
KUBERNETES_VERSION = "1.31.0"  # the oldest GKE minor with standard support when this kit was written
CRD_KINDS = {"Gateway", "HTTPRoute", "ServiceExport", "HealthCheckPolicy"}
REGION_KINDS = {
    "Namespace", "ConfigMap", "Deployment", "Service", "ServiceExport",
    "PodDisruptionBudget", "HorizontalPodAutoscaler",
}  # fmt: skip
GATEWAY_KINDS = ["Namespace", "Gateway", "HTTPRoute", "HTTPRoute", "HealthCheckPolicy"]

# Specs to render: every packaged preset, two spec features, and the example spec file.
SPECS = {
    **{name: {"preset": name} for name in preset_names()},
    "aws-eu-us-region-survival": {"preset": "aws-eu-us", "survival": "region"},
    "gcp-3-placement-restricted": {"preset": "gcp-3", "placement_restricted": True},
    "example-spec-file": {"preset": None, "spec_file": EXAMPLE_SPEC},
}


def kit(name: str, image: str = "movr:test") -> dict[str, str]:
    options = dict(SPECS[name])
    return render_kit(load_spec(options.pop("preset"), options.pop("spec_file", None), **options), image)


def documents(files: dict[str, str], folder: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path, text in sorted(files.items()):
        if path.endswith(".yaml") and (folder is None or path.startswith(folder + "/")):
            found.extend((path, doc) for doc in yaml.safe_load_all(text) if doc)
    return found


def one(files: dict[str, str], folder: str, kind: str, name: str | None = None) -> dict[str, Any]:
    (doc,) = [
        doc for _, doc in documents(files, folder) if doc["kind"] == kind and name in (None, doc["metadata"]["name"])
    ]
    return doc


@pytest.fixture(scope="module")
def gcp3() -> dict[str, str]:
    return kit("gcp-3")


# --- the command ---------------------------------------------------------------------------------------------


def test_render_writes_a_containerfile_each_regions_manifests_and_the_load_balancer(tmp_path):
    out = tmp_path / "kit"
    args = ["deploy", "render", "--target", "k8s", "--preset", "gcp-3", "--image", "movr:test", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["Containerfile", "us-east1", "us-west1", "europe-west1", GATEWAY_DIR]
    )
    written = {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file()}
    for region in ("us-east1", "us-west1", "europe-west1"):
        assert {doc["kind"] for _, doc in documents(written, region)} == REGION_KINDS
    assert sorted(doc["kind"] for _, doc in documents(written, GATEWAY_DIR)) == sorted(GATEWAY_KINDS)
    assert written == render_kit(load_spec("gcp-3"), "movr:test")  # the command writes what the renderer renders
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging directory left behind


def test_render_takes_a_spec_file_and_puts_its_spec_in_every_regions_configmap(tmp_path):
    out = tmp_path / "kit"
    args = ["deploy", "render", "--spec", str(EXAMPLE_SPEC), "--image", "movr:test", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    spec = load_spec(None, EXAMPLE_SPEC)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted([*spec.regions, GATEWAY_DIR])
    for region in spec.regions:
        config = yaml.safe_load((out / region / "10-configmap.yaml").read_text())["data"]
        assert config["placement.toml"] == spec_toml(spec)
        assert 'survival = "region"' in config["placement.toml"]


def test_a_preset_file_travels_in_the_configmap(tmp_path):
    preset_file = tmp_path / "my-preset.toml"
    preset_file.write_text((ROOT / "src" / "movr" / "geo" / "presets" / "gcp-3.toml").read_text() + "# mine\n")
    files = render_kit(load_spec(str(preset_file)), "movr:test")
    data = one(files, "us-east1", "ConfigMap")["data"]
    assert data["preset.toml"] == preset_file.read_text()
    assert f'preset = "{CONFIG_DIR}/preset.toml"' in data["placement.toml"]  # where the pods mount it


def test_rendering_again_replaces_the_kit_and_keeps_other_files(tmp_path):
    out = tmp_path / "kit"
    base = ["deploy", "render", "--preset", "gcp-3", "--out", str(out)]
    assert CliRunner().invoke(main, [*base, "--image", "movr:1"]).exit_code == 0
    (out / "NOTES.txt").write_text("mine")
    assert CliRunner().invoke(main, [*base, "--image", "movr:2"]).exit_code == 0
    deployment = yaml.safe_load((out / "us-west1" / "20-deployment.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "movr:2"
    assert (out / "NOTES.txt").read_text() == "mine"


def test_rendering_is_deterministic():
    assert kit("aws-eu-us-region-survival") == kit("aws-eu-us-region-survival")


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--preset", "no-such-preset", "--image", "movr:test"], "no preset named 'no-such-preset'"),
        (["--preset", "gcp-3", "--image", ""], "--image is empty"),
        (["--preset", "gcp-3"], "--image is required"),
        (["--preset", "gcp-3", "--image", "Movr:test"], "lower case"),
        (["--preset", "gcp-3", "--image", "movr:te st"], "white space"),
        (["--preset", "gcp-3", "--image", "movr::test"], "not a valid image reference"),
        (["--preset", "gcp-3", "--image", "movr@sha256:abc"], "not a valid image reference"),
        (
            ["--preset", "gcp-3", "--survival", "region", "--placement-restricted", "--image", "movr:test"],
            "PLACEMENT RESTRICTED",
        ),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, reason):
    out = tmp_path / "kit"
    result = CliRunner().invoke(main, ["deploy", "render", *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_out_that_is_a_file_exits_2_and_the_file_is_untouched(tmp_path):
    out = tmp_path / "kit"
    out.write_text("not a directory")
    result = CliRunner().invoke(main, ["deploy", "render", "--preset", "gcp-3", "--image", "movr:t", "--out", str(out)])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "is a file" in result.stderr
    assert out.read_text() == "not a directory" and sorted(tmp_path.iterdir()) == [out]


def test_a_file_in_the_way_inside_out_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "kit"
    out.mkdir()
    (out / "us-west1").write_text("in the way")
    result = CliRunner().invoke(main, ["deploy", "render", "--preset", "gcp-3", "--image", "movr:t", "--out", str(out)])
    assert result.exit_code == 2 and "is a file" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["us-west1"]


@pytest.mark.parametrize(
    "reference",
    [
        "movr:test",
        "movr",
        "us-docker.pkg.dev/my-project/movr/movr:0.1.0",
        "localhost:5000/movr",
        "[::1]:5000/movr:1",
        "ghcr.io/a_b/c--d/e.f:v1.2-rc_3",
        "registry.example.com/movr@sha256:" + "a" * 64,
        "movr:1@sha256:" + "0" * 64,
    ],
)
def test_valid_image_references(reference):
    assert check_image(reference) == reference


@pytest.mark.parametrize(
    "reference",
    [
        "", " ", "Movr", "movr:", ":tag", "movr:-x", "-movr", "movr_", "a//b", "movr@sha256:abc",
        "x" * 256, "movr:" + "t" * 129,
    ],
)  # fmt: skip
def test_invalid_image_references(reference):
    with pytest.raises(ImageError):
        check_image(reference)


# --- schemas ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_core_manifest_validates_strictly_against_the_kubernetes_schemas(name):
    files = kit(name)
    unvalidated = set()
    for path, doc in documents(files):
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unvalidated.add(doc["kind"])
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path}: {'.'.join(map(str, error.path))}: {error.message}")
    assert unvalidated == CRD_KINDS  # a core kind never ends up unvalidated


def test_the_schema_check_can_fail(gcp3):
    deployment = copy.deepcopy(one(gcp3, "us-east1", "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    autoscaler = copy.deepcopy(one(gcp3, "us-east1", "HorizontalPodAutoscaler"))
    autoscaler["spec"]["minReplicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(autoscaler, KUBERNETES_VERSION, strict=True)


def _object(required: tuple[str, ...] = (), **properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def _array(items: dict[str, Any], max_items: int) -> dict[str, Any]:
    return {"type": "array", "items": items, "maxItems": max_items}


def _string(pattern: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "string", **({"pattern": pattern} if pattern else {}), **extra}


DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
ADDRESS_TYPE = r"^Hostname|IPAddress|NamedAddress|" + DNS_SUBDOMAIN[1:-1] + r"\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$"
GROUP = _string(r"^$|" + DNS_SUBDOMAIN, maxLength=253)
KIND = _string(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$", minLength=1, maxLength=63)
NAME = _string(minLength=1, maxLength=253)
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
METADATA = _object(
    ("name", "namespace"),
    name=_string(DNS_SUBDOMAIN, maxLength=253),
    namespace=_string(DNS_LABEL, maxLength=63),
    labels={"type": "object", "additionalProperties": _string(LABEL_VALUE, maxLength=63)},
)  # fmt: skip
HEADER = _object(
    ("name", "value"), name=_string(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$", minLength=1, maxLength=256),
    value=_string(minLength=1, maxLength=4096),
)  # fmt: skip
# From gateway.networking.k8s.io_{gateways,httproutes}.yaml (v1) of kubernetes-sigs/gateway-api, for the
# fields the kit uses; CEL rules the kit relies on are checked in test_gateway_api_rules.
GATEWAY_API = {
    "Gateway": _object(
        ("gatewayClassName", "listeners"),
        gatewayClassName=_string(minLength=1, maxLength=253),
        addresses=_array(_object(
            type=_string(ADDRESS_TYPE),
            value=_string(maxLength=253),
        ), 16),
        listeners={**_array(_object(
            ("name", "port", "protocol"),
            name=_string(DNS_SUBDOMAIN, minLength=1, maxLength=253),
            port=PORT,
            protocol=_string(r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$", maxLength=255),
            tls=_object(
                mode={"enum": ["Terminate", "Passthrough"]},
                options={"type": "object", "additionalProperties": _string(maxLength=4096)},
            ),
            allowedRoutes=_object(namespaces=_object(**{"from": {"enum": ["All", "Selector", "Same"]}})),
        ), 64), "minItems": 1},
    ),
    "HTTPRoute": _object(
        parentRefs=_array(_object(
            ("name",), group=GROUP, kind=KIND, name=NAME, sectionName=_string(DNS_SUBDOMAIN, maxLength=253), port=PORT
        ), 32),
        rules=_array(_object(
            matches=_array(_object(path=_object(
                type={"enum": ["Exact", "PathPrefix", "RegularExpression"]}, value=_string(maxLength=1024)
            )), 64),
            filters=_array(_object(
                ("type",),
                type={"enum": ["RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "RequestRedirect",
                               "URLRewrite", "ExtensionRef", "CORS"]},
                requestHeaderModifier=_object(set=_array(HEADER, 16), add=_array(HEADER, 16)),
                requestRedirect=_object(
                    scheme={"enum": ["http", "https"]}, statusCode={"enum": [301, 302, 303, 307, 308]}
                ),
            ), 16),
            backendRefs=_array(_object(("name",), group=GROUP, kind=KIND, name=NAME, port=PORT), 16),
        ), 16),
    ),
    # GKE's multi-cluster Services and Gateway policies (cloud.google.com/kubernetes-engine/docs).
    "HealthCheckPolicy": _object(
        ("default", "targetRef"),
        default=_object(
            checkIntervalSec={"type": "integer", "minimum": 1, "maximum": 300},
            timeoutSec={"type": "integer", "minimum": 1, "maximum": 300},
            healthyThreshold={"type": "integer", "minimum": 1, "maximum": 10},
            unhealthyThreshold={"type": "integer", "minimum": 1, "maximum": 10},
            config=_object(
                ("type",),
                type={"enum": ["TCP", "HTTP", "HTTPS", "HTTP2", "GRPC"]},
                httpHealthCheck=_object(
                    portSpecification={"enum": ["USE_FIXED_PORT", "USE_NAMED_PORT", "USE_SERVING_PORT"]},
                    requestPath=_string(r"^/"),
                ),
            ),
        ),
        targetRef=_object(("group", "kind", "name"), group=GROUP, kind=KIND, name=NAME),
    ),
}  # fmt: skip
API_VERSIONS = {
    "Gateway": "gateway.networking.k8s.io/v1",
    "HTTPRoute": "gateway.networking.k8s.io/v1",
    "HealthCheckPolicy": "networking.gke.io/v1",
    "ServiceExport": "net.gke.io/v1",
}


def check_crd(doc: dict[str, Any]) -> None:
    kind = doc["kind"]
    envelope = {"apiVersion": {"const": API_VERSIONS[kind]}, "kind": {"const": kind}, "metadata": METADATA}
    if kind in GATEWAY_API:
        envelope["spec"] = GATEWAY_API[kind]
    jsonschema.validate(doc, _object(tuple(envelope), **envelope))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_crd_kinds_match_their_transcribed_schemas(name):
    for _path, doc in documents(kit(name)):
        if doc["kind"] in CRD_KINDS:
            check_crd(doc)


def test_the_crd_check_can_fail(gcp3):
    route = copy.deepcopy(one(gcp3, GATEWAY_DIR, "HealthCheckPolicy"))
    route["spec"]["default"]["config"]["httpHealthCheck"]["requestpath"] = "/readyz"
    with pytest.raises(jsonschema.ValidationError):
        check_crd(route)
    gateway = copy.deepcopy(one(gcp3, GATEWAY_DIR, "Gateway"))
    gateway["spec"]["listeners"][0]["protocol"] = "HTTPS 2"
    with pytest.raises(jsonschema.ValidationError):
        check_crd(gateway)


def test_gateway_api_rules(gcp3):
    """The CEL rules of the Gateway API CRDs that apply to what the kit renders."""
    listeners = one(gcp3, GATEWAY_DIR, "Gateway")["spec"]["listeners"]
    assert len({listener["name"] for listener in listeners}) == len(listeners)
    assert len({(listener["port"], listener["protocol"]) for listener in listeners}) == len(listeners)
    for listener in listeners:
        if listener["protocol"] == "HTTPS":  # tls mode must be Terminate; certificateRefs or options when it is
            assert listener["tls"]["mode"] == "Terminate" and listener["tls"]["options"]
        else:
            assert "tls" not in listener
    for _, route in documents(gcp3, GATEWAY_DIR):
        for rule in route["spec"].get("rules", []) if route["kind"] == "HTTPRoute" else []:
            types = [f["type"] for f in rule.get("filters", [])]
            assert len(types) == len(set(types))  # each core filter at most once per rule
            for f in rule.get("filters", []):  # the filter's own field, and no other
                assert set(f) == {"type", f["type"][0].lower() + f["type"][1:]}
            if "RequestRedirect" in types:
                assert "backendRefs" not in rule  # "must not be used together with backendRefs"
            for match in rule.get("matches", []):
                assert match["path"]["value"].startswith("/") and "//" not in match["path"]["value"]


# --- what the objects refer to -------------------------------------------------------------------------------


@pytest.mark.parametrize("region", ["us-east1", "us-west1", "europe-west1"])
def test_each_region_references_resolve(gcp3, region):
    deployment = one(gcp3, region, "Deployment")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    labels = pod["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    for kind in ("Service", "PodDisruptionBudget"):
        doc = one(gcp3, region, kind)
        chosen = doc["spec"]["selector"] if kind == "Service" else doc["spec"]["selector"]["matchLabels"]
        assert chosen.items() <= labels.items(), kind
    port_names = {port["name"] for port in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in port_names
    service = one(gcp3, region, "Service")
    assert service["spec"]["ports"][0]["targetPort"] in port_names
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    assert {mount["name"] for mount in container["volumeMounts"]} == set(volumes)
    config_map = one(gcp3, region, "ConfigMap")
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    hpa = one(gcp3, region, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    export = one(gcp3, region, "ServiceExport")["metadata"]
    assert (export["name"], export["namespace"]) == (service["metadata"]["name"], service["metadata"]["namespace"])
    namespace = one(gcp3, region, "Namespace")["metadata"]["name"]
    assert {doc["metadata"].get("namespace", namespace) for _, doc in documents(gcp3, region)} == {namespace}


def test_the_load_balancer_references_resolve(gcp3):
    service = one(gcp3, "us-east1", "Service")
    gateway = one(gcp3, GATEWAY_DIR, "Gateway")
    sections = {listener["name"] for listener in gateway["spec"]["listeners"]}
    routes = [doc for _, doc in documents(gcp3, GATEWAY_DIR) if doc["kind"] == "HTTPRoute"]
    assert {ref["sectionName"] for route in routes for ref in route["spec"]["parentRefs"]} == sections
    assert {ref["name"] for route in routes for ref in route["spec"]["parentRefs"]} == {gateway["metadata"]["name"]}
    backends = [ref for route in routes for rule in route["spec"]["rules"] for ref in rule.get("backendRefs", [])]
    assert backends == [
        {"group": "net.gke.io", "kind": "ServiceImport", "name": service["metadata"]["name"], "port": 80}
    ]
    assert service["spec"]["ports"][0]["port"] == 80
    policy = one(gcp3, GATEWAY_DIR, "HealthCheckPolicy")["spec"]
    assert policy["targetRef"] == {k: v for k, v in backends[0].items() if k != "port"}
    assert policy["default"]["config"]["httpHealthCheck"]["requestPath"] == "/readyz"
    assert {doc["metadata"]["namespace"] for _, doc in documents(gcp3, GATEWAY_DIR) if doc["kind"] != "Namespace"} == {
        service["metadata"]["namespace"]
    }


def test_the_load_balancers_geo_header_is_read_as_the_clients_city(gcp3, preset):
    (rule,) = one(gcp3, GATEWAY_DIR, "HTTPRoute", "movr")["spec"]["rules"]
    (header,) = rule["filters"][0]["requestHeaderModifier"]["set"]
    assert header["value"] == GEO_HEADER_VALUE
    # What Google's load balancer puts there for a client in Rome, Lazio (its variables, filled in).
    value = header["value"].replace("{client_region_subdivision}", "IT62").replace("{client_city}", "Rome")
    location = resolve(preset, {header["name"]: value}, {}, None)
    assert (location.city, location.source) == ("rome", "geo header")


# --- what runs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("region", ["us-east1", "us-west1", "europe-west1"])
def test_each_deployment_serves_its_region_from_the_configmaps_preset(gcp3, region, preset):
    (container,) = one(gcp3, region, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["MOVR_REGION"]["value"] == region
    preset_path = Path(env["MOVR_PRESET"]["value"])
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["config"]
    assert str(preset_path.parent) == mount == CONFIG_DIR
    data = one(gcp3, region, "ConfigMap")["data"]
    served = parse_preset(tomllib.loads(data[preset_path.name]))
    assert (served.name, served.regions, served.region_rtt) == (preset.name, preset.regions, preset.region_rtt)
    assert env["PORT"]["value"] == str(APP_PORT) == str(container["ports"][0]["containerPort"])
    assert env["MOVR_PROXY_HOPS"]["value"] == "2"  # Google's load balancer appends the client and itself


def test_the_configmaps_spec_reads_back_as_the_same_spec(tmp_path):
    for options in ({"preset": "aws-eu-us", "survival": "region"}, {"preset": "gcp-3", "placement_restricted": True}):
        spec = load_spec(options.pop("preset"), **options)
        path = tmp_path / "placement.toml"
        path.write_text(spec_toml(spec))
        again = load_spec(None, path)
        for field in ("primary_region", "survival", "super_regions", "super_region_survival", "placement_restricted",
                      "tables", "region_name_template", "database", "cockroach_version"):  # fmt: skip
            assert getattr(again, field) == getattr(spec, field), field
        assert again.preset.name == spec.preset.name


def test_no_secret_value_is_rendered(gcp3):
    for path, doc in documents(gcp3):
        assert doc["kind"] != "Secret", path
    for path, text in gcp3.items():
        assert not re.search(r"(postgresql|cockroachdb)(\+\w+)?://", text), path
    (container,) = one(gcp3, "europe-west1", "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    for name, key in (
        ("MOVR_DATABASE_URL", DATABASE_URL_KEY),
        ("MOVR_SECRET_KEY", SECRET_KEY_KEY),
        ("MOVR_METRICS_TOKEN", METRICS_TOKEN_KEY),
    ):
        assert env[name] == {"name": name, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": key}}}


def test_pods_run_as_the_images_non_root_user_on_a_read_only_root(gcp3):
    pod = one(gcp3, "us-west1", "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == APP_UID
    assert pod["enableServiceLinks"] is False  # else a Service named movr would set MOVR_PORT=tcp://...
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}  # gunicorn's and the metrics' files
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    assert f"\nUSER {APP_UID}:{APP_UID}\n" in gcp3["Containerfile"]
    assert f"\nEXPOSE {APP_PORT}\n" in gcp3["Containerfile"]


# --- the Containerfile -----------------------------------------------------------------------------------------


def hadolint() -> str:
    return str(Path(sys.executable).with_name("hadolint"))


def test_the_containerfile_passes_hadolint(gcp3, tmp_path):
    path = tmp_path / "Containerfile"
    path.write_text(gcp3["Containerfile"])
    result = subprocess.run([hadolint(), str(path)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_hadolint_can_fail(tmp_path):
    path = tmp_path / "Containerfile"
    path.write_text("FROM python:latest\nRUN pip install flask\nCMD movr serve\n")
    result = subprocess.run([hadolint(), str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_the_containerfile_builds_in_two_stages_and_runs_movr_serve(gcp3):
    text = gcp3["Containerfile"]
    stages = re.findall(r"^FROM (\S+) AS (\w+)$", text, re.MULTILINE)
    assert [name for _, name in stages] == ["builder", "runtime"]
    assert "--mount=type=bind,from=builder" in text  # the wheels never become a layer of the runtime image
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.MULTILINE)[1])
    assert cmd == COMMAND
    healthcheck = json.loads(re.search(r"^    CMD (\[.*\])$", text, re.MULTILINE)[1])
    assert healthcheck == HEALTHCHECK and "/healthz" in healthcheck[-1]


def test_the_container_command_parses_as_movr_serve_on_all_interfaces():
    """The shell line of the container's command, with the environment's defaults filled in as sh would."""
    script = COMMAND[2]
    expanded = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", script)
    words = shlex.split(expanded)
    assert words[:3] == ["exec", "movr", "serve"]
    ctx = serve_command.make_context("serve", words[3:])
    assert ctx.params["host"] == "0.0.0.0" and ctx.params["port"] == APP_PORT
