#!/usr/bin/env python3
"""A real Prometheus scraping `make run`'s services (`make test-prometheus`, part of `make test`).

Starts the system the way `make run` does (deploy/local/run.sh, with
FASTCHAT_LOCAL_PROFILE=debug: target/debug's binaries as `make test` built them, so nothing
is built twice): nats-server, send-service (metrics on 127.0.0.1:9091) and two
all-messages-service replicas (:9092, :9093). Then Debian's prometheus on a free port with a
temporary storage directory, scraping them with deploy/local/prometheus.yml (the committed
file, its intervals set to 1 s). With a `fastchat tail --new` on each replica, it sends with
the `fastchat` CLI (two batches, so the counters grow between scrapes), provokes auth
failures of three reasons and rate-limited sends, and asks Prometheus' HTTP API for:
  - every target up, with the job names of the committed config;
  - sum(rate(fastchat_send_requests_total{outcome="stored"}[15s])) > 0 and a send p99;
  - deliveries and open subscriptions on both replicas, and the tails got every message;
  - auth failures by reason, rate-limited sends, build info for all three;
  - no series label that collides with Prometheus (Operator)'s target labels;
  - every query of the Grafana dashboard (deploy/grafana/fastchat.json) answered without an
    error, with series wherever the metrics it uses were exported.
It stops every process it started (run.sh and its children in their own process group,
prometheus, the tails) by PID, and nothing else. The ports are make run's fixed ones: it
fails, starting nothing, when they are taken (e.g. by a `make run`).

Usage: deploy/local/prometheus_test.py   (needs target/debug/{send-service,
all-messages-service,fastchat}, prometheus and promtool on PATH, NATS_SERVER_BIN or nats-server;
`make test-prometheus` sees to all of them). Standard library only.
"""

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
sys.dont_write_bytecode = True  # no __pycache__ in deploy/
import check_dashboard  # noqa: E402

DEBUG = ROOT / "target" / "debug"
FASTCHAT = DEBUG / "fastchat"
SCRAPE_CONFIG = ROOT / "deploy" / "local" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "fastchat.json"
# instance -> job, as deploy/local/prometheus.yml names them.
TARGETS = {
    "127.0.0.1:9091": "send-service",
    "127.0.0.1:9092": "all-messages-service",
    "127.0.0.1:9093": "all-messages-service",
}
REPLICAS = {"127.0.0.1:9092": "127.0.0.1:50052", "127.0.0.1:9093": "127.0.0.1:50053"}
# Labels Prometheus or Prometheus Operator set on a target: a series carrying one of its
# own would be renamed to exported_<label> (honor_labels false) or clash in dashboards.
TARGET_LABELS = {"job", "instance", "pod", "namespace", "service", "container", "endpoint"}
RATE_WINDOW = "15s"
# fastchat_auth::reason, every one exported at 0 when a service starts (catalog.rs).
AUTH_REASONS = ("TOKEN_MISSING", "TOKEN_INVALID", "TOKEN_EXPIRED", "ROOM_FORBIDDEN", "AUTHOR_MISMATCH")
# Anonymous sends (one identity: the address 127.0.0.1) stay within limits.send_burst
# (default 20); the flood, as one token subject, goes over it.
FIRST_BATCH, SECOND_BATCH, FLOOD = 3, 6, 40

started = []  # Popen objects, in order
log_dir = None


def say(*parts):
    print("prometheus-test:", *parts, flush=True)


class Failed(Exception):
    """The test fails."""


class NotYet(Exception):
    """What a wait_for check says while it waits: not there yet, and why."""


def start(args, out, **kw):
    """Starts ARGS in a session (and process group) of its own, output to the file OUT."""
    with open(out, "wb") as f:
        p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, **kw)
    started.append(p)
    return p


def stop_all():
    """SIGTERM to every process started here (run.sh stops its own children on it), then
    SIGKILL to the process groups of any still there: each is a group this test made."""
    for p in reversed(started):
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 15
    for p in reversed(started):
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"pid {p.pid} ({p.args[0]}) ignored SIGTERM: SIGKILL to its process group")
        # run.sh's children (nats-server, the services, tail -F) share its group.
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            say(f"pid {p.pid} did not end after SIGKILL")
    started.clear()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, timeout, interval=0.5):
    """Calls CHECK until it returns something true (returned) or TIMEOUT passes (Failed,
    with CHECK's last answer or NotYet). A Failed from CHECK ends the wait at once."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            got = check()
            if got:
                return got
            last = got
        except (OSError, ValueError, KeyError, NotYet) as e:
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() > deadline:
            raise Failed(f"{what}: not within {timeout} s (last: {last})")
        time.sleep(interval)


class Prometheus:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path, **params):
        url = f"{self.base}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            body = json.load(e)
        if body.get("status") != "success":
            raise Failed(f"GET {path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr):
        """An instant query's result: a list of {metric, value} (a vector), or one
        [time, value] pair wrapped in a list for a scalar."""
        data = self.get("/api/v1/query", query=expr)
        if data["resultType"] == "vector":
            return data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        raise Failed(f"{expr}: a {data['resultType']}, not a vector")

    def values(self, expr):
        """{instance (or '') -> float} of an instant vector."""
        return {r["metric"].get("instance", ""): float(r["value"][1]) for r in self.query(expr)}


def fastchat(*args, token=None, timeout=30):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTCHAT_")}
    if token:
        env["FASTCHAT_TOKEN"] = token
    return subprocess.run([str(FASTCHAT), "--timeout", "5s", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, stdin=subprocess.DEVNULL)


def send_batch(marker, first, count):
    for i in range(first, first + count):
        r = fastchat("send", "--author", "prom-test", f"{marker} {i}")
        if r.returncode != 0:
            raise Failed(f"fastchat send {i}: exit {r.returncode}: {r.stderr.strip()}")


def run():
    global log_dir
    t0 = time.monotonic()
    for binary in ("send-service", "all-messages-service", "fastchat"):
        if not (DEBUG / binary).is_file():
            raise Failed(f"target/debug/{binary} is missing: cargo build --locked --workspace --bins")
    for tool in ("prometheus", "promtool"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
            raise Failed(f"{tool} is missing: deploy/local/ensure-package.sh {tool} prometheus")
    tmp = Path(tempfile.mkdtemp(prefix="fastchat-prometheus-test."))
    log_dir = tmp
    say(f"logs and Prometheus storage in {tmp}")

    # 1. The system, as `make run` starts it (with the debug binaries).
    env = dict(os.environ, FASTCHAT_LOCAL_PROFILE="debug")
    nats = ROOT / "target" / "tools" / "nats" / "bin" / "nats-server"
    if "NATS_SERVER_BIN" not in env and nats.is_file():
        env["NATS_SERVER_BIN"] = str(nats)  # what the Makefile exports
    # run.sh starts nothing when one of its ports is taken. 50051-50053 lie in Linux's
    # ephemeral range, where other programs' connections may hold one for a while (seen
    # right after the test suite: over 45 s). `make test` reserves them first
    # (deploy/local/reserve-ports.sh, as root); without that, up to ten attempts 5 s
    # apart, for that reason only.
    attempts = 10
    for attempt in range(1, attempts + 1):
        run_log = tmp / f"run-{attempt}.log"
        run_sh = start(["bash", str(ROOT / "deploy" / "local" / "run.sh")], run_log, env=env, cwd=ROOT)

        def running(run_sh=run_sh, run_log=run_log):
            text = run_log.read_text(errors="replace")
            if run_sh.poll() is not None:
                raise Failed(f"run.sh exited {run_sh.returncode}:\n{text}")
            if "not every service reports SERVING" in text:
                raise Failed(f"run.sh: services not SERVING:\n{text}")
            return "FastChat is running" in text

        try:
            wait_for("make run (run.sh) up and every service SERVING", running, 90)
            break
        except Failed as e:
            if attempt == attempts or "these ports are taken" not in str(e):
                raise
            say(f"attempt {attempt}: {str(e).splitlines()[-1].strip()}; again in 5 s")
            time.sleep(5)
    say(f"run.sh (pid {run_sh.pid}) up after {time.monotonic() - t0:.1f} s")

    # 2. Prometheus with the committed scrape config, intervals 1 s.
    config = SCRAPE_CONFIG.read_text()
    for key, was in (("scrape_interval", "15s"), ("scrape_timeout", "10s"), ("evaluation_interval", "15s")):
        config, n = re.subn(rf"^(\s*{key}:) {was}$", r"\1 1s", config, flags=re.M)
        if n != 1:
            raise Failed(f"{SCRAPE_CONFIG}: expected one `{key}: {was}` line, found {n}")
    test_config = tmp / "prometheus.yml"
    test_config.write_text(config)
    checked = subprocess.run(["promtool", "check", "config", str(test_config)], capture_output=True, text=True)
    if checked.returncode != 0:
        raise Failed(f"promtool check config: {checked.stdout}{checked.stderr}")
    port = free_port()
    prom_proc = start(["prometheus", f"--config.file={test_config}", f"--storage.tsdb.path={tmp / 'data'}",
                       f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
                      tmp / "prometheus.log")
    prom = Prometheus(port)

    def ready():
        if prom_proc.poll() is not None:
            raise Failed(f"prometheus exited {prom_proc.returncode}: {(tmp / 'prometheus.log').read_text()}")
        with urllib.request.urlopen(f"{prom.base}/-/ready", timeout=2) as r:
            return r.status == 200

    wait_for("prometheus ready", ready, 30)
    say(f"prometheus (pid {prom_proc.pid}) on 127.0.0.1:{port}")

    def targets_up():
        active = prom.get("/api/v1/targets", state="active")["activeTargets"]
        seen = {t["labels"]["instance"]: (t["labels"]["job"], t["health"], t.get("lastError")) for t in active}
        if set(seen) != set(TARGETS):
            raise NotYet(f"targets {sorted(seen)}, expected {sorted(TARGETS)}")
        for instance, job in TARGETS.items():
            if seen[instance][0] != job:
                raise Failed(f"{instance}: job {seen[instance][0]}, expected {job}")
        return all(h == "up" for _, h, _ in seen.values()) and seen

    up = wait_for("every target up", targets_up, 20)
    say("targets:", ", ".join(f"{i} job={j} {h}" for i, (j, h, _) in sorted(up.items())))

    # 3. A subscriber on each replica, then the sends.
    tails = {}
    for metrics_addr, grpc_addr in REPLICAS.items():
        out = tmp / f"tail-{grpc_addr.rsplit(':', 1)[1]}.jsonl"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FASTCHAT_")}
        start([str(FASTCHAT), "--json", "--all-addr", grpc_addr, "tail", "--new"], out, env=env)
        tails[metrics_addr] = out

    def subscribed():
        active = prom.values("fastchat_subscriptions_active")
        return all(active.get(i, 0) >= 1 for i in REPLICAS) and active

    active = wait_for("a subscription open on both replicas (fastchat_subscriptions_active)", subscribed, 20)
    say("fastchat_subscriptions_active:", active)

    marker = f"prom-test-{uuid.uuid4().hex[:8]}"
    send_batch(marker, 0, FIRST_BATCH)
    # The counter's first scrape is its baseline: send more after Prometheus has it.
    wait_for("fastchat_send_requests_total scraped",
             lambda: prom.values('fastchat_send_requests_total{outcome="stored"}'), 15)
    time.sleep(1.5)
    send_batch(marker, FIRST_BATCH, SECOND_BATCH)
    stored = FIRST_BATCH + SECOND_BATCH

    def mint(sub, rooms):
        r = fastchat("token", "--secret-file", str(ROOT / "target" / "local" / "dev-secret"), "--sub", sub,
                     "--rooms", rooms, "--ttl", "10m")
        if r.returncode != 0:
            raise Failed(f"fastchat token: {r.stderr}")
        return r.stdout.strip()

    # Auth failures, one per reason: a token that is no JWT (TOKEN_INVALID), an anonymous
    # send to a room anonymous callers may not write (TOKEN_MISSING: make run lets them
    # write #general only), a read-only token's send (ROOM_FORBIDDEN).
    refusals = {
        "TOKEN_INVALID": fastchat("send", "--author", "prom-test", f"{marker} bad token", token="not-a-jwt"),
        "TOKEN_MISSING": fastchat("send", "--room", f"{marker}-private", "--author", "prom-test", f"{marker} x"),
        "ROOM_FORBIDDEN": fastchat("send", f"{marker} read-only", token=mint("prom-reader", "*=read")),
    }
    for reason, r in refusals.items():
        if r.returncode == 0:
            raise Failed(f"the send meant to fail with {reason} was accepted")
    # Rate limiting: one subject sending FLOOD at once, over the burst of 20.
    flood_token = mint("prom-flood", "*=read,write")
    flood_env = {k: v for k, v in os.environ.items() if not k.startswith("FASTCHAT_")}
    flood_env["FASTCHAT_TOKEN"] = flood_token
    flood_stored = flood_limited = flood_sent = 0
    # A round is FLOOD sends at once; one more (up to 3) should a slow machine spread a
    # round over enough time for the limiter to let all of it through.
    for round_ in range(3):
        flood = [subprocess.Popen([str(FASTCHAT), "--timeout", "10s", "send", f"{marker} flood {round_}.{i}"],
                                  env=flood_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, text=True)
                 for i in range(FLOOD)]
        flood_results = [(p.communicate(timeout=60)[1], p.returncode)[::-1] for p in flood]
        flood_sent += FLOOD
        flood_stored += sum(1 for rc, _ in flood_results if rc == 0)
        # The CLI's words for RATE_LIMITED (crates/cli/src/error.rs).
        flood_limited += sum(1 for rc, err in flood_results if rc != 0 and "limiting the rate" in err)
        others = [err.strip() for rc, err in flood_results if rc != 0 and "limiting the rate" not in err]
        if others:
            raise Failed(f"flood sends failed otherwise: {others[:3]}")
        if flood_limited:
            break
    say(f"sent {stored} anonymously; flood of {flood_sent} as prom-flood: {flood_stored} stored, "
        f"{flood_limited} RATE_LIMITED")
    if not flood_limited:
        raise Failed(f"no send of {flood_sent} at once was rate-limited")
    stored += flood_stored

    # 4. What Prometheus says.
    results = {}

    def positive(expr):
        got = prom.values(expr)
        return got if got and all(v > 0 and not math.isnan(v) for v in got.values()) else None

    send_rate = f'sum(rate(fastchat_send_requests_total{{outcome="stored"}}[{RATE_WINDOW}]))'
    results[send_rate] = wait_for(f"{send_rate} > 0", lambda: positive(send_rate), 20)
    p99 = (f"histogram_quantile(0.99, sum by (le) (rate(fastchat_send_duration_seconds_bucket"
           f"[{RATE_WINDOW}])))")
    results[p99] = wait_for(f"{p99} a number", lambda: positive(p99), 10)
    delivered = "fastchat_messages_delivered_total"

    def all_delivered():
        got = prom.values(delivered)
        return all(got.get(i, 0) >= stored for i in REPLICAS) and got

    results[delivered] = wait_for(f"{delivered} >= {stored} on both replicas", all_delivered, 20)
    deliveries_rate = f"sum by (instance) (rate({delivered}[{RATE_WINDOW}]))"
    results[deliveries_rate] = wait_for(f"{deliveries_rate} > 0 on both", lambda: (
        lambda got: got if all(got.get(i, 0) > 0 for i in REPLICAS) else None)(prom.values(deliveries_rate)), 10)
    results["fastchat_subscriptions_active"] = subscribed() or prom.values("fastchat_subscriptions_active")
    if not all(results["fastchat_subscriptions_active"].get(i, 0) >= 1 for i in REPLICAS):
        raise Failed(f"subscriptions gone: {results['fastchat_subscriptions_active']}")
    lag = prom.values("fastchat_live_feed_lag_messages")
    if set(lag) != set(REPLICAS):
        raise Failed(f"fastchat_live_feed_lag_messages on {sorted(lag)}, expected {sorted(REPLICAS)}")
    results["fastchat_live_feed_lag_messages"] = lag

    def reasons():
        got = {r["metric"]["reason"]: float(r["value"][1])
               for r in prom.query("sum by (reason) (fastchat_auth_failures_total)")}
        # Every reason is exported from the start (at 0), so these counted from 0.
        want = {reason: 1.0 if reason in refusals else 0.0 for reason in AUTH_REASONS}
        if got != want:
            said = {reason: r.stderr.strip() for reason, r in refusals.items()}
            raise NotYet(f"reasons {got}, expected {want}; the sends said: {said}")
        return got

    results["sum by (reason) (fastchat_auth_failures_total)"] = wait_for("auth failures by reason", reasons, 10)
    # ... and so rate() and increase() see the first failures of the process.
    auth_rate = f"sum by (reason) (rate(fastchat_auth_failures_total[{RATE_WINDOW}])) > 0"
    results[auth_rate] = wait_for(f"{auth_rate} for {sorted(refusals)}", lambda: (
        lambda got: got if set(got) == set(refusals) else None)(
        {r["metric"]["reason"]: float(r["value"][1]) for r in prom.query(auth_rate)}), 10)
    limited = "sum(fastchat_rate_limited_total)"
    results[limited] = wait_for(f"{limited} = {flood_limited}", lambda: (
        lambda got: got if flood_limited > 0 and got.get("") == flood_limited else None)(prom.values(limited)), 10)
    limited_rate = f"sum(rate(fastchat_rate_limited_total[{RATE_WINDOW}]))"
    results[limited_rate] = wait_for(f"{limited_rate} > 0", lambda: positive(limited_rate), 10)
    builds = prom.query("fastchat_build_info")
    if sorted(b["metric"]["instance"] for b in builds) != sorted(TARGETS):
        raise Failed(f"fastchat_build_info: {builds}")
    results["fastchat_build_info"] = {b["metric"]["instance"]: b["metric"]["version"] for b in builds}
    serving = prom.values("fastchat_serving")
    if serving != {i: 1.0 for i in TARGETS}:
        raise Failed(f"fastchat_serving: {serving}")
    ups = prom.values('up{job=~"send-service|all-messages-service"}')
    if ups != {i: 1.0 for i in TARGETS}:
        raise Failed(f"up: {ups}")
    results["up"] = ups

    # The subscribers got every message stored.
    for instance, out in tails.items():
        def printed(out=out):
            n = sum(1 for line in out.read_text(errors="replace").splitlines() if marker in line)
            if n > stored:
                raise Failed(f"the tail on {out.name} printed {n} messages, {stored} were stored")
            return n == stored
        wait_for(f"the tail on {REPLICAS[instance]} printing all {stored} messages", printed, 10)

    # No label that collides with a target label.
    labels = set(prom.get("/api/v1/labels", **{"match[]": '{__name__=~"fastchat_.+"}'}))
    exported = sorted(label for label in labels if label.startswith("exported_"))
    clashing = sorted((labels & TARGET_LABELS) - {"job", "instance"})
    if exported or clashing:
        raise Failed(f"series labels colliding with target labels: {exported + clashing}")
    results["label names"] = sorted(labels)

    # 5. Every dashboard query, as Grafana would send it.
    dashboard = json.loads(DASHBOARD.read_text())
    names = set(prom.get("/api/v1/label/__name__/values"))
    empty_ok = []
    checked_queries = 0
    for title, target in check_dashboard.queries(dashboard):
        expr = check_dashboard.promql(target["expr"], RATE_WINDOW)
        got = prom.query(expr)
        checked_queries += 1
        missing = sorted(n for n in check_dashboard.metric_names(expr) if n not in names)
        if missing:
            empty_ok.append(f"{title} ({', '.join(missing)})")
        elif not got:
            # A series first scraped a moment ago has no rate yet (rate needs two
            # samples in the window): give it a few scrapes before calling it empty.
            try:
                wait_for(f"dashboard panel {title!r}", lambda expr=expr: prom.query(expr), 10)
            except Failed:
                raise Failed(f"dashboard panel {title!r}: no series for {expr} within 10 s "
                             "although its metrics are exported") from None

    for expr, value in results.items():
        say(f"  {expr} = {value}")
    say(f"all {checked_queries} dashboard queries answered; series wherever their metrics exist; "
        f"not exported in this run (never recorded): {'; '.join(empty_ok) or 'none'}")
    say(f"passed in {time.monotonic() - t0:.1f} s")


def main():
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    ok = False
    try:
        run()
        ok = True
    except Failed as e:
        say(f"FAILED: {e}")
    except KeyboardInterrupt as e:
        say(f"interrupted ({e})")
    finally:
        stop_all()
    if not ok and log_dir:
        for log in sorted(log_dir.glob("*.log")) + [ROOT / "target/local/logs/send-service.log"]:
            if log.is_file():
                say(f"--- last lines of {log}")
                print("\n".join(log.read_text(errors="replace").splitlines()[-25:]), flush=True)
    if ok and log_dir:
        subprocess.run(["rm", "-rf", str(log_dir)])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
