//! Fair shares of something scarce (open subscriptions, concurrent history
//! reads): a total per instance, and a cap per client connection and per
//! client address, so one client cannot take what everyone else needs.

use std::{
    collections::HashMap,
    hash::Hash,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How much there is, and how much one client may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Per instance.
    pub total: usize,
    /// Per client connection (its address and port).
    pub per_connection: usize,
    /// Per client address (all its connections).
    pub per_address: usize,
}

/// Which cap refused a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// The instance has no more.
    Total,
    /// The client's connection holds its maximum.
    Connection,
    /// The client's address holds its maximum.
    Address,
}

/// Why a share was refused: which cap, and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The cap that was hit.
    pub cap: Cap,
    /// Its value.
    pub limit: usize,
}

/// Counts per key; a std mutex: held for one map update, never across an
/// await.
#[derive(Debug)]
struct Counts<K>(Mutex<HashMap<K, usize>>);

impl<K: Hash + Eq> Counts<K> {
    fn new() -> Self {
        Self(Mutex::new(HashMap::new()))
    }

    fn try_add(&self, key: K, max: usize) -> bool {
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(key).or_insert(0);
        if *count >= max {
            return false;
        }
        *count += 1;
        true
    }

    fn get(&self, key: &K) -> usize {
        let counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.get(key).copied().unwrap_or(0)
    }

    fn remove(&self, key: &K) {
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(key);
            }
        }
    }
}

/// The shares of one resource.
#[derive(Debug)]
pub struct Shares {
    limits: Limits,
    total: Arc<Semaphore>,
    connections: Counts<SocketAddr>,
    addresses: Counts<IpAddr>,
}

/// One held share, given back on drop.
#[derive(Debug)]
pub struct Share {
    _permit: OwnedSemaphorePermit,
    peer: Option<SocketAddr>,
    shares: Arc<Shares>,
}

impl Drop for Share {
    fn drop(&mut self) {
        if let Some(peer) = self.peer {
            self.shares.connections.remove(&peer);
            self.shares.addresses.remove(&peer.ip());
        }
    }
}

impl Shares {
    /// Shares under `limits`.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            total: Arc::new(Semaphore::new(limits.total)),
            connections: Counts::new(),
            addresses: Counts::new(),
        })
    }

    /// A share for `peer` now, or why not.
    pub fn try_take(self: &Arc<Self>, peer: Option<SocketAddr>) -> Result<Share, Refused> {
        let permit = Arc::clone(&self.total)
            .try_acquire_owned()
            .map_err(|_| self.refused(Cap::Total))?;
        self.for_peer(permit, peer)
    }

    /// A share for `peer`, waiting up to `wait` (for ever if `None`) for the
    /// instance to have one; the per-client caps refuse at once.
    pub async fn take(
        self: &Arc<Self>,
        peer: Option<SocketAddr>,
        wait: Option<Duration>,
    ) -> Result<Share, Refused> {
        // Checked first so a client over its cap does not queue at all.
        self.check_peer(peer)?;
        let acquire = Arc::clone(&self.total).acquire_owned();
        let permit = match wait {
            Some(wait) => tokio::time::timeout(wait, acquire)
                .await
                .map_err(|_| self.refused(Cap::Total))?,
            None => acquire.await,
        }
        .map_err(|_| self.refused(Cap::Total))?;
        self.for_peer(permit, peer)
    }

    fn check_peer(&self, peer: Option<SocketAddr>) -> Result<(), Refused> {
        let Some(peer) = peer else { return Ok(()) };
        if self.connections.get(&peer) >= self.limits.per_connection {
            return Err(self.refused(Cap::Connection));
        }
        if self.addresses.get(&peer.ip()) >= self.limits.per_address {
            return Err(self.refused(Cap::Address));
        }
        Ok(())
    }

    fn for_peer(
        self: &Arc<Self>,
        permit: OwnedSemaphorePermit,
        peer: Option<SocketAddr>,
    ) -> Result<Share, Refused> {
        if let Some(peer) = peer {
            if !self.connections.try_add(peer, self.limits.per_connection) {
                return Err(self.refused(Cap::Connection));
            }
            if !self.addresses.try_add(peer.ip(), self.limits.per_address) {
                self.connections.remove(&peer);
                return Err(self.refused(Cap::Address));
            }
        }
        Ok(Share {
            _permit: permit,
            peer,
            shares: Arc::clone(self),
        })
    }

    fn refused(&self, cap: Cap) -> Refused {
        let limit = match cap {
            Cap::Total => self.limits.total,
            Cap::Connection => self.limits.per_connection,
            Cap::Address => self.limits.per_address,
        };
        Refused { cap, limit }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: u8, port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from(([10, 0, 0, ip], port)))
    }

    #[test]
    fn each_cap_refuses_in_turn_and_shares_come_back() {
        let shares = Shares::new(Limits {
            total: 5,
            per_connection: 2,
            per_address: 3,
        });
        let a1 = shares.try_take(peer(1, 1)).expect("1st");
        let _a2 = shares.try_take(peer(1, 1)).expect("2nd");
        assert_eq!(
            shares.try_take(peer(1, 1)).map(drop),
            Err(Refused {
                cap: Cap::Connection,
                limit: 2
            })
        );
        let _a3 = shares.try_take(peer(1, 2)).expect("another connection");
        assert_eq!(
            shares.try_take(peer(1, 3)).map(drop),
            Err(Refused {
                cap: Cap::Address,
                limit: 3
            })
        );
        let _b1 = shares.try_take(peer(2, 1)).expect("another client");
        let _c1 = shares.try_take(None).expect("no peer known");
        assert_eq!(
            shares.try_take(peer(3, 1)).map(drop),
            Err(Refused {
                cap: Cap::Total,
                limit: 5
            })
        );
        drop(a1);
        let _again = shares.try_take(peer(1, 1)).expect("given back");
    }

    #[tokio::test(start_paused = true)]
    async fn taking_waits_for_the_instance_but_not_past_its_deadline() {
        let shares = Shares::new(Limits {
            total: 1,
            per_connection: 1,
            per_address: 1,
        });
        let held = shares.try_take(peer(1, 1)).expect("the only one");
        let refused = shares
            .take(peer(2, 1), Some(Duration::from_secs(2)))
            .await
            .map(drop);
        assert_eq!(
            refused,
            Err(Refused {
                cap: Cap::Total,
                limit: 1
            })
        );
        // The holder's own connection is refused at once, without waiting.
        let started = tokio::time::Instant::now();
        let refused = shares
            .take(peer(1, 1), Some(Duration::from_secs(2)))
            .await
            .map(drop);
        assert_eq!(
            refused,
            Err(Refused {
                cap: Cap::Connection,
                limit: 1
            })
        );
        assert_eq!(started.elapsed(), Duration::ZERO);
        let waiting = {
            let shares = Arc::clone(&shares);
            tokio::spawn(async move { shares.take(peer(2, 1), None).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(held);
        assert!(waiting.await.expect("task"));
    }
}
