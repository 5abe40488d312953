//! The optimistic transaction: the core's commit rules (`wgm_core::store::rules`) run on
//! [`RedisTx`], whose reads go to Redis and are remembered (the read set) and whose writes
//! are buffered; then one script ([`crate::scripts::APPLY`]) checks that every key read
//! still holds what was read and only then applies the writes. When the check fails the
//! whole transaction runs again on fresh reads ([`optimistic!`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::Rng;
use wgm_core::integrity::StoredAuditKey;
use wgm_core::model::{
    ApiTokenRecord, AuditRecord, Peer, PeerId, PeerStats, RevisionNo, RevisionRecord, Server,
    ServerId, TokenId, User, UserId, AUDIT_GENESIS,
};
use wgm_core::names::RoleName;
use wgm_core::rbac::Role;
use wgm_core::store::rules::{Probe, Restore, Transaction, UserClash};

use crate::conn::Conn;
use crate::error::{from_json, number, parse_id, to_json, RedisError};
use crate::keys::{index_field, list_member, peer_value, Keys};
use crate::scripts::Scripts;

/// How many times an optimistic transaction is attempted at least before it may give up
/// with [`RedisError::Contention`]; after that it goes on until its time budget
/// (`RedisOptions::contention_timeout`) is spent.
pub(crate) const MIN_ATTEMPTS: u32 = 16;

/// Sleep before retry `attempt` (1-based): exponential from 2 ms, capped at 250 ms, with
/// full jitter so that racing writers spread out (as the SQL stores do).
pub(crate) async fn backoff(attempt: u32) {
    let cap = 2u64.saturating_mul(1u64 << attempt.min(7)).min(250);
    let ms = rand::thread_rng().gen_range(1..=cap);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

/// One value read: what a key (or a field, or a whole hash) held when it was read.
#[derive(Debug)]
enum Check {
    Str {
        key: String,
        value: Option<String>,
    },
    Field {
        key: String,
        field: String,
        value: Option<String>,
    },
    All {
        key: String,
        entries: BTreeMap<String, String>,
    },
}

/// One buffered write.
#[derive(Debug)]
enum Write {
    Set(String, String),
    Del(String),
    HSet(String, String, String),
    HDel(String, String),
    ZAdd(String, u64, String),
    ZRem(String, String),
    Feed {
        server: ServerId,
        revision: RevisionNo,
    },
}

/// What the transaction wrote to a string key.
#[derive(Debug, Default)]
enum StrWrite {
    /// Nothing.
    #[default]
    Untouched,
    /// This value.
    Set(String),
    /// The key was deleted.
    Deleted,
}

/// The transaction's own writes, as its later reads see them.
#[derive(Debug, Default)]
struct Overlay {
    /// The key was deleted (fields not written since read as absent).
    cleared: bool,
    /// The string value written.
    string: StrWrite,
    /// Hash fields written (`None`: deleted).
    fields: HashMap<String, Option<String>>,
}

/// What an attempt came to ([`RedisTx::finish`]).
pub(crate) enum Finish<T> {
    /// The final result: written, or a semantic error on a read set that still holds, or
    /// an engine failure.
    Done(Result<T, RedisError>),
    /// The read set moved: run again.
    Retry,
}

/// The primitives of the rules over Redis, recording reads and buffering writes.
pub(crate) struct RedisTx<'s> {
    conn: &'s Conn,
    keys: &'s Keys,
    scripts: &'s Scripts,
    feed_max_len: u64,
    checks: Vec<Check>,
    seen_str: HashMap<String, Option<String>>,
    seen_field: HashMap<(String, String), Option<String>>,
    seen_all: HashMap<String, BTreeMap<String, String>>,
    overlay: HashMap<String, Overlay>,
    writes: Vec<Write>,
    /// Servers as stored (or as this transaction wrote them): `None` = absent.
    servers: HashMap<ServerId, Option<Server>>,
    /// Stored peers read by this transaction.
    peers: HashMap<(ServerId, PeerId), Peer>,
    /// Users as stored (or written).
    users: HashMap<UserId, Option<User>>,
    /// The keys a forced import deletes ([`RedisTx::will_clear`]).
    to_clear: Vec<String>,
}

impl<'s> RedisTx<'s> {
    pub(crate) fn new(
        conn: &'s Conn,
        keys: &'s Keys,
        scripts: &'s Scripts,
        feed_max_len: u64,
    ) -> Self {
        RedisTx {
            conn,
            keys,
            scripts,
            feed_max_len,
            checks: Vec::new(),
            seen_str: HashMap::new(),
            seen_field: HashMap::new(),
            seen_all: HashMap::new(),
            overlay: HashMap::new(),
            writes: Vec::new(),
            servers: HashMap::new(),
            peers: HashMap::new(),
            users: HashMap::new(),
            to_clear: Vec::new(),
        }
    }

    // ---- reads (overlay first, then what this transaction read before, then Redis) ----

    /// A string value.
    pub(crate) async fn get(&mut self, key: String) -> Result<Option<String>, RedisError> {
        if let Some(o) = self.overlay.get(&key) {
            match &o.string {
                StrWrite::Set(v) => return Ok(Some(v.clone())),
                StrWrite::Deleted => return Ok(None),
                StrWrite::Untouched if o.cleared => return Ok(None),
                StrWrite::Untouched => {}
            }
        }
        if let Some(v) = self.seen_str.get(&key) {
            return Ok(v.clone());
        }
        let v: Option<String> = self.conn.query(redis::cmd("GET").arg(&key)).await?;
        self.seen_str.insert(key.clone(), v.clone());
        self.checks.push(Check::Str {
            key,
            value: v.clone(),
        });
        Ok(v)
    }

    /// Fields of a hash, in the order given.
    pub(crate) async fn hmget(
        &mut self,
        key: &str,
        fields: &[String],
    ) -> Result<Vec<Option<String>>, RedisError> {
        let mut out: Vec<Option<Option<String>>> = Vec::with_capacity(fields.len());
        let mut missing: Vec<String> = Vec::new();
        let mut asked: HashSet<&str> = HashSet::new();
        let overlay = self.overlay.get(key);
        let all = self.seen_all.get(key);
        for f in fields {
            let known = if let Some(v) = overlay.and_then(|o| o.fields.get(f)) {
                Some(v.clone())
            } else if overlay.is_some_and(|o| o.cleared) {
                Some(None)
            } else if let Some(all) = all {
                Some(all.get(f).cloned())
            } else {
                self.seen_field.get(&(key.to_owned(), f.clone())).cloned()
            };
            if known.is_none() && asked.insert(f.as_str()) {
                missing.push(f.clone());
            }
            out.push(known);
        }
        if !missing.is_empty() {
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(key);
            for f in &missing {
                cmd.arg(f);
            }
            let got: Vec<Option<String>> = self.conn.query(&cmd).await?;
            if got.len() != missing.len() {
                return Err(RedisError::BadValue {
                    what: "reply to HMGET",
                });
            }
            for (f, v) in missing.into_iter().zip(got) {
                self.seen_field
                    .insert((key.to_owned(), f.clone()), v.clone());
                self.checks.push(Check::Field {
                    key: key.to_owned(),
                    field: f,
                    value: v,
                });
            }
        }
        Ok(fields
            .iter()
            .zip(out)
            .map(|(f, known)| {
                known.unwrap_or_else(|| {
                    self.seen_field
                        .get(&(key.to_owned(), f.clone()))
                        .cloned()
                        .flatten()
                })
            })
            .collect())
    }

    /// One field of a hash.
    pub(crate) async fn hget(
        &mut self,
        key: &str,
        field: String,
    ) -> Result<Option<String>, RedisError> {
        Ok(self
            .hmget(key, std::slice::from_ref(&field))
            .await?
            .pop()
            .flatten())
    }

    /// A whole hash.
    pub(crate) async fn hgetall(
        &mut self,
        key: &str,
    ) -> Result<BTreeMap<String, String>, RedisError> {
        let base = if let Some(all) = self.seen_all.get(key) {
            all.clone()
        } else {
            let got: BTreeMap<String, String> =
                self.conn.query(redis::cmd("HGETALL").arg(key)).await?;
            self.seen_all.insert(key.to_owned(), got.clone());
            self.checks.push(Check::All {
                key: key.to_owned(),
                entries: got.clone(),
            });
            got
        };
        let Some(o) = self.overlay.get(key) else {
            return Ok(base);
        };
        let mut merged = if o.cleared { BTreeMap::new() } else { base };
        for (f, v) in &o.fields {
            match v {
                Some(v) => merged.insert(f.clone(), v.clone()),
                None => merged.remove(f),
            };
        }
        Ok(merged)
    }

    // ---- writes (buffered, and visible to this transaction's later reads) ----

    pub(crate) fn set(&mut self, key: String, value: String) {
        self.overlay.entry(key.clone()).or_default().string = StrWrite::Set(value.clone());
        self.writes.push(Write::Set(key, value));
    }

    pub(crate) fn del(&mut self, key: String) {
        self.overlay.insert(
            key.clone(),
            Overlay {
                cleared: true,
                string: StrWrite::Deleted,
                fields: HashMap::new(),
            },
        );
        self.writes.push(Write::Del(key));
    }

    /// The hashes that list every server, user, role and token: empty in an empty store.
    fn listings(&self) -> [String; 5] {
        [
            self.keys.heads(),
            self.keys.server_names(),
            self.keys.user_names(),
            self.keys.roles(),
            self.keys.tokens(),
        ]
    }

    /// The keys [`Restore::clear`] deletes: every key of the store found by the caller's
    /// scan but the schema's (a transaction cannot scan).
    pub(crate) fn will_clear(&mut self, keys: Vec<String>) {
        self.to_clear = keys;
    }

    pub(crate) fn hset(&mut self, key: String, field: String, value: String) {
        self.overlay
            .entry(key.clone())
            .or_default()
            .fields
            .insert(field.clone(), Some(value.clone()));
        self.writes.push(Write::HSet(key, field, value));
    }

    pub(crate) fn hdel(&mut self, key: String, field: String) {
        self.overlay
            .entry(key.clone())
            .or_default()
            .fields
            .insert(field.clone(), None);
        self.writes.push(Write::HDel(key, field));
    }

    /// Delete each field of the hash that holds the given value (an index entry that
    /// points at the record being removed); the fields are read first, so the decision is
    /// part of the read set.
    async fn hdel_where(
        &mut self,
        key: &str,
        pairs: &[(String, String)],
    ) -> Result<(), RedisError> {
        let fields: Vec<String> = pairs.iter().map(|(f, _)| f.clone()).collect();
        let current = self.hmget(key, &fields).await?;
        for ((field, want), got) in pairs.iter().zip(current) {
            if got.as_deref() == Some(want.as_str()) {
                self.hdel(key.to_owned(), field.clone());
            }
        }
        Ok(())
    }

    fn zadd(&mut self, key: String, score: u64, member: String) {
        self.writes.push(Write::ZAdd(key, score, member));
    }

    fn zrem(&mut self, key: String, member: String) {
        self.writes.push(Write::ZRem(key, member));
    }

    // ---- the end of an attempt ----

    /// End the attempt with the rules' `result`: on `Ok`, verify the read set and apply
    /// the writes in one script; on a semantic error, verify the read set (so the error
    /// describes one moment of the store: a stale head is reported before a taken value
    /// seen after the head moved); on an engine failure, give up.
    pub(crate) async fn finish<T>(self, result: Result<T, RedisError>) -> Finish<T> {
        match result {
            Ok(v) => match self.run_script(true).await {
                Ok(true) => Finish::Done(Ok(v)),
                Ok(false) => Finish::Retry,
                Err(e) => Finish::Done(Err(e)),
            },
            Err(e) if e.is_semantic() => {
                if self.checks.is_empty() {
                    return Finish::Done(Err(e));
                }
                match self.run_script(false).await {
                    Ok(true) => Finish::Done(Err(e)),
                    Ok(false) => Finish::Retry,
                    Err(failure) => Finish::Done(Err(failure)),
                }
            }
            Err(e) => Finish::Done(Err(e)),
        }
    }

    /// Send the read set (and with `write`, the writes) to [`crate::scripts::APPLY`];
    /// whether every check held.
    async fn run_script(&self, write: bool) -> Result<bool, RedisError> {
        if write && self.writes.is_empty() && self.checks.is_empty() {
            return Ok(true);
        }
        let mut keys = KeyTable::default();
        let mut argv: Vec<String> = Vec::new();
        argv.push(self.checks.len().to_string());
        for c in &self.checks {
            match c {
                Check::Str { key, value } => {
                    argv.push("S".into());
                    argv.push(keys.index(key));
                    push_optional(&mut argv, value.as_deref());
                }
                Check::Field { key, field, value } => {
                    argv.push("H".into());
                    argv.push(keys.index(key));
                    argv.push(field.clone());
                    push_optional(&mut argv, value.as_deref());
                }
                Check::All { key, entries } => {
                    argv.push("A".into());
                    argv.push(keys.index(key));
                    argv.push(entries.len().to_string());
                    for (f, v) in entries {
                        argv.push(f.clone());
                        argv.push(v.clone());
                    }
                }
            }
        }
        let writes: &[Write] = if write { &self.writes } else { &[] };
        // The type of every key written, checked before the first write.
        let mut types: BTreeMap<String, &'static str> = BTreeMap::new();
        for w in writes {
            match w {
                Write::Set(k, _) => {
                    types.insert(k.clone(), "string");
                }
                Write::HSet(k, ..) | Write::HDel(k, _) => {
                    types.insert(k.clone(), "hash");
                }
                Write::ZAdd(k, ..) | Write::ZRem(k, _) => {
                    types.insert(k.clone(), "zset");
                }
                Write::Feed { .. } => {
                    types.insert(self.keys.feed(), "stream");
                    types.insert(self.keys.feed_seq(), "string");
                }
                Write::Del(_) => {}
            }
        }
        argv.push(types.len().to_string());
        for (k, t) in &types {
            argv.push(keys.index(k));
            argv.push((*t).to_owned());
        }
        argv.push(writes.len().to_string());
        for w in writes {
            match w {
                Write::Set(k, v) => {
                    argv.extend(["SET".into(), keys.index(k), v.clone()]);
                }
                Write::Del(k) => argv.extend(["DEL".into(), keys.index(k)]),
                Write::HSet(k, f, v) => {
                    argv.extend(["HSET".into(), keys.index(k), f.clone(), v.clone()]);
                }
                Write::HDel(k, f) => argv.extend(["HDEL".into(), keys.index(k), f.clone()]),
                Write::ZAdd(k, score, m) => {
                    argv.extend(["ZADD".into(), keys.index(k), score.to_string(), m.clone()]);
                }
                Write::ZRem(k, m) => argv.extend(["ZREM".into(), keys.index(k), m.clone()]),
                Write::Feed { server, revision } => argv.extend([
                    "FEED".into(),
                    keys.index(&self.keys.feed()),
                    keys.index(&self.keys.feed_seq()),
                    self.feed_max_len.to_string(),
                    server.to_string(),
                    revision.0.to_string(),
                ]),
            }
        }
        let mut inv = self.scripts.apply.prepare_invoke();
        for k in &keys.list {
            inv.key(k);
        }
        for a in &argv {
            inv.arg(a);
        }
        let reply: Vec<i64> = self.conn.script(&inv).await?;
        match reply.first() {
            Some(1) => Ok(true),
            Some(0) => Ok(false),
            _ => Err(RedisError::BadValue {
                what: "reply of the commit script",
            }),
        }
    }

    // ---- model helpers ----

    fn peer_index_pairs(p: &Peer, id: PeerId) -> Vec<(String, String)> {
        Probe::values_of(p)
            .into_iter()
            .map(|(f, v)| (index_field(f, &v), peer_value(id)))
            .collect()
    }

    /// A stored user (cached), read through the transaction.
    async fn stored_user(&mut self, id: UserId) -> Result<Option<User>, RedisError> {
        if let Some(u) = self.users.get(&id) {
            return Ok(u.clone());
        }
        let body = self.get(self.keys.user(id)).await?;
        let user: Option<User> = body.map(|b| from_json("user", &b)).transpose()?;
        if let Some(u) = &user {
            if u.id != id {
                return Err(RedisError::BadValue {
                    what: "user (its key disagrees with its body)",
                });
            }
        }
        self.users.insert(id, user.clone());
        Ok(user)
    }

    fn index_user(&mut self, u: &User) {
        let uid = u.id.to_string();
        self.hset(self.keys.user_names(), u.name.key(), uid.clone());
        if let Some(e) = &u.email {
            self.hset(self.keys.user_emails(), e.clone(), uid.clone());
        }
        self.zadd(self.keys.user_list(), 0, list_member(&u.name.key(), &uid));
    }

    async fn unindex_user(&mut self, u: &User) -> Result<(), RedisError> {
        let uid = u.id.to_string();
        self.hdel_where(&self.keys.user_names(), &[(u.name.key(), uid.clone())])
            .await?;
        if let Some(e) = &u.email {
            self.hdel_where(&self.keys.user_emails(), &[(e.clone(), uid.clone())])
                .await?;
        }
        self.zrem(self.keys.user_list(), list_member(&u.name.key(), &uid));
        Ok(())
    }
}

/// `PRESENT VALUE` of a check.
fn push_optional(argv: &mut Vec<String>, v: Option<&str>) {
    if let Some(v) = v {
        argv.push("1".into());
        argv.push(v.to_owned());
    } else {
        argv.push("0".into());
        argv.push(String::new());
    }
}

/// The distinct keys of a script call (`KEYS`), referred to by 1-based index.
#[derive(Default)]
struct KeyTable {
    list: Vec<String>,
    at: HashMap<String, usize>,
}

impl KeyTable {
    fn index(&mut self, key: &str) -> String {
        if let Some(i) = self.at.get(key) {
            return i.to_string();
        }
        self.list.push(key.to_owned());
        let i = self.list.len();
        self.at.insert(key.to_owned(), i);
        i.to_string()
    }
}

/// Run `$body` (an expression of type `Result<T, RedisError>` that uses the transaction
/// `$tx`) as an optimistic transaction on `$store` (a `StoreInner`), again on fresh reads
/// whenever its read set moved: at least [`MIN_ATTEMPTS`] times, and until the store's
/// contention budget is spent.
macro_rules! optimistic {
    ($store:expr, $what:literal, |$tx:ident| $body:expr) => {{
        let store = $store;
        let started = std::time::Instant::now();
        let mut attempt = 1u32;
        loop {
            #[allow(unused_mut)]
            let mut $tx = store.tx();
            let result = $body;
            match $tx.finish(result).await {
                $crate::tx::Finish::Done(r) => break r,
                $crate::tx::Finish::Retry
                    if attempt < $crate::tx::MIN_ATTEMPTS
                        || started.elapsed() < store.options.contention_timeout =>
                {
                    tracing::debug!(
                        store = $crate::error::S,
                        operation = $what,
                        attempt,
                        "the read set moved; running the transaction again"
                    );
                    $crate::tx::backoff(attempt).await;
                    attempt += 1;
                }
                $crate::tx::Finish::Retry => {
                    break Err($crate::error::RedisError::Contention {
                        what: $what,
                        attempts: attempt,
                    })
                }
            }
        }
    }};
}
pub(crate) use optimistic;

impl Transaction for RedisTx<'_> {
    type Error = RedisError;

    async fn lock_server(
        &mut self,
        id: ServerId,
    ) -> Result<(Option<RevisionNo>, Option<Server>), RedisError> {
        let head = self
            .hget(&self.keys.heads(), id.to_string())
            .await?
            .map(|h| number("head revision", &h).map(RevisionNo))
            .transpose()?;
        let server: Option<Server> = self
            .get(self.keys.server(id))
            .await?
            .map(|b| from_json("server", &b))
            .transpose()?;
        if server.as_ref().is_some_and(|s| s.id != id) {
            return Err(RedisError::BadValue {
                what: "server (its key disagrees with its body)",
            });
        }
        if server.is_some() && head.is_none() {
            return Err(RedisError::BadValue {
                what: "server without a head revision",
            });
        }
        self.servers.insert(id, server.clone());
        Ok((head, server))
    }

    async fn server_name_taken(
        &mut self,
        name_key: &str,
        except: Option<ServerId>,
    ) -> Result<bool, RedisError> {
        let holder = self
            .hget(&self.keys.server_names(), name_key.to_owned())
            .await?;
        match holder {
            None => Ok(false),
            Some(h) => {
                let id: ServerId = parse_id("server id in the name index", &h)?;
                Ok(Some(id) != except)
            }
        }
    }

    async fn peers_for_commit(
        &mut self,
        server: ServerId,
        ids: &[PeerId],
        probe: &Probe,
    ) -> Result<Vec<(PeerId, Peer)>, RedisError> {
        let fields: Vec<String> = probe.values().map(|(f, v)| index_field(f, v)).collect();
        let mut wanted: Vec<PeerId> = ids.to_vec();
        if !fields.is_empty() {
            for holder in self
                .hmget(&self.keys.index(server), &fields)
                .await?
                .into_iter()
                .flatten()
            {
                wanted.push(parse_id("peer id in the peer index", &holder)?);
            }
        }
        let mut unique = HashSet::new();
        wanted.retain(|id| unique.insert(*id));
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = wanted.iter().map(ToString::to_string).collect();
        let bodies = self.hmget(&self.keys.peers(server), &names).await?;
        let mut out = Vec::new();
        for (id, body) in wanted.into_iter().zip(bodies) {
            let Some(body) = body else { continue };
            let peer: Peer = from_json("peer", &body)?;
            if peer.id != id || peer.server_id != server {
                return Err(RedisError::BadValue {
                    what: "peer (its key disagrees with its body)",
                });
            }
            self.peers.insert((server, id), peer.clone());
            out.push((id, peer));
        }
        Ok(out)
    }

    async fn insert_head(&mut self, id: ServerId, rev: RevisionNo) -> Result<(), RedisError> {
        self.hset(self.keys.heads(), id.to_string(), rev.0.to_string());
        Ok(())
    }

    async fn write_server(&mut self, s: &Server, _exists: bool) -> Result<(), RedisError> {
        let sid = s.id.to_string();
        let old = self.servers.get(&s.id).cloned().flatten();
        if let Some(old) = old {
            if old.name.key() != s.name.key() {
                self.hdel_where(&self.keys.server_names(), &[(old.name.key(), sid.clone())])
                    .await?;
                self.zrem(self.keys.server_list(), list_member(&old.name.key(), &sid));
            }
        }
        self.set(self.keys.server(s.id), to_json("server", s)?);
        self.hset(self.keys.server_names(), s.name.key(), sid.clone());
        self.zadd(self.keys.server_list(), 0, list_member(&s.name.key(), &sid));
        self.servers.insert(s.id, Some(s.clone()));
        Ok(())
    }

    async fn delete_server(&mut self, id: ServerId) -> Result<(), RedisError> {
        let sid = id.to_string();
        if let Some(old) = self.servers.get(&id).cloned().flatten() {
            self.hdel_where(&self.keys.server_names(), &[(old.name.key(), sid.clone())])
                .await?;
            self.zrem(self.keys.server_list(), list_member(&old.name.key(), &sid));
        }
        self.del(self.keys.server(id));
        self.del(self.keys.peers(id));
        self.del(self.keys.stats(id));
        self.del(self.keys.index(id));
        self.servers.insert(id, None);
        self.peers.retain(|(s, _), _| *s != id);
        Ok(())
    }

    async fn delete_peers(&mut self, server: ServerId, ids: &[PeerId]) -> Result<(), RedisError> {
        let unknown: Vec<String> = ids
            .iter()
            .filter(|id| !self.peers.contains_key(&(server, **id)))
            .map(ToString::to_string)
            .collect();
        if !unknown.is_empty() {
            let bodies = self.hmget(&self.keys.peers(server), &unknown).await?;
            for body in bodies.into_iter().flatten() {
                let p: Peer = from_json("peer", &body)?;
                self.peers.insert((server, p.id), p);
            }
        }
        let mut pairs = Vec::new();
        for id in ids {
            let Some(p) = self.peers.remove(&(server, *id)) else {
                continue;
            };
            self.hdel(self.keys.peers(server), id.to_string());
            self.hdel(self.keys.stats(server), id.to_string());
            pairs.extend(Self::peer_index_pairs(&p, *id));
        }
        if !pairs.is_empty() {
            self.hdel_where(&self.keys.index(server), &pairs).await?;
        }
        Ok(())
    }

    async fn insert_peers(
        &mut self,
        server: ServerId,
        peers: &[(PeerId, &Peer)],
    ) -> Result<(), RedisError> {
        for (id, p) in peers {
            let body = to_json(
                "peer",
                &Peer {
                    stats: PeerStats::default(),
                    ..(*p).clone()
                },
            )?;
            self.hset(self.keys.peers(server), id.to_string(), body);
            self.hset(
                self.keys.stats(server),
                id.to_string(),
                to_json("peer stats", &p.stats)?,
            );
            for (field, value) in Self::peer_index_pairs(p, *id) {
                self.hset(self.keys.index(server), field, value);
            }
        }
        Ok(())
    }

    async fn audit_tail(&mut self) -> Result<(u64, String), RedisError> {
        match self.get(self.keys.audit_head()).await? {
            None => Ok((0, AUDIT_GENESIS.to_owned())),
            Some(text) => parse_audit_head(&text),
        }
    }

    async fn write_audit(&mut self, record: &AuditRecord) -> Result<(), RedisError> {
        self.zadd(
            self.keys.audit(),
            record.seq,
            to_json("audit record", record)?,
        );
        self.set(
            self.keys.audit_head(),
            format!("{} {}", record.seq, record.hash),
        );
        Ok(())
    }

    async fn finish(
        &mut self,
        record: &RevisionRecord,
        audit: &AuditRecord,
    ) -> Result<(), RedisError> {
        let sid = record.server_id;
        self.hset(
            self.keys.heads(),
            sid.to_string(),
            record.revision.0.to_string(),
        );
        self.zadd(
            self.keys.revisions(sid),
            record.revision.0,
            to_json("revision", record)?,
        );
        self.write_audit(audit).await?;
        self.writes.push(Write::Feed {
            server: sid,
            revision: record.revision,
        });
        Ok(())
    }

    async fn audit_key(&mut self) -> Result<Option<StoredAuditKey>, RedisError> {
        self.get(self.keys.audit_key())
            .await?
            .map(|b| from_json("audit key", &b))
            .transpose()
    }

    async fn write_audit_key(
        &mut self,
        key: &StoredAuditKey,
        _exists: bool,
    ) -> Result<(), RedisError> {
        // Without `exists`, the rules read the key as absent; the script checks that it
        // still is, so a key another writer inserted first stays (this attempt runs again
        // and finds it).
        self.set(self.keys.audit_key(), to_json("audit key", key)?);
        Ok(())
    }

    async fn server_heads(&mut self) -> Result<BTreeMap<ServerId, RevisionNo>, RedisError> {
        let all = self.hgetall(&self.keys.heads()).await?;
        all.iter()
            .map(|(id, rev)| {
                Ok((
                    parse_id("server id of a head", id)?,
                    RevisionNo(number("head revision", rev)?),
                ))
            })
            .collect()
    }

    async fn user_version(&mut self, id: UserId) -> Result<Option<u64>, RedisError> {
        Ok(self.stored_user(id).await?.map(|u| u.version))
    }

    async fn user_clash(&mut self, user: &User) -> Result<Option<UserClash>, RedisError> {
        let me = user.id.to_string();
        if let Some(holder) = self.hget(&self.keys.user_names(), user.name.key()).await? {
            if holder != me {
                return Ok(Some(UserClash::Name));
            }
        }
        if let Some(email) = &user.email {
            if let Some(holder) = self.hget(&self.keys.user_emails(), email.clone()).await? {
                if holder != me {
                    return Ok(Some(UserClash::Email));
                }
            }
        }
        Ok(None)
    }

    async fn insert_user(&mut self, user: &User) -> Result<(), RedisError> {
        self.set(self.keys.user(user.id), to_json("user", user)?);
        self.index_user(user);
        self.users.insert(user.id, Some(user.clone()));
        Ok(())
    }

    async fn update_user(&mut self, user: &User) -> Result<(), RedisError> {
        if let Some(old) = self.stored_user(user.id).await? {
            self.unindex_user(&old).await?;
        }
        self.set(self.keys.user(user.id), to_json("user", user)?);
        self.index_user(user);
        self.users.insert(user.id, Some(user.clone()));
        Ok(())
    }

    async fn delete_user(&mut self, id: UserId) -> Result<bool, RedisError> {
        let Some(old) = self.stored_user(id).await? else {
            return Ok(false);
        };
        self.unindex_user(&old).await?;
        self.del(self.keys.user(id));
        let tokens = self.hgetall(&self.keys.user_tokens(id)).await?;
        for tid in tokens.keys() {
            let token: TokenId = parse_id("token id of a user", tid)?;
            self.del(self.keys.token(token));
            self.hdel(self.keys.tokens(), tid.clone());
        }
        self.del(self.keys.user_tokens(id));
        self.users.insert(id, None);
        Ok(true)
    }

    async fn put_role(&mut self, role: &Role) -> Result<(), RedisError> {
        self.hset(self.keys.roles(), role.name.key(), to_json("role", role)?);
        Ok(())
    }

    async fn delete_role(&mut self, name: &RoleName) -> Result<bool, RedisError> {
        if self.hget(&self.keys.roles(), name.key()).await?.is_none() {
            return Ok(false);
        }
        self.hdel(self.keys.roles(), name.key());
        Ok(true)
    }

    async fn token(&mut self, id: TokenId) -> Result<Option<ApiTokenRecord>, RedisError> {
        self.get(self.keys.token(id))
            .await?
            .map(|b| from_json("token", &b))
            .transpose()
    }

    async fn insert_token(&mut self, t: &ApiTokenRecord) -> Result<(), RedisError> {
        self.set(self.keys.token(t.id), to_json("token", t)?);
        self.hset(self.keys.tokens(), t.id.to_string(), t.user_id.to_string());
        self.hset(
            self.keys.user_tokens(t.user_id),
            t.id.to_string(),
            "1".into(),
        );
        Ok(())
    }

    async fn update_token(&mut self, t: &ApiTokenRecord) -> Result<(), RedisError> {
        self.set(self.keys.token(t.id), to_json("token", t)?);
        Ok(())
    }
}

/// The stored audit head, `SEQ HASH`.
pub(crate) fn parse_audit_head(text: &str) -> Result<(u64, String), RedisError> {
    let (seq, hash) = text
        .split_once(' ')
        .ok_or(RedisError::BadValue { what: "audit head" })?;
    Ok((number("audit head sequence number", seq)?, hash.to_owned()))
}

/// The import primitives: reads join the read set, writes the one script's buffer.
impl Restore for RedisTx<'_> {
    async fn clear(&mut self) -> Result<(), RedisError> {
        // The listings join the read set, so a server, user, role or token created after
        // the caller's scan (whose keys it did not see) makes the import run again.
        for key in self.listings() {
            self.hgetall(&key).await?;
        }
        for key in std::mem::take(&mut self.to_clear) {
            self.del(key);
        }
        self.servers.clear();
        self.peers.clear();
        self.users.clear();
        Ok(())
    }

    async fn is_empty(&mut self) -> Result<bool, RedisError> {
        for key in self.listings() {
            if !self.hgetall(&key).await?.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn insert_revisions(&mut self, records: &[RevisionRecord]) -> Result<(), RedisError> {
        for r in records {
            self.zadd(
                self.keys.revisions(r.server_id),
                r.revision.0,
                to_json("revision", r)?,
            );
        }
        Ok(())
    }

    async fn insert_audit(&mut self, records: &[AuditRecord]) -> Result<(), RedisError> {
        for record in records {
            self.zadd(
                self.keys.audit(),
                record.seq,
                to_json("audit record", record)?,
            );
        }
        Ok(())
    }

    async fn write_audit_head(
        &mut self,
        head: &wgm_core::integrity::AuditHead,
    ) -> Result<(), RedisError> {
        // An empty log has no head key (as on a new store).
        if *head != wgm_core::integrity::AuditHead::genesis() {
            self.set(
                self.keys.audit_head(),
                format!("{} {}", head.seq, head.hash),
            );
        }
        Ok(())
    }

    async fn write_host_state(
        &mut self,
        s: &wgm_core::store::ServerSnapshot,
    ) -> Result<(), RedisError> {
        if let Some((revision, held)) = &s.allocator {
            let key = self.keys.allocator(s.id);
            self.hset(key.clone(), "revision".into(), revision.0.to_string());
            self.hset(key, "body".into(), to_json("allocator state", held)?);
        }
        for a in &s.applied {
            let row = crate::AppliedRow {
                revision: a.revision,
                state: a.state,
            };
            self.hset(
                self.keys.applied(s.id),
                a.host.clone(),
                to_json("applied revision", &row)?,
            );
        }
        for l in &s.leases {
            self.hset(
                self.keys.leases(s.id),
                l.host.as_str().to_owned(),
                to_json("lease", l)?,
            );
        }
        for r in &s.reports {
            self.hset(
                self.keys.reports(s.id),
                r.host.as_str().to_owned(),
                to_json("host report", r)?,
            );
        }
        Ok(())
    }
}
