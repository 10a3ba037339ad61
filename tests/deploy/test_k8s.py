"""deploy/k8s: the kustomize base renders, validates against the schemas, and hangs together.

No cluster, no kubectl and no network: `render()` does what `kubectl kustomize`
does with the features this base uses (resources, namespace, labels,
configMapGenerator, images), and every rendered object is validated with the
`kubernetes-validate` package, which carries the OpenAPI schemas of each
Kubernetes release, in strict mode (unknown fields are errors). Then the names
the objects use for each other (HPA targets, PDB and Service selectors, Ingress
backends, ConfigMaps, ServiceAccounts) are checked to resolve.

The one difference from kustomize: the generated ConfigMap keeps its plain name
(kustomize appends a content hash and rewrites the references to it), so
references are checked against the generator's name.
"""

from __future__ import annotations

import copy
import tomllib
from functools import cache
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s"

#: Oldest Kubernetes release the base is meant for, and the newest the package knows.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())

#: Deployment name -> `python -m` module, for every service of the system.
DEPLOYMENTS = {
    "gateway": "gateway",
    "user-service": "user_service",
    "group-service": "group_service",
    "message-service": "message_service",
    "delivery-service": "delivery_service",
    "persister": "persister",
    "notifier": "notifier",
}
CONSUMERS = sorted(set(DEPLOYMENTS) - {"gateway"})
PREFIX = {
    "gateway": "GATEWAY",
    "user_service": "USER_SERVICE",
    "group_service": "GROUP_SERVICE",
    "message_service": "MESSAGE_SERVICE",
    "delivery_service": "DELIVERY_SERVICE",
    "persister": "PERSISTER",
    "notifier": "NOTIFIER",
}

#: Kinds that live in no namespace (kustomize's `namespace:` leaves them alone).
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
    "CustomResourceDefinition",
    "IngressClass",
}
#: Where each workload kind keeps its pod template.
POD_TEMPLATE_PATH = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "Job": ("spec", "template"),
}


# ------------------------------------------------------------------ render ----


def _kustomization() -> dict:
    path = BASE / "kustomization.yaml"
    assert path.is_file(), f"{path} is missing"
    doc = yaml.safe_load(path.read_text())
    assert doc.get("apiVersion") == "kustomize.config.k8s.io/v1beta1"
    assert doc.get("kind") == "Kustomization"
    return doc


def _read_env_file(path: Path) -> dict[str, str]:
    """kustomize's `envs:` format: KEY=VALUE lines, # comments and blank lines ignored."""
    data = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}:{number}: not KEY=VALUE: {raw!r}"
        assert key, f"{path.name}:{number}: empty key: {raw!r}"
        assert key.strip() == key, f"{path.name}:{number}: bad key: {raw!r}"
        assert key not in data, f"{path.name}:{number}: {key} set twice"
        data[key] = value
    return data


def _pod_templates(doc: dict) -> list[dict]:
    path = POD_TEMPLATE_PATH.get(doc["kind"])
    if path is None:
        return []
    node = doc
    for key in path:
        node = node.get(key, {})
    return [node]


def _containers(doc: dict) -> list[dict]:
    return [
        c
        for template in _pod_templates(doc)
        for c in template.get("spec", {}).get("containers", [])
        + template.get("spec", {}).get("initContainers", [])
    ]


@cache
def _render() -> tuple[dict, ...]:
    kustomization = _kustomization()
    docs: list[dict] = []
    for resource in kustomization.get("resources", []):
        path = BASE / resource
        assert path.is_file(), f"kustomization.yaml lists {resource}, which does not exist"
        parsed = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert parsed, f"{resource} holds no object"
        for doc in parsed:
            assert isinstance(doc, dict), f"{resource}: not a mapping: {str(doc)[:80]}"
            assert doc.get("kind"), f"{resource}: an object without kind"
            assert doc.get("apiVersion"), f"{resource}: an object without apiVersion"
        docs.extend(parsed)

    for generator in kustomization.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for env_file in generator.get("envs", []):
            path = BASE / env_file
            assert path.is_file(), f"configMapGenerator reads {env_file}, which does not exist"
            data.update(_read_env_file(path))
        for literal in generator.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = value
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"]},
                "data": data,
            }
        )

    docs = copy.deepcopy(docs)
    namespace = kustomization.get("namespace")
    for doc in docs:
        meta = doc.setdefault("metadata", {})
        if namespace and doc["kind"] not in CLUSTER_SCOPED:
            meta["namespace"] = namespace
        for label in kustomization.get("labels", []):
            meta.setdefault("labels", {}).update(label["pairs"])
            if label.get("includeTemplates") or label.get("includeSelectors"):
                for template in _pod_templates(doc):
                    template.setdefault("metadata", {}).setdefault("labels", {}).update(
                        label["pairs"]
                    )
            assert not label.get("includeSelectors"), (
                "selectors are immutable: adding labels to them breaks upgrades"
            )
        for container in _containers(doc):
            for image in kustomization.get("images", []):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = (
                        f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"
                    )
    return tuple(docs)


def _objects(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in _render() if d["kind"] == kind}


def _config() -> dict[str, str]:
    (config,) = [d for d in _objects("ConfigMap").values()]
    return config["data"]


# --------------------------------------------------------------- validity ----


def test_kustomization_renders_every_listed_resource() -> None:
    kinds = sorted({d["kind"] for d in _render()})
    for expected in (
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Ingress",
        "ConfigMap",
        "Job",
        "Namespace",
        "ServiceAccount",
    ):
        assert expected in kinds, f"the base renders no {expected}: {kinds}"
    listed = set(_kustomization()["resources"])
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk <= listed, f"manifests not listed in kustomization.yaml: {on_disk - listed}"


def test_object_names_are_unique_per_kind() -> None:
    seen: set[tuple[str, str]] = set()
    for doc in _render():
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in seen, f"{key} is defined twice"
        seen.add(key)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schema(version: str) -> None:
    failures = []
    for doc in _render():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            # The error carries jsonschema's fields; its str() dumps the whole schema.
            where = "/".join(str(p) for p in exc.absolute_path)
            message = exc.message
            failures.append(f"{doc['kind']}/{doc['metadata']['name']} at {where or '.'}: {message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: no schema: {exc}")
    assert not failures, f"invalid for Kubernetes {version}:\n" + "\n".join(failures)


# ------------------------------------------------------------ workloads ----


def test_every_service_has_a_deployment_running_its_module() -> None:
    deployments = _objects("Deployment")
    assert set(deployments) == set(DEPLOYMENTS)
    for name, module in DEPLOYMENTS.items():
        (container,) = _containers(deployments[name])
        assert container["args"] == [module], f"{name} must run `python -m {module}`"
        assert container["image"].split(":")[0].endswith("messenger")


def test_bootstrap_job_runs_libs_bootstrap() -> None:
    jobs = _objects("Job")
    assert len(jobs) == 1
    (job,) = jobs.values()
    (container,) = _containers(job)
    assert container["args"] == ["libs.bootstrap"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"OnFailure", "Never"}


def test_deployment_selectors_match_their_pod_labels() -> None:
    for name, deployment in _objects("Deployment").items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), f"{name}: selector {selector} vs labels {labels}"


def test_probes_resources_and_ports() -> None:
    for name, deployment in _objects("Deployment").items():
        (container,) = _containers(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert "http" in ports, f"{name} names no http port"
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            http = container[probe]["httpGet"]
            assert http["path"] == path, f"{name}.{probe} must check {path}"
            assert http["port"] in (ports["http"], "http"), f"{name}.{probe} probes another port"
        requests = container["resources"]["requests"]
        assert {"cpu", "memory"} <= set(requests), f"{name}: the HPA needs CPU and memory requests"
        assert "memory" in container["resources"].get("limits", {}), f"{name}: no memory limit"

        env = {e["name"]: e for e in container.get("env", [])}
        prefix = PREFIX[DEPLOYMENTS[name]]
        assert env[f"{prefix}_HTTP_HOST"]["value"] == "0.0.0.0", f"{name} must bind 0.0.0.0"
        assert int(env[f"{prefix}_HTTP_PORT"]["value"]) == ports["http"], (
            f"{name}: {prefix}_HTTP_PORT differs from the container port"
        )


def test_gateway_instance_id_is_the_pod_name() -> None:
    (container,) = _containers(_objects("Deployment")["gateway"])
    env = {e["name"]: e for e in container["env"]}
    assert env["GATEWAY_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_pods_run_unprivileged() -> None:
    workloads = list(_objects("Deployment").values()) + list(_objects("Job").values())
    for doc in workloads:
        (template,) = _pod_templates(doc)
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for container in _containers(doc):
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]


# --------------------------------------------------------- cross references ----


def _deployment_for_selector(selector: dict[str, str]) -> list[str]:
    return [
        name
        for name, d in _objects("Deployment").items()
        if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
    ]


def test_every_deployment_has_a_service_an_hpa_and_a_pdb() -> None:
    for kind in ("Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        objects = _objects(kind)
        missing = set(DEPLOYMENTS) - set(objects)
        assert not missing, f"no {kind} for {sorted(missing)}"


def test_hpas_target_existing_deployments() -> None:
    deployments = _objects("Deployment")
    for name, hpa in _objects("HorizontalPodAutoscaler").items():
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment"), name
        assert target["name"] in deployments, f"HPA {name} scales unknown {target['name']}"
        assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"], name


def test_consumer_hpas_are_capped_at_the_partition_count() -> None:
    partitions = int(_config()["KAFKA_PARTITIONS"])
    hpas = _objects("HorizontalPodAutoscaler")
    for name in CONSUMERS:
        assert hpas[name]["spec"]["maxReplicas"] <= partitions, (
            f"{name}: more consumers than the {partitions} partitions would sit idle"
        )
    assert hpas["gateway"]["spec"]["maxReplicas"] > hpas["gateway"]["spec"]["minReplicas"]


def test_pdbs_and_services_select_exactly_one_deployment() -> None:
    for kind in ("PodDisruptionBudget", "Service"):
        for name, obj in _objects(kind).items():
            if obj["spec"].get("type") == "ExternalName":
                continue
            selector = obj["spec"]["selector"]
            selector = (
                selector.get("matchLabels", selector) if kind == "PodDisruptionBudget" else selector
            )
            matched = _deployment_for_selector(selector)
            assert matched == [name], f"{kind} {name} selects {matched}"


def test_service_ports_resolve_to_container_ports() -> None:
    deployments = _objects("Deployment")
    for name, service in _objects("Service").items():
        if service["spec"].get("type") == "ExternalName":
            continue
        (container,) = _containers(deployments[name])
        names = {p["name"] for p in container["ports"]}
        numbers = {p["containerPort"] for p in container["ports"]}
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in names or target in numbers, f"Service {name}: targetPort {target}"


def test_ingress_routes_to_the_gateway_service_with_websocket_timeouts() -> None:
    services = _objects("Service")
    (ingress,) = _objects("Ingress").values()
    backends = [
        path["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends
    for backend in backends:
        assert backend["name"] == "gateway", backend
        port_names = {p.get("name") for p in services["gateway"]["spec"]["ports"]}
        port_numbers = {p["port"] for p in services["gateway"]["spec"]["ports"]}
        port = backend["port"]
        assert port.get("name") in port_names or port.get("number") in port_numbers, port
    annotations = ingress["metadata"]["annotations"]
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        value = annotations.get(f"nginx.ingress.kubernetes.io/{timeout}")
        assert value, f"no {timeout} annotation: ingress-nginx would cut sockets at 60 s"
        assert int(value) >= 300, (
            f"{timeout} must outlast idle WebSockets (ingress-nginx defaults to 60 s)"
        )


def test_config_maps_secrets_and_service_accounts_resolve() -> None:
    config_maps = set(_objects("ConfigMap"))
    secrets = set(_objects("Secret"))
    accounts = set(_objects("ServiceAccount"))
    workloads = list(_objects("Deployment").values()) + list(_objects("Job").values())
    for doc in workloads:
        (template,) = _pod_templates(doc)
        account = template["spec"].get("serviceAccountName")
        assert account is None or account in accounts, f"{doc['metadata']['name']}: {account}"
        for container in _containers(doc):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    ref = source["configMapRef"]
                    assert ref["name"] in config_maps or ref.get("optional"), ref
                if "secretRef" in source:
                    ref = source["secretRef"]
                    assert ref["name"] in secrets or ref.get("optional"), (
                        f"required Secret {ref['name']} is not in the base"
                    )


def test_config_names_the_external_dependencies() -> None:
    config = _config()
    for key in (
        "KAFKA_BOOTSTRAP_SERVERS",
        "REDIS_URL",
        "MONGO_SHARDS",
        "MONGO_DATABASE",
        "KAFKA_PARTITIONS",
        "KAFKA_REPLICATION_FACTOR",
        "LOG_LEVEL",
    ):
        assert config.get(key), f"config.env sets no {key}"
    assert int(config["KAFKA_REPLICATION_FACTOR"]) >= 3
    # A real MongoDB: its own indexes (the bootstrap's IndexSpecs), no PostgreSQL lookups.
    assert "MONGO_SHARDS_SQL" not in config
    external = {
        name
        for name, svc in _objects("Service").items()
        if svc["spec"].get("type") == "ExternalName"
    }
    hosts = {addr.split(":")[0] for addr in config["KAFKA_BOOTSTRAP_SERVERS"].split(",")}
    hosts.add(config["REDIS_URL"].split("//", 1)[1].split("/")[0].split("@")[-1].split(":")[0])
    for uri in config["MONGO_SHARDS"].split(","):
        hosts.add(uri.split("//", 1)[1].split("/")[0].split("@")[-1].split(":")[0])
    assert hosts <= external, (
        f"config.env names hosts with no ExternalName Service: {hosts - external}"
    )


def test_deployed_modules_are_packaged_by_pyproject() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    for module in [*DEPLOYMENTS.values(), "libs"]:
        assert module in packages, f"{module} is deployed but pyproject.toml does not package it"
