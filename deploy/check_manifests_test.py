"""The authentication and TLS conventions of check_manifests.py refuse what they must (run by
deploy/check.sh): each case breaks one rendered manifest (or compose config) in one way and
expects the named problem; the unbroken inputs must pass.

The metrics ports (declared where the services listen, admitted from the monitoring namespace
only) and components/monitoring's PodMonitors as well. The web page's checks too: the Ingresses of components/ingress, compose's send URL and
allowed origins, and the Dockerfile's web stage (deploy/docker/Dockerfile, edited in memory).

Usage: python check_manifests_test.py DEV.yaml PROD_TLS.yaml PROD_JWKS.yaml COMPOSE.json \
         PROD_INGRESS.yaml PROD_MONITORING.yaml
(the outputs check.sh rendered: the dev overlay, prod with components/tls, prod with
components/jwks, `docker compose config --format json`, prod with components/ingress,
prod with components/monitoring).
EXPECT_* as for check_manifests.py.
"""

import base64
import copy
import json
import os
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_manifests as cm  # noqa: E402


def run_overlay(overlay, docs, expect):
    cm.problems.clear()
    saved = {k: os.environ.get(k) for k in ("EXPECT_TLS", "EXPECT_JWKS", "EXPECT_INGRESS",
                                            "EXPECT_MONITORING")}
    for key, value in expect.items():
        os.environ[key] = value
    try:
        cm.check_overlay(overlay, docs)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return list(cm.problems)


def run_compose(config):
    cm.problems.clear()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(config, f)
    try:
        cm.check_compose(f.name)
    finally:
        os.unlink(f.name)
    return list(cm.problems)


def kind(docs, k, name):
    return next(d for d in docs if d.get("kind") == k and cm.strip_hash(d["metadata"]["name"]) == name)


def container(docs, name="send-service"):
    return kind(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def pod(docs, name="send-service"):
    return kind(docs, "Deployment", name)["spec"]["template"]["spec"]


def env_set(c, name, value):
    c["env"] = [e for e in c.get("env", []) if e["name"] != name]
    if value is not None:
        c["env"].append({"name": name, "value": value})


def volume(docs, name, service="send-service"):
    return next(v for v in pod(docs, service)["volumes"] if v["name"] == name)


def mount(docs, name, service="send-service"):
    return next(m for m in container(docs, service)["volumeMounts"] if m["name"] == name)


# (description, input, breaker, expected problem text)
def config_of(docs):
    return kind(docs, "ConfigMap", "fastchat-config")["data"]


OVERLAY_CASES = [
    ("anonymous grant in the ConfigMap", "dev",
     lambda d: config_of(d).update(
         {"FASTCHAT_AUTH__ANONYMOUS": '[{rooms=["*"], allow=["read"]}]'}),
     "nothing may be granted to callers without a token"),
    ("anonymous grant in a Deployment", "dev",
     lambda d: env_set(container(d), "FASTCHAT_AUTH__ANONYMOUS", "[]"),
     "FASTCHAT_AUTH__ANONYMOUS: nothing may be granted"),
    ("anonymous grant in a mounted TOML file", "dev",
     lambda d: config_of(d).update(
         {"service.toml": '[[auth.anonymous]]\nrooms = ["*"]\nallow = ["read"]\n'}),
     "service.toml: nothing may be granted"),
    ("auth.mode none", "dev",
     lambda d: config_of(d).update({"FASTCHAT_AUTH__MODE": "none"}),
     "tokens must be checked"),
    ("no key at all", "dev",
     lambda d: env_set(container(d), "FASTCHAT_AUTH__JWT__HMAC_SECRET_FILE", None),
     "the services refuse to start without a key"),
    ("key path outside the mount", "dev",
     lambda d: env_set(container(d), "FASTCHAT_AUTH__JWT__HMAC_SECRET_FILE", "/tmp/key"),
     "is in no mounted volume"),
    ("key path not among the items", "dev",
     lambda d: env_set(container(d), "FASTCHAT_AUTH__JWT__HMAC_SECRET_FILE",
                       "/etc/fastchat/jwt/other"),
     "none has path 'other'"),
    ("Secret volume without items", "dev",
     lambda d: volume(d, "jwt")["secret"].pop("items"),
     "must name its files with items"),
    ("writable mount", "dev",
     lambda d: mount(d, "jwt").update({"readOnly": False}),
     "must be mounted readOnly: true"),
    ("subPath mount", "dev",
     lambda d: mount(d, "jwt").update({"mountPath": "/etc/fastchat/jwt/hmac-secret",
                                       "subPath": "hmac-secret"}),
     "is mounted with subPath"),
    ("world-readable key", "dev",
     lambda d: volume(d, "jwt")["secret"].update({"defaultMode": 0o644}),
     "is readable by others"),
    ("group-readable key without fsGroup", "dev",
     lambda d: pod(d)["securityContext"].pop("fsGroup"),
     "the pod needs securityContext.fsGroup"),
    ("key from another Secret", "dev",
     lambda d: volume(d, "jwt")["secret"].update(
         {"secretName": kind(d, "Secret", "fastchat-nats-credentials")["metadata"]["name"],
          "items": [{"key": "SEND_SERVICE_PASSWORD", "path": "hmac-secret"}]}),
     "the key must come from the Secret fastchat-jwt"),
    ("short dev key", "dev",
     lambda d: kind(d, "Secret", "fastchat-jwt")["data"].update(
         {"hmac-secret": base64.b64encode(b"too short\n").decode()}),
     "key hmac-secret has 9 bytes"),
    ("writable root filesystem", "dev",
     lambda d: container(d)["securityContext"].update({"readOnlyRootFilesystem": False}),
     "readOnlyRootFilesystem must be true"),
    ("TLS with a native gRPC readiness probe", "tls",
     lambda d: container(d).update({"readinessProbe": {"grpc": {"port": 50051}}}),
     "cannot reach a TLS port"),
    ("TLS liveness by the broker-following healthcheck", "tls",
     lambda d: container(d).update({"livenessProbe": {"exec": {"command": [
         "/usr/local/bin/send-service", "healthcheck"]}}}),
     "a broker outage would restart pods"),
    ("TLS without the key file", "tls",
     lambda d: env_set(container(d), "FASTCHAT_GRPC__TLS__KEY_FILE", None),
     "FASTCHAT_GRPC__TLS__KEY_FILE must be set"),
    ("TLS Secret nobody makes", "tls",
     lambda d: d.remove(kind(d, "Certificate", "send-service-grpc")),
     "no Certificate in the output makes it"),
    ("Certificate for another namespace", "tls",
     lambda d: kind(d, "Certificate", "send-service-grpc")["spec"].update(
         {"dnsNames": ["send-service", "send-service.fastchat-dev.svc",
                       "send-service.fastchat.svc"]}),
     "names namespace fastchat-dev"),
    ("Certificate without the Service name", "tls",
     lambda d: kind(d, "Certificate", "send-service-grpc")["spec"].update(
         {"dnsNames": ["localhost"]}),
     "dnsNames must include send-service"),
    ("h2c appProtocol on a TLS port", "tls",
     lambda d: kind(d, "Service", "send-service")["spec"]["ports"][0].update(
         {"appProtocol": "kubernetes.io/h2c"}),
     "appProtocol kubernetes.io/h2c on a TLS port"),
    ("TLS expected but missing", "dev-as-tls",
     lambda d: None,
     "TLS expected (components/tls)"),
    ("JWK set without an audience", "jwks",
     lambda d: config_of(d).pop("FASTCHAT_AUTH__JWT__AUDIENCE"),
     "FASTCHAT_AUTH__JWT__AUDIENCE must be set with a JWK set"),
    ("JWK set expected, HMAC key still set", "jwks",
     lambda d: env_set(container(d), "FASTCHAT_AUTH__JWT__HMAC_SECRET_FILE",
                       "/etc/fastchat/jwt/jwks.json"),
     "a JWK set only expected"),
]


def ingress_path(docs, ingress, path):
    ing = kind(docs, "Ingress", ingress)
    return next(p for p in ing["spec"]["rules"][0]["http"]["paths"] if p["path"] == path)


def annotate(docs, ingress, key, value):
    notes = kind(docs, "Ingress", ingress)["metadata"]["annotations"]
    if value is None:
        notes.pop(cm.NGINX + key)
    else:
        notes[cm.NGINX + key] = value


def drop_path(docs, ingress, path):
    paths = kind(docs, "Ingress", ingress)["spec"]["rules"][0]["http"]["paths"]
    paths.remove(ingress_path(docs, ingress, path))


OVERLAY_CASES += [
    ("Ingresses expected but missing", "prod-as-ingress", lambda d: None,
     "Ingresses expected (components/ingress)"),
    ("gRPC-web send path dropped", "ingress",
     lambda d: drop_path(d, "fastchat-send", "/fastchat.v1.SendMessageService/"),
     "POST /fastchat.v1.SendMessageService/SendMessage reaches all-messages-service"),
    ("seed JSON send dropped", "ingress", lambda d: drop_path(d, "fastchat-send", "/client"),
     "POST /client reaches all-messages-service"),
    ("gRPC path as Prefix (dots refused by ingress-nginx)", "ingress",
     lambda d: ingress_path(d, "fastchat-send", "/ChatMessage.SendMessageService/").update(
         {"pathType": "Prefix"}), "strict-validate-path-type"),
    ("JSON reads sent to send-service", "ingress",
     lambda d: kind(d, "Ingress", "fastchat-send")["spec"]["rules"][0]["http"]["paths"].append(
         {"path": "/v1/rooms", "pathType": "Prefix", "backend": {"service": {
             "name": "send-service", "port": {"name": "grpc"}}}}),
     "GET /v1/rooms/general/messages reaches send-service"),
    ("backend to a Service that does not exist", "ingress",
     lambda d: ingress_path(d, "fastchat-web", "/")["backend"]["service"].update(
         {"name": "web"}), "Service web is not in the output"),
    ("backend to a port the Service lacks", "ingress",
     lambda d: ingress_path(d, "fastchat-send", "/client")["backend"]["service"].update(
         {"port": {"name": "http"}}), "has no port"),
    ("native gRPC backend protocol", "ingress",
     lambda d: annotate(d, "fastchat-web", "backend-protocol", "GRPC"), "must be HTTP"),
    ("HTTP to TLS backends", "ingress",
     lambda d: env_set(container(d, "all-messages-service"), "FASTCHAT_GRPC__TLS__CERT_FILE",
                       "/etc/fastchat/tls/tls.crt"), "must be HTTPS (the backends have TLS)"),
    ("streams buffered", "ingress",
     lambda d: annotate(d, "fastchat-web", "proxy-buffering", None),
     "/v1/events streams: needs nginx.ingress.kubernetes.io/proxy-buffering"),
    ("streams cut after 60 s", "ingress",
     lambda d: annotate(d, "fastchat-web", "proxy-read-timeout", "60"),
     "proxy-read-timeout 60 < 300"),
    ("regex paths for the host", "ingress",
     lambda d: annotate(d, "fastchat-send", "use-regex", "true"), "route by plain paths"),
    ("host without TLS", "ingress",
     lambda d: kind(d, "Ingress", "fastchat-web")["spec"].pop("tls"),
     "has no tls entry"),
    ("controller not admitted", "ingress",
     lambda d: d.remove(kind(d, "NetworkPolicy", "fastchat-ingress")),
     "no policy admits namespace ingress-nginx"),
    ("page sends cross-origin behind the Ingress", "ingress",
     lambda d: config_of(d).update({"FASTCHAT_WEB__SEND_URL": "https://send.example.com"}),
     "sends to its own origin"),
    ("per-address cap left at the default", "ingress",
     lambda d: env_set(container(d, "all-messages-service"),
                       "FASTCHAT_SUBSCRIPTIONS__MAX_PER_ADDRESS", None),
     "FASTCHAT_SUBSCRIPTIONS__MAX_PER_ADDRESS: every browser comes from"),
    ("cap from a ConfigMap key that does not exist", "ingress",
     lambda d: next(e for e in container(d)["env"]
                    if e["name"] == "FASTCHAT_GRPC__MAX_CONNECTIONS_PER_ADDRESS")[
         "valueFrom"]["configMapKeyRef"].update({"key": "NO_SUCH_KEY"}),
     "with key NO_SUCH_KEY is not in the output"),
]


def drop_port(ports, name):
    ports[:] = [p for p in ports if p.get("name") != name]


def port_of(ports, name):
    return next(p for p in ports if p.get("name") == name)


# The metrics port: declared on the container and the Service, where the service listens.
OVERLAY_CASES += [
    ("metrics port not declared on the container", "dev",
     lambda d: drop_port(container(d)["ports"], "metrics"),
     "container port named metrics must be 9091/TCP"),
    ("metrics listen moved, container port not", "dev",
     lambda d: env_set(container(d, "all-messages-service"), "FASTCHAT_METRICS__LISTEN",
                       "0.0.0.0:9100"),
     "container port named metrics must be 9100/TCP"),
    ("metrics on loopback only", "dev",
     lambda d: env_set(container(d), "FASTCHAT_METRICS__LISTEN", "127.0.0.1:9091"),
     "listen on 0.0.0.0"),
    ("metrics switched off", "dev",
     lambda d: config_of(d).update({"FASTCHAT_METRICS__ENABLED": "false"}),
     "the metrics port must be served"),
    ("metrics port not on the Service", "dev",
     lambda d: drop_port(kind(d, "Service", "send-service")["spec"]["ports"], "metrics"),
     "needs a port named metrics, 9091"),
    ("Service metrics port targeting grpc", "dev",
     lambda d: port_of(kind(d, "Service", "all-messages-service")["spec"]["ports"],
                       "metrics").update({"targetPort": "grpc"}),
     "needs a port named metrics, 9092"),
]


def netpol_rules(docs, name="send-service"):
    return kind(docs, "NetworkPolicy", name)["spec"]["ingress"]


def monitoring_rule(docs, name="send-service"):
    return next(r for r in netpol_rules(docs, name) if any(
        (p.get("namespaceSelector") or {}).get("matchLabels", {}).get(
            "kubernetes.io/metadata.name") == "monitoring" for p in r.get("from", [])))


# The metrics port's NetworkPolicy: the monitoring namespace, that port, nothing else.
OVERLAY_CASES += [
    ("monitoring namespace not admitted", "dev",
     lambda d: netpol_rules(d).remove(monitoring_rule(d)),
     "no rule admits namespace monitoring to the metrics port 9091"),
    ("monitoring namespace admitted to the wrong port", "dev",
     lambda d: monitoring_rule(d, "all-messages-service")["ports"][0].update({"port": 9091}),
     "must admit exactly the metrics port 9092/TCP"),
    ("monitoring namespace admitted to gRPC too", "dev",
     lambda d: monitoring_rule(d)["ports"].append({"port": 50051, "protocol": "TCP"}),
     "must admit exactly the metrics port 9091/TCP"),
    ("monitoring namespace admitted to every port", "dev",
     lambda d: monitoring_rule(d).pop("ports"),
     "got every port"),
    ("metrics port open to the whole namespace", "dev",
     lambda d: netpol_rules(d)[0]["ports"].append({"port": "metrics", "protocol": "TCP"}),
     "may be admitted from namespace monitoring only"),
    ("another policy opens every port to everyone", "tls",
     lambda d: d.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                         "metadata": {"name": "allow-all", "namespace": "fastchat"},
                         "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                                  "ingress": [{}]}}),
     "the metrics port 9091 is open to every source"),
]


def monitor(docs, name="send-service"):
    return kind(docs, "PodMonitor", name)


def endpoint(docs, name="send-service"):
    return monitor(docs, name)["spec"]["podMetricsEndpoints"][0]


def service_monitor(docs):
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": "send-service-svc", "namespace": "fastchat"},
            "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "send-service"}},
                     "endpoints": [{"port": "metrics", "interval": "15s", "honorLabels": False}]}}


# components/monitoring: PodMonitors (no CRD schema: check_monitors is all there is).
OVERLAY_CASES += [
    ("PodMonitors expected but missing", "prod-as-monitoring", lambda d: None,
     "PodMonitors expected (components/monitoring)"),
    ("one service not scraped", "monitoring",
     lambda d: d.remove(monitor(d, "all-messages-service")),
     "all-messages-service must be scraped by exactly one monitor, got []"),
    ("scraped twice (a ServiceMonitor as well)", "monitoring",
     lambda d: d.append(service_monitor(d)),
     "send-service must be scraped by exactly one monitor"),
    ("monitor selecting NATS", "monitoring",
     lambda d: monitor(d)["spec"]["selector"]["matchLabels"].update(
         {"app.kubernetes.io/name": "nats"}), "selects the pods of statefulset/nats"),
    ("monitor selecting every pod", "monitoring",
     lambda d: monitor(d)["spec"].update({"selector": {}}), "spec.selector must name"),
    ("monitor in another namespace", "monitoring",
     lambda d: monitor(d)["metadata"].update({"namespace": "monitoring"}),
     "namespace monitoring is not send-service's"),
    ("monitor over every namespace", "monitoring",
     lambda d: monitor(d)["spec"].update({"namespaceSelector": {"any": True}}),
     "scrape the monitor's own namespace"),
    ("old apiVersion", "monitoring",
     lambda d: monitor(d).update({"apiVersion": "monitoring.coreos.com/v1alpha1"}),
     "apiVersion must be monitoring.coreos.com/v1"),
    ("port by number", "monitoring",
     lambda d: endpoint(d).update({"port": None, "portNumber": 9091}),
     "endpoint must scrape the port named metrics"),
    ("port by another name", "monitoring",
     lambda d: endpoint(d, "all-messages-service").update({"port": "grpc"}),
     "endpoint must scrape the port named metrics"),
    ("pods without the metrics port", "monitoring",
     lambda d: drop_port(container(d)["ports"], "metrics"),
     "send-service's pods declare no port named metrics"),
    ("another path", "monitoring",
     lambda d: endpoint(d).update({"path": "/healthz"}), "the services serve GET /metrics"),
    ("every 30 s", "monitoring",
     lambda d: endpoint(d).update({"interval": "30s"}), "scrape every 15s"),
    ("honorLabels true", "monitoring",
     lambda d: endpoint(d).update({"honorLabels": True}), "honorLabels must be false"),
    ("honorLabels left to the default", "monitoring",
     lambda d: endpoint(d).pop("honorLabels"), "honorLabels must be false"),
    ("relabeling writes service_name", "monitoring",
     lambda d: endpoint(d).update({"relabelings": [
         {"sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
          "targetLabel": "service_name"}]}),
     "touches the services' own label service_name"),
    ("metric relabeling drops service_name", "monitoring",
     lambda d: endpoint(d).update({"metricRelabelings": [
         {"action": "labeldrop", "regex": "service_.*"}]}),
     "touches the services' own label service_name"),
]


def dockerfile_cases():
    """(description, edit of the Dockerfile's text, expected problem text)."""
    return [
        ("node base not a build ARG",
         lambda t: t.replace("FROM ${NODE_IMAGE} AS web", "FROM node:20-bookworm-slim AS web"),
         "exactly one stage must be FROM ${NODE_IMAGE}"),
        ("node base default from a private registry",
         lambda t: t.replace("ARG NODE_IMAGE=node:20-bookworm-slim",
                             "ARG NODE_IMAGE=registry.example.com/node:20-bookworm-slim"),
         "must be the public node:20"),
        ("node base without a default",
         lambda t: t.replace("ARG NODE_IMAGE=node:20-bookworm-slim", "ARG NODE_IMAGE"),
         "ARG NODE_IMAGE=<public node image> missing"),
        ("another node major",
         lambda t: t.replace("ARG NODE_IMAGE=node:20-bookworm-slim",
                             "ARG NODE_IMAGE=node:22-bookworm-slim"), "must be the public node:20"),
        ("npm install instead of npm ci",
         lambda t: t.replace("RUN npm ci", "RUN npm install"), "must run `npm ci`"),
        ("page not copied",
         lambda t: t.replace("COPY --from=web /src/web/dist/ /usr/share/fastchat/web/\n", ""),
         "must COPY --from=web .../dist/ /usr/share/fastchat/web/"),
        ("static dir elsewhere",
         lambda t: t.replace("FASTCHAT_WEB__STATIC_DIR=/usr/share/fastchat/web",
                             "FASTCHAT_WEB__STATIC_DIR=/web"),
         "FASTCHAT_WEB__STATIC_DIR must be /usr/share/fastchat/web"),
        ("page in send-service",
         lambda t: t.replace("ENV FASTCHAT_GRPC__LISTEN=0.0.0.0:50051",
                             "COPY --from=web /src/web/dist/ /usr/share/fastchat/web/\n"
                             "ENV FASTCHAT_GRPC__LISTEN=0.0.0.0:50051"),
         "send-service must not contain the web page"),
        ("page in the shared runtime stage",
         lambda t: t.replace("COPY --from=builder /out/${SERVICE}/ /usr/local/bin/",
                             "COPY --from=builder /out/${SERVICE}/ /usr/local/bin/\n"
                             "COPY --from=web /src/web/dist/ /usr/share/fastchat/web/"),
         "send-service must not contain the web page"),
        ("runtime base named in FROM",
         lambda t: t.replace("FROM ${RUNTIME_IMAGE} AS runtime-base",
                             "FROM gcr.io/distroless/cc-debian12:nonroot AS runtime-base"),
         "a base image must be one of the build ARGs"),
        ("runtime base default not the public distroless",
         lambda t: t.replace("ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot",
                             "ARG RUNTIME_IMAGE=localhost/fastchat-base/cc-debian12:nonroot"),
         "ARG RUNTIME_IMAGE must default to the public"),
        ("rust base default not the public rust image",
         lambda t: t.replace("ARG RUST_IMAGE=rust:${RUST_VERSION}-slim-bookworm",
                             "ARG RUST_IMAGE=rust:${RUST_VERSION}"),
         "ARG RUST_IMAGE must default to the public"),
        ("builder per service",
         lambda t: t.replace("FROM ${RUST_IMAGE} AS builder\nARG RUST_VERSION",
                             "FROM ${RUST_IMAGE} AS builder\nARG RUST_VERSION\nARG SERVICE"),
         "must not declare ARG SERVICE"),
        ("metrics port not exposed",
         lambda t: t.replace("EXPOSE 50052 9092", "EXPOSE 50052"),
         "runtime-all-messages-service must EXPOSE 9092"),
    ]


def run_dockerfile(text):
    cm.problems.clear()
    with tempfile.NamedTemporaryFile("w", suffix=".Dockerfile", delete=False) as f:
        f.write(text)
    try:
        cm.check_dockerfile(f.name)
    finally:
        os.unlink(f.name)
    return list(cm.problems)


def compose_service(c, name="send-service"):
    return c["services"][name]


COMPOSE_CASES = [
    ("anonymous grant", lambda c: compose_service(c)["environment"].update(
        {"FASTCHAT_AUTH__ANONYMOUS": "[]"}), "nothing may be granted"),
    ("auth.mode none", lambda c: compose_service(c)["environment"].update(
        {"FASTCHAT_AUTH__MODE": "none"}), "tokens must be checked"),
    ("no key", lambda c: compose_service(c)["environment"].pop(
        "FASTCHAT_AUTH__JWT__HMAC_SECRET_FILE"), "without a key"),
    ("key path that is no secret", lambda c: compose_service(c)["environment"].update(
        {"FASTCHAT_AUTH__JWT__HMAC_SECRET_FILE": "/etc/key"}), "none of the service's secrets"),
    ("secret not mounted", lambda c: compose_service(c, "all-messages-service").pop("secrets"),
     "none of the service's secrets (none)"),
    ("secret file outside deploy/compose/secrets", lambda c: c["secrets"]["jwt-hmac"].update(
        {"file": "/tmp/jwt-hmac"}), "is not in deploy/compose/secrets/"),
    ("page sends to an unpublished port", lambda c: compose_service(c, "all-messages-service")[
        "environment"].update({"FASTCHAT_WEB__SEND_URL": "http://127.0.0.1:50050"}),
     "is not send-service's published port"),
    ("page without a send URL", lambda c: compose_service(c, "all-messages-service")[
        "environment"].pop("FASTCHAT_WEB__SEND_URL"), "must be send-service's published"),
    ("second replica's origin not allowed", lambda c: compose_service(c)["environment"].update(
        {"FASTCHAT_WEB__ALLOWED_ORIGINS": '["http://127.0.0.1:50052", "http://localhost:50052"]'}),
     "lacks http://127.0.0.1:50053"),
    ("every origin allowed", lambda c: compose_service(c)["environment"].update(
        {"FASTCHAT_WEB__ALLOWED_ORIGINS": '["*"]'}), "not *"),
    ("origin with a path", lambda c: compose_service(c)["environment"].update(
        {"FASTCHAT_WEB__ALLOWED_ORIGINS": '["http://127.0.0.1:50052/"]'}), "is not an origin"),
]


def main():
    if len(sys.argv) != 7:
        print(__doc__, file=sys.stderr)
        return 64
    dev_path, tls_path, jwks_path, compose_path, ingress_path_, monitoring_path = sys.argv[1:7]
    inputs = {}
    for key, path in (("dev", dev_path), ("tls", tls_path), ("jwks", jwks_path),
                      ("ingress", ingress_path_), ("monitoring", monitoring_path)):
        with open(path) as f:
            inputs[key] = [d for d in yaml.safe_load_all(f) if d]
    inputs["dev-as-tls"] = inputs["dev"]
    inputs["prod-as-ingress"] = inputs["tls"]
    inputs["prod-as-monitoring"] = inputs["jwks"]
    overlay = {"dev": "dev", "tls": "prod", "jwks": "prod", "dev-as-tls": "dev",
               "ingress": "prod", "prod-as-ingress": "prod", "monitoring": "prod",
               "prod-as-monitoring": "prod"}
    expect = {"dev": {}, "tls": {"EXPECT_TLS": "1"}, "jwks": {"EXPECT_JWKS": "1"},
              "dev-as-tls": {"EXPECT_TLS": "1"}, "ingress": {"EXPECT_INGRESS": "1"},
              "prod-as-ingress": {"EXPECT_INGRESS": "1"},
              "monitoring": {"EXPECT_MONITORING": "1"},
              "prod-as-monitoring": {"EXPECT_JWKS": "1", "EXPECT_MONITORING": "1"}}
    with open(compose_path) as f:
        compose = json.load(f)
    failed = 0
    for key in ("dev", "tls", "jwks", "ingress", "monitoring"):
        found = run_overlay(overlay[key], copy.deepcopy(inputs[key]), expect[key])
        if found:
            print(f"FAIL unbroken {key}: {found}")
            failed += 1
    if run_compose(copy.deepcopy(compose)):
        print(f"FAIL unbroken compose: {cm.problems}")
        failed += 1
    for what, key, breaker, want in OVERLAY_CASES:
        docs = copy.deepcopy(inputs[key])
        breaker(docs)
        found = run_overlay(overlay[key], docs, expect[key])
        if not any(want in p for p in found):
            print(f"FAIL {what} ({key}): expected a problem with {want!r}, got {found}")
            failed += 1
    for what, breaker, want in COMPOSE_CASES:
        config = copy.deepcopy(compose)
        breaker(config)
        found = run_compose(config)
        if not any(want in p for p in found):
            print(f"FAIL compose {what}: expected a problem with {want!r}, got {found}")
            failed += 1
    dockerfile = os.path.join(os.path.dirname(os.path.abspath(__file__)), "docker", "Dockerfile")
    with open(dockerfile) as f:
        text = f.read()
    if run_dockerfile(text):
        print(f"FAIL unbroken Dockerfile: {cm.problems}")
        failed += 1
    cases = dockerfile_cases()
    for what, edit, want in cases:
        broken = edit(text)
        if broken == text:
            print(f"FAIL Dockerfile {what}: the edit changed nothing (update the case)")
            failed += 1
            continue
        found = run_dockerfile(broken)
        if not any(want in p for p in found):
            print(f"FAIL Dockerfile {what}: expected a problem with {want!r}, got {found}")
            failed += 1
    total = len(OVERLAY_CASES) + len(COMPOSE_CASES) + len(cases)
    print(f"{total - failed} of {total} broken inputs refused, "
          f"{failed} failure(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
