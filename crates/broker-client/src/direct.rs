//! Batched direct gets (ADR-31, nats-server ≥ 2.11): reading a range of
//! history with no consumer at all.
//!
//! One request to `$JS.API.DIRECT.GET.<station>` names a subject filter, a
//! start (sequence or time) and a batch size; the broker answers with up to
//! that many matching messages, each carrying `Nats-Num-Pending` (matching
//! messages stored after it), then an end-of-batch marker. Every replica of
//! the stream can answer (`allow_direct`), nothing is created on the broker,
//! so a burst of history reads costs requests, not consumer churn.
//!
//! async-nats (0.51) has single-message direct gets only; Synadia's
//! `jetstream-extra` has batches but pins an older async-nats, so the few
//! lines of protocol live here.

use async_nats::{HeaderMap, StatusCode};
use futures::StreamExt;
use serde::Serialize;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{Delivered, Error, ErrorKind, Result, Station};

/// The JetStream API prefix requests go to (the default domain).
const API_PREFIX: &str = "$JS.API";

/// Where a batch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum From {
    /// The first matching message with sequence ≥ this.
    Sequence(u64),
    /// The first matching message stored at or after this time.
    Time(OffsetDateTime),
}

/// What the broker answered to one batch request.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Matching messages, in sequence order.
    pub(crate) messages: Vec<Delivered>,
}

impl Batch {
    /// Matching messages stored after the last one returned (0 for an
    /// empty batch: nothing matches from the start).
    pub(crate) fn pending(&self) -> u64 {
        self.messages.last().map_or(0, |m| m.pending)
    }
}

/// Why a batch failed, as the broker put it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DirectError {
    /// The broker answered with a status other than data or end of batch.
    #[error("direct get answered {code}: {description}")]
    Status { code: u16, description: String },
    /// A message lacked a header every batched answer carries: the broker
    /// predates batched direct gets (nats-server < 2.11).
    #[error("direct get answer without `{0}` (nats-server older than 2.11?)")]
    Unsupported(&'static str),
    /// A header did not parse.
    #[error("direct get answer with a malformed `{0}` header")]
    Malformed(&'static str),
}

#[derive(Serialize)]
struct Request<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<String>,
    next_by_subj: &'a str,
    batch: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    up_to_seq: Option<u64>,
}

impl Station {
    /// Up to `batch` messages matching `subject` (one filter, wildcards
    /// allowed) from `from` and up to sequence `up_to` (if given), and at
    /// most about `max_bytes` of them (always at least one), in one request
    /// on the connection reserved for reads.
    pub(crate) async fn batch_get(
        &self,
        subject: &str,
        from: From,
        batch: usize,
        max_bytes: Option<usize>,
        up_to: Option<u64>,
    ) -> Result<Batch> {
        let op = || format!("read `{subject}` from station `{}`", self.name());
        self.broker().ensure_connected(op())?;
        let (seq, start_time) = match from {
            From::Sequence(sequence) => (Some(sequence.max(1)), None),
            From::Time(time) => (
                None,
                Some(
                    time.format(&Rfc3339)
                        .map_err(|e| Error::broker(op(), ErrorKind::InvalidInput, e))?,
                ),
            ),
        };
        let request = Request {
            seq,
            start_time,
            next_by_subj: subject,
            batch: batch.max(1),
            max_bytes,
            up_to_seq: up_to,
        };
        let payload = serde_json::to_vec(&request)
            .map_err(|e| Error::broker(op(), ErrorKind::InvalidInput, e))?;
        let client = self.broker().reader().0;
        let inbox = client.new_inbox();
        let mut answers = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| Error::broker(op(), ErrorKind::Unavailable, e))?;
        client
            .publish_with_reply(
                format!("{API_PREFIX}.DIRECT.GET.{}", self.name()),
                inbox,
                payload.into(),
            )
            .await
            .map_err(|e| Error::broker(op(), ErrorKind::Unavailable, e))?;
        let timeout = self.broker().request_timeout();
        let mut messages = Vec::with_capacity(batch.min(1024));
        loop {
            let answer = match tokio::time::timeout(timeout, answers.next()).await {
                Ok(Some(answer)) => answer,
                Ok(None) => return Err(Error::unavailable(op())),
                Err(elapsed) => return Err(Error::broker(op(), ErrorKind::Timeout, elapsed)),
            };
            match answer.status.map(|s| s.as_u16()) {
                None | Some(200) => {}
                // End of batch.
                Some(204) => break,
                // Nothing matches from the start.
                Some(404) if messages.is_empty() => break,
                // Nobody answers for the station: it is gone (then say so,
                // as every other read does) or JetStream is unavailable.
                Some(503) => {
                    self.state().await?;
                    return Err(Error::unavailable(op()));
                }
                Some(_) => {
                    let status = answer.status.unwrap_or(StatusCode::NO_RESPONDERS);
                    let kind = match status.as_u16() {
                        404 => ErrorKind::NotFound,
                        408 => ErrorKind::Timeout,
                        403 => ErrorKind::PermissionDenied,
                        503 => ErrorKind::Unavailable,
                        400 | 413 => ErrorKind::InvalidInput,
                        _ => ErrorKind::Other,
                    };
                    let source = DirectError::Status {
                        code: status.as_u16(),
                        description: answer.description.unwrap_or_default(),
                    };
                    return Err(Error::broker(op(), kind, source));
                }
            }
            let headers = answer.headers.unwrap_or_default();
            let message = delivered(headers, answer.payload)
                .map_err(|e| Error::broker(op(), ErrorKind::Other, e))?;
            let last = message.pending == 0;
            messages.push(message);
            if last || messages.len() >= batch {
                // The end-of-batch marker may still come; unsubscribing
                // (dropping the subscriber) discards it.
                break;
            }
        }
        Ok(Batch { messages })
    }

    /// The first message matching `subject` with sequence ≥ `from`, asked of
    /// the stream's leader (`STREAM.MSG.GET`, which only the leader answers).
    async fn leader_next(&self, subject: &str, from: u64) -> Result<Option<Delivered>> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        let op = || format!("read `{subject}` from station `{}`", self.name());
        let stream = self.reader_stream_handle().await?;
        match stream
            .get_first_raw_message_by_subject(subject, from.max(1))
            .await
        {
            Ok(message) => Ok(Some(Delivered::from_raw(message))),
            Err(e) => match e.kind() {
                RawMessageErrorKind::NoMessageFound => Ok(None),
                RawMessageErrorKind::JetStream(api) if api.code() == 404 => Ok(None),
                RawMessageErrorKind::InvalidSubject => {
                    Err(Error::broker(op(), ErrorKind::InvalidInput, e))
                }
                _ => Err(Error::broker(op(), ErrorKind::Unavailable, e)),
            },
        }
    }

    /// Number of messages matching `subject` with sequence ≥ `from`: one
    /// single-message batch, whose pending count the broker computes.
    pub(crate) async fn batch_count_from(&self, subject: &str, from: u64) -> Result<u64> {
        let batch = self
            .batch_get(subject, From::Sequence(from), 1, None, None)
            .await?;
        Ok(match batch.messages.first() {
            Some(first) => first.pending + 1,
            None => 0,
        })
    }
}

/// Messages asked for per batch of a read that is not paced.
pub(crate) const READ_BATCH: usize = 512;
/// Bytes asked for per batch at most (the broker stops a batch there).
const BATCH_BYTES: usize = 1 << 20;

/// A history read by batched direct gets over one or more subjects: each
/// subject is read batch by batch and their messages are merged in sequence
/// order. A paced read asks for a subject's next batch only once the last
/// was taken; otherwise the next one is on its way while the last is taken
/// (one request's round trip less per batch; two batches held at most).
pub(crate) struct Direct {
    station: Station,
    cursors: Vec<Cursor>,
    batch: usize,
    ahead: bool,
    /// Whether a push consumer may take over (see [`Direct::between_batches`]):
    /// for a read that asks ahead, a fast one.
    movable: bool,
}

struct Cursor {
    subject: String,
    next: From,
    buffer: std::collections::VecDeque<Delivered>,
    /// Matching messages after the buffered ones (as of the last batch).
    pending_after: u64,
    /// Whether the broker has nothing more for this subject.
    exhausted: bool,
    /// The next batch, asked for ahead of need.
    next_batch: Option<tokio::task::JoinHandle<Result<Batch>>>,
    /// The read ends at this sequence.
    up_to: Option<u64>,
}

impl Drop for Cursor {
    fn drop(&mut self) {
        if let Some(next) = self.next_batch.take() {
            next.abort();
        }
    }
}

impl Cursor {
    fn remaining(&self) -> u64 {
        self.buffer.len() as u64 + self.pending_after
    }

    async fn fill(&mut self, station: &Station, batch: usize, ahead: bool) -> Result<()> {
        if !self.buffer.is_empty() || self.exhausted {
            return Ok(());
        }
        let got = match self.next_batch.take() {
            Some(next) => next.await.map_err(|e| {
                Error::broker(
                    format!("read `{}` from station `{}`", self.subject, station.name()),
                    ErrorKind::Other,
                    e,
                )
            })??,
            None => {
                station
                    .batch_get(
                        &self.subject,
                        self.next,
                        batch,
                        Some(BATCH_BYTES),
                        self.up_to,
                    )
                    .await?
            }
        };
        self.pending_after = got.pending();
        match got.messages.last() {
            Some(last) => {
                self.next = From::Sequence(last.sequence.saturating_add(1));
                self.exhausted = self.pending_after == 0;
            }
            None => self.exhausted = true,
        }
        self.buffer.extend(got.messages);
        // Any replica of a replicated station answers direct gets, and a
        // follower may not have applied the newest messages yet: before
        // calling the subject read, ask the leader whether anything follows.
        // (A read from a time that found nothing yet is left as it is: the
        // leader's get takes no time.)
        if self.exhausted
            && station.config().replicas > 1
            && let From::Sequence(from) = self.next
            && let Some(mut next) = station.leader_next(&self.subject, from).await?
            && self
                .buffer
                .back()
                .is_none_or(|last| next.sequence > last.sequence)
        {
            self.next = From::Sequence(next.sequence.saturating_add(1));
            next.pending = 1;
            self.pending_after = 1;
            self.exhausted = false;
            self.buffer.push_back(next);
        }
        if ahead && !self.exhausted {
            let (station, subject, from, up_to) =
                (station.clone(), self.subject.clone(), self.next, self.up_to);
            self.next_batch = Some(tokio::spawn(async move {
                station
                    .batch_get(&subject, from, batch, Some(BATCH_BYTES), up_to)
                    .await
            }));
        }
        Ok(())
    }
}

impl Direct {
    /// A read of `subjects` from `from`, `batch` messages per request.
    pub(crate) fn new<'a>(
        station: Station,
        subjects: impl IntoIterator<Item = &'a str>,
        from: From,
        batch: usize,
        ahead: bool,
        up_to: Option<u64>,
    ) -> Self {
        let cursors = subjects
            .into_iter()
            .map(|subject| Cursor {
                subject: subject.to_owned(),
                next: from,
                buffer: std::collections::VecDeque::new(),
                pending_after: 0,
                exhausted: false,
                next_batch: None,
                up_to,
            })
            .collect();
        Self {
            station,
            cursors,
            batch: batch.max(1),
            ahead,
            movable: ahead,
        }
    }

    /// Where a push consumer could take this read over: a fast read of one
    /// subject, to its end, whose last batch was just taken and which has
    /// more to come. The station, the subject and the next sequence.
    pub(crate) fn between_batches(&self) -> Option<(Station, String, u64)> {
        let [cursor] = self.cursors.as_slice() else {
            return None;
        };
        if !self.movable || !cursor.buffer.is_empty() || cursor.exhausted || cursor.up_to.is_some()
        {
            return None;
        }
        let From::Sequence(next) = cursor.next else {
            return None;
        };
        Some((self.station.clone(), cursor.subject.clone(), next))
    }

    /// Keeps this read on direct gets (a consumer for it could not be made).
    pub(crate) fn stay_direct(&mut self) {
        self.movable = false;
    }

    /// Asks for the next batch of every subject whose last one was taken;
    /// whether anything is left to read.
    pub(crate) async fn fill(&mut self) -> Result<bool> {
        let (batch, ahead) = (self.batch, self.ahead);
        // Subjects are few (a subscription's rooms): fill them one by one.
        for cursor in &mut self.cursors {
            cursor.fill(&self.station, batch, ahead).await?;
        }
        Ok(self.cursors.iter().any(|c| !c.buffer.is_empty()))
    }

    /// The next message in sequence order, its `pending` counting what is
    /// left over all subjects; `None` once every subject is read.
    pub(crate) async fn next(&mut self) -> Result<Option<Delivered>> {
        self.fill().await?;
        let first = self
            .cursors
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.buffer.front().map(|m| (m.sequence, i)))
            .min();
        let Some((_, index)) = first else {
            return Ok(None);
        };
        let Some(mut message) = self.cursors[index].buffer.pop_front() else {
            return Ok(None);
        };
        message.pending = self.cursors.iter().map(Cursor::remaining).sum();
        Ok(Some(message))
    }
}

/// A data answer as a [`Delivered`]: the stored headers with the broker's
/// `Nats-*` ones describing it.
fn delivered(
    headers: HeaderMap,
    payload: bytes::Bytes,
) -> std::result::Result<Delivered, DirectError> {
    let text = |name: &'static str| {
        headers
            .get(name)
            .map(|v| v.as_str().to_owned())
            .ok_or(DirectError::Unsupported(name))
    };
    let number = |name: &'static str| {
        text(name)?
            .parse::<u64>()
            .map_err(|_| DirectError::Malformed(name))
    };
    let pending = number("Nats-Num-Pending")?;
    let sequence = number("Nats-Sequence")?;
    let subject = text("Nats-Subject")?;
    let published = OffsetDateTime::parse(&text("Nats-Time-Stamp")?, &Rfc3339)
        .map_err(|_| DirectError::Malformed("Nats-Time-Stamp"))?;
    Ok(Delivered {
        sequence,
        subject,
        headers,
        payload,
        published,
        pending,
    })
}

/// Whether a `major.minor.patch[-suffix]` version is at least `major.minor`.
pub(crate) fn version_at_least(version: &str, major: u64, minor: u64) -> bool {
    let mut parts = version
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let have = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    have >= (major, minor)
}

#[cfg(test)]
mod tests {
    use super::version_at_least;

    #[test]
    fn versions_compare_by_major_and_minor() {
        assert!(version_at_least("2.11.0", 2, 11));
        assert!(version_at_least("2.15.1", 2, 11));
        assert!(version_at_least("3.0.0-beta.1", 2, 11));
        assert!(!version_at_least("2.10.24", 2, 11));
        assert!(!version_at_least("2.9.25", 2, 11));
        assert!(!version_at_least("", 2, 11));
    }
}
