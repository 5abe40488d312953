//! Reading `nft -j list table inet wgm` back into a [`LiveFirewall`]: leniently (unknown
//! fields and objects are ignored), and only what belongs to the server asked for.
//!
//! - The static part is recognised when every set and map exists with its definition,
//!   every chain with its hook, and the rules of the static chains are exactly those
//!   written for the policy recorded in the comment of the forward chain's first rule.
//! - Peers are told by their keys: in the comments of plain-set elements, of quota and
//!   limit objects (which also name the interface), and of the last rule of allow chains.
//!   Map elements belong to the peer whose tag their value names ([`peer_tag`]); an
//!   element nobody can be told to own is stray.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use super::render::{
    self, chain_rules, object_name, set_counts, set_data, set_name, static_rules, Fam, Rule,
    StaticChain, CHAIN_END_COMMENT, FAMILY, TABLE,
};
use wgm_core::backend::firewall::{
    peer_tag, Element, LiveChain, LiveFirewall, LivePeer, LiveQuota, ObjectKind, PeerSet,
};
use wgm_core::keys::PublicKey;
use wgm_core::names::InterfaceName;
use wgm_core::policy::FilterRule;

#[derive(Debug, Deserialize)]
pub(crate) struct Listing {
    #[serde(default)]
    nftables: Vec<BTreeMap<String, Value>>,
}

#[derive(Debug, Default, Deserialize)]
struct ChainItem {
    #[serde(default)]
    family: String,
    #[serde(default)]
    table: String,
    #[serde(default)]
    name: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    hook: Option<String>,
    #[serde(default)]
    prio: Option<i64>,
    #[serde(default)]
    policy: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RuleItem {
    #[serde(default)]
    family: String,
    #[serde(default)]
    table: String,
    #[serde(default)]
    chain: String,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    expr: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct SetItem {
    #[serde(default)]
    family: String,
    #[serde(default)]
    table: String,
    #[serde(default)]
    name: String,
    #[serde(default, rename = "type")]
    kind: Value,
    #[serde(default)]
    map: Option<Value>,
    #[serde(default)]
    flags: Option<Value>,
    #[serde(default)]
    stmt: Option<Value>,
    #[serde(default)]
    elem: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct QuotaItem {
    #[serde(default)]
    family: String,
    #[serde(default)]
    table: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    bytes: u64,
    #[serde(default)]
    used: u64,
    #[serde(default)]
    inv: bool,
}

#[derive(Debug, Default, Deserialize)]
struct LimitItem {
    #[serde(default)]
    family: String,
    #[serde(default)]
    table: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    rate: u64,
    #[serde(default)]
    per: String,
    #[serde(default)]
    rate_unit: Option<String>,
    #[serde(default)]
    burst: u64,
    #[serde(default)]
    inv: bool,
}

/// The table, sorted by kind.
#[derive(Debug, Default)]
pub(crate) struct Table {
    chains: BTreeMap<String, ChainItem>,
    rules: BTreeMap<String, Vec<RuleItem>>,
    sets: BTreeMap<String, SetItem>,
    quotas: BTreeMap<String, QuotaItem>,
    limits: BTreeMap<String, LimitItem>,
    /// Names of every object of any kind, for `remove_firewall`'s "is anything else left".
    others: usize,
}

fn ours(family: &str, table: &str) -> bool {
    family == FAMILY && table == TABLE
}

impl Table {
    /// Sort the listing's objects; anything not of `inet wgm` is dropped (the listing
    /// names one table, but a lenient reader checks).
    pub(crate) fn parse(listing: Listing) -> Table {
        let mut t = Table::default();
        for item in listing.nftables {
            for (kind, body) in item {
                match kind.as_str() {
                    "chain" => {
                        if let Ok(c) = ChainItem::deserialize(&body) {
                            if ours(&c.family, &c.table) {
                                t.chains.insert(c.name.clone(), c);
                            }
                        }
                    }
                    "rule" => {
                        if let Ok(r) = RuleItem::deserialize(&body) {
                            if ours(&r.family, &r.table) {
                                t.rules.entry(r.chain.clone()).or_default().push(r);
                            }
                        }
                    }
                    "set" | "map" => {
                        if let Ok(s) = SetItem::deserialize(&body) {
                            if ours(&s.family, &s.table) {
                                t.sets.insert(s.name.clone(), s);
                            }
                        }
                    }
                    "quota" => {
                        if let Ok(q) = QuotaItem::deserialize(&body) {
                            if ours(&q.family, &q.table) {
                                t.quotas.insert(q.name.clone(), q);
                            }
                        }
                    }
                    "limit" => {
                        if let Ok(l) = LimitItem::deserialize(&body) {
                            if ours(&l.family, &l.table) {
                                t.limits.insert(l.name.clone(), l);
                            }
                        }
                    }
                    "metainfo" | "table" => {}
                    _ => t.others += 1,
                }
            }
        }
        t
    }

    /// Everything of `iface` this table holds, by kind and name, for removal: chains
    /// (static and the peers' allow chains), sets and maps, quotas, limits.
    pub(crate) fn owned_by(&self, iface: &InterfaceName) -> Owned {
        let live = self.server(iface);
        let mut owned = Owned::default();
        for chain in StaticChain::ALL {
            let name = chain.name(iface);
            if self.chains.contains_key(&name) {
                owned.chains.push(name);
            }
        }
        for (key, peer) in &live.peers {
            if peer.chain.is_some() {
                owned
                    .chains
                    .push(object_name(ObjectKind::Chain, iface, key));
            }
            if peer.quota.is_some() {
                owned
                    .quotas
                    .push(object_name(ObjectKind::Quota, iface, key));
            }
            if peer.limit_up.is_some() {
                owned
                    .limits
                    .push(object_name(ObjectKind::LimitUp, iface, key));
            }
            if peer.limit_down.is_some() {
                owned
                    .limits
                    .push(object_name(ObjectKind::LimitDown, iface, key));
            }
        }
        for set in PeerSet::ALL {
            for fam in Fam::BOTH {
                let name = set_name(set, fam, iface);
                if let Some(s) = self.sets.get(&name) {
                    let kind = if s.map.is_some() { "map" } else { "set" };
                    owned.sets.push((kind, name));
                }
            }
        }
        let total = self.chains.len() + self.sets.len() + self.quotas.len() + self.limits.len();
        owned.everything = self.others == 0
            && owned.chains.len() + owned.sets.len() + owned.quotas.len() + owned.limits.len()
                == total;
        owned
    }

    /// The server `iface` as it stands; `None` when nothing of it is here.
    pub(crate) fn live(&self, iface: &InterfaceName) -> Option<LiveFirewall> {
        let live = self.server(iface);
        let anything = live.policy.is_some()
            || !live.peers.is_empty()
            || !live.stray.is_empty()
            || StaticChain::ALL
                .iter()
                .any(|c| self.chains.contains_key(&c.name(iface)))
            || PeerSet::ALL.iter().any(|s| {
                Fam::BOTH
                    .iter()
                    .any(|f| self.sets.contains_key(&set_name(*s, *f, iface)))
            });
        anything.then_some(live)
    }

    fn server(&self, iface: &InterfaceName) -> LiveFirewall {
        let mut out = LiveFirewall::empty(iface.clone());
        out.policy = self.static_policy(iface);

        // Keys, from every place that names one.
        let mut keys: Vec<PublicKey> = Vec::new();
        let owner_of = |comment: &Option<String>| -> Option<(PublicKey, Option<u64>)> {
            let mut parts = comment.as_deref()?.split(' ');
            if parts.next()? != iface.as_str() {
                return None;
            }
            let key = PublicKey::from_base64(parts.next()?).ok()?;
            let window = match parts.next() {
                Some(w) => Some(w.parse().ok()?),
                None => None,
            };
            parts.next().is_none().then_some((key, window))
        };
        for q in self.quotas.values() {
            if let Some((key, _)) = owner_of(&q.comment) {
                keys.push(key);
            }
        }
        for l in self.limits.values() {
            if let Some((key, _)) = owner_of(&l.comment) {
                keys.push(key);
            }
        }
        for set in [PeerSet::Peers, PeerSet::Up, PeerSet::Down, PeerSet::Dropped] {
            for fam in Fam::BOTH {
                if let Some(s) = self.sets.get(&set_name(set, fam, iface)) {
                    keys.extend(
                        s.elem
                            .iter()
                            .filter_map(|e| element(e).and_then(|e| e.comment_key())),
                    );
                }
            }
        }
        for (name, rules) in &self.rules {
            if !name.starts_with("p_") {
                continue;
            }
            if let Some(c) = rules.last().and_then(|r| r.comment.as_deref()) {
                if let Some(k) = c
                    .strip_prefix(CHAIN_END_COMMENT)
                    .and_then(|k| k.strip_prefix(' '))
                    .and_then(|k| PublicKey::from_base64(k).ok())
                {
                    keys.push(k);
                }
            }
        }
        let tags: HashMap<String, PublicKey> =
            keys.iter().map(|k| (peer_tag(iface, k), *k)).collect();

        // Objects.
        for key in tags.values().copied() {
            let mut peer = LivePeer::default();
            if let Some(q) = self
                .quotas
                .get(&object_name(ObjectKind::Quota, iface, &key))
            {
                if let Some((owner, Some(window))) = owner_of(&q.comment) {
                    if owner == key && q.inv {
                        peer.quota = Some(LiveQuota {
                            bytes: q.bytes,
                            used: q.used,
                            window,
                        });
                        peer.counters.quota_used = Some(q.used);
                    }
                }
            }
            for (kind, slot) in [
                (ObjectKind::LimitUp, &mut peer.limit_up),
                (ObjectKind::LimitDown, &mut peer.limit_down),
            ] {
                if let Some(l) = self.limits.get(&object_name(kind, iface, &key)) {
                    if owner_of(&l.comment).is_some_and(|(o, w)| o == key && w.is_none()) {
                        // A limit that is not the one written (burst, per, not `over`)
                        // reads as rate 0, which no desired rate equals.
                        *slot = Some(limit_bytes_per_second(l).unwrap_or(0));
                    }
                }
            }
            let chain_name = object_name(ObjectKind::Chain, iface, &key);
            if self.chains.contains_key(&chain_name) {
                let rules = self.rules.get(&chain_name).map_or(&[][..], Vec::as_slice);
                peer.chain = Some(recognise_chain(iface, &key, rules));
            }
            if peer.quota.is_some()
                || peer.limit_up.is_some()
                || peer.limit_down.is_some()
                || peer.chain.is_some()
            {
                out.peers.insert(key, peer);
            }
        }

        // Elements.
        for set in PeerSet::ALL {
            for fam in Fam::BOTH {
                let Some(s) = self.sets.get(&set_name(set, fam, iface)) else {
                    continue;
                };
                for raw in &s.elem {
                    let Some(e) = element(raw) else { continue };
                    let Some(address) = e.address else { continue };
                    if Fam::of(&address) != fam {
                        continue;
                    }
                    let el = Element { set, address };
                    let owner = match set_data(set) {
                        None => e.comment_key(),
                        Some(_) => e.target_tag().and_then(|t| tags.get(t).copied()),
                    };
                    let Some(owner) = owner else {
                        out.stray.push(el);
                        continue;
                    };
                    let peer = out.peers.entry(owner).or_default();
                    peer.elements.insert(el);
                    let c = &mut peer.counters;
                    let (packets, bytes) = e.counter;
                    match set {
                        PeerSet::Up => {
                            c.up_packets += packets;
                            c.up_bytes += bytes;
                        }
                        PeerSet::Down => {
                            c.down_packets += packets;
                            c.down_bytes += bytes;
                        }
                        PeerSet::Dropped => {
                            c.dropped_packets += packets;
                            c.dropped_bytes += bytes;
                        }
                        _ => {}
                    }
                }
            }
        }
        out.stray.sort();
        out
    }

    /// The policy the static part was written for, if all of it is there as written.
    fn static_policy(&self, iface: &InterfaceName) -> Option<ServerPolicyAlias> {
        for set in PeerSet::ALL {
            for fam in Fam::BOTH {
                let s = self.sets.get(&set_name(set, fam, iface))?;
                let data = s.map.as_ref().and_then(Value::as_str);
                let counts = s
                    .stmt
                    .as_ref()
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|x| x.get("counter").is_some()));
                if s.kind.as_str() != Some(fam.addr_type())
                    || data != set_data(set)
                    || counts != set_counts(set)
                    || s.flags.is_some()
                {
                    return None;
                }
            }
        }
        let forward = self.rules.get(&StaticChain::Forward.name(iface))?;
        let policy = render::parse_policy_comment(forward.first()?.comment.as_deref()?)?;
        for chain in StaticChain::ALL {
            let name = chain.name(iface);
            let c = self.chains.get(&name)?;
            let hook = (
                c.kind.as_deref(),
                c.hook.as_deref(),
                c.prio,
                c.policy.as_deref(),
            );
            let want = chain.hook().map_or((None, None, None, None), |(k, h, p)| {
                (Some(k), Some(h), Some(p), Some("accept"))
            });
            if hook != want {
                return None;
            }
            let have = self.rules.get(&name).map_or(&[][..], Vec::as_slice);
            if !same_rules(have, &static_rules(chain, iface, &policy)) {
                return None;
            }
        }
        Some(policy)
    }
}

type ServerPolicyAlias = wgm_core::policy::ServerPolicy;

fn same_rules(have: &[RuleItem], want: &[Rule]) -> bool {
    have.len() == want.len()
        && have
            .iter()
            .zip(want)
            .all(|(h, w)| h.expr == w.expr && h.comment == w.comment)
}

fn recognise_chain(iface: &InterfaceName, key: &PublicKey, rules: &[RuleItem]) -> LiveChain {
    let Some((_, destinations)) = rules.split_last() else {
        return LiveChain::Altered;
    };
    let mut parsed = Vec::with_capacity(destinations.len());
    for r in destinations {
        match r.comment.as_deref().map(|c| FilterRule::parse(c, "rule")) {
            Some(Ok(f)) => parsed.push(f),
            _ => return LiveChain::Altered,
        }
    }
    if same_rules(rules, &chain_rules(iface, key, &parsed)) {
        LiveChain::Rules(parsed)
    } else {
        LiveChain::Altered
    }
}

/// A limit object's rate in bytes per second, when it is one wgm writes (`over`, per
/// second, in bytes, no burst).
fn limit_bytes_per_second(l: &LimitItem) -> Option<u64> {
    if !l.inv || l.per != "second" || l.burst != 0 {
        return None;
    }
    let factor: u64 = match l.rate_unit.as_deref() {
        Some("bytes") => 1,
        Some("kbytes") => 1 << 10,
        Some("mbytes") => 1 << 20,
        _ => return None,
    };
    l.rate.checked_mul(factor)
}

/// One element as listed.
struct Elem<'a> {
    address: Option<IpNet>,
    comment: Option<&'a str>,
    counter: (u64, u64),
    /// The data of a map element.
    data: Option<&'a Value>,
}

impl Elem<'_> {
    fn comment_key(&self) -> Option<PublicKey> {
        PublicKey::from_base64(self.comment?).ok()
    }

    /// The tag a map element's data names: `q_<tag>`, `lu_<tag>`, `ld_<tag>`, or
    /// `jump p_<tag>`.
    fn target_tag(&self) -> Option<&str> {
        let data = self.data?;
        let name = match data {
            Value::String(s) => s.as_str(),
            other => other.get("jump")?.get("target")?.as_str()?,
        };
        Some(name.split_once('_')?.1)
    }
}

/// `"10.0.0.2"`, `{"elem": {"val": …, "comment": …, "counter": {…}}}`, or `[key, data]`
/// with either form as key.
fn element(v: &Value) -> Option<Elem<'_>> {
    let (key, data) = match v {
        Value::Array(pair) if pair.len() == 2 => (&pair[0], Some(&pair[1])),
        other => (other, None),
    };
    let (val, comment, counter) = match key.get("elem") {
        Some(inner) => {
            let counter = inner.get("counter").map_or((0, 0), |c| {
                (
                    c.get("packets").and_then(Value::as_u64).unwrap_or(0),
                    c.get("bytes").and_then(Value::as_u64).unwrap_or(0),
                )
            });
            (
                inner.get("val")?,
                inner.get("comment").and_then(Value::as_str),
                counter,
            )
        }
        None => (key, None, (0, 0)),
    };
    let address = val
        .as_str()
        .and_then(|s| s.parse::<IpAddr>().ok())
        .map(IpNet::from);
    Some(Elem {
        address,
        comment,
        counter,
        data,
    })
}

/// What of one server a table holds, by name, for `remove_firewall`.
#[derive(Debug, Default)]
pub(crate) struct Owned {
    pub(crate) chains: Vec<String>,
    pub(crate) sets: Vec<(&'static str, String)>,
    pub(crate) quotas: Vec<String>,
    pub(crate) limits: Vec<String>,
    /// The table holds nothing else: remove the table itself.
    pub(crate) everything: bool,
}

impl Owned {
    pub(crate) fn is_empty(&self) -> bool {
        self.chains.is_empty()
            && self.sets.is_empty()
            && self.quotas.is_empty()
            && self.limits.is_empty()
    }
}
