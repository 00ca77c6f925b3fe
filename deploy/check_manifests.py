"""Checks the FastChat conventions on a rendered kustomize overlay (run by deploy/check.sh).

Schema validity is kubernetes-validate's job; this checks what a schema cannot: labels,
named ports and probes that agree, security settings, a grace period longer than the
drain, references that resolve, station replicas that fit the NATS cluster, and versions
and images that agree with the one place each is written.

Usage: python check_manifests.py OVERLAY_NAME RENDERED.yaml [NATS_CONFIG_DIR]
  OVERLAY_NAME     dev or prod (sets the expected NATS / station replica counts)
  NATS_CONFIG_DIR  if given, the nats-config ConfigMap's files are written there so the
                   caller can run `nats-server -t` on them.

Expected versions come from the environment (deploy/check.sh sets them):
  EXPECT_NATS_VERSION      deploy/nats-version: nats image tag <it>-alpine and version label
  EXPECT_APP_VERSION       Cargo.toml's workspace version: the services' version label, and
                           the prod image tag unless a digest is used
  EXPECT_IMAGE_NAMESPACE   the Makefile's IMAGE_NAMESPACE default: dev images are
  EXPECT_IMAGE_TAG         <namespace>/<service>:<tag>, as `make docker` builds them
"""

import os
import re
import sys

import yaml

SERVICES = {"send-service": 50051, "all-messages-service": 50052}
EXPECTED_REPLICAS = {"dev": 1, "prod": 3}
SECRET = "fastchat-nats-credentials"
REQUIRED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/component",
                   "app.kubernetes.io/part-of", "app.kubernetes.io/version")

problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


def seconds(value):
    """Humantime-ish '10s' / '2m' / '1h' -> seconds (only what our config uses)."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", str(value).strip())
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2)
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def strip_hash(name):
    """Generated names carry a -<hash> suffix; compare on the base name."""
    return re.sub(r"-[a-z0-9]{10}$", "", name)


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def check_service(name, port, docs, config):
    deployments = by_kind(docs, "Deployment")
    dep = deployments.get(name)
    if dep is None:
        problem(name, "Deployment missing")
        return
    where = f"deployment/{name}"
    spec = dep["spec"]
    tmpl = spec["template"]
    pod = tmpl["spec"]
    labels = tmpl["metadata"].get("labels", {})
    for key in REQUIRED_LABELS:
        if key not in labels or key not in dep["metadata"].get("labels", {}):
            problem(where, f"label {key} missing on Deployment or pod template")
    if labels.get("app.kubernetes.io/name") != name:
        problem(where, "app.kubernetes.io/name must be the service name")
    if labels.get("app.kubernetes.io/part-of") != "fastchat":
        problem(where, "app.kubernetes.io/part-of must be fastchat")
    if not selects(spec["selector"].get("matchLabels"), labels):
        problem(where, "selector does not match the pod template labels")
    if "replicas" in spec:
        problem(where, "spec.replicas is set although an HPA owns it")

    grace = pod.get("terminationGracePeriodSeconds", 30)
    drain = seconds(config.get("FASTCHAT_SHUTDOWN__DRAIN_TIMEOUT", "10s"))
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        problem(where, "pod securityContext.runAsNonRoot must be true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problem(where, "pod seccompProfile must be RuntimeDefault")

    containers = pod["containers"]
    if len(containers) != 1:
        problem(where, "expected exactly one container")
    c = containers[0]
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    if ports.get("grpc") != port:
        problem(where, f"container port named grpc must be {port}, got {ports.get('grpc')}")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        p = c.get(probe)
        if p is None:
            problem(where, f"{probe} missing")
        elif p.get("grpc", {}).get("port") != ports.get("grpc"):
            problem(where, f"{probe} must be a grpc probe on the grpc port")
    sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    if drain is None or grace < 30 or grace <= drain + sleep:
        problem(where, f"terminationGracePeriodSeconds {grace} must be >= 30 and exceed "
                       f"preStop {sleep}s + drain {drain}s")
    res = c.get("resources", {})
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in res.get(kind, {}):
                problem(where, f"resources.{kind}.{r} missing")
    sc = c.get("securityContext", {})
    if sc.get("allowPrivilegeEscalation") is not False:
        problem(where, "allowPrivilegeEscalation must be false")
    if sc.get("readOnlyRootFilesystem") is not True:
        problem(where, "readOnlyRootFilesystem must be true")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        problem(where, "capabilities must drop ALL")

    env = {e["name"]: e for e in c.get("env", [])}
    listen = env.get("FASTCHAT_GRPC__LISTEN", {}).get("value", "")
    if not listen.endswith(f":{port}"):
        problem(where, f"FASTCHAT_GRPC__LISTEN {listen!r} does not use port {port}")
    if env.get("FASTCHAT_NATS__USER", {}).get("value") != name:
        problem(where, "FASTCHAT_NATS__USER must be the service name (the NATS user)")
    ref = env.get("FASTCHAT_NATS__PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef")
    if not ref:
        problem(where, "FASTCHAT_NATS__PASSWORD must come from a secretKeyRef")
    if not any(strip_hash(e.get("configMapRef", {}).get("name", "")) == "fastchat-config"
               for e in c.get("envFrom", [])):
        problem(where, "envFrom must load the fastchat-config ConfigMap")

    svc = by_kind(docs, "Service").get(name)
    if svc is None or not selects(svc["spec"]["selector"], labels):
        problem(name, "Service missing or not selecting the pods")
    elif not any(p.get("name") == "grpc" and p.get("targetPort") == "grpc"
                 for p in svc["spec"]["ports"]):
        problem(f"service/{name}", "needs a port named grpc targeting the named port")
    hpa = by_kind(docs, "HorizontalPodAutoscaler").get(name)
    if hpa is None or hpa["spec"]["scaleTargetRef"]["name"] != name:
        problem(name, "HorizontalPodAutoscaler missing or targeting something else")
    elif hpa["spec"]["minReplicas"] > hpa["spec"]["maxReplicas"]:
        problem(f"hpa/{name}", "minReplicas > maxReplicas")
    pdb = by_kind(docs, "PodDisruptionBudget").get(name)
    if pdb is None or not selects(pdb["spec"]["selector"].get("matchLabels"), labels):
        problem(name, "PodDisruptionBudget missing or not selecting the pods")
    netpol = by_kind(docs, "NetworkPolicy").get(name)
    if netpol is None or not selects(netpol["spec"]["podSelector"].get("matchLabels"), labels):
        problem(name, "NetworkPolicy missing or not selecting the pods")


def check_versions(overlay, docs):
    """Images and version labels agree with deploy/nats-version, Cargo.toml, the Makefile."""
    env = os.environ
    nats_version = env.get("EXPECT_NATS_VERSION")
    app_version = env.get("EXPECT_APP_VERSION")
    namespace = env.get("EXPECT_IMAGE_NAMESPACE")
    tag = env.get("EXPECT_IMAGE_TAG")
    if not (nats_version and app_version and namespace and tag):
        problem("versions", "EXPECT_NATS_VERSION, EXPECT_APP_VERSION, EXPECT_IMAGE_NAMESPACE "
                            "and EXPECT_IMAGE_TAG must be set")
        return
    for d in docs:
        if d.get("kind") not in ("Deployment", "StatefulSet"):
            continue
        name = d["metadata"]["name"]
        where = f"{d['kind'].lower()}/{name}"
        version = d["metadata"].get("labels", {}).get("app.kubernetes.io/version")
        want = nats_version if name == "nats" else app_version
        if version != want:
            problem(where, f"label app.kubernetes.io/version is {version!r}, expected {want!r}")
        for c in d["spec"]["template"]["spec"]["containers"]:
            image = c["image"]
            if name == "nats":
                if image != f"nats:{nats_version}-alpine":
                    problem(where, f"image {image} is not nats:{nats_version}-alpine "
                                   "(deploy/nats-version)")
            elif overlay == "dev":
                if image != f"{namespace}/{name}:{tag}":
                    problem(where, f"image {image} is not {namespace}/{name}:{tag}, "
                                   "what `make docker` builds")
            elif "@sha256:" not in image and not image.endswith(f"/{name}:{app_version}"):
                problem(where, f"image {image}: set a registry and the tag {app_version} "
                               "(Cargo.toml) or a digest under images:")


def check_references(docs):
    secrets = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Secret"}
    configmaps = {d["metadata"]["name"] for d in docs if d.get("kind") == "ConfigMap"}
    for d in docs:
        if d.get("kind") not in ("Deployment", "StatefulSet"):
            continue
        where = f"{d['kind'].lower()}/{d['metadata']['name']}"
        pod = d["spec"]["template"]["spec"]
        for c in pod["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if not ref:
                    continue
                if ref["name"] in secrets:
                    data = {**secrets[ref["name"]].get("data", {}),
                            **secrets[ref["name"]].get("stringData", {})}
                    if ref["key"] not in data:
                        problem(where, f"Secret {ref['name']} has no key {ref['key']}")
                elif ref["name"] != SECRET:
                    problem(where, f"unknown Secret {ref['name']}")
            for e in c.get("envFrom", []):
                name = e.get("configMapRef", {}).get("name")
                if name and name not in configmaps:
                    problem(where, f"ConfigMap {name} is not in the output")
        for v in pod.get("volumes", []):
            name = v.get("configMap", {}).get("name")
            if name and name not in configmaps:
                problem(where, f"ConfigMap {name} is not in the output")


def check_nats(overlay, docs, config, out_dir):
    sts = by_kind(docs, "StatefulSet").get("nats")
    if sts is None:
        problem("nats", "StatefulSet missing")
        return
    want = EXPECTED_REPLICAS[overlay]
    replicas = sts["spec"].get("replicas", 1)
    if replicas != want:
        problem("statefulset/nats", f"{overlay} expects {want} NATS servers, got {replicas}")
    if not sts["spec"].get("volumeClaimTemplates"):
        problem("statefulset/nats", "JetStream needs volumeClaimTemplates")
    headless = by_kind(docs, "Service").get(sts["spec"]["serviceName"])
    if headless is None or headless["spec"].get("clusterIP") != "None":
        problem("statefulset/nats", "serviceName must be a headless Service")
    station = int(config.get("FASTCHAT_STATION__REPLICAS", "0"))
    if station != want or station > replicas:
        problem("configmap/fastchat-config",
                f"FASTCHAT_STATION__REPLICAS={station}; {overlay} expects {want} "
                f"(and at most the {replicas} NATS servers)")
    nats_cm = [d for d in docs if d.get("kind") == "ConfigMap"
               and strip_hash(d["metadata"]["name"]) == "nats-config"]
    if len(nats_cm) != 1:
        problem("nats", "exactly one nats-config ConfigMap expected")
        return
    files = nats_cm[0]["data"]
    server_conf = files.get("server.conf", "")
    routes = re.findall(r"nats-route://", server_conf)
    has_cluster = re.search(r"^\s*cluster\s*\{", server_conf, re.M) is not None
    if replicas > 1 and (not has_cluster or len(routes) != replicas):
        problem("nats-config", f"{replicas} servers need a cluster block with {replicas} routes")
    if replicas == 1 and has_cluster:
        problem("nats-config", "a single server should not have a cluster block")
    netpol = by_kind(docs, "NetworkPolicy").get("nats")
    if netpol is None:
        problem("nats", "NetworkPolicy missing")
    else:
        client_rules = [r for r in netpol["spec"].get("ingress", [])
                        if any(p.get("port") in (4222, "client") for p in r.get("ports", []))]
        allowed = set()
        for rule in client_rules:
            for peer in rule.get("from", []):
                sel = peer.get("podSelector")
                if sel is None or peer.get("namespaceSelector") is not None or not sel:
                    problem("networkpolicy/nats", "4222 must be open to pod selectors only")
                    continue
                for expr in sel.get("matchExpressions", []):
                    if expr["key"] == "app.kubernetes.io/name" and expr["operator"] == "In":
                        allowed.update(expr["values"])
                name = sel.get("matchLabels", {}).get("app.kubernetes.io/name")
                if name:
                    allowed.add(name)
        if allowed != set(SERVICES):
            problem("networkpolicy/nats", f"4222 must be open to exactly {sorted(SERVICES)}, "
                                          f"got {sorted(allowed)}")
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        for key, text in files.items():
            with open(os.path.join(out_dir, key), "w") as f:
                f.write(text)


def main():
    if len(sys.argv) not in (3, 4) or sys.argv[1] not in EXPECTED_REPLICAS:
        print(__doc__, file=sys.stderr)
        return 64
    overlay, rendered = sys.argv[1], sys.argv[2]
    out_dir = sys.argv[3] if len(sys.argv) == 4 else None
    with open(rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    configs = [d for d in docs if d.get("kind") == "ConfigMap"
               and strip_hash(d["metadata"]["name"]) == "fastchat-config"]
    config = configs[0]["data"] if len(configs) == 1 else {}
    if not config:
        problem("fastchat-config", "exactly one fastchat-config ConfigMap expected")
    for name, port in SERVICES.items():
        check_service(name, port, docs, config)
    check_references(docs)
    check_versions(overlay, docs)
    check_nats(overlay, docs, config, out_dir)
    for p in problems:
        print(f"  {p}")
    print(f"{overlay}: {len(docs)} resources, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
