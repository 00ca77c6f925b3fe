"""check_dashboard.py refuses what it must (run by deploy/check.sh): each case breaks the
dashboard (or the catalog) in one way, in memory, and expects the named problem; the
unbroken dashboard must pass.

Usage: python check_dashboard_test.py DASHBOARD CATALOG PROMTOOL
"""

import copy
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_dashboard as cd  # noqa: E402


def first_query(dashboard, metric):
    """The first target whose expr uses METRIC."""
    for _, target in cd.queries(dashboard):
        if metric in cd.metric_names(target["expr"]):
            return target
    raise LookupError(metric)


def first_panel(dashboard):
    return next(p for p in cd.panels(dashboard) if p.get("type") != "row")


def drop_panels_using(dashboard, metric):
    for panel in dashboard["panels"]:
        panel["targets"] = [t for t in panel.get("targets", []) if metric not in cd.metric_names(t["expr"])]
    dashboard["panels"] = [p for p in dashboard["panels"] if p.get("type") == "row" or p["targets"]]


def set_expr(metric, expr):
    return lambda d: first_query(d, metric).update(expr=expr)


CASES = [
    # (what breaks, how, words the problem must contain)
    ("an unknown metric", set_expr("fastchat_send_requests_total", "sum(rate(fastchat_send_requests[5m]))"),
     "fastchat_send_requests is not a metric the services export"),
    ("a histogram without its _bucket suffix",
     set_expr("fastchat_send_duration_seconds_bucket",
              "histogram_quantile(0.99, sum by (le) (rate(fastchat_send_duration_seconds[5m])))"),
     "fastchat_send_duration_seconds is a histogram"),
    ("a counter with a histogram suffix", set_expr("fastchat_send_requests_total", "fastchat_send_requests_total_bucket"),
     "fastchat_send_requests_total_bucket is not a metric"),
    ("no datasource variable", lambda d: d["templating"].update(list=[]), "no template variable `datasource`"),
    ("a panel with a fixed data source", lambda d: first_panel(d).update(datasource={"type": "prometheus", "uid": "abc"}),
     "datasource must be"),
    ("a query with a fixed data source",
     lambda d: first_query(d, "fastchat_live_feed_lag_messages").update(datasource={"type": "prometheus", "uid": "abc"}),
     "query A: datasource must be"),
    ("a query that does not parse",
     set_expr("fastchat_auth_failures_total", "sum by (reason) (rate(fastchat_auth_failures_total[$__rate_interval])"),
     "not valid PromQL"),
    ("a query with an undefined variable",
     set_expr("fastchat_subscriptions_active", 'sum(fastchat_subscriptions_active{instance=~"$instance"})'),
     "a variable the dashboard does not define"),
    ("no consumer-lag panel", lambda d: drop_panels_using(d, "fastchat_live_feed_lag_messages"),
     "no panel queries fastchat_live_feed_lag_messages"),
    ("no catch-ups panel", lambda d: drop_panels_using(d, "fastchat_subscription_catchups_total"),
     "no panel queries fastchat_subscription_catchups_total"),
    ("a query without a legend", lambda d: first_query(d, "fastchat_rate_limited_total").pop("legendFormat"),
     "no legendFormat"),
    ("two queries with one refId",
     lambda d: [t.update(refId="A") for t in next(p for p in cd.panels(d) if len(p.get("targets", [])) > 1)["targets"]],
     "its own refId"),
]


def main():
    dashboard_path, catalog_path, promtool = sys.argv[1:4]
    dashboard = json.loads(Path(dashboard_path).read_text())
    catalog_text = Path(catalog_path).read_text()
    kinds = cd.catalog(catalog_text)
    failures = []
    clean = cd.problems(dashboard, kinds, promtool)
    if clean:
        failures.append(f"the committed dashboard fails: {clean}")
    for what, breaks, expect in CASES:
        broken = copy.deepcopy(dashboard)
        breaks(broken)
        # promtool only where the case is about parsing: it takes a while to start.
        found = cd.problems(broken, kinds, promtool if "PromQL" in expect else None)
        if not any(expect in p for p in found):
            failures.append(f"{what}: expected a problem containing {expect!r}, got {found}")
    # A metric the catalog stops describing makes every query using it fail.
    shrunk = cd.catalog(catalog_text.replace('"fastchat_messages_delivered_total"', '"fastchat_messages_handed_total"'))
    found = cd.problems(dashboard, shrunk, None)
    if not any("fastchat_messages_delivered_total is not a metric" in p for p in found):
        failures.append(f"a metric gone from catalog.rs: expected it refused, got {found}")
    for failure in failures:
        print(f"FAIL {failure}")
    if failures:
        return 1
    print(f"check_dashboard.py refuses all {len(CASES) + 1} broken dashboards and passes the committed one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
