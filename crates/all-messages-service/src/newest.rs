//! History reads, and the "newest messages" reads that joiners share.
//!
//! Every history read of a subscription waits for one of the instance's
//! history slots ([`Shares`]). A `last = N` start of one room (or of every
//! room) is the common and the expensive one: when a replica restarts, all
//! of a busy room's members ask for its newest messages at the same moment.
//! Those joiners share one read: the first makes an entry for the room with
//! its `N` and the live feed's position `h` it joined at, and reads (in a
//! slot) the newest `N` messages up to `h`; any joiner of the room asking
//! for at most `N` that joined at `h` or later, while the entry is young and
//! still held, waits for that read instead of queueing its own. What it
//! joined after `h` it reads itself (usually nothing). Each gets exactly the
//! newest messages up to its own join position: the same as reading alone.
//!
//! An entry is held (with its messages) only while a joiner uses it; the
//! registry keeps weak references, so what it costs in memory is bounded by
//! the joiners being served, like their own reads would be.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use broker_client::{StartPosition, Station, Subjects};
use tokio::sync::OnceCell;

use crate::{hub::Shared, shares::Shares, trace};

/// Joiners share a read for at most so long after it was started: a later
/// one reads on its own (the shared part would be older, and what came
/// since, which it reads itself, longer).
const SHARE_FOR: Duration = Duration::from_secs(10);

/// Sweep the registry of entries nobody holds once it has this many (and
/// then at twice what was left).
const SWEEP_AT: usize = 1024;

/// A stored message as a newest-read holds it: `None` for one that is not a
/// FastChat chat message (it counts among the newest N, and is skipped).
type Stored = (u64, Option<Shared>);

/// The newest `n` messages of a filter up to sequence `until`, read once.
struct Entry {
    n: u32,
    until: u64,
    started: Instant,
    messages: OnceCell<Arc<[Stored]>>,
}

/// The history slots and the newest-reads registry.
#[derive(Debug)]
pub struct HistoryReads {
    slots: Arc<Shares>,
    registry: Mutex<Registry>,
    /// Reads made of the station for the newest messages (shared or not).
    #[cfg(test)]
    reads: std::sync::atomic::AtomicUsize,
}

#[derive(Debug, Default)]
struct Registry {
    entries: HashMap<String, Weak<Entry>>,
    sweep_at: usize,
}

/// Why a history read ended without messages.
#[derive(Debug)]
pub enum ReadError {
    /// The broker failed the read.
    Broker(broker_client::Error),
    /// The history slots are closed: the service is stopping.
    Stopped,
}

impl From<broker_client::Error> for ReadError {
    fn from(e: broker_client::Error) -> Self {
        Self::Broker(e)
    }
}

impl HistoryReads {
    /// History reads taking turns in `slots`.
    pub fn new(slots: Arc<Shares>) -> Arc<Self> {
        Arc::new(Self {
            slots,
            registry: Mutex::new(Registry {
                entries: HashMap::new(),
                sweep_at: SWEEP_AT,
            }),
            #[cfg(test)]
            reads: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The history slots.
    pub fn slots(&self) -> &Arc<Shares> {
        &self.slots
    }

    /// The newest `n` messages of `filter` with sequence ≤ `until`, oldest
    /// first (all of them if fewer), shared with the other joiners of the
    /// same filter (see the module docs). Waits for a history slot when it
    /// reads, in the shares of `peer` (the joiner's connection, if known).
    pub async fn newest(
        &self,
        station: &Station,
        filter: &Subjects,
        n: u32,
        until: u64,
        peer: Option<SocketAddr>,
    ) -> Result<Vec<Shared>, ReadError> {
        let entry = self.entry(filter, n, until);
        let shared = entry
            .messages
            .get_or_try_init(|| async {
                let _slot = self
                    .slots
                    .take(peer, None)
                    .await
                    .map_err(|_| ReadError::Stopped)?;
                metrics::counter!("fastchat_history_newest_reads_total").increment(1);
                #[cfg(test)]
                self.reads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let read = station
                    .last_messages(filter.clone(), u64::from(entry.n), Some(entry.until + 1))
                    .await?;
                Ok::<_, ReadError>(
                    read.iter()
                        .map(|d| (d.sequence, trace::decode(d).map(Arc::new)))
                        .collect::<Arc<[Stored]>>(),
                )
            })
            .await?;
        let mut stored: Vec<Stored> = shared.to_vec();
        // entry() shares only entries that end at or before `until`.
        let shared_to = entry.until;
        drop(entry);
        if shared_to < until {
            // What was stored between the shared read's end and this
            // joiner's position: its own (small) read.
            let _slot = self
                .slots
                .take(peer, None)
                .await
                .map_err(|_| ReadError::Stopped)?;
            let mut read = station
                .read(filter.clone(), StartPosition::FromSequence(shared_to + 1))
                .await?;
            while let Some(d) = read.next().await? {
                if d.sequence > until {
                    break;
                }
                stored.push((d.sequence, trace::decode(&d).map(Arc::new)));
                if d.sequence == until {
                    break;
                }
            }
        }
        let excess = stored
            .len()
            .saturating_sub(usize::try_from(n).unwrap_or(usize::MAX));
        Ok(stored
            .into_iter()
            .skip(excess)
            .filter_map(|(_, message)| message)
            .collect())
    }

    /// The entry a joiner of `filter` asking for `n` up to `until` shares,
    /// or a new one it starts.
    fn entry(&self, filter: &Subjects, n: u32, until: u64) -> Arc<Entry> {
        let key = filter.to_string();
        let mut registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entry) = registry.entries.get(&key).and_then(Weak::upgrade)
            && entry.n >= n
            && entry.until <= until
            && entry.started.elapsed() < SHARE_FOR
        {
            metrics::counter!("fastchat_history_newest_shared_total").increment(1);
            return entry;
        }
        let entry = Arc::new(Entry {
            n,
            until,
            started: Instant::now(),
            messages: OnceCell::new(),
        });
        registry.entries.insert(key, Arc::downgrade(&entry));
        if registry.entries.len() >= registry.sweep_at {
            registry.entries.retain(|_, entry| entry.strong_count() > 0);
            registry.sweep_at = (registry.entries.len() * 2).max(SWEEP_AT);
        }
        entry
    }
}

#[cfg(test)]
mod tests {
    use broker_client::{Broker, BrokerConfig, StationConfig};
    use fastchat_proto::v1;
    use fastchat_test_support::NatsServer;

    use super::*;
    use crate::shares::Limits;

    async fn station(server: &NatsServer) -> Station {
        let broker = Broker::connect(&BrokerConfig {
            url: server.url(),
            ..BrokerConfig::default()
        })
        .await
        .expect("connect");
        tokio::time::timeout(Duration::from_secs(10), broker.wait_connected())
            .await
            .expect("connected");
        broker
            .ensure_station(&StationConfig {
                name: "chat".into(),
                subjects: vec!["chat.messages.>".into()],
                max_bytes: 64 << 20,
                ..StationConfig::default()
            })
            .await
            .expect("station")
    }

    /// Stores messages `from..=to` (their sequences, on a fresh station),
    /// odd ones in room a, even ones in room b.
    async fn store(station: &Station, from: u64, to: u64) {
        for i in from..=to {
            let room = if i % 2 == 0 { "b" } else { "a" };
            let message = v1::ChatMessage {
                id: format!("m{i}"),
                room: room.into(),
                author: "ann".into(),
                text: format!("{room} {i}"),
                ..v1::ChatMessage::default()
            };
            let out = fastchat_wire::encode(&message, None);
            station
                .producer()
                .publish(&out.subject, out.headers, out.payload, &message.id)
                .await
                .expect("publish");
        }
    }

    fn sequences(messages: &[Shared]) -> Vec<u64> {
        messages.iter().map(|m| m.sequence).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn joiners_of_a_room_share_one_read_and_each_gets_its_own_newest() {
        let server = NatsServer::start();
        let station = station(&server).await;
        store(&station, 1, 400).await;
        let slots = Shares::new(Limits {
            total: 1,
            per_connection: 1,
            per_address: 1,
        });
        let reads = HistoryReads::new(Arc::clone(&slots));
        let room_a = Subjects::from("chat.messages.a");
        // Odd sequences are room a's: its newest 100 up to 399 are 201..=399.
        let newest_a = |until: u64, n: usize| -> Vec<u64> {
            let odd: Vec<u64> = (1..=until).filter(|s| s % 2 == 1).collect();
            odd[odd.len().saturating_sub(n)..].to_vec()
        };

        // Twenty joiners at once while the only slot is taken: one read.
        let shared = reads.entry(&room_a, 100, 400);
        let held = slots.try_take(None).expect("the slot");
        let mut joiners = Vec::new();
        for _ in 0..20 {
            let (reads, station, room) = (Arc::clone(&reads), station.clone(), room_a.clone());
            joiners.push(tokio::spawn(async move {
                reads
                    .newest(&station, &room, 100, 400, None)
                    .await
                    .map_err(|e| format!("{e:?}"))
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(held);
        for joiner in joiners {
            let got = joiner.await.expect("joiner").expect("newest");
            assert_eq!(sequences(&got), newest_a(400, 100));
            assert_eq!(got[99].text, "a 399");
        }
        assert_eq!(reads.reads.load(std::sync::atomic::Ordering::Relaxed), 1);

        // A joiner that asks for fewer, after more was stored, shares the
        // same read while it is held, and reads only what came since.
        store(&station, 401, 410).await;
        let got = reads
            .newest(&station, &room_a, 50, 410, None)
            .await
            .expect("newest");
        assert_eq!(sequences(&got), newest_a(410, 50));
        assert_eq!(reads.reads.load(std::sync::atomic::Ordering::Relaxed), 1);
        drop(shared);

        // One asking for more than the shared read has: a read of its own.
        let got = reads
            .newest(&station, &room_a, 150, 410, None)
            .await
            .expect("newest");
        assert_eq!(sequences(&got), newest_a(410, 150));
        assert_eq!(reads.reads.load(std::sync::atomic::Ordering::Relaxed), 2);

        // Another room, and every room: their own reads, fewer than asked
        // for when fewer are stored.
        let every = Subjects::from("chat.messages.>");
        let got = reads
            .newest(&station, &every, 1000, 405, None)
            .await
            .expect("newest");
        assert_eq!(sequences(&got), (1..=405).collect::<Vec<_>>());
        assert_eq!(reads.reads.load(std::sync::atomic::Ordering::Relaxed), 3);
    }
}
