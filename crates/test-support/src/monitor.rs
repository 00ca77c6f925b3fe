//! nats-server's HTTP monitoring on loopback: a blocking GET, and the few
//! fields tests read from `/healthz`, `/varz` and `/jsz`, parsed into small
//! structs that name only those fields.

use std::{sync::LazyLock, time::Duration};

use serde::{Deserialize, de::DeserializeOwned};

/// One HTTP agent for every monitoring request. A non-2xx status is an
/// answer, not an error (`/healthz` says 503 while JetStream catches up).
/// No connection is pooled: each request connects afresh, so none is sent on
/// a connection to a server that has since been stopped and restarted.
static AGENT: LazyLock<ureq::Agent> = LazyLock::new(|| {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(2)))
        .timeout_recv_response(Some(Duration::from_secs(5)))
        .timeout_recv_body(Some(Duration::from_secs(5)))
        .max_idle_connections(0)
        .build()
        .new_agent()
});

/// `GET path` on the monitoring port `port` of 127.0.0.1: the status and
/// body.
///
/// # Errors
/// The server did not answer (within a few seconds).
pub(crate) fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut response = AGENT
        .get(&url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
    Ok((status, body))
}

/// `GET path`, which must answer 200 with JSON of type `T`.
fn get_json<T: DeserializeOwned>(port: u16, path: &str) -> Result<T, String> {
    let (status, body) = get(port, path)?;
    if status != 200 {
        return Err(format!("{path} answered {status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{path}: {e} in {body}"))
}

/// `/healthz`: `{"status":"ok"}` with 200, or e.g. 503 with
/// `{"status":"unavailable","error":"JetStream ..."}`.
#[derive(Debug, Deserialize)]
struct Healthz {
    status: String,
    #[serde(default)]
    error: Option<String>,
}

/// Whether `/healthz` on `port` reports OK (for a cluster node: JetStream is
/// enabled and current with the meta group).
///
/// # Errors
/// Why not: the server's own reason, or that it did not answer.
pub(crate) fn health(port: u16) -> Result<(), String> {
    let (status, body) = get(port, "/healthz")?;
    let health: Healthz =
        serde_json::from_str(&body).map_err(|e| format!("/healthz ({status}): {e} in {body}"))?;
    if status == 200 && health.status == "ok" {
        return Ok(());
    }
    Err(format!(
        "/healthz ({status}): {}",
        health.error.unwrap_or(health.status)
    ))
}

/// `/varz`, for the server's name (which `/jsz` does not carry).
#[derive(Debug, Deserialize)]
struct Varz {
    server_name: String,
}

/// `/jsz?streams=true`: per account, the streams this server holds a
/// replica of.
#[derive(Debug, Deserialize)]
struct Jsz {
    #[serde(default)]
    account_details: Vec<AccountDetail>,
}

#[derive(Debug, Deserialize)]
struct AccountDetail {
    #[serde(default)]
    stream_detail: Vec<StreamDetail>,
}

#[derive(Debug, Deserialize)]
struct StreamDetail {
    name: String,
    #[serde(default)]
    cluster: Option<ClusterDetail>,
    state: StreamState,
}

#[derive(Debug, Deserialize)]
struct ClusterDetail {
    /// Empty or absent during an election.
    #[serde(default)]
    leader: Option<String>,
    /// The replicas other than the reporting server.
    #[serde(default)]
    replicas: Vec<Replica>,
}

#[derive(Debug, Deserialize)]
struct Replica {
    name: String,
    #[serde(default)]
    current: bool,
}

#[derive(Debug, Deserialize)]
struct StreamState {
    messages: u64,
    first_seq: u64,
    last_seq: u64,
}

/// One server's view of a stream, from its monitoring endpoint: what a test
/// checks after a failover (who leads, who is current, what is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamReport {
    /// The reporting server's name.
    pub server: String,
    /// The stream's leader as this server knows it (`None` during an election).
    pub leader: Option<String>,
    /// The other replicas as `(server name, current)`.
    pub replicas: Vec<(String, bool)>,
    /// Messages held.
    pub messages: u64,
    /// Oldest sequence held.
    pub first_sequence: u64,
    /// Newest sequence held: a follower that caught up reports the leader's.
    pub last_sequence: u64,
}

impl Jsz {
    /// This server's replica of `stream`, if it holds one.
    fn stream(self, stream: &str) -> Option<StreamDetail> {
        self.account_details
            .into_iter()
            .flat_map(|account| account.stream_detail)
            .find(|detail| detail.name == stream)
    }
}

impl StreamReport {
    fn new(detail: StreamDetail, server: String) -> Self {
        let (leader, replicas) = detail
            .cluster
            .map(|cluster| (cluster.leader, cluster.replicas))
            .unwrap_or_default();
        Self {
            server,
            leader: leader.filter(|leader| !leader.is_empty()),
            replicas: replicas
                .into_iter()
                .map(|replica| (replica.name, replica.current))
                .collect(),
            messages: detail.state.messages,
            first_sequence: detail.state.first_seq,
            last_sequence: detail.state.last_seq,
        }
    }
}

/// What the server monitored on `port` holds of `stream`, or `None` if it
/// has no replica of it.
///
/// # Errors
/// Monitoring unreachable or its output not understood.
pub(crate) fn stream_report(port: u16, stream: &str) -> Result<Option<StreamReport>, String> {
    let jsz: Jsz = get_json(port, "/jsz?streams=true")?;
    let Some(detail) = jsz.stream(stream) else {
        return Ok(None);
    };
    let varz: Varz = get_json(port, "/varz")?;
    Ok(Some(StreamReport::new(detail, varz.server_name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/jsz?streams=true` from a node of a 3-node nats-server 2.15.1
    /// cluster, cut to what matters.
    const JSZ: &str = r#"{
      "memory": 0, "storage": 0, "accounts": 1, "ha_assets": 2,
      "server_id": "NAX6PU6MNWNDDRZHXGQEDVLFU4P2BWWHBUUCILDY4JQI6MSQDHLG6ZQF",
      "meta_cluster": {"name": "x", "leader": "n2", "replicas": [
        {"name": "n1", "current": false, "active": 0, "peer": "fjFyEjc1"}]},
      "account_details": [
        {"name": "$G", "id": "$G", "reserved_memory": 18446744073709551615,
         "stream_detail": [
          {"name": "S", "created": "2026-12-01T10:17:03.833739388Z",
           "cluster": {"name": "x", "raft_group": "S-R3F-S7H51sqc", "leader": "n2",
             "replicas": [
               {"name": "n1", "current": false, "active": 0, "peer": "fjFyEjc1"},
               {"name": "n2", "current": true, "active": 945815461, "peer": "44jzkV9D"}]},
           "state": {"messages": 2, "bytes": 70, "first_seq": 1,
             "first_ts": "2026-12-01T10:17:03Z", "last_seq": 2,
             "last_ts": "2026-12-01T10:17:04Z", "consumer_count": 0}}]}],
      "total": 1
    }"#;

    fn report(jsz_text: &str, stream: &str) -> Option<StreamReport> {
        let jsz: Jsz = serde_json::from_str(jsz_text).expect("valid /jsz");
        jsz.stream(stream)
            .map(|detail| StreamReport::new(detail, "n0".to_owned()))
    }

    #[test]
    fn reads_a_clustered_stream_from_jsz() {
        assert_eq!(
            report(JSZ, "S"),
            Some(StreamReport {
                server: "n0".to_owned(),
                leader: Some("n2".to_owned()),
                replicas: vec![("n1".to_owned(), false), ("n2".to_owned(), true)],
                messages: 2,
                first_sequence: 1,
                last_sequence: 2,
            })
        );
        assert_eq!(report(JSZ, "T"), None);
    }

    #[test]
    fn no_leader_during_an_election_and_none_without_a_cluster() {
        let electing = JSZ.replace(r#""leader": "n2""#, r#""leader": """#);
        let during = report(&electing, "S").expect("held");
        assert_eq!(during.leader, None);

        let single = r#"{"account_details":[{"stream_detail":[
            {"name":"S","state":{"messages":0,"first_seq":0,"last_seq":0}}]}]}"#;
        let alone = report(single, "S").expect("held");
        assert_eq!((alone.leader, alone.replicas), (None, vec![]));
    }

    #[test]
    fn jsz_without_accounts_holds_nothing() {
        assert_eq!(report(r#"{"server_id":"X","streams":0}"#, "S"), None);
    }

    #[test]
    fn a_stream_without_state_is_not_understood() {
        let broken = r#"{"account_details":[{"stream_detail":[{"name":"S"}]}]}"#;
        assert!(serde_json::from_str::<Jsz>(broken).is_err());
    }

    #[test]
    fn healthz_bodies() {
        let ok: Healthz = serde_json::from_str(r#"{"status":"ok"}"#).expect("ok body");
        assert_eq!((ok.status.as_str(), ok.error), ("ok", None));
        let down: Healthz = serde_json::from_str(
            r#"{"status":"unavailable","status_code":503,"error":"JetStream not current"}"#,
        )
        .expect("503 body");
        assert_eq!(down.error.as_deref(), Some("JetStream not current"));
    }
}
