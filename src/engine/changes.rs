//! Changes pages (issue 13, item 4): one watcher per instance tells the open
//! pages that something they show has changed.
//!
//! - **Watcher.** A task started with the engine reads the database's
//!   [`Watermark`] every [`EngineConfig::live_interval`] (300 ms by default;
//!   a few index lookups) and, when it moved, publishes a [`Change`] naming
//!   the [`Topic`]s that moved. The database is the source, not in-process
//!   hooks, so a page served by one instance sees changes made through any
//!   other instance sharing the database.
//! - **Topics.** New audit records name what changed by their action
//!   (`deployment.start` → deployments, `gate.pass` → gates, …); the other
//!   parts of the watermark cover what changes without an audit record
//!   (task runs starting and ending, gate rounds, slot processes).
//! - **Subscribers.** `GET /events` (`web::events`) subscribes; each user
//!   may hold at most [`MAX_STREAMS_PER_USER`] at once. A subscription ends
//!   when the engine shuts down or [`Changes::close`] is called (the server
//!   is stopping), so an open page never holds up a graceful shutdown.
//!
//! [`EngineConfig::live_interval`]: super::EngineConfig::live_interval

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::engine::blocking;
use crate::storage::Db;
use crate::storage::changes::{self as store, Watermark};

/// What a page may show, as far as change notices go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Topic {
    /// Builds queued, started, ended.
    Builds,
    /// Releases created.
    Releases,
    /// Deployments requested, moving between states.
    Deployments,
    /// A deployment's task runs starting and ending.
    Tasks,
    /// Gate runs: started, each round, passed, failed, bypassed.
    Gates,
    /// Approvals opened, decided, timed out.
    Approvals,
    /// Slots: releases deployed or swapped, processes.
    Slots,
    /// Pipelines: definitions, stages, schedules.
    Pipelines,
}

impl Topic {
    /// Every topic.
    pub const ALL: [Topic; 8] = [
        Topic::Builds,
        Topic::Releases,
        Topic::Deployments,
        Topic::Tasks,
        Topic::Gates,
        Topic::Approvals,
        Topic::Slots,
        Topic::Pipelines,
    ];

    /// Its name in events and in the pages' `data-live` attributes.
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Builds => "builds",
            Topic::Releases => "releases",
            Topic::Deployments => "deployments",
            Topic::Tasks => "tasks",
            Topic::Gates => "gates",
            Topic::Approvals => "approvals",
            Topic::Slots => "slots",
            Topic::Pipelines => "pipelines",
        }
    }

    /// The topics an audit action touches: by its prefix (`build.queue` →
    /// builds); none for actions no live page shows (sign-ins, users,
    /// tokens, secrets, notifications); every topic for an unknown prefix.
    pub fn of_action(action: &str) -> &'static [Topic] {
        let prefix = action.split(['.', ':']).next().unwrap_or(action);
        match prefix {
            "build" => &[Topic::Builds],
            "release" => &[Topic::Releases],
            "deployment" => &[Topic::Deployments],
            "gate" => &[Topic::Gates],
            "approval" => &[Topic::Approvals],
            "slot" | "process" => &[Topic::Slots],
            "pipeline" | "stage" | "schedule" | "trigger" | "definition" => &[Topic::Pipelines],
            "auth" | "user" | "token" | "secret" | "notification" | "session" => &[],
            _ => &Topic::ALL,
        }
    }
}

/// A change: its number on this instance and what moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Counts up from 1 on each instance.
    pub seq: u64,
    pub topics: BTreeSet<Topic>,
}

/// Audit records read to name the topics of one change; past this many,
/// the change names every topic.
const AUDIT_BATCH: i64 = 500;

/// Open event streams one user may hold (one per open tab with live regions).
pub const MAX_STREAMS_PER_USER: usize = 16;

/// The topics that moved between two watermarks, given the actions of
/// the audit records between them (`None`: too many to read).
pub fn topics_between(
    before: &Watermark,
    after: &Watermark,
    actions: Option<&[String]>,
) -> BTreeSet<Topic> {
    let mut topics = BTreeSet::new();
    if after.audit != before.audit {
        match actions {
            Some(actions) => {
                for action in actions {
                    topics.extend(Topic::of_action(action).iter().copied());
                }
            }
            None => topics.extend(Topic::ALL),
        }
    }
    let mut moved = |changed: bool, topic: Topic| {
        if changed {
            topics.insert(topic);
        }
    };
    moved(after.builds != before.builds, Topic::Builds);
    moved(after.deployments != before.deployments, Topic::Deployments);
    moved(
        after.tasks_started != before.tasks_started
            || after.tasks_finished != before.tasks_finished,
        Topic::Tasks,
    );
    moved(
        after.gate_samples != before.gate_samples || after.gate_runs != before.gate_runs,
        Topic::Gates,
    );
    moved(
        after.approval_decisions != before.approval_decisions,
        Topic::Approvals,
    );
    moved(after.slots != before.slots, Topic::Slots);
    topics
}

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error(
        "{user} has {MAX_STREAMS_PER_USER} live pages open already; close some (each tab with a live page holds one)."
    )]
    TooMany { user: String },
    #[error("the server is stopping")]
    Closed,
}

/// The live hub: the watcher's channel and its subscribers.
#[derive(Clone)]
pub struct Changes {
    inner: Arc<ChangesInner>,
}

struct ChangesInner {
    sender: broadcast::Sender<Change>,
    /// Cancelled when the engine shuts down or [`Changes::close`] is called.
    closed: CancellationToken,
    /// Open subscriptions per user.
    streams: Mutex<HashMap<String, usize>>,
    /// When the watcher last published a change.
    last_change: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes")
            .field("subscribers", &self.inner.sender.receiver_count())
            .finish_non_exhaustive()
    }
}

impl Changes {
    /// A hub closed with `shutdown` (the engine's).
    pub fn new(shutdown: &CancellationToken) -> Changes {
        let (sender, _) = broadcast::channel(64);
        Changes {
            inner: Arc::new(ChangesInner {
                sender,
                closed: shutdown.child_token(),
                streams: Mutex::new(HashMap::new()),
                last_change: Mutex::new(None),
            }),
        }
    }

    /// Starts the watcher on `tracker`; it stops with `shutdown`.
    pub fn start(
        &self,
        db: Db,
        interval: Duration,
        shutdown: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) {
        let live = self.clone();
        tracker.spawn(async move { live.watch(db, interval, shutdown).await });
    }

    async fn watch(self, db: Db, interval: Duration, shutdown: CancellationToken) {
        let mut last: Option<Watermark> = None;
        let mut seq = 0_u64;
        let mut failing = false;
        loop {
            let prev = last;
            let read = blocking(&db, move |conn| {
                let now = store::watermark(conn)?;
                let actions = match prev {
                    Some(p) if now.audit > p.audit => {
                        let actions = store::audit_actions_after(conn, p.audit, AUDIT_BATCH)?;
                        let all = now.audit - p.audit <= AUDIT_BATCH;
                        all.then_some(actions)
                    }
                    _ => Some(Vec::new()),
                };
                Ok((now, actions))
            })
            .await;
            match read {
                Ok((now, actions)) => {
                    if failing {
                        tracing::info!("the live pages' watcher reads the database again");
                        failing = false;
                    }
                    if let Some(p) = prev
                        && p != now
                    {
                        let topics = topics_between(&p, &now, actions.as_deref());
                        if !topics.is_empty() {
                            seq += 1;
                            *lock(&self.inner.last_change) = Some(Instant::now());
                            // Nobody listening is not an error.
                            let _ = self.inner.sender.send(Change { seq, topics });
                        }
                    }
                    last = Some(now);
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "the live pages' watcher cannot read the database");
                        failing = true;
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.inner.closed.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// A subscription for `user`'s stream, at most [`MAX_STREAMS_PER_USER`]
    /// each.
    pub fn subscribe(&self, user: &str) -> Result<Subscription, SubscribeError> {
        if self.inner.closed.is_cancelled() {
            return Err(SubscribeError::Closed);
        }
        {
            let mut streams = lock(&self.inner.streams);
            let open = streams.entry(user.to_string()).or_insert(0);
            if *open >= MAX_STREAMS_PER_USER {
                return Err(SubscribeError::TooMany {
                    user: user.to_string(),
                });
            }
            *open += 1;
        }
        Ok(Subscription {
            receiver: self.inner.sender.subscribe(),
            closed: self.inner.closed.clone(),
            permit: Permit {
                live: self.clone(),
                user: user.to_string(),
            },
        })
    }

    /// Ends every subscription and refuses new ones (the server is stopping).
    pub fn close(&self) {
        self.inner.closed.cancel();
    }

    /// Open subscriptions, over every user.
    pub fn subscribers(&self) -> usize {
        lock(&self.inner.streams).values().sum()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Gives a user's stream back when dropped.
struct Permit {
    live: Changes,
    user: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut streams = lock(&self.live.inner.streams);
        if let Some(open) = streams.get_mut(&self.user) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                streams.remove(&self.user);
            }
        }
    }
}

/// What a subscriber receives next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Something changed.
    Change(Change),
    /// The subscriber fell behind and missed changes: treat every topic as changed.
    Missed,
    /// The hub is closed: end the stream.
    Closed,
}

/// One subscriber's end of the hub.
pub struct Subscription {
    receiver: broadcast::Receiver<Change>,
    closed: CancellationToken,
    permit: Permit,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("user", &self.permit.user)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Waits for the next change, or the hub closing.
    pub async fn next(&mut self) -> Next {
        tokio::select! {
            biased;
            () = self.closed.cancelled() => Next::Closed,
            received = self.receiver.recv() => match received {
                Ok(change) => Next::Change(change),
                Err(broadcast::error::RecvError::Lagged(_)) => Next::Missed,
                Err(broadcast::error::RecvError::Closed) => Next::Closed,
            },
        }
    }

    /// Whether the hub is closed.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// How long ago the last change was published (`None`: none since
    /// the start). A page served before that may have missed it.
    pub fn since_last_change(&self) -> Option<Duration> {
        lock(&self.permit.live.inner.last_change).map(|at| at.elapsed())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn audit_actions_name_their_topics() {
        assert_eq!(Topic::of_action("deployment.start"), &[Topic::Deployments]);
        assert_eq!(Topic::of_action("gate.pass"), &[Topic::Gates]);
        assert_eq!(Topic::of_action("slot.swap.cancel"), &[Topic::Slots]);
        assert!(Topic::of_action("auth.sign_in").is_empty());
        assert_eq!(Topic::of_action("something.new").len(), Topic::ALL.len());
    }

    #[test]
    fn the_watermark_parts_name_what_moved() {
        let before = Watermark::default();
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0)
            .unwrap()
            .naive_utc();
        let after = Watermark {
            audit: 3,
            tasks_finished: Some(at),
            ..before
        };
        let actions = vec!["build.queue".to_string(), "auth.sign_in".to_string()];
        assert_eq!(
            topics_between(&before, &after, Some(&actions)),
            BTreeSet::from([Topic::Builds, Topic::Tasks])
        );
        assert_eq!(
            topics_between(&before, &after, None).len(),
            Topic::ALL.len()
        );
        assert!(topics_between(&after, &after, Some(&[])).is_empty());
    }

    #[tokio::test]
    async fn a_user_holds_a_bounded_number_of_streams_and_closing_ends_them() {
        let shutdown = CancellationToken::new();
        let live = Changes::new(&shutdown);
        let mut held: Vec<Subscription> = (0..MAX_STREAMS_PER_USER)
            .map(|_| live.subscribe("ada").unwrap())
            .collect();
        assert!(matches!(
            live.subscribe("ada"),
            Err(SubscribeError::TooMany { .. })
        ));
        assert!(live.subscribe("bob").is_ok(), "another user is not limited");
        held.pop();
        assert!(
            live.subscribe("ada").is_ok(),
            "a closed stream is given back"
        );
        live.close();
        assert_eq!(held[0].next().await, Next::Closed);
        assert_eq!(live.subscribe("ada").unwrap_err(), SubscribeError::Closed);
        shutdown.cancel();
    }
}
