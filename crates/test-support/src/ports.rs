//! Loopback ports: free ones picked ahead of time (for ports that must be
//! known before a server starts), and the ones a running nats-server reports
//! it bound (its ports file).

use std::{net::TcpListener, path::Path};

use serde::Deserialize;

/// A free TCP port on 127.0.0.1 (bound, then released), for a listener that
/// must be configured with its port before it starts.
///
/// Something else may take the port between the probe and the real bind;
/// where a server can pick its own port (`-p -1` for [`crate::NatsServer`]),
/// let it.
#[must_use]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

/// `n` distinct free TCP ports on 127.0.0.1: all are held while picking, so
/// no two are the same (unlike `n` calls of [`free_port`]). They are released
/// on return, with the same race as [`free_port`].
#[must_use]
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound address").port())
        .collect()
}

/// The ports a nats-server listens on, as it reports them in its ports file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListeningPorts {
    /// The client port.
    pub client: u16,
    /// The HTTP monitoring port, if monitoring is on.
    pub monitoring: Option<u16>,
}

/// The ports file (`--ports_file_dir DIR` makes the server write
/// `DIR/<executable name>_<pid>.ports` once its listeners are up), e.g.
/// `{"nats":["nats://127.0.0.1:37963"],"monitoring":["http://127.0.0.1:38007"]}`;
/// a cluster node adds `"cluster":[...]`, which we do not need.
#[derive(Debug, Deserialize)]
struct PortsFile {
    #[serde(default)]
    nats: Vec<String>,
    #[serde(default)]
    monitoring: Vec<String>,
}

impl ListeningPorts {
    /// Reads the ports file that the server with process id `pid` wrote to
    /// `dir`.
    ///
    /// # Errors
    /// Not written (yet), or not understood: the server writes it without
    /// renaming, so a reader may see it half-written and should try again.
    pub(crate) fn read(dir: &Path, pid: u32) -> Result<Self, String> {
        let suffix = format!("_{pid}.ports");
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.ends_with(&suffix))
            })
            .ok_or_else(|| format!("no *{suffix} in {}", dir.display()))?;
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the text of a ports file.
    fn parse(text: &str) -> Result<Self, String> {
        let file: PortsFile = serde_json::from_str(text).map_err(|e| format!("{e} in {text:?}"))?;
        let client = file
            .nats
            .first()
            .ok_or_else(|| format!("no client URL in {text:?}"))?;
        Ok(Self {
            client: port_of(client)?,
            monitoring: file
                .monitoring
                .first()
                .map(|url| port_of(url))
                .transpose()?,
        })
    }
}

/// The port of a `scheme://host:port` URL.
fn port_of(url: &str) -> Result<u16, String> {
    url.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .ok_or_else(|| format!("no port in {url:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let mut ports = free_ports(8);
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 8);
    }

    #[test]
    fn ports_file_as_nats_server_2_15_writes_it() {
        let ports = ListeningPorts::parse(
            r#"{"nats":["nats://127.0.0.1:37963"],"monitoring":["http://127.0.0.1:38007"]}"#,
        )
        .expect("a ports file");
        assert_eq!(
            ports,
            ListeningPorts {
                client: 37963,
                monitoring: Some(38007)
            }
        );
        let clustered = ListeningPorts::parse(
            r#"{"nats":["nats://127.0.0.1:33331"],"cluster":["nats://127.0.0.1:41123"]}"#,
        )
        .expect("a cluster node's ports file");
        assert_eq!(
            clustered,
            ListeningPorts {
                client: 33331,
                monitoring: None
            }
        );
    }

    #[test]
    fn half_written_ports_file_is_an_error() {
        assert!(ListeningPorts::parse(r#"{"nats":["nats://127.0"#).is_err());
        assert!(ListeningPorts::parse("").is_err());
        assert!(ListeningPorts::parse(r#"{"monitoring":["http://127.0.0.1:1"]}"#).is_err());
        assert!(ListeningPorts::parse(r#"{"nats":["nats://127.0.0.1"]}"#).is_err());
    }

    #[test]
    fn reads_the_file_of_the_given_process() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(
            dir.path().join("nats-server_41.ports"),
            r#"{"nats":["nats://127.0.0.1:4001"]}"#,
        )
        .expect("write");
        std::fs::write(
            dir.path().join("nats-server_42.ports"),
            r#"{"nats":["nats://127.0.0.1:4002"]}"#,
        )
        .expect("write");
        let ports = ListeningPorts::read(dir.path(), 42).expect("process 42's ports");
        assert_eq!(ports.client, 4002);
        assert!(ListeningPorts::read(dir.path(), 4).is_err());
    }
}
