//! Reading `nft -j list table inet wgm` back into a [`LiveFirewall`]: leniently (unknown
//! fields and objects are ignored), and only what belongs to the server asked for.
//!
//! - The static part is recognised when every set and map exists with its definition,
//!   every chain with its hook, and the rules of the static chains are exactly those
//!   written for the policy recorded in the comment of the forward chain's first rule.
//! - A set or map that exists with another definition (a table written before sets were
//!   interval sets, or a change by hand), or that holds an element this reader cannot
//!   take for an address or a prefix (a range that is not one prefix), is **outdated**:
//!   the static part reads as drift, and writing it deletes and makes the set again
//!   ([`Table::outdated_sets`]), empty. Its elements are not reported, so the plan adds
//!   every element that belongs there in the same delta; objects (quotas and their used
//!   bytes, limits, allow chains) are not in sets and stay.
//! - Elements are addresses (`"10.0.0.2"`), prefixes (`{"prefix": {"addr", "len"}}`) and,
//!   leniently, ranges that are exactly one prefix (`{"range": [first, last]}`).
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
    self, chain_rules, object_name, set_counts, set_data, static_rules, Fam, Rule, SetId, Shape,
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
        for id in SetId::all() {
            let name = id.name(iface);
            if let Some(s) = self.sets.get(&name) {
                let kind = if s.map.is_some() { "map" } else { "set" };
                owned.sets.push((kind, name));
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
            || SetId::all().any(|id| self.sets.contains_key(&id.name(iface)));
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
        let outdated = self.outdated_sets(iface);
        let current = |id: &SetId| !outdated.contains(id);
        for id in SetId::all().filter(|id| set_data(id.set).is_none() && current(id)) {
            if let Some(s) = self.sets.get(&id.name(iface)) {
                keys.extend(
                    s.elem
                        .iter()
                        .filter_map(|e| element(e).and_then(|e| e.comment_key())),
                );
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

        // Elements, of the sets that the static part keeps.
        for id in SetId::all() {
            let (set, fam) = (id.set, id.fam);
            if !current(&id) {
                continue;
            }
            let Some(s) = self.sets.get(&id.name(iface)) else {
                continue;
            };
            for raw in &s.elem {
                let Some(e) = element(raw) else { continue };
                let Some(address) = e.address else { continue };
                if Fam::of(&address) != fam || Shape::of(&address) != id.shape {
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
        out.stray.sort();
        out
    }

    /// The sets and maps of `iface` that exist but are not as the static part writes them
    /// (see the module docs): writing the static part makes them again.
    pub(crate) fn outdated_sets(&self, iface: &InterfaceName) -> Vec<SetId> {
        SetId::all()
            .filter(|id| {
                self.sets
                    .get(&id.name(iface))
                    .is_some_and(|s| !is_current(s, *id))
            })
            .collect()
    }

    /// The policy the static part was written for, if all of it is there as written.
    fn static_policy(&self, iface: &InterfaceName) -> Option<ServerPolicyAlias> {
        for id in SetId::all() {
            if !is_current(self.sets.get(&id.name(iface))?, id) {
                return None;
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

/// Whether a listed set is the set `id` as [`render::set_definition`] writes it, holding
/// only elements this reader understands, of its family and shape.
fn is_current(s: &SetItem, id: SetId) -> bool {
    let SetId { set, fam, shape } = id;
    let data = s.map.as_ref().and_then(Value::as_str);
    let counts = s
        .stmt
        .as_ref()
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x.get("counter").is_some()));
    let flags: Option<Vec<&str>> = match &s.flags {
        Some(Value::Array(a)) if a.is_empty() => None,
        Some(Value::Array(a)) => Some(a.iter().map(|f| f.as_str().unwrap_or("?")).collect()),
        Some(Value::String(one)) => Some(vec![one.as_str()]),
        _ => None,
    };
    s.kind.as_str() == Some(fam.addr_type())
        && data == set_data(set)
        && counts == set_counts(set)
        && flags.as_deref() == shape.flags()
        && s.elem.iter().all(|raw| {
            element(raw)
                .and_then(|e| e.address)
                .is_some_and(|a| Fam::of(&a) == fam && Shape::of(&a) == shape)
        })
}

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
    let address = network(val);
    Some(Elem {
        address,
        comment,
        counter,
        data,
    })
}

/// An element's key as `nft -j` lists it: an address (a host), `{"prefix": {"addr",
/// "len"}}` without host bits, or `{"range": [first, last]}` when the range is exactly one
/// prefix. `None` for anything else.
fn network(val: &Value) -> Option<IpNet> {
    if let Some(s) = val.as_str() {
        return s.parse::<IpAddr>().ok().map(IpNet::from);
    }
    if let Some(p) = val.get("prefix") {
        let addr: IpAddr = p.get("addr")?.as_str()?.parse().ok()?;
        let len = u8::try_from(p.get("len")?.as_u64()?).ok()?;
        let net = IpNet::new(addr, len).ok()?;
        return (net.trunc() == net).then_some(net);
    }
    let range = val.get("range")?.as_array()?;
    let [first, last] = range.as_slice() else {
        return None;
    };
    let first: IpAddr = first.as_str()?.parse().ok()?;
    let last: IpAddr = last.as_str()?.parse().ok()?;
    range_prefix(first, last)
}

/// The prefix that is exactly `first..=last`, if there is one.
fn range_prefix(first: IpAddr, last: IpAddr) -> Option<IpNet> {
    let (a, b, bits) = match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return None,
    };
    if b < a {
        return None;
    }
    // The host bits of the prefix are those where a and b differ: a must have them all 0
    // and b all 1, and no other bit may differ.
    let host = b - a;
    if host & host.wrapping_add(1) != 0 || a & host != 0 {
        return None;
    }
    let len = bits - (128 - host.leading_zeros());
    let len = u8::try_from(len).ok()?;
    let net = IpNet::new(first, len).ok()?;
    (net.trunc() == net).then_some(net)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wgm_core::backend::firewall::{plan_firewall, FirewallState, PeerFirewall};
    use wgm_core::keys::PrivateKey;
    use wgm_core::policy::{PeerPolicy, ServerPolicy};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// What `nft -j list table inet wgm` would print after `commands` ran on `table`
    /// (objects in the listing's form, by kind and name): enough of nftables for a
    /// render → list → read round trip without root.
    #[derive(Default)]
    struct FakeNft {
        objects: Vec<(String, Value)>,
    }

    impl FakeNft {
        fn find(&mut self, kind: &str, name: &str) -> Option<&mut Value> {
            self.objects
                .iter_mut()
                .find(|(k, v)| (k == kind || (kind == "set" && k == "map")) && v["name"] == name)
                .map(|(_, v)| v)
        }

        fn run(&mut self, commands: &[Value]) {
            for c in commands {
                let (verb, body) = c.as_object().unwrap().iter().next().unwrap();
                let (kind, body) = body.as_object().unwrap().iter().next().unwrap();
                let name = body["name"].as_str().unwrap_or_default().to_owned();
                match (verb.as_str(), kind.as_str()) {
                    ("add", "table") => {}
                    ("add", "chain") => {
                        if let Some(existing) = self.find("chain", &name) {
                            assert!(body.get("hook").is_none(), "hook on an existing chain");
                            let _ = existing;
                        } else {
                            self.objects.push(("chain".into(), body.clone()));
                        }
                    }
                    ("delete", "chain") => {
                        self.objects.retain(|(k, v)| {
                            !(k == "chain" && v["name"] == name
                                || k == "rule" && v["chain"] == name)
                        });
                    }
                    ("flush", "chain") => {
                        self.objects
                            .retain(|(k, v)| !(k == "rule" && v["chain"] == name));
                    }
                    ("add", "rule") => self.objects.push(("rule".into(), body.clone())),
                    ("add", "set" | "map") => {
                        if let Some(existing) = self.find("set", &name) {
                            let mut a = existing.clone();
                            a.as_object_mut().unwrap().remove("elem");
                            assert_eq!(&a, body, "add of a set with another definition");
                        } else {
                            let mut v = body.clone();
                            v["elem"] = json!([]);
                            self.objects.push((kind.clone(), v));
                        }
                    }
                    ("delete", "set" | "map") => {
                        self.objects
                            .retain(|(k, v)| !((k == "set" || k == "map") && v["name"] == name));
                    }
                    ("add", "element") => {
                        let set = self.find("set", &name).unwrap();
                        let counts = set.get("stmt").is_some();
                        for e in body["elem"].as_array().unwrap() {
                            let mut e = e.clone();
                            if counts {
                                e["elem"]["counter"] = json!({"packets": 0, "bytes": 0});
                            }
                            set["elem"].as_array_mut().unwrap().push(e);
                        }
                    }
                    ("delete", "element") => {
                        let set = self.find("set", &name).unwrap();
                        for key in body["elem"].as_array().unwrap() {
                            let list = set["elem"].as_array_mut().unwrap();
                            let before = list.len();
                            list.retain(|e| {
                                let k = match e {
                                    Value::Array(pair) => &pair[0],
                                    other => other.get("elem").map_or(other, |x| &x["val"]),
                                };
                                k != key
                            });
                            assert_eq!(list.len() + 1, before, "delete of a missing {key}");
                        }
                    }
                    ("add", "quota" | "limit") => {
                        if self.find(kind, &name).is_none() {
                            self.objects.push((kind.clone(), body.clone()));
                        }
                    }
                    ("delete", "quota" | "limit") => {
                        self.objects
                            .retain(|(k, v)| !(k == kind && v["name"] == name));
                    }
                    other => panic!("not simulated: {other:?}"),
                }
            }
        }

        fn table(&self) -> Table {
            let items = self
                .objects
                .iter()
                .map(|(k, v)| [(k.clone(), v.clone())].into_iter().collect())
                .collect();
            Table::parse(Listing { nftables: items })
        }
    }

    #[test]
    fn elements_are_addresses_prefixes_and_ranges_of_one_prefix() {
        for (listed, want) in [
            (json!("10.0.0.2"), Some("10.0.0.2/32")),
            (json!("fd00::2"), Some("fd00::2/128")),
            (
                json!({"prefix": {"addr": "10.1.0.0", "len": 24}}),
                Some("10.1.0.0/24"),
            ),
            (
                json!({"prefix": {"addr": "2001:db8:1::", "len": 56}}),
                Some("2001:db8:1::/56"),
            ),
            (json!({"prefix": {"addr": "10.1.0.1", "len": 24}}), None),
            (json!({"prefix": {"addr": "10.1.0.0", "len": 33}}), None),
            (
                json!({"range": ["10.1.0.0", "10.1.0.255"]}),
                Some("10.1.0.0/24"),
            ),
            (
                json!({"range": ["10.1.0.7", "10.1.0.7"]}),
                Some("10.1.0.7/32"),
            ),
            (
                json!({"range": ["2001:db8::", "2001:db8::ffff"]}),
                Some("2001:db8::/112"),
            ),
            (
                json!({"range": ["0.0.0.0", "255.255.255.255"]}),
                Some("0.0.0.0/0"),
            ),
            (
                json!({"range": ["::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]}),
                Some("::/0"),
            ),
            (json!({"range": ["10.1.0.1", "10.1.0.6"]}), None),
            (json!({"range": ["10.1.0.0", "10.1.0.254"]}), None),
            (json!({"range": ["10.1.0.128", "10.1.1.127"]}), None),
            (json!({"range": ["10.1.0.9", "10.1.0.1"]}), None),
            (json!({"range": ["10.1.0.0", "fd00::"]}), None),
            (json!("not an address"), None),
            (json!({"concat": ["10.0.0.1", 80]}), None),
        ] {
            assert_eq!(network(&listed), want.map(net), "{listed}");
        }
    }

    fn desired() -> (FirewallState, PublicKey, PublicKey) {
        let iface = InterfaceName::new("wg0").unwrap();
        let mut s = FirewallState::new(iface, ServerPolicy::default());
        let (a, b) = (
            PrivateKey::generate().public_key(),
            PrivateKey::generate().public_key(),
        );
        let full = PeerPolicy {
            quota: Some("1GiB/1d".parse().unwrap()),
            rate_up: Some("10mbit".parse().unwrap()),
            rate_down: Some("10mbit".parse().unwrap()),
            allow: Some(vec!["192.0.2.0/24:tcp:443".parse().unwrap()]),
            ..PeerPolicy::default()
        };
        s.peers.insert(
            a,
            PeerFirewall::new(
                vec![
                    net("10.8.0.2/32"),
                    net("fd00::2/128"),
                    net("2001:db8:1::/56"),
                    net("192.168.50.0/24"),
                ],
                full,
                0,
            ),
        );
        s.peers.insert(
            b,
            PeerFirewall::new(
                vec![net("10.8.0.3/32"), net("fd00::3/128"), net("10.20.0.0/16")],
                PeerPolicy::default(),
                0,
            ),
        );
        s.validate().unwrap();
        (s, a, b)
    }

    /// The state of [`desired`], written into an empty fake table.
    fn loaded() -> (FirewallState, PublicKey, PublicKey, FakeNft) {
        let (desired, a, b) = desired();
        let mut nft = FakeNft::default();
        nft.run(&render::delta_commands(
            &desired.interface,
            &plan_firewall(&desired, None),
            &[],
        ));
        (desired, a, b, nft)
    }

    #[test]
    fn prefix_elements_round_trip_through_render_and_read() {
        let (mut desired, a, b) = desired();
        let iface = desired.interface.clone();
        let mut nft = FakeNft::default();
        let delta = plan_firewall(&desired, None);
        let commands = render::delta_commands(&iface, &delta, &[]);
        // Prefixes go out as prefixes, hosts as addresses.
        let text = serde_json::to_string(&commands).unwrap();
        assert!(
            text.contains(r#"{"prefix":{"addr":"2001:db8:1::","len":56}}"#),
            "{text}"
        );
        assert!(text.contains(r#"{"prefix":{"addr":"10.20.0.0","len":16}}"#));
        assert!(text.contains(r#""10.8.0.2""#) && !text.contains("10.8.0.2/32"));
        nft.run(&commands);
        // Host addresses in the hash sets, networks in the interval sets.
        let elems =
            |nft: &mut FakeNft, name: &str| nft.find("set", name).unwrap()["elem"].to_string();
        assert!(nft.find("set", "up4_wg0").unwrap().get("flags").is_none());
        assert_eq!(
            nft.find("set", "up6n_wg0").unwrap()["flags"],
            json!(["interval"])
        );
        let host4 = elems(&mut nft, "up4_wg0");
        assert!(
            host4.contains("10.8.0.2") && host4.contains("10.8.0.3"),
            "{host4}"
        );
        assert!(!host4.contains("prefix"), "{host4}");
        let net4 = elems(&mut nft, "up4n_wg0");
        assert!(
            net4.contains("192.168.50.0") && net4.contains("10.20.0.0"),
            "{net4}"
        );
        assert!(!net4.contains("10.8.0."), "{net4}");
        assert!(elems(&mut nft, "qd6n_wg0").contains("2001:db8:1::"));
        assert!(!elems(&mut nft, "qd6n_wg0").contains("fd00::"));
        let live = nft.table().live(&iface).unwrap();
        assert_eq!(live.policy.as_ref(), Some(&desired.policy));
        assert_eq!(live.peers[&a].elements, desired.peers[&a].elements());
        assert_eq!(live.peers[&b].elements, desired.peers[&b].elements());
        assert!(live.stray.is_empty());
        assert!(plan_firewall(&desired, Some(&live)).is_empty());

        // A routed network replaced by a narrower one and another one added: removed and
        // added as prefixes, and read back converged.
        let mut pb = desired.peers[&b].clone();
        pb.addresses = vec![
            net("10.8.0.3/32"),
            net("fd00::3/128"),
            net("10.20.0.0/17"),
            net("2001:db8:2::/48"),
        ];
        desired.peers.insert(b, pb);
        let delta = plan_firewall(&desired, Some(&live));
        assert_eq!(delta.peers.len(), 1);
        nft.run(&render::delta_commands(&iface, &delta, &[]));
        let live = nft.table().live(&iface).unwrap();
        assert!(plan_firewall(&desired, Some(&live)).is_empty());
        assert_eq!(live.peers[&b].addresses().len(), 4);
    }

    /// The sets as the previous layout wrote them: every element of a kind in one
    /// interval set named as today's host set; no network sets.
    fn previous_layout(nft: &mut FakeNft) {
        let mut moved: Vec<(String, Vec<Value>)> = Vec::new();
        for (_, v) in &nft.objects {
            if let Some(host) = v["name"].as_str().and_then(|n| {
                let (head, iface) = n.split_once('_')?;
                Some(format!("{}_{iface}", head.strip_suffix('n')?))
            }) {
                if v.get("elem").is_some() {
                    moved.push((host, v["elem"].as_array().unwrap().clone()));
                }
            }
        }
        nft.objects.retain(|(_, v)| {
            !v["name"].as_str().is_some_and(|n| {
                n.split_once('_').is_some_and(|(h, _)| h.ends_with('n')) && v.get("elem").is_some()
            })
        });
        for (host, elems) in moved {
            let set = nft.find("set", &host).unwrap();
            set["flags"] = json!(["interval"]);
            set["elem"].as_array_mut().unwrap().extend(elems);
        }
    }

    #[test]
    fn sets_of_the_interval_layout_are_outdated_and_made_again() {
        let (desired, a, _, mut nft) = loaded();
        let iface = desired.interface.clone();
        previous_layout(&mut nft);
        assert!(nft.find("set", "up4n_wg0").is_none());
        let table = nft.table();
        let outdated = table.outdated_sets(&iface);
        assert_eq!(outdated.len(), PeerSet::ALL.len() * 2);
        assert!(outdated.iter().all(|id| id.shape == Shape::Host));
        let live = table.live(&iface).unwrap();
        assert_eq!(live.policy, None);
        // Objects are still the peer's; no element is reported.
        assert!(live.peers[&a].elements.is_empty());
        assert!(live.peers[&a].quota.is_some() && live.peers[&a].chain.is_some());
        let delta = plan_firewall(&desired, Some(&live));
        assert!(delta.server.is_some());
        assert!(delta.peers.iter().all(|c| c.remove_elements.is_empty()
            && c.put_objects
                .iter()
                .all(|o| !matches!(o, wgm_core::backend::firewall::PeerObject::Quota { .. }))));
        let commands = render::delta_commands(&iface, &delta, &outdated);
        // Each outdated set is deleted after the last rule that names it is gone, and made
        // again.
        let text: Vec<String> = commands.iter().map(Value::to_string).collect();
        let at = |head: &str, name: &str| {
            let name = format!(r#""name":"{name}""#);
            text.iter()
                .position(|c| c.starts_with(head) && c.contains(&name))
                .unwrap()
        };
        let delete = at(r#"{"delete":{"set":"#, "up4_wg0");
        assert!(at(r#"{"flush":{"chain":"#, "up_wg0") < delete);
        assert!(at(r#"{"delete":{"chain":"#, "nat_wg0") < at(r#"{"delete":{"set":"#, "peers4_wg0"));
        assert!(delete < at(r#"{"add":{"set":"#, "up4_wg0"));
        assert!(at(r#"{"delete":{"map":"#, "qd6_wg0") < at(r#"{"add":{"map":"#, "qd6_wg0"));
        nft.run(&commands);
        let live = nft.table().live(&iface).unwrap();
        assert!(nft.table().outdated_sets(&iface).is_empty());
        assert!(plan_firewall(&desired, Some(&live)).is_empty());
    }

    #[test]
    fn hash_sets_of_the_first_layout_stay_and_only_networks_are_added() {
        let (desired, a, b, mut nft) = loaded();
        let iface = desired.interface.clone();
        // The first layout: hash sets of host addresses only, no network sets.
        nft.objects.retain(|(_, v)| {
            !v["name"].as_str().is_some_and(|n| {
                n.split_once('_').is_some_and(|(h, _)| h.ends_with('n')) && v.get("elem").is_some()
            })
        });
        let counted = nft.find("set", "up4_wg0").unwrap();
        for e in counted["elem"].as_array_mut().unwrap() {
            e["elem"]["counter"] = json!({"packets": 3, "bytes": 300});
        }
        let table = nft.table();
        assert!(table.outdated_sets(&iface).is_empty());
        let live = table.live(&iface).unwrap();
        assert_eq!(live.policy, None, "the network sets are missing");
        assert_eq!(live.peers[&a].counters.up_bytes, 300);
        let delta = plan_firewall(&desired, Some(&live));
        // Only the networks are added; no host element is touched.
        for change in &delta.peers {
            assert!(change.remove_elements.is_empty());
            assert!(change
                .add_elements
                .iter()
                .all(|e| Shape::of(&e.address) == Shape::Net));
        }
        nft.run(&render::delta_commands(&iface, &delta, &[]));
        let live = nft.table().live(&iface).unwrap();
        assert_eq!(live.peers[&b].counters.up_bytes, 300);
        assert!(plan_firewall(&desired, Some(&live)).is_empty());
    }

    #[test]
    fn a_host_address_in_a_network_set_makes_it_outdated() {
        let (desired, _, _, mut nft) = loaded();
        let iface = desired.interface.clone();
        let set = nft.find("set", "peers6n_wg0").unwrap();
        set["elem"].as_array_mut().unwrap().push(json!("fd00::99"));
        let table = nft.table();
        assert_eq!(
            table.outdated_sets(&iface),
            vec![SetId {
                set: PeerSet::Peers,
                fam: Fam::V6,
                shape: Shape::Net
            }]
        );
        assert_eq!(table.live(&iface).unwrap().policy, None);
    }

    #[test]
    fn an_element_that_is_no_prefix_makes_its_set_outdated() {
        let (desired, _, _, mut nft) = loaded();
        let iface = desired.interface.clone();
        let set = nft.find("set", "dn4n_wg0").unwrap();
        set["elem"]
            .as_array_mut()
            .unwrap()
            .push(json!({"elem": {"val": {"range": ["10.30.0.1", "10.30.0.5"]}, "counter": {"packets": 0, "bytes": 0}}}));
        let table = nft.table();
        assert_eq!(
            table.outdated_sets(&iface),
            vec![SetId {
                set: PeerSet::Down,
                fam: Fam::V4,
                shape: Shape::Net
            }]
        );
        let live = table.live(&iface).unwrap();
        assert_eq!(live.policy, None);
        let delta = plan_firewall(&desired, Some(&live));
        let outdated = table.outdated_sets(&iface);
        nft.run(&render::delta_commands(&iface, &delta, &outdated));
        let live = nft.table().live(&iface).unwrap();
        assert!(plan_firewall(&desired, Some(&live)).is_empty());
    }
}
