"""Checks the FastChat conventions on a rendered kustomize overlay (run by deploy/check.sh).

Schema validity is kubernetes-validate's job; this checks what a schema cannot: labels,
named ports and probes that agree, security settings, a grace period longer than the
drain, references that resolve, station replicas that fit the NATS cluster, versions and
images that agree with the one place each is written, the metrics port (named `metrics` on
the container and the Service, at FASTCHAT_METRICS__LISTEN's port), and the broker's protections: the
broker gets only password hashes, monitoring is exposed by no Service and admitted from
the monitoring namespace only, each service keeps its own inbox prefix, and the per-user
connection limits in auth.conf cover the HPA's largest rollout. Authentication: nothing is
granted to callers without a token (no auth.anonymous, no auth.mode none), the JWT key (or
JWK set) and the TLS certificate are files of Secrets mounted read-only (items, no subPath,
not world-readable) that the FASTCHAT_* variables point at, a JWK set comes with an issuer
and an audience, and with TLS on the gRPC port the probes are ones that work with it (the
kubelet's gRPC probes have no TLS) and cert-manager Certificates name the Service.

Usage: python check_manifests.py OVERLAY_NAME RENDERED.yaml [NATS_CONFIG_DIR]
       python check_manifests.py compose COMPOSE_CONFIG.json
       python check_manifests.py dockerfile deploy/docker/Dockerfile
  OVERLAY_NAME     dev or prod (sets the expected NATS / station replica counts)
  NATS_CONFIG_DIR  if given, the nats-config ConfigMap's files are written there so the
                   caller can run `nats-server -t` on them.
  compose          checks `docker compose config --format json` output instead: NATS
                   hardening, monitoring not published, only hashes for the broker; the
                   services' JWT key from a compose secret file, nothing granted anonymously;
                   the web page's send URL is send-service's published port and send-service
                   allows (CORS) the page's published origins.

  dockerfile       the web page in the images: a node build stage whose base image is the
                   build ARG NODE_IMAGE with a public node:20 default, running npm ci and
                   npm run build; its dist copied to /usr/share/fastchat/web in
                   all-messages-service's runtime stage, with FASTCHAT_WEB__STATIC_DIR there,
                   and nothing of it in send-service's stages or the shared ones.

What the overlay must have, from the environment (deploy/check.sh sets them):
  EXPECT_TLS=1             TLS on both gRPC ports (components/tls)
  EXPECT_JWKS=1            tokens checked against a JWK set, not the HMAC key (components/jwks)
  EXPECT_INGRESS=1         the web page's Ingresses (components/ingress)
  EXPECT_MONITORING=1      Prometheus Operator PodMonitors (components/monitoring)
Monitors (PodMonitor/ServiceMonitor, whenever there are any; structural, no CRD schema):
each service scraped by exactly one, in its namespace, selecting its pods only, GET
/metrics on the port named metrics, interval 15s, honorLabels false, no relabeling that
writes or drops the services' own labels (service_name, ...).
Ingresses (whenever there are any): each route of the page, gRPC-web and JSON reaches the
right Service port (ROUTES, matched as ingress-nginx does: Exact, then the longest prefix),
paths with dots are ImplementationSpecific, no regex/rewrite/snippet annotations, HTTP (or
HTTPS with TLS) to the backends, streaming without buffering and with long timeouts, TLS
from a Secret for every host, the controller's namespace admitted by a NetworkPolicy, the
page on its own origin (no web.send_url), per-address caps raised to the per-process ones.
Expected versions come from the environment (deploy/check.sh sets them):
  EXPECT_NATS_VERSION      deploy/nats-version: nats image tag <it>-alpine and version label
  EXPECT_APP_VERSION       Cargo.toml's workspace version: the services' version label, and
                           the prod image tag unless a digest is used
  EXPECT_IMAGE_NAMESPACE   the Makefile's IMAGE_NAMESPACE default: dev images are
  EXPECT_IMAGE_TAG         <namespace>/<service>:<tag>, as `make docker` builds them
"""

import base64
import math
import os
import re
import sys

import yaml

SERVICES = {"send-service": 50051, "all-messages-service": 50052}
# Each service's metrics port (metrics.listen's default): GET /metrics and GET /healthz.
METRICS_PORTS = {"send-service": 9091, "all-messages-service": 9092}
EXPECTED_REPLICAS = {"dev": 1, "prod": 3}
SECRET = "fastchat-nats-credentials"
# Secret keys: the clear password of each service's NATS user (for the service), and its
# bcrypt hash (for the broker).
PASSWORD_KEY = {"send-service": "SEND_SERVICE_PASSWORD",
                "all-messages-service": "ALL_MESSAGES_SERVICE_PASSWORD"}
HASH_KEYS = {k + "_BCRYPT" for k in PASSWORD_KEY.values()}
# auth.conf: the account each service's user is in (its limits are the user's).
ACCOUNT = {"send-service": "SEND", "all-messages-service": "STATION"}
INBOX = {"send-service": "_INBOX.send", "all-messages-service": "_INBOX.all"}
MONITOR_PORT = 8222
# Where the Prometheus scraper runs: the one namespace admitted to the metrics ports (and to
# NATS' 8222). Scraper elsewhere: change it in the NetworkPolicies and here.
MONITORING_NAMESPACE = "monitoring"
# A process of either service opens this many NATS connections (main + history reader).
CONNECTIONS_PER_PROCESS = 2
# all-messages-service's subscriptions.max default (open gRPC subscribers per process).
DEFAULT_SUBSCRIPTIONS_MAX = 10000
BCRYPT_VALUE = re.compile(r'"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}"')
# Secrets an overlay may leave to the operator (created outside kustomize; deploy/README.md).
JWT_SECRET = "fastchat-jwt"
EXTERNAL_SECRETS = {SECRET, JWT_SECRET}
# The smallest HMAC key the services accept (auth.jwt.hmac_secret_file), in bytes.
MIN_HMAC_BYTES = 32
KEY_FILE_VARS = ("FASTCHAT_AUTH__JWT__HMAC_SECRET_FILE", "FASTCHAT_AUTH__JWT__JWKS_FILE")
TLS_FILE_VARS = ("FASTCHAT_GRPC__TLS__CERT_FILE", "FASTCHAT_GRPC__TLS__KEY_FILE",
                 "FASTCHAT_GRPC__TLS__CLIENT_CA_FILE")
ANONYMOUS_IN_TOML = re.compile(r"^\s*(\[\[?\s*auth\s*\.\s*anonymous\b|anonymous\s*=)", re.M)
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
    effective = effective_env(c, config)
    tls = any(k in effective for k in TLS_FILE_VARS)
    if os.environ.get("EXPECT_TLS") == "1" and not tls:
        problem(where, "TLS expected (components/tls), but FASTCHAT_GRPC__TLS__* is not set")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        p = c.get(probe)
        if p is None:
            problem(where, f"{probe} missing")
        elif tls:
            check_tls_probe(where, name, probe, p, port)
        elif p.get("grpc", {}).get("port") != ports.get("grpc"):
            problem(where, f"{probe} must be a grpc probe on the grpc port")
    check_auth(where, pod, c, effective)
    if tls:
        check_tls(where, name, pod, c, effective, docs, dep)
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
    elif ref.get("key") != PASSWORD_KEY[name]:
        problem(where, f"FASTCHAT_NATS__PASSWORD must be the Secret key {PASSWORD_KEY[name]} "
                       f"(its own clear password), got {ref.get('key')}")
    secret_keys = {e["valueFrom"]["secretKeyRef"]["key"] for e in c.get("env", [])
                   if e.get("valueFrom", {}).get("secretKeyRef")}
    if secret_keys - {PASSWORD_KEY[name]}:
        problem(where, f"may read only its own password from Secrets, reads {sorted(secret_keys)}")
    if "FASTCHAT_NATS__INBOX_PREFIX" in env or "FASTCHAT_NATS__INBOX_PREFIX" in config:
        problem(where, "FASTCHAT_NATS__INBOX_PREFIX must stay unset: auth.conf allows each "
                       f"user only its default prefix ({INBOX[name]}.>)")
    if not any(strip_hash(e.get("configMapRef", {}).get("name", "")) == "fastchat-config"
               for e in c.get("envFrom", [])):
        problem(where, "envFrom must load the fastchat-config ConfigMap")

    svc = by_kind(docs, "Service").get(name)
    if svc is None or not selects(svc["spec"]["selector"], labels):
        problem(name, "Service missing or not selecting the pods")
    elif not any(p.get("name") == "grpc" and p.get("targetPort") == "grpc"
                 for p in svc["spec"]["ports"]):
        problem(f"service/{name}", "needs a port named grpc targeting the named port")
    elif tls and any(p.get("appProtocol") == "kubernetes.io/h2c" for p in svc["spec"]["ports"]):
        problem(f"service/{name}", "appProtocol kubernetes.io/h2c on a TLS port: drop it")
    metrics_port = check_metrics_port(name, c, svc, effective)
    if metrics_port is not None:
        check_metrics_policy(name, labels, metrics_port, docs)
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


def listen_port(value):
    """(host, port) of an address like 0.0.0.0:9091 or [::]:9091, or None."""
    m = re.fullmatch(r"(\[[0-9a-fA-F:.]*\]|[^:\[\]]+):(\d+)", str(value or "").strip())
    return (m.group(1), int(m.group(2))) if m else None


def check_metrics_port(name, container, svc, env):
    """The metrics listener serves on every address of the pod, at the port named `metrics`
    of the container and of the Service."""
    where = f"deployment/{name}"
    enabled = str(env.get("FASTCHAT_METRICS__ENABLED", "true")).strip().lower()
    if enabled not in ("true", "1"):
        problem(where, f"FASTCHAT_METRICS__ENABLED={env.get('FASTCHAT_METRICS__ENABLED')}: "
                       "the metrics port must be served (Prometheus scrapes it)")
    listen = env.get("FASTCHAT_METRICS__LISTEN", f"0.0.0.0:{METRICS_PORTS[name]}")
    parsed = listen_port(listen)
    if parsed is None:
        problem(where, f"FASTCHAT_METRICS__LISTEN {listen!r} is not a plain host:port value")
        return None
    host, port = parsed
    if host not in ("0.0.0.0", "[::]"):
        problem(where, f"FASTCHAT_METRICS__LISTEN {listen}: listen on 0.0.0.0 (or [::]), "
                       "or no scraper outside the pod reaches it")
    declared = [p for p in container.get("ports", []) if p.get("name") == "metrics"]
    if len(declared) != 1 or declared[0].get("containerPort") != port \
            or declared[0].get("protocol", "TCP") != "TCP":
        problem(where, f"container port named metrics must be {port}/TCP "
                       f"(FASTCHAT_METRICS__LISTEN {listen}), got "
                       f"{[p.get('containerPort') for p in declared]}")
    if svc is not None:
        ports = [p for p in svc["spec"].get("ports", []) if p.get("name") == "metrics"]
        if len(ports) != 1 or ports[0].get("targetPort") not in ("metrics", port) \
                or ports[0].get("port") != port:
            problem(f"service/{name}", f"needs a port named metrics, {port}, targeting the "
                                       f"container port metrics, got {ports}")
    return port


def selects_pod(selector, labels):
    """A LabelSelector (matchLabels and matchExpressions) matches these labels."""
    if not selects((selector or {}).get("matchLabels"), labels):
        return False
    for expr in (selector or {}).get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if (op == "In" and labels.get(key) not in values) or \
                (op == "NotIn" and labels.get(key) in values) or \
                (op == "Exists" and key not in labels) or \
                (op == "DoesNotExist" and key in labels):
            return False
    return True


def rule_ports(rule):
    """The ports an ingress rule admits: None for every port."""
    if not rule.get("ports"):
        return None
    return [(p.get("port"), p.get("endPort"), p.get("protocol", "TCP")) for p in rule["ports"]]


def admits_port(ports, number, name):
    if ports is None:
        return True
    return any(p is None or p in (number, name) or
               (isinstance(p, int) and end is not None and p <= number <= end)
               for p, end, _ in ports)


def check_metrics_policy(name, labels, port, docs):
    """The metrics port (no authentication) is admitted from the monitoring namespace only,
    and that rule admits nothing but the metrics port."""
    admitted = False
    for pol_name, pol in by_kind(docs, "NetworkPolicy").items():
        spec = pol["spec"]
        if not selects_pod(spec.get("podSelector"), labels) or \
                "Ingress" not in spec.get("policyTypes", ["Ingress"]):
            continue
        where = f"networkpolicy/{pol_name}"
        for rule in spec.get("ingress", []):
            ports = rule_ports(rule)
            peers = rule.get("from")
            monitoring = [peer for peer in peers or []
                          if (peer.get("namespaceSelector") or {}).get("matchLabels", {})
                          .get("kubernetes.io/metadata.name") == MONITORING_NAMESPACE
                          and not peer.get("ipBlock")]
            if monitoring:
                if ports is None or [(p, end) for p, end, _ in ports] not in \
                        ([(port, None)], [("metrics", None)]) or ports[0][2] != "TCP":
                    problem(where, f"{name}: the rule for namespace {MONITORING_NAMESPACE} must "
                                   f"admit exactly the metrics port {port}/TCP, got "
                                   f"{'every port' if ports is None else ports}")
                else:
                    admitted = True
            if not admits_port(ports, port, "metrics"):
                continue
            if not peers:
                problem(where, f"{name}: the metrics port {port} is open to every source")
                continue
            for peer in peers:
                if peer not in monitoring:
                    problem(where, f"{name}: the metrics port {port} (no authentication) may be "
                                   f"admitted from namespace {MONITORING_NAMESPACE} only, not "
                                   f"from {peer}")
    if not admitted:
        problem(f"networkpolicy/{name}", f"no rule admits namespace {MONITORING_NAMESPACE} to the "
                                         f"metrics port {port}: Prometheus could not scrape it")


def effective_env(container, config):
    """The FASTCHAT_* values a container gets: the ConfigMap (envFrom), then its own env.
    A variable from a secretKeyRef or another source counts, with the value None."""
    env = dict(config)
    for e in container.get("env", []):
        env[e["name"]] = e.get("value") if "valueFrom" not in e else None
    return env


def mounted_file(pod, container, path):
    """(volume, mount, item) of the Secret volume file at `path`, or a reason it is not one."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in container.get("volumeMounts", []):
        if m["mountPath"] == path and (m.get("subPath") or m.get("subPathExpr")):
            return (f"{path} is mounted with subPath: an updated Secret would never reach the "
                    "pod; mount the volume's directory")
        root = m["mountPath"].rstrip("/") + "/"
        if not path or not path.startswith(root):
            continue
        volume = volumes.get(m["name"], {})
        secret = volume.get("secret")
        if secret is None:
            return f"{path} is in volume {m['name']}, which is not a Secret"
        item = next((i for i in secret.get("items", []) if i["path"] == path[len(root):]), None)
        if item is None:
            return (f"{path}: Secret volume {m['name']} must name its files with items "
                    f"(none has path {path[len(root):]!r})")
        return volume, m, item
    return f"{path} is in no mounted volume"


def check_secret_file(where, pod, container, var, path):
    """`var` names a file of a Secret mounted read-only, without subPath, not world-readable."""
    found = mounted_file(pod, container, path)
    if isinstance(found, str):
        problem(where, f"{var}: {found}")
        return None
    volume, mount, item = found
    if mount.get("readOnly") is not True:
        problem(where, f"{var}: volume {mount['name']} must be mounted readOnly: true")
    if mount.get("subPath") or mount.get("subPathExpr"):
        problem(where, f"{var}: volume {mount['name']} must not use subPath (an updated Secret "
                       "would never reach the pod)")
    mode = item.get("mode", volume["secret"].get("defaultMode", 0o644))
    if mode & 0o007:
        problem(where, f"{var}: {path} is readable by others (mode {mode:o}); use 0440 and "
                       "the pod's fsGroup")
    elif not mode & 0o004 and not mode & 0o040:
        problem(where, f"{var}: {path} (mode {mode:o}) is readable by its owner (root) only")
    elif not mode & 0o004 and pod.get("securityContext", {}).get("fsGroup") is None:
        problem(where, f"{var}: {path} is group-readable only (mode {mode:o}): the pod needs "
                       "securityContext.fsGroup")
    return volume["secret"]["secretName"]


def check_auth(where, pod, container, env):
    """Tokens are checked against a mounted key; nothing is granted without a token."""
    for key, value in env.items():
        if key.startswith("FASTCHAT_AUTH__ANONYMOUS"):
            problem(where, f"{key}: nothing may be granted to callers without a token")
        if key == "FASTCHAT_AUTH__MODE" and str(value).strip().lower() != "jwt":
            problem(where, f"FASTCHAT_AUTH__MODE={value}: tokens must be checked (jwt)")
    if "FASTCHAT_CONFIG" in env:
        problem(where, "FASTCHAT_CONFIG: settings come from the ConfigMap's variables only")
    keys = [var for var in KEY_FILE_VARS if var in env]
    if not keys:
        problem(where, f"set {' or '.join(KEY_FILE_VARS)}: the services refuse to start "
                       "without a key (auth.mode jwt)")
    for var in keys:
        if env[var] is None:
            problem(where, f"{var} must be a plain value (the path of the mounted file)")
            continue
        secret = check_secret_file(where, pod, container, var, env[var])
        if secret is not None and strip_hash(secret) != JWT_SECRET:
            problem(where, f"{var}: the key must come from the Secret {JWT_SECRET}, not {secret}")
    jwks = "FASTCHAT_AUTH__JWT__JWKS_FILE" in env
    if jwks:
        for var in ("FASTCHAT_AUTH__JWT__ISSUER", "FASTCHAT_AUTH__JWT__AUDIENCE"):
            if not env.get(var):
                problem(where, f"{var} must be set with a JWK set (tokens of the identity "
                               "provider for other applications would pass otherwise)")
    if os.environ.get("EXPECT_JWKS") == "1" and (not jwks or
                                                 "FASTCHAT_AUTH__JWT__HMAC_SECRET_FILE" in env):
        problem(where, "a JWK set only expected (components/jwks): FASTCHAT_AUTH__JWT__JWKS_FILE "
                       "without FASTCHAT_AUTH__JWT__HMAC_SECRET_FILE")


def check_tls_probe(where, name, probe, spec, port):
    """The kubelet's gRPC probes speak plaintext: on a TLS port use the container's own
    healthcheck (readiness: health service "", which follows the broker) or a TCP probe."""
    if "grpc" in spec or "httpGet" in spec:
        problem(where, f"{probe}: a grpc/httpGet probe cannot reach a TLS port (the kubelet "
                       "has no TLS for them); use exec healthcheck or tcpSocket")
        return
    command = spec.get("exec", {}).get("command", [])
    healthcheck = (len(command) >= 2 and command[0] == f"/usr/local/bin/{name}"
                   and command[1] == "healthcheck")
    tcp = spec.get("tcpSocket", {}).get("port") in ("grpc", port)
    if probe == "readinessProbe" and not healthcheck:
        problem(where, f"readinessProbe on a TLS port must run /usr/local/bin/{name} healthcheck")
    if probe != "readinessProbe":
        if healthcheck and "liveness" not in command:
            problem(where, f"{probe}: `healthcheck` follows the broker; a broker outage would "
                           "restart pods (use tcpSocket on grpc, or the liveness service)")
        elif not healthcheck and not tcp:
            problem(where, f"{probe} must be a tcpSocket probe on the grpc port or the "
                           "healthcheck of service liveness")


def check_tls(where, name, pod, container, env, docs, dep):
    """Certificate and key from a mounted Secret that cert-manager (or the operator) fills."""
    for var in TLS_FILE_VARS[:2]:
        if not env.get(var):
            problem(where, f"{var} must be set with TLS (both the certificate and its key)")
    secrets = set()
    for var in TLS_FILE_VARS:
        if var in env:
            secrets.add(check_secret_file(where, pod, container, var, env[var]))
    secrets.discard(None)
    namespace = dep["metadata"].get("namespace")
    certificates = [d for d in docs if d.get("kind") == "Certificate"]
    rendered = {d["metadata"]["name"] for d in docs if d.get("kind") == "Secret"}
    for secret in sorted(secrets):
        made_by = [d for d in certificates if d["spec"].get("secretName") == secret]
        if secret in rendered:
            continue
        if not made_by:
            problem(where, f"TLS Secret {secret}: no Certificate in the output makes it")
            continue
        for cert in made_by:
            check_certificate(cert, name, namespace)


def check_certificate(cert, service, namespace):
    where = f"certificate/{cert['metadata']['name']}"
    spec = cert["spec"]
    if cert.get("apiVersion") != "cert-manager.io/v1":
        problem(where, f"apiVersion must be cert-manager.io/v1, got {cert.get('apiVersion')}")
    if cert["metadata"].get("namespace") != namespace:
        problem(where, f"namespace {cert['metadata'].get('namespace')} is not the Deployment's "
                       f"({namespace})")
    issuer = spec.get("issuerRef", {})
    if not issuer.get("name") or issuer.get("kind", "Issuer") not in ("Issuer", "ClusterIssuer"):
        problem(where, "issuerRef needs a name and kind Issuer or ClusterIssuer")
    usages = spec.get("usages")
    if usages is not None and "server auth" not in usages:
        problem(where, "usages must include server auth")
    names = spec.get("dnsNames", [])
    for want in (service, f"{service}.{namespace}.svc"):
        if want not in names:
            problem(where, f"dnsNames must include {want} (the Service)")
    for dns in names:
        parts = dns.split(".")
        if "NAMESPACE" in parts:
            problem(where, f"dnsNames {dns}: the NAMESPACE placeholder was not replaced")
        elif len(parts) >= 3 and parts[0] == service and parts[2] == "svc" \
                and parts[1] != namespace:
            problem(where, f"dnsNames {dns} names namespace {parts[1]}, not {namespace}")
    key = spec.get("privateKey", {})
    if key.get("rotationPolicy", "Always") != "Always":
        problem(where, "privateKey.rotationPolicy must be Always (a new key on each renewal)")


def check_no_anonymous(docs):
    """No configuration file in a ConfigMap grants anything to callers without a token."""
    for d in docs:
        if d.get("kind") != "ConfigMap":
            continue
        for key, text in (d.get("data") or {}).items():
            if key.startswith("FASTCHAT_AUTH__ANONYMOUS") or ANONYMOUS_IN_TOML.search(str(text)):
                problem(f"configmap/{d['metadata']['name']}", f"{key}: nothing may be granted "
                                                              "to callers without a token")


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
    configmap_data = {d["metadata"]["name"]: d.get("data") or {} for d in docs
                      if d.get("kind") == "ConfigMap"}
    certificates = {d["spec"].get("secretName") for d in docs if d.get("kind") == "Certificate"}
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
                    elif ref["key"] in HASH_KEYS:
                        value = data[ref["key"]]
                        if ref["key"] in secrets[ref["name"]].get("data", {}):
                            value = base64.b64decode(value).decode()
                        if not BCRYPT_VALUE.fullmatch(value):
                            problem(where, f"Secret {ref['name']} key {ref['key']} must be a "
                                           'bcrypt hash in double quotes ("$2b$11$...")')
                elif ref["name"] != SECRET:
                    problem(where, f"unknown Secret {ref['name']}")
            for e in c.get("envFrom", []):
                name = e.get("configMapRef", {}).get("name")
                if name and name not in configmaps:
                    problem(where, f"ConfigMap {name} is not in the output")
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("configMapKeyRef")
                if ref and ref.get("key") not in configmap_data.get(ref.get("name"), {}):
                    problem(where, f"{e['name']}: ConfigMap {ref.get('name')} with key "
                                   f"{ref.get('key')} is not in the output")
        for v in pod.get("volumes", []):
            name = v.get("configMap", {}).get("name")
            if name and name not in configmaps:
                problem(where, f"ConfigMap {name} is not in the output")
            secret = v.get("secret")
            if not secret:
                continue
            name = secret["secretName"]
            if name in secrets:
                data = {**secrets[name].get("data", {}), **secrets[name].get("stringData", {})}
                for item in secret.get("items", []):
                    if item["key"] not in data:
                        problem(where, f"Secret {name} has no key {item['key']}")
                    elif item["key"] == "hmac-secret":
                        value = data[item["key"]]
                        if item["key"] in secrets[name].get("data", {}):
                            value = base64.b64decode(value)
                        else:
                            value = value.encode()
                        if value.endswith(b"\n"):
                            value = value[:-2] if value.endswith(b"\r\n") else value[:-1]
                        if len(value) < MIN_HMAC_BYTES:
                            problem(where, f"Secret {name} key hmac-secret has {len(value)} "
                                           f"bytes; the services need at least {MIN_HMAC_BYTES}")
            elif name not in EXTERNAL_SECRETS and name not in certificates:
                problem(where, f"unknown Secret {name} (volume {v['name']})")


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
    check_nats_secrets(sts)
    check_monitoring(docs, netpol)
    check_auth_conf(files.get("auth.conf", ""), docs, config)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        for key, text in files.items():
            with open(os.path.join(out_dir, key), "w") as f:
                f.write(text)


def check_nats_secrets(sts):
    """The broker gets the password hashes, never a clear password."""
    for c in sts["spec"]["template"]["spec"]["containers"]:
        keys = {e["valueFrom"]["secretKeyRef"]["key"] for e in c.get("env", [])
                if e.get("valueFrom", {}).get("secretKeyRef")}
        if keys != HASH_KEYS:
            problem("statefulset/nats", f"must read exactly the hashes {sorted(HASH_KEYS)} from "
                                        f"the Secret (no clear password), reads {sorted(keys)}")
        for e in c.get("envFrom", []):
            if e.get("secretRef"):
                problem("statefulset/nats", "must not load a whole Secret (envFrom)")


def check_monitoring(docs, netpol):
    """8222 has no authentication: no Service exposes it, and only a namespace does."""
    for name, svc in by_kind(docs, "Service").items():
        for p in svc["spec"].get("ports", []):
            if p.get("port") == MONITOR_PORT or p.get("targetPort") in (MONITOR_PORT, "monitor"):
                problem(f"service/{name}", "must not expose NATS monitoring (8222)")
    if netpol is None:
        return
    rules = [r for r in netpol["spec"].get("ingress", [])
             if not r.get("ports") or any(p.get("port") in (MONITOR_PORT, "monitor")
                                          for p in r["ports"])]
    if not rules:
        problem("networkpolicy/nats", "8222 needs a rule for the monitoring namespace")
    for rule in rules:
        peers = rule.get("from")
        if not peers:
            problem("networkpolicy/nats", "8222 (or all ports) open to every source")
            continue
        for peer in peers:
            ns = (peer.get("namespaceSelector") or {}).get("matchLabels", {})
            if "ipBlock" in peer or not ns.get("kubernetes.io/metadata.name"):
                problem("networkpolicy/nats", "8222 may be admitted only from a namespace named "
                                              "by kubernetes.io/metadata.name")


def auth_accounts(auth_conf):
    """{account: text of its block} from auth.conf's top-level `accounts { NAME { ... } }`."""
    accounts, name, depth, body = {}, None, 0, []
    for line in auth_conf.splitlines():
        code = line.split("#", 1)[0]
        if name is None:
            m = re.match(r"^  ([A-Z][A-Z0-9_]*)\s*[:=]?\s*\{\s*$", code)
            if m:
                name, depth, body = m.group(1), 1, []
            continue
        depth += code.count("{") - code.count("}")
        if depth <= 0:
            accounts[name] = "\n".join(body)
            name = None
        else:
            body.append(code)
    return accounts


def limit_of(block, key):
    m = re.search(rf"\b{key}\s*[:=]\s*(\d+)", block)
    return int(m.group(1)) if m else None


def check_auth_conf(auth_conf, docs, config):
    """Per-service inboxes, hashes only, ephemeral consumers only, limits that fit the HPA."""
    where = "nats-config/auth.conf"
    if not auth_conf:
        problem(where, "missing")
        return
    code = "\n".join(l.split("#", 1)[0] for l in auth_conf.splitlines())
    if '"_INBOX.>"' in code or re.search(r'"(>|\$JS\.API\.>|\$JS\.>)"', code):
        problem(where, "no user may have _INBOX.>, > or all of $JS.API")
    for m in re.finditer(r"password\s*:\s*(\S+)", code):
        if not re.fullmatch(r"\$[A-Z_]+_BCRYPT", m.group(1)):
            problem(where, f"password {m.group(1)} must be a $..._BCRYPT hash variable")
    if re.search(r'"\$JS\.API\.CONSUMER\.(CREATE\.[^"]*\.|DURABLE)', code):
        problem(where, "named and durable consumer creates are not allowed (only "
                       "$JS.API.CONSUMER.CREATE.<stream>)")
    accounts = auth_accounts(code)
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    deployments = by_kind(docs, "Deployment")
    for service, account in ACCOUNT.items():
        block = accounts.get(account)
        if block is None:
            problem(where, f"account {account} (user {service}) missing")
            continue
        if f'user: "{service}"' not in block:
            problem(where, f"account {account} must hold user {service}")
        if f'"{INBOX[service]}.>"' not in block:
            problem(where, f"{service} must subscribe to its own {INBOX[service]}.>")
        other = [i for s, i in INBOX.items() if s != service][0]
        if f'"{other}.>"' in block:
            problem(where, f"{service} must not subscribe to {other}.>")
        conns = limit_of(block, "max_connections")
        subs = limit_of(block, "max_subscriptions")
        if conns is None or subs is None:
            problem(where, f"account {account}: limits need max_connections and max_subscriptions")
            continue
        hpa = hpas.get(service)
        dep = deployments.get(service)
        if hpa is None or dep is None:
            continue
        most = hpa["spec"]["maxReplicas"]
        surge = dep["spec"].get("strategy", {}).get("rollingUpdate", {}).get("maxSurge", "25%")
        surge = math.ceil(most * int(surge[:-1]) / 100) if str(surge).endswith("%") else int(surge)
        # Doubled for connections a broker still holds while their client reconnects.
        need = (most + surge) * CONNECTIONS_PER_PROCESS * 2
        if conns < need:
            problem(where, f"account {account}: max_connections {conns} < (HPA maxReplicas {most} "
                           f"+ surge {surge}) x {CONNECTIONS_PER_PROCESS} x 2 = {need}")
        if service == "all-messages-service":
            per_process = int(config.get("FASTCHAT_SUBSCRIPTIONS__MAX", DEFAULT_SUBSCRIPTIONS_MAX))
            if subs < 2 * per_process:
                problem(where, f"account {account}: max_subscriptions {subs} (per connection) < "
                               f"2 x subscriptions.max {per_process}")


def check_compose(path):
    """`docker compose config --format json`: the NATS container's protections."""
    import json

    with open(path) as f:
        config = json.load(f)
    services = config["services"]
    nats = services.get("nats")
    if nats is None:
        problem("compose", "service nats missing")
        return
    where = "compose/nats"
    for p in nats.get("ports", []):
        if int(p.get("target", 0)) == MONITOR_PORT:
            problem(where, "must not publish monitoring (8222)")
    user = str(nats.get("user", ""))
    if not user or user.split(":")[0] in ("0", "root"):
        problem(where, f"must run as a non-root user:, got {user!r}")
    if nats.get("read_only") is not True:
        problem(where, "read_only must be true")
    if "ALL" not in nats.get("cap_drop", []) or nats.get("cap_add"):
        problem(where, "must drop ALL capabilities and add none")
    if "no-new-privileges:true" not in nats.get("security_opt", []):
        problem(where, "security_opt must have no-new-privileges:true")
    limits = nats.get("deploy", {}).get("resources", {}).get("limits", {})
    if not limits.get("cpus") or not limits.get("memory"):
        problem(where, "needs cpu and memory limits")
    env = nats.get("environment", {})
    if set(env) & set(PASSWORD_KEY.values()):
        problem(where, "must not get clear passwords")
    for key in HASH_KEYS:
        if not BCRYPT_VALUE.fullmatch(str(env.get(key, "")).replace("$$", "$")):
            problem(where, f"{key} must be a bcrypt hash in double quotes")
    init = services.get("nats-data-init")
    if init is not None:
        if set(init.get("cap_add", [])) - {"CHOWN", "DAC_READ_SEARCH"}:
            problem("compose/nats-data-init", "may add only CHOWN and DAC_READ_SEARCH")
        if "ALL" not in init.get("cap_drop", []) or init.get("read_only") is not True:
            problem("compose/nats-data-init", "must drop ALL capabilities and be read-only")
        if init.get("network_mode") != "none":
            problem("compose/nats-data-init", "needs no network")
    for name, svc in services.items():
        if name.endswith("-service") and "FASTCHAT_NATS__INBOX_PREFIX" in svc.get("environment", {}):
            problem(f"compose/{name}", "FASTCHAT_NATS__INBOX_PREFIX must stay unset (auth.conf)")
    top_secrets = config.get("secrets", {})
    for name in SERVICES:
        if name in services:
            check_compose_auth(name, services[name], top_secrets)
    check_compose_web(services)
    print(f"compose: {len(services)} services, {len(problems)} problem(s)")


def check_compose_auth(name, svc, top_secrets):
    """Tokens checked against the key of a compose secret; nothing granted without a token."""
    where = f"compose/{name}"
    env = svc.get("environment") or {}
    for key, value in env.items():
        if key.startswith("FASTCHAT_AUTH__ANONYMOUS"):
            problem(where, f"{key}: nothing may be granted to callers without a token")
        if key == "FASTCHAT_AUTH__MODE" and str(value).strip().lower() != "jwt":
            problem(where, f"FASTCHAT_AUTH__MODE={value}: tokens must be checked (jwt)")
    if "FASTCHAT_CONFIG" in env:
        problem(where, "FASTCHAT_CONFIG: settings come from the environment only")
    # Where each secret of the service appears in the container: /run/secrets/<target> for a
    # relative target (default: the source's name).
    mounted = {}
    for ref in svc.get("secrets", []):
        target = ref.get("target") or ref["source"]
        mounted[target if target.startswith("/") else f"/run/secrets/{target}"] = ref["source"]
    keys = [var for var in KEY_FILE_VARS if var in env]
    if not keys:
        problem(where, f"set {' or '.join(KEY_FILE_VARS)} (the services refuse to start "
                       "without a key)")
    for var in keys:
        source = mounted.get(env[var])
        if source is None:
            problem(where, f"{var}={env[var]} is none of the service's secrets "
                           f"({', '.join(sorted(mounted)) or 'none'})")
            continue
        definition = top_secrets.get(source, {})
        if not definition.get("file"):
            problem(where, f"secret {source} must be a file (written by deploy/secrets.sh)")
        elif not definition["file"].rstrip("/").endswith("/deploy/compose/secrets/"
                                                          + os.path.basename(definition["file"])):
            problem(where, f"secret {source}: {definition['file']} is not in deploy/compose/secrets/ "
                           "(git-ignored)")
    for volume in svc.get("volumes", []):
        if volume.get("type") == "bind" and "/secrets/" in volume.get("source", "") \
                and not volume.get("read_only"):
            problem(where, f"{volume['source']} is bind-mounted writable")


def published_ports(svc):
    """Host ports a compose service publishes, a range ("50052-50053") expanded."""
    ports = []
    for p in svc.get("ports", []):
        first, _, last = str(p.get("published", "")).partition("-")
        if first.isdigit():
            ports.extend(range(int(first), int(last or first) + 1))
    return ports


def origin_of(url):
    """(scheme, host, port) of an http(s) origin or URL without a path, else None."""
    m = re.fullmatch(r"(https?)://([^/:\s]+)(?::(\d+))?/?", str(url))
    if not m:
        return None
    return m.group(1), m.group(2), int(m.group(3) or (443 if m.group(1) == "https" else 80))


def check_compose_web(services):
    """The page the all-messages replicas serve can send: web.send_url is send-service's
    published port, and send-service allows (CORS) every published page origin."""
    import json

    send, page = services.get("send-service"), services.get("all-messages-service")
    if send is None or page is None:
        return
    send_url = (page.get("environment") or {}).get("FASTCHAT_WEB__SEND_URL")
    target = origin_of(send_url) if send_url else None
    if target is None:
        problem("compose/all-messages-service", f"FASTCHAT_WEB__SEND_URL={send_url!r} must be "
                                                "send-service's published http:// URL (no path)")
    elif target[2] not in published_ports(send):
        problem("compose/all-messages-service", f"FASTCHAT_WEB__SEND_URL {send_url}: port "
                f"{target[2]} is not send-service's published port {published_ports(send)}")
    raw = (send.get("environment") or {}).get("FASTCHAT_WEB__ALLOWED_ORIGINS")
    where = "compose/send-service"
    try:
        allowed = json.loads(raw) if raw else None
    except ValueError:
        allowed = None
    if not isinstance(allowed, list) or not all(isinstance(o, str) for o in allowed):
        problem(where, f"FASTCHAT_WEB__ALLOWED_ORIGINS={raw!r} must be a list of origins, "
                       '[\"http://host:port\", ...]')
        return
    if "*" in allowed:
        problem(where, "FASTCHAT_WEB__ALLOWED_ORIGINS must name the page's origins, not *")
    for o in allowed:
        if o != "*" and (origin_of(o) is None or o.endswith("/")):
            problem(where, f"{o!r} in FASTCHAT_WEB__ALLOWED_ORIGINS is not an origin "
                           "(scheme://host[:port], no path)")
    host = target[1] if target else None
    have = {origin_of(o) for o in allowed}
    for port in published_ports(page):
        for name in dict.fromkeys([host, "localhost"]):
            if name and ("http", name, port) not in have:
                problem(where, f"FASTCHAT_WEB__ALLOWED_ORIGINS lacks http://{name}:{port}, "
                               "an origin of the page (all-messages-service's published port)")


WEB_DIR = "/usr/share/fastchat/web"
NODE_MAJOR = "20"


def dockerfile_stages(text):
    """(global ARG defaults, {stage: {"base", "copies_from", "env", "run", "copies"}})."""
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    args, stages, stage = {}, {}, None
    for line in logical:
        word, _, rest = line.strip().partition(" ")
        word = word.upper()
        if word == "FROM":
            parts = rest.split()
            parts = [p for p in parts if not p.startswith("--")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else f"#{len(stages)}"
            stage = stages[name] = {"base": parts[0], "copies": [], "env": {}, "run": [],
                                    "args": set(), "expose": set()}
        elif stage is None:
            if word == "ARG":
                key, _, value = rest.strip().partition("=")
                args[key] = value if _ else None
        elif word == "COPY":
            src = re.search(r"--from=(\S+)", rest)
            paths = [p for p in rest.split() if not p.startswith("--")]
            stage["copies"].append((src.group(1) if src else None, paths[:-1], paths[-1]))
        elif word == "ENV":
            for m in re.finditer(r'(\w+)=("[^"]*"|\S+)', rest):
                stage["env"][m.group(1)] = m.group(2).strip('"')
        elif word == "RUN":
            stage["run"].append(rest)
        elif word == "ARG":
            stage["args"].add(rest.strip().partition("=")[0])
        elif word == "EXPOSE":
            stage["expose"].update(int(p.split("/")[0]) for p in rest.split() if p[0].isdigit())
    return args, stages


def stage_chain(stages, name, service):
    """The stage and those it is built FROM, ${SERVICE} resolved."""
    chain = []
    while name in stages and name not in chain:
        chain.append(name)
        name = stages[name]["base"].replace("${SERVICE}", service)
    return chain


def public_image(ref):
    """A Docker Hub image (no registry host in front), e.g. node:20-bookworm-slim."""
    first = ref.split("/")[0]
    hub = "/" not in ref or not ("." in first or ":" in first or first == "localhost") \
        or first == "docker.io"
    return hub and "${" not in ref


def check_dockerfile(path):
    where = "Dockerfile"
    with open(path) as f:
        args, stages = dockerfile_stages(f.read())
    node = args.get("NODE_IMAGE")
    if not node:
        problem(where, "ARG NODE_IMAGE=<public node image> missing before the first FROM "
                       "(the web stage's base)")
    else:
        repo, _, tag = node.rpartition("/")[2].partition(":")
        if not public_image(node) or repo != "node" or not tag.startswith(NODE_MAJOR):
            problem(where, f"ARG NODE_IMAGE default {node!r} must be the public "
                           f"node:{NODE_MAJOR}-... image (a mirror goes in --build-arg)")
    web = [n for n, st in stages.items() if st["base"] in ("${NODE_IMAGE}", "$NODE_IMAGE")]
    if len(web) != 1:
        problem(where, f"exactly one stage must be FROM ${{NODE_IMAGE}}, found {web}")
        return
    web = web[0]
    runs = " && ".join(stages[web]["run"])
    for command in ("npm ci", "npm run build"):
        if command not in runs:
            problem(where, f"stage {web} must run `{command}` (web/package-lock.json, "
                           "web/package.json's build)")
    if "runtime" not in stages:
        problem(where, "final stage `runtime` missing")
        return
    for service in SERVICES:
        chain = stage_chain(stages, "runtime", service)
        own = f"runtime-{service}"
        if own not in chain:
            problem(where, f"runtime of {service} is not built from stage {own}: {chain}")
            continue
        copies = [(n, c) for n in chain for c in stages[n]["copies"] if c[0] == web]
        env = {}
        for n in reversed(chain):
            env.update(stages[n]["env"])
        static = env.get("FASTCHAT_WEB__STATIC_DIR")
        if service == "all-messages-service":
            if not any(n == own and c[2].rstrip("/") == WEB_DIR and
                       any(src.rstrip("/").endswith("/dist") for src in c[1])
                       for n, c in copies):
                problem(where, f"stage {own} must COPY --from={web} .../dist/ {WEB_DIR}/")
            if static != WEB_DIR:
                problem(where, f"{service}: ENV FASTCHAT_WEB__STATIC_DIR must be {WEB_DIR}, "
                               f"got {static!r}")
            for n, c in copies:
                if n != own:
                    problem(where, f"stage {n} copies from {web}: only {own} gets the page")
        else:
            for n, _ in copies:
                problem(where, f"{service} must not contain the web page (stage {n} copies "
                               f"from {web})")
            if static:
                problem(where, f"{service}: FASTCHAT_WEB__STATIC_DIR is set ({static})")
    check_dockerfile_bases(args, stages)
    print(f"dockerfile: {len(stages)} stages, web stage {web}, {len(problems)} problem(s)")


# The base images: build ARGs whose defaults are the public images (an operator with a mirror,
# and `make compose-test` with its local stand-ins, pass others); no FROM names an image itself.
BASE_ARGS = {
    "RUST_IMAGE": "rust:${RUST_VERSION}-slim-bookworm",
    "NODE_IMAGE": None,  # checked above: node:20-...
    "RUNTIME_IMAGE": "gcr.io/distroless/cc-debian12:nonroot",
}


def check_dockerfile_bases(args, stages):
    where = "Dockerfile"
    for arg, default in BASE_ARGS.items():
        if default is not None and args.get(arg) != default:
            problem(where, f"ARG {arg} must default to the public {default} before the first "
                           f"FROM, got {args.get(arg)!r}")
    for name, st in stages.items():
        base = st["base"]
        if base.replace("${SERVICE}", "send-service") in stages:
            continue
        if base.strip("${}") not in BASE_ARGS:
            problem(where, f"stage {name} is FROM {base}: a base image must be one of the build "
                           f"ARGs {', '.join('${%s}' % a for a in BASE_ARGS)}")
    builders = [n for n, st in stages.items() if st["base"] == "${RUST_IMAGE}"]
    if len(builders) != 1:
        problem(where, f"exactly one stage must be FROM ${{RUST_IMAGE}} (one cargo build for both "
                       f"binaries), found {builders}")
    else:
        st = stages[builders[0]]
        if "SERVICE" in st["args"]:
            problem(where, f"stage {builders[0]} must not declare ARG SERVICE: its layers are "
                           "shared by both images")
        runs = " && ".join(st["run"])
        for service in SERVICES:
            if f"--bin {service}" not in runs:
                problem(where, f"stage {builders[0]} must build --bin {service}")
    for service, port in SERVICES.items():
        exposed = stages.get(f"runtime-{service}", {}).get("expose", set())
        for want in (port, METRICS_PORTS[service]):
            if want not in exposed:
                problem(where, f"stage runtime-{service} must EXPOSE {want}, has {sorted(exposed)}")


# Memory per subscriber in the worst case (one that reads nothing, on its own connection:
# 26 KiB idle on its connection + ~40 KiB its queue and transport hold; make bench,
# `memory` and `unread`), and what an all-messages-service holds besides (the process,
# its live buffer, 16 history reads of up to 2 MiB). docs/limits.md.
SUBSCRIBER_WORST_KIB = 64
ALL_MESSAGES_RESERVE_MIB = 64
DEFAULT_MAX_CONNECTIONS = 4096
HEADROOM = 0.75


def mebibytes(quantity):
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for suffix, factor in units.items():
        if str(quantity).endswith(suffix):
            return float(str(quantity)[: -len(suffix)]) * factor
    return float(quantity) / (1024 * 1024)


def check_memory_limits(docs, config):
    """Count limits (subscriptions, connections) must fit the pod's memory limit."""
    dep = by_kind(docs, "Deployment").get("all-messages-service")
    if dep is None:
        return
    container = dep["spec"]["template"]["spec"]["containers"][0]
    limit = container.get("resources", {}).get("limits", {}).get("memory")
    if limit is None:
        return
    env = effective_env(container, config)
    subs = int(env.get("FASTCHAT_SUBSCRIPTIONS__MAX") or DEFAULT_SUBSCRIPTIONS_MAX)
    conns = int(env.get("FASTCHAT_GRPC__MAX_CONNECTIONS") or DEFAULT_MAX_CONNECTIONS)
    budget = HEADROOM * mebibytes(limit) - ALL_MESSAGES_RESERVE_MIB
    fits = int(budget * 1024 / SUBSCRIBER_WORST_KIB)
    for key, value in [("subscriptions.max", subs), ("grpc.max_connections", conns)]:
        if value > fits:
            problem("deployment/all-messages-service",
                    f"{key} = {value} does not fit memory limit {limit}: at most "
                    f"({HEADROOM} x {limit} - {ALL_MESSAGES_RESERVE_MIB} MiB) / "
                    f"{SUBSCRIBER_WORST_KIB} KiB = {fits} (docs/limits.md)")


# (path, method, the Service it must reach) through the page's host. POST
# /v1/rooms/{room}/messages (send-service's JSON send) shares its path with the GET below, and
# an Ingress routes by path only: it is documented as not routed (deploy/README.md).
ROUTES = [
    ("/", "GET", "all-messages-service"),
    ("/index.html", "GET", "all-messages-service"),
    ("/app.js", "GET", "all-messages-service"),
    ("/rooms/general", "GET", "all-messages-service"),
    ("/web-config.json", "GET", "all-messages-service"),
    ("/fastchat.v1.AllMessagesService/Subscribe", "POST", "all-messages-service"),
    ("/fastchat.v1.AllMessagesService/ListMessages", "POST", "all-messages-service"),
    ("/ChatMessage.AllMessagesService/all", "POST", "all-messages-service"),
    ("/v1/rooms/general/messages", "GET", "all-messages-service"),
    ("/v1/rooms/general/events", "GET", "all-messages-service"),
    ("/v1/events", "GET", "all-messages-service"),
    ("/fastchat.v1.SendMessageService/SendMessage", "POST", "send-service"),
    ("/ChatMessage.SendMessageService/send", "POST", "send-service"),
    ("/client", "POST", "send-service"),
]
STREAMING_PATHS = ("/fastchat.v1.AllMessagesService/Subscribe", "/v1/rooms/general/events",
                   "/v1/events", "/ChatMessage.AllMessagesService/all")
NGINX = "nginx.ingress.kubernetes.io/"
# ingress-nginx's strict-validate-path-type: what a Prefix or Exact path may contain.
STRICT_PATH = re.compile(r"^/[A-Za-z0-9_\-/]*$")
INGRESS_NAMESPACE = "ingress-nginx"
MIN_STREAM_TIMEOUT = 300


def path_matches(path_type, path, request):
    if path_type == "Exact":
        return request == path
    if path_type == "Prefix":
        p = path.rstrip("/")
        return p == "" or request == p or request.startswith(p + "/")
    return request.startswith(path)  # ImplementationSpecific without regex: nginx prefix


def route(ingresses, host, request):
    """(ingress, path entry) that ingress-nginx picks for `request` on `host`."""
    found = []
    for ing in ingresses.values():
        for rule in ing["spec"].get("rules", []):
            if rule.get("host") != host:
                continue
            for entry in rule.get("http", {}).get("paths", []):
                kind = entry.get("pathType")
                if path_matches(kind, entry.get("path", "/"), request):
                    found.append((kind == "Exact", len(entry.get("path", "/")), ing, entry))
    if not found:
        return None
    best = max(found, key=lambda f: (f[0], f[1]))
    return best[2], best[3]


def check_ingress(docs, config):
    ingresses = by_kind(docs, "Ingress")
    if os.environ.get("EXPECT_INGRESS") == "1" and not ingresses:
        problem("ingress", "Ingresses expected (components/ingress), none rendered")
    if not ingresses:
        return
    services = by_kind(docs, "Service")
    deployments = by_kind(docs, "Deployment")
    tls_backends = set()
    for name, dep in deployments.items():
        c = dep["spec"]["template"]["spec"]["containers"][0]
        if any(e["name"] in TLS_FILE_VARS for e in c.get("env", [])):
            tls_backends.add(name)
    hosts = set()
    for name, ing in ingresses.items():
        where = f"ingress/{name}"
        notes = ing["metadata"].get("annotations") or {}
        if not ing["spec"].get("ingressClassName"):
            problem(where, "spec.ingressClassName must name the controller's class (nginx)")
        for key in notes:
            if key.startswith(NGINX) and key[len(NGINX):] in (
                    "use-regex", "rewrite-target", "configuration-snippet", "server-snippet"):
                problem(where, f"{key}: regex, rewrites and snippets change every path of the "
                               "host (or are disabled by default); route by plain paths")
        tls_hosts = set()
        for t in ing["spec"].get("tls", []):
            # The Secret itself is the operator's (or cert-manager's ingress-shim's).
            if not t.get("secretName"):
                problem(where, "every tls entry needs a secretName")
            tls_hosts.update(t.get("hosts", []))
        backends = set()
        for rule in ing["spec"].get("rules", []):
            host = rule.get("host")
            if not host:
                problem(where, "every rule needs a host (the page's origin)")
                continue
            hosts.add(host)
            if host not in tls_hosts:
                problem(where, f"host {host} has no tls entry: the page must be served over HTTPS")
            for entry in rule.get("http", {}).get("paths", []):
                path, kind = entry.get("path", ""), entry.get("pathType")
                if kind in ("Prefix", "Exact") and not STRICT_PATH.match(path):
                    problem(where, f"path {path}: ingress-nginx refuses '.' and other characters "
                                   f"in {kind} paths (strict-validate-path-type); use "
                                   "ImplementationSpecific")
                svc = entry.get("backend", {}).get("service", {})
                target = services.get(svc.get("name"))
                if target is None:
                    problem(where, f"path {path}: Service {svc.get('name')} is not in the output")
                    continue
                port = svc.get("port", {})
                ports = [p for p in target["spec"]["ports"]
                         if p.get("name") == port.get("name") or p.get("port") == port.get("number")]
                if not ports or (not port.get("name") and not port.get("number")):
                    problem(where, f"path {path}: Service {svc['name']} has no port {port}")
                elif svc["name"] in SERVICES and ports[0]["port"] != SERVICES[svc["name"]]:
                    problem(where, f"path {path}: port {ports[0]['port']} is not "
                                   f"{svc['name']}'s {SERVICES[svc['name']]}")
                backends.add(svc["name"])
        protocol = notes.get(NGINX + "backend-protocol", "HTTP")
        want = "HTTPS" if backends & tls_backends else "HTTP"
        if protocol != want:
            problem(where, f"backend-protocol {protocol}: gRPC-web and JSON are HTTP/1.1 to the "
                           f"pods, so it must be {want}" + (" (the backends have TLS)"
                                                            if want == "HTTPS" else ""))
    for host in sorted(hosts):
        for request, method, want in ROUTES:
            got = route(ingresses, host, request)
            name = got[1]["backend"]["service"]["name"] if got else None
            if name != want:
                problem(f"ingress host {host}", f"{method} {request} reaches {name}, not {want}")
        for request in STREAMING_PATHS:
            got = route(ingresses, host, request)
            if not got:
                continue
            notes = got[0]["metadata"].get("annotations") or {}
            where = f"ingress/{got[0]['metadata']['name']}"
            if notes.get(NGINX + "proxy-buffering") != "off":
                problem(where, f"{request} streams: needs {NGINX}proxy-buffering: \"off\"")
            for key in ("proxy-read-timeout", "proxy-send-timeout"):
                value = str(notes.get(NGINX + key, "60"))
                if not value.isdigit() or int(value) < MIN_STREAM_TIMEOUT:
                    problem(where, f"{request} streams: {NGINX}{key} {value} < "
                                   f"{MIN_STREAM_TIMEOUT} s")
    check_ingress_services(docs, config, deployments)


def check_ingress_services(docs, config, deployments):
    """Behind the page's Ingress: the controller is admitted, the page is same-origin, and
    the per-address caps do not cap every browser together."""
    admitted = set()
    for pol in by_kind(docs, "NetworkPolicy").values():
        for rule in pol["spec"].get("ingress", []):
            if not any((peer.get("namespaceSelector") or {}).get("matchLabels", {})
                       .get("kubernetes.io/metadata.name") == INGRESS_NAMESPACE
                       for peer in rule.get("from", [])):
                continue
            sel = pol["spec"]["podSelector"]
            names = {sel.get("matchLabels", {}).get("app.kubernetes.io/name")}
            for expr in sel.get("matchExpressions", []):
                if expr["key"] == "app.kubernetes.io/name" and expr["operator"] == "In":
                    names.update(expr["values"])
            ports = {p.get("port") for p in rule.get("ports", [])}
            admitted.update(n for n in names if n in SERVICES and
                            (not ports or SERVICES[n] in ports or "grpc" in ports))
    for name in SERVICES:
        if name not in admitted:
            problem("networkpolicy", f"{name}: no policy admits namespace {INGRESS_NAMESPACE} "
                                      f"to port {SERVICES[name]} (the Ingress could not reach it)")
    caps = {"send-service": [("FASTCHAT_GRPC__MAX_CONNECTIONS_PER_ADDRESS",
                              "FASTCHAT_GRPC__MAX_CONNECTIONS")],
            "all-messages-service": [("FASTCHAT_GRPC__MAX_CONNECTIONS_PER_ADDRESS",
                                      "FASTCHAT_GRPC__MAX_CONNECTIONS"),
                                     ("FASTCHAT_SUBSCRIPTIONS__MAX_PER_ADDRESS",
                                      "FASTCHAT_SUBSCRIPTIONS__MAX"),
                                     ("FASTCHAT_HISTORY__MAX_CONCURRENT_PER_ADDRESS",
                                      "FASTCHAT_HISTORY__MAX_CONCURRENT")]}
    # A per-process cap fastchat-config does not set is the service's default.
    defaults = {"FASTCHAT_HISTORY__MAX_CONCURRENT": 16}
    for name, pairs in caps.items():
        dep = deployments.get(name)
        if dep is None:
            continue
        c = dep["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in c.get("env", [])}
        where = f"deployment/{name}"
        if name == "all-messages-service":
            send_url = effective_env(c, config).get("FASTCHAT_WEB__SEND_URL")
            if send_url:
                problem(where, f"FASTCHAT_WEB__SEND_URL={send_url}: behind the Ingress the page "
                               "sends to its own origin (leave it empty)")
        for per_address, per_process in pairs:
            e = env.get(per_address)
            ref = (e or {}).get("valueFrom", {}).get("configMapKeyRef", {})
            value = (e or {}).get("value", config.get(per_address))
            if ref.get("key") == per_process:
                continue
            floor = config.get(per_process, defaults.get(per_process, 0))
            if value is None or not str(value).isdigit() or int(value) < int(floor or 0):
                problem(where, f"{per_address}: every browser comes from the ingress controller's "
                               f"addresses; raise it to {per_process} (components/ingress)")


# Prometheus Operator (components/monitoring): how often, and which labels the services'
# series carry (service_name on every one; a relabeling that writes one of them would make
# Prometheus rename the series' own to exported_<name>, or overwrite it).
MONITOR_KINDS = {"PodMonitor": "podMetricsEndpoints", "ServiceMonitor": "endpoints"}
SCRAPE_INTERVAL = "15s"
METRIC_LABELS = {"service_name", "api", "outcome", "reason", "version", "revision", "le",
                 "__name__"}


def check_monitors(docs):
    """Each service is scraped by one PodMonitor (or ServiceMonitor) of monitoring.coreos.com/v1
    in its namespace: its pods, GET /metrics on the port named metrics, every 15 s,
    honorLabels false, no relabeling of the services' own labels. A structural check:
    kubernetes-validate has no schema for these kinds (deploy/check.sh leaves them out)."""
    monitors = [d for d in docs if d.get("kind") in MONITOR_KINDS]
    if os.environ.get("EXPECT_MONITORING") == "1" and not monitors:
        problem("monitoring", "PodMonitors expected (components/monitoring), none rendered")
    if not monitors:
        return
    workloads = [d for d in docs if d.get("kind") in ("Deployment", "StatefulSet")]
    services = by_kind(docs, "Service")
    scraped = {}
    for mon in monitors:
        kind_, name = mon["kind"], mon["metadata"]["name"]
        where = f"{kind_.lower()}/{name}"
        spec = mon.get("spec") or {}
        namespace = mon["metadata"].get("namespace")
        if mon.get("apiVersion") != "monitoring.coreos.com/v1":
            problem(where, f"apiVersion must be monitoring.coreos.com/v1, got {mon.get('apiVersion')}")
        selector = spec.get("selector")
        if not isinstance(selector, dict) or not (selector.get("matchLabels") or
                                                  selector.get("matchExpressions")):
            problem(where, "spec.selector must name the service's labels (an empty one selects "
                           "every pod of the namespace, NATS' too)")
            continue
        ns_sel = spec.get("namespaceSelector") or {}
        if ns_sel.get("any") or (ns_sel.get("matchNames") and
                                 ns_sel["matchNames"] != [namespace]):
            problem(where, f"namespaceSelector {ns_sel}: scrape the monitor's own namespace "
                           f"({namespace}) only")
        # The pods it scrapes: selected directly (PodMonitor) or through Services.
        if kind_ == "PodMonitor":
            targets = [w for w in workloads
                       if selects_pod(selector, w["spec"]["template"]["metadata"].get("labels", {}))]
        else:
            chosen = [s for s in services.values()
                      if selects_pod(selector, s["metadata"].get("labels", {}))]
            targets = [w for w in workloads for s in chosen
                       if selects(s["spec"].get("selector"),
                                  w["spec"]["template"]["metadata"].get("labels", {}))]
        if not targets:
            problem(where, "selects no pods of the output")
        for w in targets:
            wname = w["metadata"]["name"]
            if wname not in SERVICES:
                problem(where, f"selects the pods of {w['kind'].lower()}/{wname}, which serve no "
                               "FastChat metrics port")
            elif w["metadata"].get("namespace") != namespace:
                problem(where, f"namespace {namespace} is not {wname}'s "
                               f"({w['metadata'].get('namespace')})")
            else:
                scraped.setdefault(wname, []).append(name)
        endpoints = spec.get(MONITOR_KINDS[kind_])
        if not isinstance(endpoints, list) or not endpoints:
            problem(where, f"spec.{MONITOR_KINDS[kind_]} must list the metrics endpoint")
            continue
        for ep in endpoints:
            if ep.get("port") != "metrics" or ep.get("targetPort") or ep.get("portNumber"):
                problem(where, f"endpoint must scrape the port named metrics (port: metrics), "
                               f"got {ep.get('port') or ep.get('targetPort') or ep.get('portNumber')}")
            else:
                for w in targets:
                    c = w["spec"]["template"]["spec"]["containers"]
                    if not any(p.get("name") == "metrics" for x in c for p in x.get("ports", [])):
                        problem(where, f"{w['metadata']['name']}'s pods declare no port named metrics")
                if kind_ == "ServiceMonitor":
                    for s in chosen:
                        if not any(p.get("name") == "metrics" for p in s["spec"].get("ports", [])):
                            problem(where, f"service/{s['metadata']['name']} has no port named metrics")
            if ep.get("path", "/metrics") != "/metrics":
                problem(where, f"path {ep.get('path')}: the services serve GET /metrics")
            if ep.get("scheme", "http") != "http":
                problem(where, f"scheme {ep.get('scheme')}: the metrics port is plain HTTP")
            if ep.get("interval") != SCRAPE_INTERVAL:
                problem(where, f"interval {ep.get('interval')}: scrape every {SCRAPE_INTERVAL}")
            if ep.get("honorLabels") is not False:
                problem(where, f"honorLabels must be false (got {ep.get('honorLabels')}): the "
                               "target's labels win, a series' colliding ones become exported_*")
            timeout = seconds(ep.get("scrapeTimeout", "10s"))
            if timeout is None or timeout > seconds(SCRAPE_INTERVAL):
                problem(where, f"scrapeTimeout {ep.get('scrapeTimeout')} must not exceed the interval")
            for field in ("relabelings", "metricRelabelings"):
                for r in ep.get(field) or []:
                    target = r.get("targetLabel")
                    action = str(r.get("action", "replace")).lower()
                    regex = re.compile(str(r.get("regex", "(.*)")))
                    if target in METRIC_LABELS or \
                            (action in ("labeldrop", "labelkeep", "labelmap") and
                             any(bool(regex.fullmatch(l)) == (action != "labelkeep")
                                 for l in ("service_name",))):
                        problem(where, f"{field}: {r} touches the services' own label "
                                       f"{target or 'service_name'} ({', '.join(sorted(METRIC_LABELS - {'__name__'}))})")
    for name in SERVICES:
        who = scraped.get(name, [])
        if len(who) != 1:
            problem("monitoring", f"{name} must be scraped by exactly one monitor, got {who}")


def check_overlay(overlay, docs, out_dir=None):
    """Every check of a rendered overlay (parsed documents); the problems are in `problems`."""
    configs = [d for d in docs if d.get("kind") == "ConfigMap"
               and strip_hash(d["metadata"]["name"]) == "fastchat-config"]
    config = configs[0]["data"] if len(configs) == 1 else {}
    if not config:
        problem("fastchat-config", "exactly one fastchat-config ConfigMap expected")
    for name, port in SERVICES.items():
        check_service(name, port, docs, config)
    check_references(docs)
    check_ingress(docs, config)
    check_monitors(docs)
    check_no_anonymous(docs)
    check_memory_limits(docs, config)
    check_versions(overlay, docs)
    check_nats(overlay, docs, config, out_dir)


def main():
    if len(sys.argv) == 3 and sys.argv[1] in ("compose", "dockerfile"):
        (check_compose if sys.argv[1] == "compose" else check_dockerfile)(sys.argv[2])
        for p in problems:
            print(f"  {p}")
        return 1 if problems else 0
    if len(sys.argv) not in (3, 4) or sys.argv[1] not in EXPECTED_REPLICAS:
        print(__doc__, file=sys.stderr)
        return 64
    overlay, rendered = sys.argv[1], sys.argv[2]
    out_dir = sys.argv[3] if len(sys.argv) == 4 else None
    with open(rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    check_overlay(overlay, docs, out_dir)
    for p in problems:
        print(f"  {p}")
    print(f"{overlay}: {len(docs)} resources, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
