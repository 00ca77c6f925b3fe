#!/usr/bin/env python3
"""Checks the Grafana dashboard deploy/grafana/fastchat.json against the services' metrics.

    check_dashboard.py DASHBOARD CATALOG [--promtool PROMTOOL]

CATALOG is crates/runtime/src/catalog.rs: every metric the services export is described
there (describe_counter!, describe_gauge!, describe_histogram!). The dashboard passes when:
  - its data source is the template variable `datasource` (type datasource, query
    prometheus), and every panel and every query uses it (no data source uid written in);
  - every metric name a query uses is one the services export, a histogram only as its
    _bucket, _sum or _count series, and only those;
  - the panels cover what an operator needs (REQUIRED below: send rate and p99,
    subscribers, deliveries, consumer lag, catch-ups, auth failures, rate-limited calls,
    RPC errors by code), each query has a refId and a legend;
  - with --promtool, every query parses as PromQL: written as recording rules and checked
    with `promtool check rules` (Grafana's $__rate_interval and friends replaced by a
    duration first).
deploy/local/prometheus_test.py runs the same queries against a live Prometheus; the checks'
own test is check_dashboard_test.py. Standard library only.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Metric (the name a query uses) -> what a panel showing it is for.
REQUIRED = {
    "fastchat_send_requests_total": "send rate",
    "fastchat_send_duration_seconds_bucket": "send latency p99 (histogram_quantile)",
    "fastchat_subscriptions_active": "subscribers",
    "fastchat_messages_delivered_total": "deliveries",
    "fastchat_live_feed_lag_messages": "consumer lag",
    "fastchat_subscription_catchups_total": "catch-ups",
    "fastchat_auth_failures_total": "auth failures by reason",
    "fastchat_rate_limited_total": "rate-limited calls",
    "fastchat_grpc_requests_total": "RPC error rate by code",
}

# Grafana's interval variables, replaced by a duration before PromQL sees the query.
GRAFANA_DURATIONS = ("$__rate_interval", "$__interval", "$__range")

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def catalog(text):
    """Metric name -> kind (counter, gauge, histogram) from catalog.rs's describe_* calls."""
    found = {
        name: kind
        for kind, name in re.findall(r'describe_(counter|gauge|histogram)!\(\s*"([a-z0-9_]+)"', text)
    }
    if not found:
        raise ValueError("no describe_counter!/describe_gauge!/describe_histogram! calls found")
    return found


def panels(dashboard):
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard):
    """(panel title, target) for every query of every panel."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel.get("title", "?"), target


def promql(expr, duration="5m"):
    """The query as Prometheus takes it: Grafana's interval variables replaced by DURATION."""
    for variable in GRAFANA_DURATIONS:
        expr = expr.replace(variable, duration)
    return expr


def metric_names(expr):
    """The fastchat_* names EXPR uses (a label value or string is not one)."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return set(re.findall(r"\bfastchat_[a-zA-Z0-9_]+\b", without_strings))


def metric_problem(name, kinds):
    """Why NAME is not a series the services export, or None."""
    if name in kinds:
        if kinds[name] == "histogram":
            return f"{name} is a histogram: query its _bucket, _sum or _count series"
        return None
    for suffix in HISTOGRAM_SUFFIXES:
        base = name[: -len(suffix)]
        if name.endswith(suffix) and kinds.get(base) == "histogram":
            return None
    return f"{name} is not a metric the services export (crates/runtime/src/catalog.rs)"


def problems(dashboard, kinds, promtool=None):
    """Everything wrong with DASHBOARD, one line each."""
    found = []
    variables = dashboard.get("templating", {}).get("list", [])
    if not any(
        v.get("name") == "datasource" and v.get("type") == "datasource" and v.get("query") == "prometheus"
        for v in variables
    ):
        found.append("no template variable `datasource` (type datasource, query prometheus)")
    if not dashboard.get("title") or not dashboard.get("uid"):
        found.append("the dashboard needs a title and a uid")
    used = set()
    exprs = []
    for panel in panels(dashboard):
        title = panel.get("title", "?")
        if panel.get("type") == "row":
            continue
        if panel.get("datasource") != DATASOURCE:
            found.append(f"panel {title!r}: datasource must be {DATASOURCE}, not {panel.get('datasource')}")
        if not panel.get("targets"):
            found.append(f"panel {title!r}: no queries")
        ref_ids = [t.get("refId") for t in panel.get("targets", [])]
        if len(set(ref_ids)) != len(ref_ids) or not all(ref_ids):
            found.append(f"panel {title!r}: every query needs its own refId, got {ref_ids}")
    for title, target in queries(dashboard):
        expr = target.get("expr", "")
        where = f"panel {title!r} query {target.get('refId', '?')}"
        if target.get("datasource") != DATASOURCE:
            found.append(f"{where}: datasource must be {DATASOURCE}, not {target.get('datasource')}")
        if not expr.strip():
            found.append(f"{where}: no expr")
            continue
        if not target.get("legendFormat"):
            found.append(f"{where}: no legendFormat")
        names = metric_names(expr)
        if not names:
            found.append(f"{where}: uses no fastchat_* metric: {expr}")
        for name in sorted(names):
            problem = metric_problem(name, kinds)
            if problem:
                found.append(f"{where}: {problem}")
        if re.search(r"\$(?!__rate_interval|__interval|__range)\w+", expr):
            found.append(f"{where}: uses a variable the dashboard does not define: {expr}")
        used |= names
        exprs.append((where, expr))
    for name, purpose in REQUIRED.items():
        if name not in used:
            found.append(f"no panel queries {name} ({purpose})")
    if promtool and exprs:
        found += parse_problems(exprs, promtool)
    return found


def parse_problems(exprs, promtool):
    """Every query as a recording rule, checked with `promtool check rules`: all in one
    file, and when that fails one file per query, so that a failure names its query."""

    def refused(tmp, name, batch):
        path = Path(tmp) / f"{name}.yml"
        rules = [{"record": f"dashboard:query_{i}", "expr": promql(expr)} for i, expr in enumerate(batch)]
        path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # JSON is YAML
        checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
        if checked.returncode == 0:
            return None
        return (checked.stderr or checked.stdout).strip().replace(str(path), name)

    with tempfile.TemporaryDirectory(prefix="fastchat-dashboard-") as tmp:
        why = refused(tmp, "all", [expr for _, expr in exprs])
        if why is None:
            return []
        found = []
        for i, (where, expr) in enumerate(exprs):
            why_this = refused(tmp, f"query-{i}", [expr])
            if why_this is not None:
                found.append(f"{where}: not valid PromQL: {expr}\n    {why_this}")
        return found or [f"promtool check rules refuses the queries together: {why}"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dashboard")
    parser.add_argument("catalog")
    parser.add_argument("--promtool", help="promtool binary: check that every query parses")
    args = parser.parse_args()
    dashboard = json.loads(Path(args.dashboard).read_text())
    kinds = catalog(Path(args.catalog).read_text())
    found = problems(dashboard, kinds, args.promtool)
    for problem in found:
        print(f"{args.dashboard}: {problem}")
    if found:
        return 1
    n = sum(1 for _ in queries(dashboard))
    used = set().union(*(metric_names(t.get("expr", "")) for _, t in queries(dashboard)))
    print(f"{args.dashboard}: {n} queries over {len(used)} metrics, all exported"
          + (", all valid PromQL (promtool check rules)" if args.promtool else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
