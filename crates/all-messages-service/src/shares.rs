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

use fastchat_runtime::gate::IdentityKey;
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
    /// The caller's identity holds its maximum.
    Identity,
}

/// Why a share was refused: which cap, and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The cap that was hit.
    pub cap: Cap,
    /// Its value.
    pub limit: usize,
}

/// One semaphore per key (a connection, an address), created when first
/// used and removed when nobody holds or waits for it. A std mutex: held
/// for one map update, never across an await.
#[derive(Debug)]
struct PerKey<K> {
    max: usize,
    map: Mutex<HashMap<K, (Arc<Semaphore>, usize)>>,
}

impl<K: Hash + Eq + Clone> PerKey<K> {
    fn new(max: usize) -> Self {
        Self {
            max,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn enter(&self, key: K) -> Arc<Semaphore> {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = map
            .entry(key)
            .or_insert_with(|| (Arc::new(Semaphore::new(self.max)), 0));
        entry.1 += 1;
        Arc::clone(&entry.0)
    }

    fn leave(&self, key: &K) {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entry) = map.get_mut(key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                map.remove(key);
            }
        }
    }
}

/// The shares of one resource.
#[derive(Debug)]
pub struct Shares {
    limits: Limits,
    total: Arc<Semaphore>,
    connections: PerKey<SocketAddr>,
    addresses: PerKey<IpAddr>,
}

/// One held share, given back on drop (permits first, then the per-key
/// places, so an entry is removed only once its permit is back).
#[derive(Debug)]
pub struct Share {
    _permits: Vec<OwnedSemaphorePermit>,
    _places: Option<(Place<SocketAddr>, Place<IpAddr>)>,
}

/// A held place in one of the per-key maps.
#[derive(Debug)]
struct Place<K: Hash + Eq + Copy + Keyed> {
    key: K,
    shares: Arc<Shares>,
}

/// Which map of [`Shares`] a key lives in.
trait Keyed: Sized {
    fn map(shares: &Shares) -> &PerKey<Self>;
}

impl Keyed for SocketAddr {
    fn map(shares: &Shares) -> &PerKey<Self> {
        &shares.connections
    }
}

impl Keyed for IpAddr {
    fn map(shares: &Shares) -> &PerKey<Self> {
        &shares.addresses
    }
}

impl<K: Hash + Eq + Copy + Keyed> Drop for Place<K> {
    fn drop(&mut self) {
        K::map(&self.shares).leave(&self.key);
    }
}

impl Shares {
    /// Shares under `limits`.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            total: Arc::new(Semaphore::new(limits.total)),
            connections: PerKey::new(limits.per_connection),
            addresses: PerKey::new(limits.per_address),
        })
    }

    fn place<K: Hash + Eq + Copy + Keyed>(self: &Arc<Self>, key: K) -> (Place<K>, Arc<Semaphore>) {
        let semaphore = K::map(self).enter(key);
        (
            Place {
                key,
                shares: Arc::clone(self),
            },
            semaphore,
        )
    }

    /// A share for `peer` now, or why not.
    pub fn try_take(self: &Arc<Self>, peer: Option<SocketAddr>) -> Result<Share, Refused> {
        let mut permits = Vec::with_capacity(3);
        let places = match peer {
            Some(peer) => {
                let (connection, semaphore) = self.place(peer);
                permits.push(
                    semaphore
                        .try_acquire_owned()
                        .map_err(|_| self.refused(Cap::Connection))?,
                );
                let (address, semaphore) = self.place(peer.ip());
                permits.push(
                    semaphore
                        .try_acquire_owned()
                        .map_err(|_| self.refused(Cap::Address))?,
                );
                Some((connection, address))
            }
            None => None,
        };
        permits.push(
            Arc::clone(&self.total)
                .try_acquire_owned()
                .map_err(|_| self.refused(Cap::Total))?,
        );
        Ok(Share {
            _permits: permits,
            _places: places,
        })
    }

    /// A share for `peer`, waiting in turn — first for the connection's
    /// share, then the address's, then the instance's — up to `wait` in all
    /// (for ever if `None`). One busy connection thus holds at most its own
    /// cap of the instance's slots, however many requests it queues.
    pub async fn take(
        self: &Arc<Self>,
        peer: Option<SocketAddr>,
        wait: Option<Duration>,
    ) -> Result<Share, Refused> {
        let deadline = wait.map(|wait| tokio::time::Instant::now() + wait);
        let acquire = |semaphore: Arc<Semaphore>, cap| async move {
            let acquired = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, semaphore.acquire_owned())
                    .await
                    .ok(),
                None => Some(semaphore.acquire_owned().await),
            };
            acquired.and_then(Result::ok).ok_or(self.refused(cap))
        };
        let mut permits = Vec::with_capacity(3);
        let places = match peer {
            Some(peer) => {
                let (connection, semaphore) = self.place(peer);
                permits.push(acquire(semaphore, Cap::Connection).await?);
                let (address, semaphore) = self.place(peer.ip());
                permits.push(acquire(semaphore, Cap::Address).await?);
                Some((connection, address))
            }
            None => None,
        };
        permits.push(acquire(Arc::clone(&self.total), Cap::Total).await?);
        Ok(Share {
            _permits: permits,
            _places: places,
        })
    }

    fn refused(&self, cap: Cap) -> Refused {
        let limit = match cap {
            Cap::Total => self.limits.total,
            Cap::Connection => self.limits.per_connection,
            Cap::Address => self.limits.per_address,
            Cap::Identity => 0,
        };
        Refused { cap, limit }
    }
}

/// At most so many shares per caller identity (a token's identity, or the
/// address of a caller without one).
#[derive(Debug)]
pub struct PerIdentity {
    keys: Arc<PerKey<IdentityKey>>,
}

/// One identity's share, given back on drop.
#[derive(Debug)]
pub struct IdentityShare {
    _permit: OwnedSemaphorePermit,
    key: IdentityKey,
    keys: Arc<PerKey<IdentityKey>>,
}

impl Drop for IdentityShare {
    fn drop(&mut self) {
        self.keys.leave(&self.key);
    }
}

impl PerIdentity {
    /// `max` shares per identity.
    pub fn new(max: usize) -> Self {
        Self {
            keys: Arc::new(PerKey::new(max)),
        }
    }

    /// A share for `key` now, or why not.
    pub fn try_take(&self, key: IdentityKey) -> Result<IdentityShare, Refused> {
        let semaphore = self.keys.enter(key.clone());
        match semaphore.try_acquire_owned() {
            Ok(permit) => Ok(IdentityShare {
                _permit: permit,
                key,
                keys: Arc::clone(&self.keys),
            }),
            Err(_) => {
                self.keys.leave(&key);
                Err(Refused {
                    cap: Cap::Identity,
                    limit: self.keys.max,
                })
            }
        }
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
    async fn taking_waits_in_turn_but_not_past_its_deadline() {
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
        // The holder's own connection waits for its own share first, then gives up.
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
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        let waiting = {
            let shares = Arc::clone(&shares);
            tokio::spawn(async move { shares.take(peer(2, 1), None).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(held);
        assert!(waiting.await.expect("task"));
    }

    /// Entries for connections and addresses go away with their last user,
    /// so a long-running instance does not keep one per client ever seen.
    #[test]
    fn per_key_entries_are_removed_with_their_last_share() {
        let shares = Shares::new(Limits {
            total: 100,
            per_connection: 10,
            per_address: 10,
        });
        let shares_held: Vec<Share> = (0..5)
            .map(|port| {
                shares
                    .try_take(Some(SocketAddr::from(([10, 0, 0, 1], port))))
                    .expect("share")
            })
            .collect();
        assert_eq!(shares.connections.map.lock().expect("lock").len(), 5);
        assert_eq!(shares.addresses.map.lock().expect("lock").len(), 1);
        drop(shares_held);
        assert!(shares.connections.map.lock().expect("lock").is_empty());
        assert!(shares.addresses.map.lock().expect("lock").is_empty());
    }
}
