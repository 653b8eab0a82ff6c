//! The in-memory job queue: the embedded default. Publishing a job id it has
//! seen within the dedup window is a no-op (as JetStream's `Nats-Msg-Id`),
//! failed jobs come back after their delay, and a receiver waits without
//! polling. Every index is ordered (delayed jobs by when they are due), so
//! no call looks at more than it takes and none is rehashed whole; the
//! dedup ids older than the window go as new ones come, so its memory is
//! what one window publishes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::pop_expired;
use application::ports::{Delivery, JobQueue, QueueError};
use async_trait::async_trait;
use domain::StagedJob;
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<(StagedJob, u32)>,
    /// By when they are due (then a tag, for a total order).
    delayed: BTreeMap<(Instant, u64), (StagedJob, u32)>,
    in_flight: BTreeMap<u64, (StagedJob, u32)>,
    /// Job ids published within the dedup window, and when, oldest first.
    published: BTreeSet<i64>,
    published_order: VecDeque<(Instant, i64)>,
    next_tag: u64,
}

#[derive(Debug)]
pub struct MemoryQueue {
    state: Mutex<State>,
    notify: Notify,
    dedup_window: Duration,
}

impl Default for MemoryQueue {
    fn default() -> Self {
        Self::new(Duration::from_secs(15 * 60))
    }
}

impl MemoryQueue {
    pub fn new(dedup_window: Duration) -> Self {
        Self {
            state: Mutex::default(),
            notify: Notify::new(),
            dedup_window,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Jobs waiting or being worked, for tests.
    pub fn len(&self) -> usize {
        let state = self.state();
        state.ready.len() + state.delayed.len() + state.in_flight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pops a ready job, promoting delayed ones that are due; otherwise the
    /// instant the next delayed job becomes due.
    fn take(&self) -> Result<Delivery, Option<Instant>> {
        let mut state = self.state();
        let now = Instant::now();
        while let Some(entry) = state.delayed.first_entry()
            && entry.key().0 <= now
        {
            let due = entry.remove();
            state.ready.push_back(due);
        }
        match state.ready.pop_front() {
            Some((job, attempt)) => {
                state.next_tag += 1;
                let tag = state.next_tag;
                state.in_flight.insert(tag, (job.clone(), attempt));
                Ok(Delivery { job, tag, attempt })
            }
            None => Err(state.delayed.keys().next().map(|(at, _)| *at)),
        }
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn publish(&self, job: &StagedJob) -> Result<(), QueueError> {
        {
            let mut state = self.state();
            let now = Instant::now();
            let window = self.dedup_window;
            // Forget ids older than the window, oldest first: each publish
            // touches only what expired, however many were published.
            while let Some((_, id)) = pop_expired(&mut state.published_order, |(at, _)| {
                now.duration_since(*at) >= window
            }) {
                state.published.remove(&id);
            }
            if !state.published.insert(job.id) {
                return Ok(());
            }
            state.published_order.push_back((now, job.id));
            state.ready.push_back((job.clone(), 1));
        }
        self.notify.notify_one();
        Ok(())
    }

    async fn receive(&self, max_wait: Duration) -> Result<Option<Delivery>, QueueError> {
        let deadline = Instant::now() + max_wait;
        loop {
            let notified = self.notify.notified();
            let wake_at = match self.take() {
                Ok(delivery) => return Ok(Some(delivery)),
                Err(next_due) => next_due.map_or(deadline, |due| due.min(deadline)),
            };
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        self.state().in_flight.remove(&delivery.tag);
        Ok(())
    }

    /// The in-memory queue keeps no dead letters: a failing job is
    /// retried for as long as the process lives.
    async fn retry_later(&self, delivery: &Delivery, delay: Duration) -> Result<(), QueueError> {
        self.postpone(delivery, delay).await
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError> {
        self.state().in_flight.remove(&delivery.tag);
        tracing::warn!(
            job_id = delivery.job.id,
            reason,
            "the in-memory queue keeps no dead letters: the job is dropped"
        );
        Ok(())
    }

    async fn postpone(&self, delivery: &Delivery, delay: Duration) -> Result<(), QueueError> {
        let mut state = self.state();
        if let Some((job, attempt)) = state.in_flight.remove(&delivery.tag) {
            state
                .delayed
                .insert((Instant::now() + delay, delivery.tag), (job, attempt + 1));
        }
        Ok(())
    }
}
