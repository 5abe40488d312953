//! The change feed: a Redis Stream that the commit script appends to (`FEED` in
//! [`crate::scripts::APPLY`]), read by each watcher with `XREAD BLOCK` on a connection of
//! its own. Every entry carries a number (`n`, from an `INCR` in the same script), so a
//! watcher knows when it skipped entries: trimmed away while it lagged, or lost by a
//! Redis that restarted without them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};
use tokio::sync::watch;
use wgm_core::model::{RevisionNo, ServerId};
use wgm_core::store::FeedEvent;

use crate::conn::Redactor;
use crate::error::{RedisError, S};
use crate::keys::Keys;
use crate::scripts::Scripts;

/// How long one `XREAD` blocks on the server.
const BLOCK: Duration = Duration::from_secs(1);
/// Entries read at once.
const BATCH: usize = 256;
/// The first pause before reconnecting after a failure (the first attempt is at once).
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between reconnection attempts.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// What a feed needs to (re)connect.
#[derive(Clone)]
pub(crate) struct FeedSetup {
    pub(crate) client: Client,
    pub(crate) keys: Keys,
    pub(crate) scripts: Arc<Scripts>,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) client_name: String,
    pub(crate) redactor: Redactor,
    pub(crate) closed: Arc<AtomicBool>,
    pub(crate) closing: watch::Receiver<bool>,
}

impl FeedSetup {
    /// A connection of the feed's own, named [`FeedSetup::client_name`] (so that an
    /// operator, or a test, can find and kill it with `CLIENT LIST` / `CLIENT KILL`).
    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            // XREAD BLOCK waits on the server; each call has its own bound below.
            .set_response_timeout(None);
        let limit = self.connect_timeout + self.response_timeout;
        let attempt = async {
            let mut c = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(&self.client_name)
                .query_async::<()>(&mut c)
                .await?;
            Ok::<_, redis::RedisError>(c)
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(r) => r.map_err(|e| self.redactor.error(&e)),
            Err(_) => Err(RedisError::Timeout { waited: limit }),
        }
    }

    /// The feed's position: the id of its last entry and the number of the last entry.
    async fn position(&self, c: &mut MultiplexedConnection) -> Result<(String, u64), RedisError> {
        let mut inv = self.scripts.feed_position.prepare_invoke();
        inv.key(self.keys.feed()).key(self.keys.feed_seq());
        let limit = self.response_timeout;
        let (id, seq): (String, String) =
            match tokio::time::timeout(limit, inv.invoke_async(c)).await {
                Ok(r) => r.map_err(|e| self.redactor.error(&e))?,
                Err(_) => return Err(RedisError::Timeout { waited: limit }),
            };
        Ok((id, crate::error::number("feed sequence number", &seq)?))
    }

    /// Open a feed: connect and read the position to start from.
    pub(crate) async fn start(self) -> Result<Feed, RedisError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(RedisError::Closed);
        }
        let mut conn = self.connect().await?;
        let (last_id, last_seq) = self.position(&mut conn).await?;
        Ok(Feed {
            setup: self,
            conn: Some(conn),
            last_id,
            last_seq,
            pending: VecDeque::new(),
            reported: HashMap::new(),
            down: false,
        })
    }
}

/// One watcher's state.
pub(crate) struct Feed {
    setup: FeedSetup,
    conn: Option<MultiplexedConnection>,
    /// The id of the last entry read (`0-0`: from the start).
    last_id: String,
    /// The number of the last entry read.
    last_seq: u64,
    pending: VecDeque<FeedEvent>,
    /// The highest revision reported per server (reports never go down).
    reported: HashMap<ServerId, RevisionNo>,
    /// Whether the feed is reconnecting (logged once when it goes down, once when back).
    down: bool,
}

/// One parsed stream entry.
struct Entry {
    id: String,
    seq: u64,
    server: ServerId,
    revision: RevisionNo,
}

impl Feed {
    fn closed(&self) -> bool {
        self.setup.closed.load(Ordering::Acquire) || *self.setup.closing.borrow()
    }

    /// The next event; `None` once the store is closed.
    pub(crate) async fn next(&mut self) -> Option<FeedEvent> {
        let mut closing = self.setup.closing.clone();
        loop {
            if self.closed() {
                return None;
            }
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            let step = async {
                match self.conn.take() {
                    Some(c) => self.read(c).await,
                    None => self.reconnect().await,
                }
            };
            // The store closing ends the feed. A store dropped without being closed does
            // not: the sender is gone, `changed` fails, and the feed goes on with the
            // connection it has (as a PostgreSQL feed outlives its store).
            let close = async {
                if closing.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = step => {}
                () = close => return None,
            }
        }
    }

    /// Reconnect (with backoff), then report [`FeedEvent::Missed`] and check the position.
    async fn reconnect(&mut self) {
        let mut pause = Duration::ZERO;
        loop {
            if self.closed() {
                return;
            }
            tokio::time::sleep(pause).await;
            match self.setup.connect().await {
                Ok(mut c) => {
                    if self.down {
                        tracing::info!(store = S, "the change feed is connected again");
                        self.down = false;
                    }
                    self.pending.push_back(FeedEvent::Missed);
                    match self.setup.position(&mut c).await {
                        Ok((id, seq)) => {
                            if seq < self.last_seq {
                                // The stream went back (a Redis that lost writes): read on
                                // from where it is now.
                                tracing::warn!(
                                    store = S,
                                    was = self.last_seq,
                                    now = seq,
                                    "the change feed went backwards: Redis lost acknowledged writes"
                                );
                                self.last_id = id;
                                self.last_seq = seq;
                            }
                            self.conn = Some(c);
                        }
                        Err(e) => {
                            tracing::debug!(store = S, error = %e, "the change feed cannot read its position");
                        }
                    }
                    return;
                }
                Err(e) => {
                    tracing::debug!(store = S, error = %e, "the change feed cannot reconnect yet");
                }
            }
            pause = if pause.is_zero() {
                FIRST_PAUSE
            } else {
                (pause * 2).min(MAX_PAUSE)
            };
        }
    }

    fn went_down(&mut self, e: &RedisError) {
        if !self.down {
            tracing::warn!(store = S, error = %e, "the change feed lost its connection; reconnecting");
            self.down = true;
        }
    }

    /// One `XREAD BLOCK` from the last entry read; on failure, drop the connection.
    async fn read(&mut self, mut c: MultiplexedConnection) {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(self.setup.keys.feed())
            .arg(&self.last_id);
        let limit = BLOCK + self.setup.response_timeout;
        let reply = match tokio::time::timeout(limit, cmd.query_async::<Value>(&mut c)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                let e = self.setup.redactor.error(&e);
                self.went_down(&e);
                return;
            }
            Err(_) => {
                self.went_down(&RedisError::Timeout { waited: limit });
                return;
            }
        };
        let entries = match parse_xread(&reply) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(store = S, error = %e, "the change feed read an entry it cannot parse");
                self.pending.push_back(FeedEvent::Missed);
                self.resync(&mut c).await;
                self.conn = Some(c);
                return;
            }
        };
        if entries.is_empty() {
            // Nothing new for a while: check that the stream did not go back (a restarted
            // Redis that lost the tail would leave this reader blocked behind its end).
            self.resync(&mut c).await;
            self.conn = Some(c);
            return;
        }
        let mut gap = false;
        for e in entries {
            if e.seq != self.last_seq.saturating_add(1) {
                gap = true;
            }
            self.last_seq = e.seq;
            self.last_id = e.id;
            let seen = self.reported.entry(e.server).or_insert(RevisionNo::NONE);
            if e.revision > *seen {
                *seen = e.revision;
                self.pending.push_back(FeedEvent::Committed {
                    server: e.server,
                    revision: e.revision,
                });
            } else if e.revision < *seen {
                gap = true;
            }
        }
        if gap {
            self.pending.push_front(FeedEvent::Missed);
        }
        self.conn = Some(c);
    }

    /// After an idle read: when the stream's last number is not the last one read, entries
    /// were lost or the stream was replaced; report the gap and go on from where it is.
    async fn resync(&mut self, c: &mut MultiplexedConnection) {
        match self.setup.position(c).await {
            Ok((id, seq))
                if seq < self.last_seq
                    || (seq > self.last_seq && stream_id(&id) <= stream_id(&self.last_id)) =>
            {
                tracing::warn!(
                    store = S,
                    was = self.last_seq,
                    now = seq,
                    "the change feed's stream moved behind the reader; reporting a gap"
                );
                self.pending.push_back(FeedEvent::Missed);
                self.last_id = id;
                self.last_seq = seq;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(store = S, error = %e, "the change feed cannot read its position");
            }
        }
    }
}

/// A stream entry id `MS-SEQ` as numbers, for ordering (an unparsable one sorts first).
fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The entries of an `XREAD` reply on one stream (`Nil` when the block timed out).
fn parse_xread(v: &Value) -> Result<Vec<Entry>, RedisError> {
    let bad = || RedisError::BadValue {
        what: "change feed entry",
    };
    let streams: Vec<&Value> = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(a) => a.iter().collect(),
        Value::Map(m) => m.iter().map(|(_, v)| v).collect(),
        _ => return Err(bad()),
    };
    let mut out = Vec::new();
    for s in streams {
        // RESP2: [name, entries]; RESP3 map values are the entries themselves.
        let entries = match s {
            Value::Array(pair) if pair.len() == 2 && text(&pair[0]).is_some() => &pair[1],
            other => other,
        };
        let Value::Array(entries) = entries else {
            return Err(bad());
        };
        for e in entries {
            let Value::Array(parts) = e else {
                return Err(bad());
            };
            let (Some(id), Some(Value::Array(fields))) =
                (parts.first().and_then(text), parts.get(1))
            else {
                return Err(bad());
            };
            let mut server = None;
            let mut revision = None;
            let mut seq = None;
            for kv in fields.chunks(2) {
                let [k, v] = kv else { return Err(bad()) };
                match (text(k).as_deref(), text(v)) {
                    (Some("s"), Some(v)) => server = v.parse::<ServerId>().ok(),
                    (Some("r"), Some(v)) => revision = v.parse::<u64>().ok().map(RevisionNo),
                    (Some("n"), Some(v)) => seq = v.parse::<u64>().ok(),
                    _ => {}
                }
            }
            let (Some(server), Some(revision), Some(seq)) = (server, revision, seq) else {
                return Err(bad());
            };
            out.push(Entry {
                id,
                seq,
                server,
                revision,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn xread_replies_parse_and_bad_ones_are_errors() {
        let sid = ServerId::new_random();
        let entry = Value::Array(vec![
            bulk("1-0"),
            Value::Array(vec![
                bulk("s"),
                bulk(&sid.to_string()),
                bulk("r"),
                bulk("3"),
                bulk("n"),
                bulk("7"),
            ]),
        ]);
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("{t}:feed"),
            Value::Array(vec![entry]),
        ])]);
        let got = parse_xread(&reply).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].server, got[0].revision, got[0].seq),
            (sid, RevisionNo(3), 7)
        );
        assert_eq!(got[0].id, "1-0");
        assert!(parse_xread(&Value::Nil).unwrap().is_empty());
        let broken = Value::Array(vec![Value::Array(vec![
            bulk("{t}:feed"),
            Value::Array(vec![Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("s")]),
            ])]),
        ])]);
        assert!(parse_xread(&broken).is_err());
    }
}
