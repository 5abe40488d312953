//! Events published after every commit, and the [`EventBus`] trait with its in-memory
//! implementation, the only one so far. `wgm-store-sql`'s `SqlStore::subscribe`
//! (PostgreSQL LISTEN/NOTIFY) is a separate change feed, not an [`EventBus`]; a bus
//! across processes comes with the Redis store and the per-host agent.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::channel::mpsc;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::model::{RevisionNo, ServerId};
use crate::Result;

/// "Server S is at revision n", with the kinds of change that got it there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The server.
    pub server_id: ServerId,
    /// Its new head revision.
    pub revision: RevisionNo,
    /// Change kinds in the revision (`peer_added`, `server_deleted`, ...).
    pub kinds: Vec<String>,
}

/// Publish/subscribe of [`Event`]s. Delivery is at-most-once and may drop events under
/// load: subscribers treat an event as a hint to reconcile and resync fully on
/// (re)connect, so nothing depends on every event arriving.
///
/// ```
/// # futures::executor::block_on(async {
/// use futures::StreamExt;
/// use wgm_core::manager::{Event, EventBus, MemoryEventBus};
/// use wgm_core::model::{RevisionNo, ServerId};
/// let bus = MemoryEventBus::new();
/// let mut sub = bus.subscribe().await.unwrap();
/// let e = Event { server_id: ServerId::new_random(), revision: RevisionNo(1), kinds: vec![] };
/// bus.publish(e.clone()).await.unwrap();
/// assert_eq!(sub.next().await, Some(e));
/// # });
/// ```
#[async_trait]
pub trait EventBus: Debug + Send + Sync + 'static {
    /// Publish an event to current subscribers.
    async fn publish(&self, event: Event) -> Result<()>;
    /// Subscribe to events published from now on.
    async fn subscribe(&self) -> Result<BoxStream<'static, Event>>;
}

#[async_trait]
impl<T: EventBus + ?Sized> EventBus for Arc<T> {
    async fn publish(&self, event: Event) -> Result<()> {
        (**self).publish(event).await
    }
    async fn subscribe(&self) -> Result<BoxStream<'static, Event>> {
        (**self).subscribe().await
    }
}

/// An in-process [`EventBus`]: every subscriber gets its own unbounded queue; closed
/// subscribers are dropped on the next publish.
#[derive(Debug, Default)]
pub struct MemoryEventBus {
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Event>>>,
}

impl MemoryEventBus {
    /// A bus with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl EventBus for MemoryEventBus {
    async fn publish(&self, event: Event) -> Result<()> {
        let mut subs = self
            .subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        subs.retain(|s| s.unbounded_send(event.clone()).is_ok());
        Ok(())
    }

    async fn subscribe(&self) -> Result<BoxStream<'static, Event>> {
        let (tx, rx) = mpsc::unbounded();
        self.subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(tx);
        Ok(rx.boxed())
    }
}
