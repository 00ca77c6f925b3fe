//! nats-server's HTTP monitoring on loopback: a blocking GET, and
//! [`StreamReport`] from `/jsz`.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use crate::Json;

/// `GET path` on the monitoring port `port` of 127.0.0.1: the HTTP status
/// and body. Blocking, at most a few seconds.
///
/// # Errors
/// The server did not answer.
pub(crate) fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let io = |e: std::io::Error| format!("GET {path} from {addr}: {e}");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    // HTTP/1.0: no chunked encoding, the server closes after the body.
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(io)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: malformed response {response:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("GET {path}: no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// Whether `/healthz` on `port` reports OK.
pub(crate) fn healthy(port: u16) -> bool {
    matches!(get(port, "/healthz"), Ok((200, _)))
}

/// What the server monitored on `port` holds of `stream`, or `None` if it
/// has no replica of it.
///
/// # Errors
/// Monitoring unreachable or its output not understood.
pub(crate) fn stream_report(port: u16, stream: &str) -> Result<Option<StreamReport>, String> {
    let (status, body) = get(port, "/jsz?streams=true")?;
    if status != 200 {
        return Err(format!("/jsz answered {status}: {body}"));
    }
    let jsz = Json::parse(&body)?;
    let accounts = jsz.get("account_details").map_or(&[][..], Json::items);
    let detail = accounts
        .iter()
        .flat_map(|a| a.get("stream_detail").map_or(&[][..], Json::items))
        .find(|s| s.get("name").and_then(Json::as_str) == Some(stream));
    let Some(detail) = detail else {
        return Ok(None);
    };
    let number = |path: &[&str]| {
        path.iter()
            .try_fold(detail, |v, key| v.get(key))
            .and_then(Json::as_u64)
            .ok_or_else(|| format!("/jsz stream `{stream}` has no {}", path.join(".")))
    };
    let cluster = detail.get("cluster");
    Ok(Some(StreamReport {
        server: jsz
            .get("server_name")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned(),
        leader: cluster
            .and_then(|c| c.get("leader"))
            .and_then(Json::as_str)
            .filter(|l| !l.is_empty())
            .map(str::to_owned),
        replicas: cluster
            .and_then(|c| c.get("replicas"))
            .map_or(&[][..], Json::items)
            .iter()
            .filter_map(|r| {
                Some((
                    r.get("name")?.as_str()?.to_owned(),
                    r.get("current").and_then(Json::as_bool).unwrap_or(false),
                ))
            })
            .collect(),
        messages: number(&["state", "messages"])?,
        first_sequence: number(&["state", "first_seq"])?,
        last_sequence: number(&["state", "last_seq"])?,
    }))
}

/// One server's view of a stream, from its monitoring endpoint.
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
