//! Following commits: the [`ChangeFeed`] every store has, and [`Follower`], which turns
//! its wake-ups into an exact, ordered, resumable sequence of a server's revisions.
//!
//! The two halves split the work the way a log-backed feed must:
//!
//! - A store's [`ChangeFeed::watch`] says **that** something changed: "server S reached
//!   revision n" ([`FeedEvent::Committed`]), cheaply and soon after the commit, or "I may
//!   have missed commits" ([`FeedEvent::Missed`]: a cut connection, a stream that fell
//!   behind). Wake-ups may be coalesced (one event for several commits) and may repeat;
//!   per server the revisions reported never go down. PostgreSQL wakes on `NOTIFY`, SQLite
//!   polls the head revisions at a bounded interval, the memory store is told by its own
//!   commits.
//! - The revision log ([`ServerStore::revisions`](super::ServerStore::revisions)) is the
//!   truth. A [`Follower`] of one server reads the log from its cursor whenever the feed
//!   wakes it (or says it missed something), so a lost wake-up costs latency, never a
//!   revision: it yields every revision after the one it started from, in order, each once
//!   per follower (at least once across restarts: a follower resumed from the last revision
//!   its caller finished sees the rest).
//!
//! ```
//! # futures::executor::block_on(async {
//! use std::sync::Arc;
//! use wgm_core::store::{Follower, MemoryStore, Store};
//! use wgm_core::model::{RevisionNo, ServerId};
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let server = ServerId::new_random();
//! let mut follower = Follower::start(store, server, RevisionNo::NONE).await.unwrap();
//! assert_eq!(follower.cursor(), RevisionNo::NONE);
//! // Nothing committed yet: `try_next` finds nothing without waiting.
//! assert!(follower.try_next().await.unwrap().is_none());
//! # });
//! ```

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::model::{RevisionNo, RevisionRecord, ServerId};
use crate::store::Store;
use crate::Result;

/// What a [`ChangeFeed`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FeedEvent {
    /// Server `server` is at revision `revision` or later (commits may be coalesced
    /// into one event; per server, reported revisions never go down).
    Committed {
        /// The server.
        server: ServerId,
        /// Its head revision when the feed looked (at least the commit's).
        revision: RevisionNo,
    },
    /// The feed may have missed commits (its connection was cut and is back, or it fell
    /// behind): whoever follows re-reads the heads of what it follows.
    Missed,
}

/// A store's change feed: wake-ups after commits, from any process that writes the store.
///
/// The contract: after a commit of revision n of server S, a watcher eventually gets
/// [`FeedEvent::Committed`] for S at n or later, or [`FeedEvent::Missed`]; events may be
/// coalesced and repeated, and per server the revisions reported never go down. The
/// revision log ([`ServerStore::revisions`](super::ServerStore::revisions)) stays the
/// truth: [`Follower`] builds the exact sequence of revisions on the wake-ups, and
/// `wgm_core::conformance::feed` checks an implementation.
///
/// ```
/// # futures::executor::block_on(async {
/// use futures::StreamExt;
/// use wgm_core::store::{ChangeFeed, FeedEvent, MemoryStore};
/// let store = MemoryStore::new();
/// let mut events = store.watch().await.unwrap();
/// store.disrupt_feeds(); // as if the feed's connection had been cut
/// assert_eq!(events.next().await, Some(FeedEvent::Missed));
/// # });
/// ```
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// Wake-ups for commits made from now on, to every server. An implementation that
    /// loses its connection reconnects by itself (with backoff) and then reports
    /// [`FeedEvent::Missed`]; the stream ends only when the store is closed.
    ///
    /// # Errors
    ///
    /// The store cannot start the feed (connection refused): `Unavailable`-class
    /// [`crate::Error::Store`].
    async fn watch(&self) -> Result<BoxStream<'static, FeedEvent>>;
}

#[async_trait]
impl<T: ChangeFeed + ?Sized> ChangeFeed for Arc<T> {
    async fn watch(&self) -> Result<BoxStream<'static, FeedEvent>> {
        (**self).watch().await
    }
}

/// How many revisions a [`Follower`] reads from the log at once.
const BATCH: u64 = 256;

/// Every revision of one server after a starting point, in order, from the log, woken
/// by the store's [`ChangeFeed`]: whenever it is woken (or told that wake-ups were
/// missed) it reads the log from its cursor, so a lost wake-up costs latency, never a
/// revision. Each revision is yielded once per follower; a follower started again from
/// the last revision its caller finished sees the rest (at least once across restarts).
pub struct Follower {
    store: Arc<dyn Store>,
    events: BoxStream<'static, FeedEvent>,
    server: ServerId,
    cursor: RevisionNo,
    ready: VecDeque<RevisionRecord>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("store", &self.store.name())
            .field("server", &self.server)
            .field("cursor", &self.cursor)
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}

impl Follower {
    /// Follow `server` from the revision after `after` ([`RevisionNo::NONE`]: from the
    /// first). The feed is watched before the log is read, so nothing committed in
    /// between is missed.
    ///
    /// # Errors
    ///
    /// The store cannot start its feed.
    pub async fn start(
        store: Arc<dyn Store>,
        server: ServerId,
        after: RevisionNo,
    ) -> Result<Follower> {
        let events = store.watch().await?;
        Ok(Follower {
            store,
            events,
            server,
            cursor: after,
            ready: VecDeque::new(),
        })
    }

    /// The last revision yielded (or the starting point).
    pub fn cursor(&self) -> RevisionNo {
        self.cursor
    }

    /// The next revision if the log has one now, without waiting for the feed.
    ///
    /// # Errors
    ///
    /// The store's read failed; the cursor has not moved, so calling again retries.
    pub async fn try_next(&mut self) -> Result<Option<RevisionRecord>> {
        if self.ready.is_empty() {
            let batch = self
                .store
                .revisions(self.server, self.cursor, BATCH)
                .await?;
            // Only what continues the cursor: the log is ordered, but be strict.
            let mut expect = self.cursor.0;
            for rec in batch {
                if rec.revision.0 <= expect {
                    continue;
                }
                expect = rec.revision.0;
                self.ready.push_back(rec);
            }
        }
        let next = self.ready.pop_front();
        if let Some(rec) = &next {
            self.cursor = rec.revision;
        }
        Ok(next)
    }

    /// The next revision, waiting for the feed when the log has none yet. `Ok(None)`
    /// when the feed ended (the store was closed).
    ///
    /// # Errors
    ///
    /// The store's read failed; the cursor has not moved, so calling again retries.
    pub async fn next(&mut self) -> Result<Option<RevisionRecord>> {
        loop {
            if let Some(rec) = self.try_next().await? {
                return Ok(Some(rec));
            }
            // Wait for a wake-up that may concern this server.
            loop {
                match self.events.next().await {
                    None => return Ok(None),
                    Some(FeedEvent::Missed) => break,
                    Some(FeedEvent::Committed { server, revision })
                        if server == self.server && revision > self.cursor =>
                    {
                        break
                    }
                    Some(FeedEvent::Committed { .. }) => {}
                }
            }
        }
    }
}
