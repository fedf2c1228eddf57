"""deploy/k8s: `kubectl kustomize` renders the GPU default and the CPU overlay, the output passes
kubernetes-validate (strict; the oldest Kubernetes the manifests target and the newest schema it ships), and the
objects fit together: shards = replicas, probes on the metrics port, selectors, config and secrets."""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from agent.config import load_config
from tests.deploy.tools import DEPLOY, run, tool

K8S = DEPLOY / "k8s"
OVERLAYS = {"gpu": K8S, "cpu": K8S / "cpu"}
# 1.28: the pod-index label the StatefulSet reads its shard index from; the newest: what kubernetes-validate ships.
VERSIONS = ["1.28.0", kubernetes_validate.latest_version()]
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}  # no schema in kubernetes-validate: checked by hand below


def kustomize(path: Path) -> list[dict]:
    result = run([tool("kubectl"), "kustomize", str(path)])
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@cache
def rendered(variant: str) -> tuple[dict, ...]:
    return tuple(kustomize(OVERLAYS[variant]))


def one(docs, kind: str) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def agent_container(docs) -> dict:
    (container,) = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    return container


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", OVERLAYS)
def test_renders_and_passes_kubernetes_validate(variant, version):
    docs = rendered(variant)
    kinds = {d["kind"] for d in docs}
    assert {"StatefulSet", "Service", "ServiceMonitor", "PodDisruptionBudget", "ConfigMap", "Secret"} <= kinds
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError naming the field


def test_kubernetes_validate_does_catch_mistakes():
    statefulset = dict(one(rendered("gpu"), "StatefulSet"))
    statefulset["spec"] = dict(statefulset["spec"], replica=3)  # a typo'd field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, VERSIONS[-1], strict=True)


@pytest.mark.parametrize("variant", OVERLAYS)
def test_shard_count_follows_replicas(variant):
    statefulset = one(rendered(variant), "StatefulSet")
    env = env_of(agent_container(rendered(variant)))
    assert statefulset["spec"]["replicas"] >= 2
    assert env["ACTIONSTREAM_SHARDS"] == str(statefulset["spec"]["replicas"])
    assert env["ACTIONSTREAM_SHARD_INDEX"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    # Without that label (Kubernetes < 1.28) the agent falls back to the ordinal in the pod's host name: the pod
    # name is the StatefulSet's name plus "-N", which agent.shard.ordinal_from_hostname reads.
    from agent.shard import ordinal_from_hostname

    assert ordinal_from_hostname(f"{statefulset['metadata']['name']}-1") == 1


def test_rescaling_in_your_own_overlay_keeps_shards_equal_to_replicas(tmp_path):
    """The README's recipe: an overlay that sets `replicas` repeats the `replacements` block."""
    top = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(K8S, tmp_path)],
        "replicas": [{"name": "actionstream", "count": 5}],
        "replacements": top["replacements"],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    result = run([tool("kubectl"), "kustomize", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert one(docs, "StatefulSet")["spec"]["replicas"] == 5
    assert env_of(agent_container(docs))["ACTIONSTREAM_SHARDS"] == "5"


def test_gpu_default_and_cpu_overlay_differ_only_where_they_should():
    gpu, cpu = agent_container(rendered("gpu")), agent_container(rendered("cpu"))
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})
    assert "nvidia.com/gpu" not in cpu["resources"].get("requests", {})
    gpu_pod = one(rendered("gpu"), "StatefulSet")["spec"]["template"]["spec"]
    cpu_pod = one(rendered("cpu"), "StatefulSet")["spec"]["template"]["spec"]
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu_pod.get("tolerations", []))
    assert not cpu_pod.get("tolerations")
    assert gpu["image"].endswith("-gpu") and cpu["image"].endswith("-cpu")
    assert gpu["args"] == cpu["args"] == ["run", "-c", "/etc/actionstream/config.yaml"]


@pytest.mark.parametrize("variant", OVERLAYS)
def test_probes_and_monitoring_use_the_agents_http_server(variant, tmp_path, monkeypatch):
    docs = rendered(variant)
    container = agent_container(docs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    # The port the agent's config serves metrics on.
    configmap = one(docs, "ConfigMap")
    (tmp_path / "config.yaml").write_text(configmap["data"]["config.yaml"])
    for key in _secret_keys(docs):
        monkeypatch.setenv(key, "x" * 16)  # (the API token needs 8 characters or more)
    config = load_config(tmp_path / "config.yaml")
    assert ports["metrics"] == config.metrics.port and config.metrics.host == "0.0.0.0"
    assert env_of(container)["ACTIONSTREAM_METRICS_PORT"] == str(config.metrics.port)  # the image's HEALTHCHECK
    probes = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
    for probe, path in probes.items():
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}, probe
    # Service → pods, ServiceMonitor → Service, PDB → pods.
    pod_labels = one(docs, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    service = one(docs, "Service")
    assert service["spec"]["clusterIP"] == "None"
    assert one(docs, "StatefulSet")["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {"metrics": "metrics"}
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("metrics", "/metrics")]
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items() and pdb["spec"]["maxUnavailable"] == 1
    annotations = one(docs, "StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(config.metrics.port)


def _secret_keys(docs) -> set[str]:
    return set(one(docs, "Secret")["data"])


@pytest.mark.parametrize("variant", OVERLAYS)
def test_config_map_and_secret(variant):
    docs = rendered(variant)
    container = agent_container(docs)
    pod = one(docs, "StatefulSet")["spec"]["template"]["spec"]
    configmap, secret = one(docs, "ConfigMap"), one(docs, "Secret")
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/etc/actionstream"]]["configMap"]["name"] == configmap["metadata"]["name"]
    assert [e["secretRef"]["name"] for e in container["envFrom"]] == [secret["metadata"]["name"]]
    # Every ${VAR} of the config without a default comes from the Secret (credentials never sit in the ConfigMap).
    needed = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", configmap["data"]["config.yaml"]))
    assert needed and needed <= _secret_keys(docs)
    text = configmap["data"]["config.yaml"]
    assert all(re.fullmatch(r"\$\{\w+\}", pw) for pw in re.findall(r"://[^/@\s:]+:([^@\s]+)@", text)), text
    assert re.search(r"^\s*password: \$\{MQTT_PASSWORD\}", text, re.M)
    # The models the config names are on the models volume.
    assert mounts["/models"] == "models" and "/models/" in configmap["data"]["config.yaml"]
    # The API and status page need the token, which comes from the Secret; the evidence is on a volume per pod.
    assert re.search(r"^\s*token: \$\{ACTIONSTREAM_HTTP_TOKEN\}", text, re.M)
    assert "ACTIONSTREAM_HTTP_TOKEN" in secret["data"]
    claims = {c["metadata"]["name"] for c in one(docs, "StatefulSet")["spec"]["volumeClaimTemplates"]}
    store = yaml.safe_load(text)["storage"]["path"]
    assert mounts[store] in claims and yaml.safe_load(text)["evidence"]["enabled"] is True


@pytest.mark.parametrize("variant", OVERLAYS)
def test_pod_hardening(variant):
    pod = one(rendered(variant), "StatefulSet")["spec"]["template"]["spec"]
    container = agent_container(rendered(variant))
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False
    namespaces = {d["metadata"].get("namespace") for d in rendered(variant) if d["kind"] != "Namespace"}
    assert namespaces == {"actionstream"}
