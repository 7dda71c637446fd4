"""Deployment files: the Kubernetes base and overlay parse and carry what a cluster needs
(probes on the health endpoints, resources, budgets, no `latest`), the compose file has a health
check per service and keeps the query API off public interfaces, and /readyz stays within its
bound when Redis hangs."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import yaml
from litestar import Litestar
from litestar.testing import TestClient

from shared.clickhouse import ClickHouse
from tests.conftest import REPO

K8S = REPO / "deploy" / "k8s"


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def rendered_base() -> list[dict]:
    """The base as kustomize would emit it, for what these checks need: its resources, with the
    image names mapped."""
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    images = {image["name"]: f"{image['newName']}:{image['newTag']}" for image in kustomization["images"]}
    docs = [doc for resource in kustomization["resources"] for doc in documents(K8S / "base" / resource)]
    for doc in docs:
        for container in _containers(doc):
            container["image"] = images.get(container["image"], container["image"])
    return docs


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", [])


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def test_the_base_has_every_role_with_probes_resources_and_pinned_images() -> None:
    docs = rendered_base()
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc) and doc["metadata"]["name"]
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {f"abacus-{role}" for role in ("ingest", "query-api", "worker", "roller", "jobs")}
    services = by_kind(docs, "Service")
    budgets = by_kind(docs, "PodDisruptionBudget")
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        (container,) = _containers(deployment)
        image = container["image"]
        assert ":" in image and not image.endswith(":latest"), image
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            assert container[probe]["httpGet"]["path"] == path
            assert container[probe]["httpGet"]["port"] in ports
            assert container[probe]["timeoutSeconds"] > 2  # /readyz answers within 2 s
        assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
        assert container["resources"]["limits"]["memory"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert {"name": "abacus-config"} in [ref.get("configMapRef") for ref in container["envFrom"]]
        assert {"name": "abacus-secret"} in [ref.get("secretRef") for ref in container["envFrom"]]
        assert name in services and services[name]["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        assert (
            name in budgets and budgets[name]["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        )
        role_args = container["args"]
        if role_args[0] in ("worker", "rollup", "jobs"):
            assert ports == {"metrics": 9400}  # ABACUS_METRICS_PORT in the ConfigMap
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == "abacus-ingest" and hpa["spec"]["minReplicas"] >= 2
    config = by_kind(docs, "ConfigMap")["abacus-config"]["data"]
    assert config["ABACUS_METRICS_PORT"] == "9400" and config["ABACUS_METRICS_HOST"] == "0.0.0.0"
    assert config["ABACUS_REGISTRY_SEED"] == "none"
    assert set(by_kind(docs, "Secret")["abacus-secret"]["stringData"]) == {"ABACUS_JWT_SECRET", "ABACUS_CLICKHOUSE_URL"}
    from shared.settings import Settings

    known = {f"ABACUS_{field.upper()}" for field in Settings.__dataclass_fields__}
    assert set(config) <= known, set(config) - known


def test_the_example_overlay_points_at_the_base_and_files_that_exist() -> None:
    overlay = yaml.safe_load((K8S / "overlays" / "example" / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["../../base"] and overlay["namespace"]
    assert all(not image.get("newTag", "").startswith("latest") for image in overlay["images"])
    base_images = {image["newName"] for image in yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["images"]}
    assert {image["name"] for image in overlay["images"]} <= base_images
    for generator in overlay["secretGenerator"]:
        for env_file in generator["envs"]:
            assert (K8S / "overlays" / "example" / (env_file + ".example")).exists()  # the real one stays out of git


def test_compose_checks_every_service_and_keeps_the_query_api_local() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        if name != "migrate":  # a one-shot
            assert "healthcheck" in service, name
    assert compose["services"]["query-api"]["ports"] == ["${ABACUS_QUERY_BIND:-127.0.0.1}:${ABACUS_QUERY_PORT:-8002}:8002"]
    assert compose["x-abacus-env"]["ABACUS_REGISTRY_SEED"] == "${ABACUS_REGISTRY_SEED:-none}"
    for image in (service.get("image", "") for service in compose["services"].values()):
        assert not image.endswith(":latest")


def test_the_query_apis_readyz_is_a_503_within_its_bound_when_redis_hangs(clickhouse: ClickHouse) -> None:
    import anyio

    from query_api.app import QueryParts
    from query_api.registry_loading import RegistryLoader
    from query_api.registry_store import RegistryStore
    from query_api.service import QueryService
    from shared.health import health_handlers
    from shared.redis_conn import sync_client

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    hung = sync_client(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")  # its socket timeout: 5 s
    service = QueryService(RegistryStore(clickhouse, hung), None, clickhouse, hung, 10_000)  # type: ignore[arg-type]
    loaded = RegistryLoader(lambda: None, None)  # type: ignore[arg-type, return-value]
    loaded.loaded = True  # what is timed here is the Redis check, not the registry's load
    parts = QueryParts(service=service, route_handlers=[], registry_loader=loaded)
    app = Litestar(route_handlers=health_handlers({"query": parts.readiness}))

    async def cancelled_after(bound_s: float) -> float:
        # Cancelled the way anyio (Litestar's runtime) cancels: a readiness check that waited for
        # its thread would hold on until Redis's socket timeout, whatever the probe's bound.
        started = time.monotonic()
        with anyio.move_on_after(bound_s):
            await parts.readiness()
        return time.monotonic() - started

    try:
        with TestClient(app) as client:
            started = time.monotonic()
            answer = client.get("/readyz")
            took = time.monotonic() - started
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert took < 3.0, f"/readyz took {took:.1f}s"
        took = anyio.run(cancelled_after, 0.5)
        assert took < 2.0, f"a cancelled readiness check waited {took:.1f}s for its hung thread"
    finally:
        silent.close()


@pytest.mark.parametrize("path", sorted((REPO / "deploy").glob("**/*.y*ml")))
def test_every_yaml_file_in_deploy_parses(path: Path) -> None:
    assert documents(path)


def _declared_metrics() -> set[str]:
    import re

    names = set()
    for package in ("ingest", "worker", "shared", "jobs"):
        for source in (REPO / package).glob("**/*.py"):
            names |= set(re.findall(r'"(abacus_[a-z_]+)"', source.read_text()))
    names |= {"abacus_http_request_seconds", "abacus_results_source"}  # built from a prefix in query_api/request_metrics.py
    return names


def _used_metrics(text: str) -> set[str]:
    import re

    used = set()
    for name in re.findall(r"\b(abacus_[a-z_]+)", text):
        for suffix in ("_bucket", "_count", "_sum", "_total"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        used.add(name)
    return used


def test_the_alert_rules_and_the_dashboard_use_only_metrics_abacus_exports() -> None:
    import json

    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert {"AbacusWorkerLag", "AbacusDeadLetters", "AbacusIngest503s", "AbacusRollupBehind"} <= set(alerts)
    dashboard = json.loads((REPO / "deploy" / "grafana" / "abacus.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = _used_metrics(" ".join(rule["expr"] for rule in alerts.values()) + " " + " ".join(exprs))
    assert used <= _declared_metrics(), used - _declared_metrics()
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
