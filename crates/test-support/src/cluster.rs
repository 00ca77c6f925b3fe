//! Several [`NatsServer`]s as one JetStream cluster on loopback, configured
//! like production, with helpers to wait for health and find stream leaders.

use std::time::{Duration, Instant};

use crate::{NatsOptions, NatsServer, free_ports, server::is_address_in_use};

/// How many times [`NatsCluster::start_with`] picks new route ports when one
/// was taken before its node could bind it.
const START_ATTEMPTS: usize = 5;

/// Several [`NatsServer`]s forming one JetStream cluster on loopback, each
/// with a fixed cluster port and a monitoring port, killed on drop: the
/// failover tests kill and restart nodes of it.
///
/// The nodes are configured like the prod overlay
/// (`deploy/k8s/overlays/prod/nats-server.conf` and `deploy/k8s/base/nats/nats.conf`):
/// cluster `fastchat` with routes to every node (a route to itself is
/// ignored), `max_payload: 1MB`, JetStream with file and memory limits; the
/// store directory is each node's temporary store (`-sd`).
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Name of the cluster, as in the prod overlay.
    pub const NAME: &'static str = "fastchat";

    /// Starts `size` nodes named `n0`, `n1`, ... and waits until every one is
    /// healthy (JetStream meta group formed and current), for at most 30 s.
    #[must_use]
    pub fn start(size: usize) -> Self {
        Self::start_with(size, "")
    }

    /// Like [`NatsCluster::start`], with extra configuration text for every
    /// node (e.g. an `authorization` block).
    #[must_use]
    pub fn start_with(size: usize, extra_config: &str) -> Self {
        Self::start_configured(size, extra_config, "")
    }

    /// Like [`NatsCluster::start`], but the nodes do not advertise their
    /// client URLs to clients (`no_advertise: true`): a client given some
    /// URLs (e.g. [`crate::FaultProxy`]s in front of the nodes) only ever
    /// connects to those, never straight to a node it learnt of.
    #[must_use]
    pub fn start_unadvertised(size: usize) -> Self {
        Self::start_configured(size, "", "  no_advertise: true\n")
    }

    /// Starts `size` nodes with `extra_config` at the top level of each
    /// node's configuration and `cluster_config` inside its `cluster` block.
    fn start_configured(size: usize, extra_config: &str, cluster_config: &str) -> Self {
        assert!(size >= 1, "a cluster needs at least one node");
        let mut attempt = 1;
        let mut cluster = loop {
            match Self::try_start(size, extra_config, cluster_config) {
                Ok(cluster) => break cluster,
                Err(e) if attempt < START_ATTEMPTS && is_address_in_use(&e) => {
                    eprintln!("cluster start failed ({e}); trying other route ports");
                    attempt += 1;
                }
                Err(e) => panic!("{e}"),
            }
        };
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    /// Starts every node once; on failure the ones started are killed.
    fn try_start(size: usize, extra_config: &str, cluster_config: &str) -> Result<Self, String> {
        // Route ports, unlike client and monitoring ports, cannot be left to
        // each server (`-1`): every node's config lists every node's route
        // before any starts. So they are picked here, and can be taken before
        // their node binds them: then the caller starts over with new ones.
        let routes: Vec<u16> = free_ports(size);
        let route_list = routes
            .iter()
            .map(|p| format!("    nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join("\n");
        let nodes = routes
            .iter()
            .enumerate()
            .map(|(i, route_port)| {
                let config = format!(
                    "# Like deploy/k8s (nats.conf + the prod overlay's server.conf), on loopback.\n\
                     max_payload: 1MB\n\
                     jetstream {{\n  max_file_store: 1GB\n  max_memory_store: 256MB\n}}\n\
                     cluster {{\n  name: {name}\n  listen: 127.0.0.1:{route_port}\n  \
                     routes: [\n{route_list}\n  ]\n{cluster_config}}}\n{extra_config}\n",
                    name = Self::NAME,
                );
                NatsServer::try_start_with(NatsOptions {
                    config: Some(config),
                    server_name: Some(format!("n{i}")),
                    monitor_port: Some(0),
                    ..NatsOptions::default()
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { nodes })
    }

    /// Every node's client URL, comma-separated (what `nats.url` takes).
    #[must_use]
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes, in start order (`n0` first).
    #[must_use]
    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// Node `index`.
    #[must_use]
    pub fn node(&self, index: usize) -> &NatsServer {
        &self.nodes[index]
    }

    /// Node `index`, to stop or restart it.
    pub fn node_mut(&mut self, index: usize) -> &mut NatsServer {
        &mut self.nodes[index]
    }

    /// The index of the node named `name`.
    #[must_use]
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name() == Some(name))
    }

    /// Waits until every running node answers `/healthz` with OK.
    pub fn wait_healthy(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let unhealthy: Vec<String> = self
                .nodes
                .iter_mut()
                .filter_map(|n| {
                    if !n.is_running() {
                        return None;
                    }
                    let reason = n.health().err()?;
                    Some(format!("{}: {reason}", n.name().unwrap_or("?")))
                })
                .collect();
            if unhealthy.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster nodes not healthy within {within:?}: {unhealthy:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The index of `stream`'s leader, if the running nodes that report the
    /// stream agree on one and it is running.
    pub fn stream_leader(&mut self, stream: &str) -> Option<usize> {
        let mut leader = None;
        for node in &mut self.nodes {
            if !node.is_running() {
                continue;
            }
            let Ok(Some(report)) = node.stream_report(stream) else {
                continue;
            };
            match (&leader, report.leader) {
                (_, None) => return None,
                (None, Some(name)) => leader = Some(name),
                (Some(known), Some(name)) if *known == name => {}
                (Some(_), Some(_)) => return None,
            }
        }
        // Right after a kill the survivors may still name the dead node.
        let index = self.index_of(&leader?)?;
        self.nodes[index].is_running().then_some(index)
    }

    /// Waits until the running nodes agree on a leader for `stream`.
    pub fn wait_stream_leader(&mut self, stream: &str, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(leader) = self.stream_leader(stream) {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader for stream `{stream}` within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
