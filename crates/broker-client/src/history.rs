//! Counting and paging over a station's history without scanning it:
//! the broker counts (per-subject totals, a batched direct get's pending
//! count, or a scratch consumer's on brokers without batched gets) and at
//! most a few times the asked-for messages are read.

use std::collections::{HashMap, VecDeque};

use async_nats::jetstream::{consumer::DeliverPolicy, response::Response};
use serde::{Deserialize, Serialize};

use crate::{Delivered, Error, Result, Station, StationState, Subjects};

/// A `STREAM.INFO` request for one page of per-subject counts.
#[derive(Serialize)]
struct InfoRequest<'a> {
    offset: usize,
    subjects_filter: &'a str,
}

/// What [`Station::state_and_count`] reads of a `STREAM.INFO` answer.
#[derive(Deserialize)]
struct InfoPage {
    state: InfoState,
    /// Subjects matching the filter in all (the answer is paged).
    #[serde(default)]
    total: usize,
}

#[derive(Deserialize)]
struct InfoState {
    messages: u64,
    first_seq: u64,
    last_seq: u64,
    #[serde(default)]
    subjects: Option<HashMap<String, u64>>,
}

impl Station {
    /// Number of messages matching `filter` with sequence ≥ `from`.
    ///
    /// # Errors
    /// Transient errors when the broker is unreachable.
    pub async fn count_from(&self, filter: impl Into<Subjects>, from: u64) -> Result<u64> {
        let filter = filter.into();
        if self.broker().batch_reads() {
            // The filters do not overlap (see `Subjects`): counts add up.
            let mut total = 0;
            for subject in filter.iter() {
                total += self.batch_count_from(subject, from).await?;
            }
            return Ok(total);
        }
        let scratch = self
            .scratch(
                &filter,
                DeliverPolicy::ByStartSequence {
                    start_sequence: from.max(1),
                },
            )
            .await?;
        // Dropping the scratch consumer deletes it, off our path.
        Ok(scratch.pending())
    }

    /// The station's state and the number of its messages matching
    /// `filter`, from the broker's per-subject counts (no scan): one
    /// `STREAM.INFO` request per filter (more only for a wildcard matching
    /// more subjects than a page holds), the first of which also gives the
    /// state.
    ///
    /// Asked directly rather than with async-nats's `info_with_subjects`,
    /// which asks once more for a second page after any non-empty first one
    /// (it ignores the first page's total), and after a separate request for
    /// the state: four requests where one does, on every history page.
    async fn state_and_count(&self, filter: &Subjects) -> Result<(StationState, u64)> {
        let op = || format!("count messages of `{filter}` in station `{}`", self.name());
        self.broker().ensure_connected(op())?;
        let subject = format!("STREAM.INFO.{}", self.name());
        let mut state = None;
        let mut total = 0u64;
        // The filters do not overlap (see `Subjects`): their counts add up.
        for subjects_filter in filter.iter() {
            let mut offset = 0;
            loop {
                let response: Response<InfoPage> = self
                    .broker()
                    .js()
                    .request(
                        subject.clone(),
                        &InfoRequest {
                            offset,
                            subjects_filter,
                        },
                    )
                    .await
                    .map_err(|e| Error::nats(op(), e))?;
                let page = match response {
                    Response::Ok(page) => page,
                    Response::Err { error } => return Err(Error::nats(op(), error)),
                };
                state.get_or_insert(StationState {
                    first_sequence: page.state.first_seq,
                    last_sequence: page.state.last_seq,
                    messages: page.state.messages,
                });
                let subjects = page.state.subjects.unwrap_or_default();
                offset += subjects.len();
                total += subjects.values().sum::<u64>();
                if subjects.is_empty() || offset >= page.total {
                    break;
                }
            }
        }
        match state {
            Some(state) => Ok((state, total)),
            // A filter has at least one subject (see `Subjects::any`).
            None => Ok((self.state().await?, 0)),
        }
    }

    /// The sequence of the `n`-th newest message matching `filter` among
    /// those with sequence < `before` (`None` = all), or `None` if fewer than
    /// `n` match (then "from the first" is the answer).
    ///
    /// Exact while messages keep arriving (see [`Station::last_messages`],
    /// which reads the same way but keeps the messages).
    ///
    /// # Errors
    /// Transient errors when the broker is unreachable.
    pub async fn nth_last_sequence(
        &self,
        filter: impl Into<Subjects>,
        n: u64,
        before: Option<u64>,
    ) -> Result<Option<u64>> {
        let found = self
            .newest(&filter.into(), n, before, true, |m| m.sequence)
            .await?;
        Ok(match found {
            Some(sequences) if sequences.len() as u64 >= n => sequences.first().copied(),
            _ => None,
        })
    }

    /// The newest `n` messages matching `filter` among those with
    /// sequence < `before` (`None` = all), oldest first: all of them if fewer
    /// than `n` match.
    ///
    /// Exact while messages keep arriving: only messages below a fixed end
    /// (`before`, or the newest stored when called) are read. The broker's
    /// per-subject counts give the filter's density, from which one window,
    /// read backwards from the end, usually holds the `n`; each further
    /// window is read only if the ones after it held fewer. Reads are
    /// batched direct gets (or consumers on older brokers), so the cost is a
    /// few requests and at most a few times `n` matching messages, of which
    /// `n` are kept.
    ///
    /// # Errors
    /// Transient errors when the broker is unreachable.
    pub async fn last_messages(
        &self,
        filter: impl Into<Subjects>,
        n: u64,
        before: Option<u64>,
    ) -> Result<Vec<Delivered>> {
        Ok(self
            .newest(&filter.into(), n, before, false, |m| m)
            .await?
            .unwrap_or_default())
    }

    /// What [`Station::last_messages`] reads, each message mapped by `keep`;
    /// `None` without reading when `none_if_fewer` and the station holds
    /// fewer than `n` matching messages.
    async fn newest<T>(
        &self,
        filter: &Subjects,
        n: u64,
        before: Option<u64>,
        none_if_fewer: bool,
        keep: impl Fn(Delivered) -> T,
    ) -> Result<Option<Vec<T>>> {
        if n == 0 {
            return Ok(Some(Vec::new()));
        }
        let (state, total) = self.state_and_count(filter).await?;
        let end = before
            .unwrap_or(state.last_sequence + 1)
            .min(state.last_sequence + 1);
        if end <= state.first_sequence || state.messages == 0 {
            return Ok(Some(Vec::new()));
        }
        if none_if_fewer && total < n {
            return Ok(None);
        }
        // Expected stream span holding n matches, with a margin.
        #[expect(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "an estimate: rounding and saturation only change the first window's size"
        )]
        let mut window =
            ((n as f64) * (state.messages as f64) / (total.max(1) as f64) * 1.25) as u64 + 16;
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        // The newest (at most n) matches found so far in [high, end), oldest first.
        let mut found: VecDeque<T> = VecDeque::new();
        let mut high = end;
        loop {
            let low = high.saturating_sub(window).max(state.first_sequence);
            // This window's matches, of which only the newest `room` can
            // matter (found holds fewer than n, or we would have returned).
            let room = n - found.len();
            let mut chunk = VecDeque::with_capacity(room.min(1024));
            // About this many matches are in the window (its share of the
            // station's, with a margin).
            #[expect(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "an estimate: it only sizes the batches"
            )]
            let expected = ((high - low) as f64 * total as f64 / state.messages.max(1) as f64
                * 1.25) as usize
                + 16;
            let mut read = self.read_window(filter, low, high, expected).await?;
            while let Some(message) = read.next().await? {
                if message.sequence >= high {
                    break;
                }
                if chunk.len() == room {
                    chunk.pop_front();
                }
                chunk.push_back(keep(message));
            }
            drop(read);
            chunk.extend(found);
            found = chunk;
            if found.len() >= n || low <= state.first_sequence {
                return Ok(Some(found.into()));
            }
            high = low;
            // Grow by what the shortfall suggests (at least double).
            window = window.saturating_mul((n / found.len().max(1)).clamp(2, 16) as u64);
        }
    }
}
