//! Every metric the services export, with its help text and unit, and the
//! Prometheus recorder: latencies as histograms with fixed buckets (they
//! add up across replicas, where summaries cannot), a `service_name` label
//! on every series (not `service`, which Prometheus Operator sets to the
//! Kubernetes Service and would rename ours to `exported_service`), and
//! `fastchat_build_info`.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Bucket bounds of `fastchat_send_duration_seconds` and of the per-RPC
/// durations: a send takes about a millisecond on a quiet broker and is
/// given up at `send.timeout` (5 s); streams end in the last buckets.
const SEND_BUCKETS: [f64; 14] = [
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Installs the recorder for service `name` at `version` and describes
/// every metric.
///
/// # Errors
/// A recorder is already installed (or the buckets are invalid).
pub fn install(name: &str, version: &str) -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .add_global_label("service_name", name)
        .set_buckets_for_metric(
            Matcher::Full("fastchat_send_duration_seconds".into()),
            &SEND_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("fastchat_grpc_request_duration_seconds".into()),
            &SEND_BUCKETS,
        )?
        .install_recorder()?;
    describe();
    register_zeros(name);
    metrics::gauge!(
        "fastchat_build_info",
        "version" => version.to_owned(),
        "revision" => option_env!("FASTCHAT_REVISION").unwrap_or("unknown"),
    )
    .set(1.0);
    Ok(handle)
}

/// Series an operator rates or alerts on, exported at 0 from the start.
/// Prometheus takes a counter's first scrape as its starting point, so a
/// counter that only appeared with its first increment would hide that
/// increment from `rate()` and `increase()`: the first auth failure, the
/// first rate-limited send or catch-up of a process would never show. Series
/// whose labels are not known in advance (per method and code, per outcome)
/// still appear with their first value.
fn register_zeros(service: &str) {
    use fastchat_auth::reason;
    for reason in [
        reason::TOKEN_MISSING,
        reason::TOKEN_INVALID,
        reason::TOKEN_EXPIRED,
        reason::ROOM_FORBIDDEN,
        reason::AUTHOR_MISMATCH,
    ] {
        metrics::counter!("fastchat_auth_failures_total", "reason" => reason).increment(0);
    }
    match service {
        "send-service" => {
            metrics::counter!("fastchat_rate_limited_total", "api" => "send").increment(0);
            metrics::counter!("fastchat_send_duplicates_total").increment(0);
        }
        "all-messages-service" => {
            for counter in [
                "fastchat_subscriptions_total",
                "fastchat_subscription_catchups_total",
                "fastchat_subscriptions_stalled_total",
                "fastchat_messages_delivered_total",
            ] {
                metrics::counter!(counter).increment(0);
            }
            metrics::gauge!("fastchat_subscriptions_active").increment(0.0);
        }
        _ => {}
    }
}

/// Help text for every metric (a metric is exported once it is recorded).
fn describe() {
    describe_gauge!(
        "fastchat_build_info",
        "Always 1; the labels say which build runs (version, revision)"
    );
    describe_counter!(
        "fastchat_grpc_requests_total",
        "gRPC and gRPC-web calls by method and status code, counted when they end (unknown methods as `unknown`)"
    );
    describe_histogram!(
        "fastchat_grpc_request_duration_seconds",
        Unit::Seconds,
        "Time from a call's request to its end, by method (a stream's whole life)"
    );
    describe_gauge!(
        "fastchat_serving",
        "1 while the service reports SERVING (broker connected and answering, station ready)"
    );
    describe_counter!(
        "fastchat_send_requests_total",
        "Send requests by API (seed, v1) and outcome (stored, invalid, unavailable, ...; duplicates count as stored)"
    );
    describe_counter!(
        "fastchat_send_duplicates_total",
        "Sends answered as duplicates of an earlier one with the same client_message_id"
    );
    describe_histogram!(
        "fastchat_send_duration_seconds",
        Unit::Seconds,
        "Time from a send request to its answer, by API"
    );
    describe_counter!(
        "fastchat_rate_limited_total",
        "Sends refused with RATE_LIMITED (limits.send_per_second, limits.send_burst)"
    );
    describe_counter!(
        "fastchat_auth_failures_total",
        "Calls refused by authentication or authorization, by reason"
    );
    describe_gauge!(
        "fastchat_subscriptions_active",
        "Subscriptions open now (Subscribe, seed all, event streams)"
    );
    describe_counter!("fastchat_subscriptions_total", "Subscriptions opened");
    describe_counter!(
        "fastchat_subscriptions_stalled_total",
        "Subscriptions ended because their reader took nothing for subscriptions.stall_timeout"
    );
    describe_counter!(
        "fastchat_subscription_catchups_total",
        "Times a subscriber fell behind the live feed and caught up from the station"
    );
    describe_counter!(
        "fastchat_messages_delivered_total",
        "Messages handed to subscribers' streams"
    );
    describe_gauge!(
        "fastchat_live_feed_sequence",
        "Station sequence of the last message the live feed passed on"
    );
    describe_gauge!(
        "fastchat_live_feed_lag_messages",
        "Messages stored in the station that the live feed has not passed on yet (measured every 5 s)"
    );
    describe_counter!(
        "fastchat_connections_refused_total",
        "Connections closed on accept for being over a cap (grpc.max_connections, _per_address), by port"
    );
    describe_counter!(
        "fastchat_handshake_timeouts_total",
        "Connections closed for not completing their handshake within grpc.handshake_timeout, by port"
    );
    describe_counter!(
        "fastchat_accept_errors_total",
        "Errors accepting connections (e.g. out of file descriptors), by port"
    );
    describe_counter!(
        "fastchat_tls_handshake_failures_total",
        "TLS handshakes that failed (plaintext clients, untrusted or missing client certificates)"
    );
    describe_counter!(
        "fastchat_tls_reloads_total",
        "Times the TLS certificate files were re-read after changing, by result (ok, error)"
    );
}
