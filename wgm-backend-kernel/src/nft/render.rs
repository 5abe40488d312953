//! Names and JSON (libnftables schema) of wgm's nftables objects: the static part of a
//! server, its per-peer elements and objects, and the batch of a delta.
//!
//! Rule expressions are written exactly as `nft -j list` prints them back, so a read can
//! compare what it finds with what would be written (see `read.rs`).

use ipnet::IpNet;
use serde_json::{json, Value};

use wgm_core::backend::firewall::{
    peer_tag, Element, FirewallDelta, ObjectKind, PeerObject, PeerSet,
};
use wgm_core::keys::PublicKey;
use wgm_core::names::InterfaceName;
use wgm_core::policy::{FilterRule, Proto, ServerPolicy, Verdict};

/// The one table wgm owns.
pub(crate) const TABLE: &str = "wgm";
/// Its family: both IPv4 and IPv6.
pub(crate) const FAMILY: &str = "inet";
/// The prefix of the comment of the first rule of a server's forward chain, followed by
/// the policy the static part was written for.
pub(crate) const POLICY_COMMENT: &str = "wgm v1";
/// The prefix of the comment of the last rule of a peer's allow chain, followed by the
/// peer's key.
pub(crate) const CHAIN_END_COMMENT: &str = "wgm end";

/// The address family of a set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fam {
    V4,
    V6,
}

impl Fam {
    pub(crate) const BOTH: [Fam; 2] = [Fam::V4, Fam::V6];

    pub(crate) fn of(net: &IpNet) -> Fam {
        match net {
            IpNet::V4(_) => Fam::V4,
            IpNet::V6(_) => Fam::V6,
        }
    }

    fn digit(self) -> &'static str {
        match self {
            Fam::V4 => "4",
            Fam::V6 => "6",
        }
    }

    /// The payload protocol of the family (`ip`, `ip6`).
    fn proto(self) -> &'static str {
        match self {
            Fam::V4 => "ip",
            Fam::V6 => "ip6",
        }
    }

    /// The set key type.
    pub(crate) fn addr_type(self) -> &'static str {
        match self {
            Fam::V4 => "ipv4_addr",
            Fam::V6 => "ipv6_addr",
        }
    }
}

/// The name prefix of a set.
fn set_prefix(set: PeerSet) -> &'static str {
    match set {
        PeerSet::Peers => "peers",
        PeerSet::Up => "up",
        PeerSet::Down => "dn",
        PeerSet::Dropped => "x",
        PeerSet::QuotaDrop => "qd",
        PeerSet::QuotaReport => "qr",
        PeerSet::LimitUp => "lu",
        PeerSet::LimitDown => "ld",
        PeerSet::Allow => "acl",
    }
}

/// What a set's elements are: host addresses (a hash set: adding or deleting one element
/// costs the same at any size) or networks (an interval set, so that a lookup finds the
/// network holding an address; nft checks overlaps by loading every element of every
/// interval set of the table before a batch that changes elements, so these stay small:
/// only routed networks and delegated prefixes live there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    Host,
    Net,
}

impl Shape {
    pub(crate) const BOTH: [Shape; 2] = [Shape::Host, Shape::Net];

    /// Where `net` goes: a host address (`/32`, `/128`) to the hash set, else to the
    /// interval set.
    pub(crate) fn of(net: &IpNet) -> Shape {
        if net.prefix_len() == net.max_prefix_len() {
            Shape::Host
        } else {
            Shape::Net
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Shape::Host => "",
            Shape::Net => "n",
        }
    }

    /// The set flags: none for a hash set, `interval` for networks.
    pub(crate) fn flags(self) -> Option<&'static [&'static str]> {
        match self {
            Shape::Host => None,
            Shape::Net => Some(&["interval"]),
        }
    }
}

/// One set or map of a server: what it holds, for which family, of which shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SetId {
    pub(crate) set: PeerSet,
    pub(crate) fam: Fam,
    pub(crate) shape: Shape,
}

impl SetId {
    /// Every set and map of a server.
    pub(crate) fn all() -> impl Iterator<Item = SetId> {
        PeerSet::ALL.into_iter().flat_map(|set| {
            Fam::BOTH.into_iter().flat_map(move |fam| {
                Shape::BOTH
                    .into_iter()
                    .map(move |shape| SetId { set, fam, shape })
            })
        })
    }

    /// The set that holds `e`.
    pub(crate) fn of(e: &Element) -> SetId {
        SetId {
            set: e.set,
            fam: Fam::of(&e.address),
            shape: Shape::of(&e.address),
        }
    }

    /// `up4_wg0` (host addresses), `up4n_wg0` (networks): this set of the server `iface`.
    pub(crate) fn name(self, iface: &InterfaceName) -> String {
        set_name(self.set, self.fam, self.shape, iface)
    }
}

/// `up4_wg0`: the set `set` of family `fam` and shape `shape` of the server `iface`.
pub(crate) fn set_name(set: PeerSet, fam: Fam, shape: Shape, iface: &InterfaceName) -> String {
    format!(
        "{}{}{}_{iface}",
        set_prefix(set),
        fam.digit(),
        shape.suffix()
    )
}

/// What a set holds: `None` for a plain set, else the map's data type.
pub(crate) fn set_data(set: PeerSet) -> Option<&'static str> {
    match set {
        PeerSet::QuotaDrop | PeerSet::QuotaReport => Some("quota"),
        PeerSet::LimitUp | PeerSet::LimitDown => Some("limit"),
        PeerSet::Allow => Some("verdict"),
        PeerSet::Peers | PeerSet::Up | PeerSet::Down | PeerSet::Dropped => None,
    }
}

/// Whether the set's elements carry counters.
pub(crate) fn set_counts(set: PeerSet) -> bool {
    matches!(set, PeerSet::Up | PeerSet::Down | PeerSet::Dropped)
}

/// The static chains of a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StaticChain {
    /// Base chain, hook forward.
    Forward,
    /// Base chain, hook postrouting (nat).
    Nat,
    /// From the peers.
    Up,
    /// To the peers.
    Down,
    /// Counts a drop from a peer, then drops.
    DropUp,
    /// Counts a drop to a peer, then drops.
    DropDown,
    /// What a peer receives, whoever sends it: counted, held to its quota and its
    /// download rate (drops through `DropDown`), else returns.
    DownCount,
    /// Traffic from a peer that its side lets through: to another peer it is then held
    /// to the receiver's side (`DownCount`); accepted.
    Accepted,
}

impl StaticChain {
    pub(crate) const ALL: [StaticChain; 8] = [
        StaticChain::Forward,
        StaticChain::Nat,
        StaticChain::Up,
        StaticChain::Down,
        StaticChain::DropUp,
        StaticChain::DropDown,
        StaticChain::DownCount,
        StaticChain::Accepted,
    ];

    pub(crate) fn name(self, iface: &InterfaceName) -> String {
        let prefix = match self {
            StaticChain::Forward => "fwd",
            StaticChain::Nat => "nat",
            StaticChain::Up => "up",
            StaticChain::Down => "dn",
            StaticChain::DropUp => "xup",
            StaticChain::DropDown => "xdn",
            StaticChain::DownCount => "dq",
            StaticChain::Accepted => "ok",
        };
        format!("{prefix}_{iface}")
    }

    /// `(type, hook, priority)` of a base chain.
    pub(crate) fn hook(self) -> Option<(&'static str, &'static str, i64)> {
        match self {
            StaticChain::Forward => Some(("filter", "forward", 0)),
            StaticChain::Nat => Some(("nat", "postrouting", 100)),
            _ => None,
        }
    }
}

/// `q_<tag>`, `lu_<tag>`, `ld_<tag>`, `p_<tag>`.
pub(crate) fn object_name(kind: ObjectKind, iface: &InterfaceName, key: &PublicKey) -> String {
    let prefix = match kind {
        ObjectKind::Quota => "q",
        ObjectKind::LimitUp => "lu",
        ObjectKind::LimitDown => "ld",
        ObjectKind::Chain => "p",
    };
    format!("{prefix}_{}", peer_tag(iface, key))
}

/// The comment of a peer's limit objects: the interface and the key.
pub(crate) fn owner_comment(iface: &InterfaceName, key: &PublicKey) -> String {
    format!("{iface} {key}")
}

/// The comment of the policy rule: `wgm v1 fwd=1 p2p=0 def=allow m4=eth0 m6=-`.
pub(crate) fn policy_comment(p: &ServerPolicy) -> String {
    let iface = |i: &Option<InterfaceName>| i.as_ref().map_or("-".to_owned(), ToString::to_string);
    format!(
        "{POLICY_COMMENT} fwd={} p2p={} def={} m4={} m6={}",
        u8::from(p.forwarding),
        u8::from(p.peer_to_peer),
        p.default_verdict,
        iface(&p.masquerade4),
        iface(&p.masquerade6),
    )
}

/// The policy a policy rule's comment records, if it is one.
pub(crate) fn parse_policy_comment(s: &str) -> Option<ServerPolicy> {
    let rest = s.strip_prefix(POLICY_COMMENT)?.strip_prefix(' ')?;
    let mut p = ServerPolicy::default();
    let mut seen = 0;
    for part in rest.split(' ') {
        let (k, v) = part.split_once('=')?;
        let iface = |v: &str| -> Option<Option<InterfaceName>> {
            if v == "-" {
                Some(None)
            } else {
                InterfaceName::new(v).ok().map(Some)
            }
        };
        match k {
            "fwd" => p.forwarding = v == "1",
            "p2p" => p.peer_to_peer = v == "1",
            "def" => p.default_verdict = Verdict::parse(v, "def").ok()?,
            "m4" => p.masquerade4 = iface(v)?,
            "m6" => p.masquerade6 = iface(v)?,
            _ => return None,
        }
        seen += 1;
    }
    (seen == 5 && policy_comment(&p) == s).then_some(p)
}

// ---------------------------------------------------------------------------------------
// Expressions
// ---------------------------------------------------------------------------------------

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn eq(left: Value, right: Value) -> Value {
    compare("==", left, right)
}

fn ne(left: Value, right: Value) -> Value {
    compare("!=", left, right)
}

fn compare(op: &str, left: Value, right: Value) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("op".into(), Value::String(op.into()));
    m.insert("left".into(), left);
    m.insert("right".into(), right);
    object("match", Value::Object(m))
}

/// `{key: value}`, moving `value` in (`json!` would clone it).
fn object(key: &str, value: Value) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(key.to_owned(), value);
    Value::Object(m)
}

fn jump(target: &str) -> Value {
    json!({"jump": {"target": target}})
}

fn accept() -> Value {
    json!({"accept": null})
}

fn drop() -> Value {
    json!({"drop": null})
}

fn set_ref(name: &str) -> Value {
    Value::String(format!("@{name}"))
}

/// `ip saddr` / `ip6 daddr`.
fn addr(fam: Fam, field: &str) -> Value {
    payload(fam.proto(), field)
}

/// An address or network as `nft -j` prints it: a host as the bare address.
pub(crate) fn net_value(net: &IpNet) -> Value {
    if net.prefix_len() == net.max_prefix_len() {
        Value::String(net.addr().to_string())
    } else {
        json!({"prefix": {"addr": net.network().to_string(), "len": net.prefix_len()}})
    }
}

/// A rule: its expressions and optional comment.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rule {
    pub(crate) expr: Vec<Value>,
    pub(crate) comment: Option<String>,
}

fn rule(expr: Vec<Value>) -> Rule {
    Rule {
        expr,
        comment: None,
    }
}

/// Every family and shape, in the order the static rules look them up.
const FAM_SHAPES: [(Fam, Shape); 4] = [
    (Fam::V4, Shape::Host),
    (Fam::V4, Shape::Net),
    (Fam::V6, Shape::Host),
    (Fam::V6, Shape::Net),
];

/// The rules of a static chain of `iface` under `policy`.
pub(crate) fn static_rules(
    chain: StaticChain,
    iface: &InterfaceName,
    policy: &ServerPolicy,
) -> Vec<Rule> {
    let name = iface.as_str();
    let up = StaticChain::Up.name(iface);
    let dn = StaticChain::Down.name(iface);
    let xup = StaticChain::DropUp.name(iface);
    let xdn = StaticChain::DropDown.name(iface);
    let dq = StaticChain::DownCount.name(iface);
    let ok = StaticChain::Accepted.name(iface);
    let set = |s: PeerSet, f: Fam, sh: Shape| set_name(s, f, sh, iface);
    // What lets a packet through: from a peer through `ok_I` (which holds traffic to
    // another peer to the receiver's side too), towards a peer straight (`dq_I` ran).
    let pass = |chain: StaticChain| {
        if chain == StaticChain::Up {
            jump(&ok)
        } else {
            accept()
        }
    };
    let established = |chain: StaticChain| {
        rule(vec![
            json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}),
            pass(chain),
        ])
    };
    let verdict = |v: Verdict, chain: StaticChain, drop_chain: &str| match v {
        Verdict::Allow => pass(chain),
        Verdict::Deny => jump(drop_chain),
    };
    // Count, quota (drop or report) and rate of the peer by `field`: the rules shared by
    // what a peer sends (`up_I`) and what it receives (`dq_I`).
    let account = |out: &mut Vec<Rule>,
                   field: &str,
                   count: PeerSet,
                   limit: PeerSet,
                   drop_chain: &str| {
        for (fam, shape) in FAM_SHAPES {
            out.push(rule(vec![eq(
                addr(fam, field),
                set_ref(&set(count, fam, shape)),
            )]));
        }
        for (fam, shape) in FAM_SHAPES {
            out.push(rule(vec![
                json!({"quota": {"map": {"key": addr(fam, field), "data": set_ref(&set(PeerSet::QuotaDrop, fam, shape))}}}),
                jump(drop_chain),
            ]));
        }
        for (fam, shape) in FAM_SHAPES {
            out.push(rule(vec![
                json!({"quota": {"map": {"key": addr(fam, field), "data": set_ref(&set(PeerSet::QuotaReport, fam, shape))}}}),
            ]));
        }
        for (fam, shape) in FAM_SHAPES {
            out.push(rule(vec![
                json!({"limit": {"map": {"key": addr(fam, field), "data": set_ref(&set(limit, fam, shape))}}}),
                jump(drop_chain),
            ]));
        }
    };
    let mut out = Vec::new();
    match chain {
        StaticChain::Forward => {
            out.push(Rule {
                expr: vec![eq(meta("iifname"), json!(name)), jump(&up)],
                comment: Some(policy_comment(policy)),
            });
            out.push(rule(vec![eq(meta("oifname"), json!(name)), jump(&dn)]));
        }
        StaticChain::Nat => {
            for (fam, out_if) in [
                (Fam::V4, &policy.masquerade4),
                (Fam::V6, &policy.masquerade6),
            ] {
                if let Some(out_if) = out_if {
                    for shape in Shape::BOTH {
                        out.push(rule(vec![
                            eq(meta("oifname"), json!(out_if.as_str())),
                            eq(
                                addr(fam, "saddr"),
                                set_ref(&set(PeerSet::Peers, fam, shape)),
                            ),
                            json!({"masquerade": null}),
                        ]));
                    }
                }
            }
        }
        StaticChain::Down => {
            // The receiver's side first, then what comes from outside may reach.
            out.push(rule(vec![jump(&dq)]));
            if !policy.forwarding {
                out.push(rule(vec![jump(&xdn)]));
            }
            out.push(established(chain));
            out.push(rule(vec![verdict(policy.default_verdict, chain, &xdn)]));
        }
        StaticChain::DownCount => {
            account(&mut out, "daddr", PeerSet::Down, PeerSet::LimitDown, &xdn);
        }
        StaticChain::Up => {
            account(&mut out, "saddr", PeerSet::Up, PeerSet::LimitUp, &xup);
            if !policy.peer_to_peer {
                out.push(rule(vec![eq(meta("oifname"), json!(name)), jump(&xup)]));
            }
            if !policy.forwarding {
                // Only peer-to-peer traffic (if allowed) goes on.
                out.push(rule(vec![ne(meta("oifname"), json!(name)), jump(&xup)]));
            }
            out.push(established(chain));
            // A peer's allow list decides everything it starts, traffic to other peers
            // included; so peer-to-peer traffic is accepted only after it, for peers
            // without a list.
            for (fam, shape) in FAM_SHAPES {
                out.push(rule(vec![
                    json!({"vmap": {"key": addr(fam, "saddr"), "data": set_ref(&set(PeerSet::Allow, fam, shape))}}),
                ]));
            }
            if policy.peer_to_peer {
                out.push(rule(vec![eq(meta("oifname"), json!(name)), jump(&ok)]));
            }
            out.push(rule(vec![verdict(policy.default_verdict, chain, &xup)]));
        }
        StaticChain::Accepted => {
            out.push(rule(vec![eq(meta("oifname"), json!(name)), jump(&dq)]));
            out.push(rule(vec![accept()]));
        }
        StaticChain::DropUp | StaticChain::DropDown => {
            let field = if chain == StaticChain::DropUp {
                "saddr"
            } else {
                "daddr"
            };
            for (fam, shape) in FAM_SHAPES {
                out.push(rule(vec![eq(
                    addr(fam, field),
                    set_ref(&set(PeerSet::Dropped, fam, shape)),
                )]));
            }
            out.push(rule(vec![drop()]));
        }
    }
    out
}

/// The rules of a peer's allow chain: one per destination (`jump ok_I`, which accepts),
/// then count and drop.
pub(crate) fn chain_rules(
    iface: &InterfaceName,
    key: &PublicKey,
    rules: &[FilterRule],
) -> Vec<Rule> {
    let ok = StaticChain::Accepted.name(iface);
    let mut out: Vec<Rule> = rules
        .iter()
        .map(|r| Rule {
            expr: filter_expr(r, &ok),
            comment: Some(r.to_string()),
        })
        .collect();
    out.push(Rule {
        expr: vec![jump(&StaticChain::DropUp.name(iface))],
        comment: Some(format!("{CHAIN_END_COMMENT} {key}")),
    });
    out
}

/// The match of `r`, then `jump ok` (the chain that accepts, see [`StaticChain::Accepted`]).
fn filter_expr(r: &FilterRule, ok: &str) -> Vec<Value> {
    let fam = Fam::of(&r.dst);
    let mut expr = vec![eq(addr(fam, "daddr"), net_value(&r.dst))];
    match (r.proto, r.ports) {
        (None, _) => {}
        (Some(Proto::Icmp), _) => {
            let word = if fam == Fam::V4 { "icmp" } else { "ipv6-icmp" };
            expr.push(eq(meta("l4proto"), json!(word)));
        }
        (Some(p), None) => expr.push(eq(meta("l4proto"), json!(p.as_str()))),
        (Some(p), Some(ports)) => {
            let right = if ports.first() == ports.last() {
                json!(ports.first())
            } else {
                json!({"range": [ports.first(), ports.last()]})
            };
            expr.push(eq(payload(p.as_str(), "dport"), right));
        }
    }
    expr.push(jump(ok));
    expr
}

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

fn base() -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("family".into(), json!(FAMILY));
    m.insert("table".into(), json!(TABLE));
    m
}

fn with(mut m: serde_json::Map<String, Value>, fields: Value) -> Value {
    if let Value::Object(extra) = fields {
        m.extend(extra);
    }
    Value::Object(m)
}

fn cmd(verb: &str, kind: &str, body: Value) -> Value {
    object(verb, object(kind, body))
}

fn chain_cmd(verb: &str, name: &str) -> Value {
    cmd(verb, "chain", with(base(), json!({"name": name})))
}

fn rule_cmd(chain: &str, r: &Rule) -> Value {
    let mut body = with(base(), json!({"chain": chain, "expr": r.expr}));
    if let (Some(c), Value::Object(m)) = (&r.comment, &mut body) {
        m.insert("comment".into(), json!(c));
    }
    cmd("add", "rule", body)
}

/// A set or map's definition: keyed by address (a hash set for host addresses, an
/// interval set for networks), a counter in each element of the counting sets, a quota,
/// limit or verdict as the data of a map.
pub(crate) fn set_definition(id: SetId, iface: &InterfaceName) -> (&'static str, Value) {
    let mut def = with(
        base(),
        json!({"name": id.name(iface), "type": id.fam.addr_type()}),
    );
    let kind = match set_data(id.set) {
        Some(data) => {
            def["map"] = json!(data);
            "map"
        }
        None => "set",
    };
    if let Some(flags) = id.shape.flags() {
        def["flags"] = json!(flags);
    }
    if set_counts(id.set) {
        def["stmt"] = json!([{"counter": null}]);
    }
    (kind, def)
}

/// The first half of the commands that write the static part of `iface`: the table,
/// the base chains deleted and made again (a hook or priority changed by hand cannot be
/// updated), the regular chains flushed (so no rule refers to a set any more), and the
/// sets and maps named in `outdated` deleted (they exist with another definition, which
/// `add` cannot change: the kernel refuses it; their elements are added back by the rest
/// of the delta, as the read does not report them, see `read.rs`).
pub(crate) fn static_head(iface: &InterfaceName, outdated: &[SetId], out: &mut Vec<Value>) {
    out.push(cmd(
        "add",
        "table",
        json!({"family": FAMILY, "name": TABLE}),
    ));
    for chain in StaticChain::ALL {
        let name = chain.name(iface);
        // `add` of an existing chain (base or not) without a hook is a no-op; so this
        // creates what is missing and then clears or recreates it.
        out.push(chain_cmd("add", &name));
        if let Some((kind, hook, prio)) = chain.hook() {
            out.push(chain_cmd("delete", &name));
            out.push(cmd(
                "add",
                "chain",
                with(
                    base(),
                    json!({"name": name, "type": kind, "hook": hook, "prio": prio, "policy": "accept"}),
                ),
            ));
        } else {
            out.push(cmd("flush", "chain", with(base(), json!({"name": name}))));
        }
    }
    for id in outdated {
        let (kind, _) = set_definition(*id, iface);
        out.push(cmd(
            "delete",
            kind,
            with(base(), json!({"name": id.name(iface)})),
        ));
    }
}

/// The second half: every set and map (a no-op where they exist, so their elements stay;
/// made where missing or deleted by [`static_head`]), then every rule of the static
/// chains for `policy`.
///
/// [`delta_commands`] puts the peers' removed elements and objects and their put objects
/// between the two halves: the kernel (6.x, nft 1.0.6) refuses with `No such file or
/// directory` an element of an interval map made in the same batch whose quota, limit or
/// chain is made **after** the map, and accepts it when the object comes first.
pub(crate) fn static_tail(iface: &InterfaceName, policy: &ServerPolicy, out: &mut Vec<Value>) {
    for id in SetId::all() {
        let (kind, def) = set_definition(id, iface);
        out.push(cmd("add", kind, def));
    }
    for chain in StaticChain::ALL {
        let name = chain.name(iface);
        for r in static_rules(chain, iface, policy) {
            out.push(rule_cmd(&name, &r));
        }
    }
}

fn element_value(iface: &InterfaceName, key: &PublicKey, e: &Element) -> Value {
    let address = net_value(&e.address);
    match e.set {
        PeerSet::Peers | PeerSet::Up | PeerSet::Down | PeerSet::Dropped => {
            json!({"elem": {"val": address, "comment": key.to_base64()}})
        }
        PeerSet::QuotaDrop | PeerSet::QuotaReport => {
            json!([address, object_name(ObjectKind::Quota, iface, key)])
        }
        PeerSet::LimitUp => json!([address, object_name(ObjectKind::LimitUp, iface, key)]),
        PeerSet::LimitDown => json!([address, object_name(ObjectKind::LimitDown, iface, key)]),
        PeerSet::Allow => json!([address, jump(&object_name(ObjectKind::Chain, iface, key))]),
    }
}

/// Group elements by set into one command per set.
fn element_commands(
    verb: &str,
    iface: &InterfaceName,
    elems: &[(Element, Value)],
    out: &mut Vec<Value>,
) {
    let mut by_set: std::collections::BTreeMap<String, Vec<Value>> =
        std::collections::BTreeMap::new();
    for (e, v) in elems {
        by_set
            .entry(SetId::of(e).name(iface))
            .or_default()
            .push(v.clone());
    }
    for (name, elem) in by_set {
        out.push(cmd(
            verb,
            "element",
            with(base(), json!({"name": name, "elem": elem})),
        ));
    }
}

/// The commands of `delta` for `iface`, in its phases (see `wgm_core::backend::firewall`);
/// `outdated` as for [`static_head`]. One batch, so the order inside it changes nothing
/// of what the delta means: with a static part, its first half comes first and its second
/// half (sets and rules) just before the added elements.
pub(crate) fn delta_commands(
    iface: &InterfaceName,
    delta: &FirewallDelta,
    outdated: &[SetId],
) -> Vec<Value> {
    let mut out = Vec::new();
    if delta.server.is_some() {
        static_head(iface, outdated, &mut out);
    }
    // Phase 1: removed elements (the key alone identifies an element: an address or a
    // prefix, exactly the interval that was added).
    let mut removed: Vec<(Element, Value)> = delta
        .remove_stray
        .iter()
        .map(|e| (*e, net_value(&e.address)))
        .collect();
    for change in &delta.peers {
        removed.extend(
            change
                .remove_elements
                .iter()
                .map(|e| (*e, net_value(&e.address))),
        );
    }
    element_commands("delete", iface, &removed, &mut out);
    // Phase 2: removed objects.
    for change in &delta.peers {
        for kind in &change.remove_objects {
            let name = object_name(*kind, iface, &change.key);
            let what = match kind {
                ObjectKind::Quota => "quota",
                ObjectKind::LimitUp | ObjectKind::LimitDown => "limit",
                ObjectKind::Chain => "chain",
            };
            out.push(cmd("delete", what, with(base(), json!({"name": name}))));
        }
    }
    // Phase 3: put objects.
    for change in &delta.peers {
        for object in &change.put_objects {
            let name = object_name(object.kind(), iface, &change.key);
            match object {
                PeerObject::Quota {
                    bytes,
                    used,
                    window,
                } => out.push(cmd(
                    "add",
                    "quota",
                    with(
                        base(),
                        // The kernel refuses used bytes above the size (EINVAL), even
                        // on an update, which ignores them.
                        json!({"name": name, "bytes": bytes, "used": (*used).min(*bytes), "inv": true,
                               "comment": format!("{} {window}", owner_comment(iface, &change.key))}),
                    ),
                )),
                PeerObject::LimitUp(rate) | PeerObject::LimitDown(rate) => out.push(cmd(
                    "add",
                    "limit",
                    with(
                        base(),
                        json!({"name": name, "rate": rate, "per": "second", "rate_unit": "bytes",
                               "inv": true, "comment": owner_comment(iface, &change.key)}),
                    ),
                )),
                PeerObject::Chain(rules) => {
                    out.push(chain_cmd("add", &name));
                    out.push(cmd("flush", "chain", with(base(), json!({"name": name}))));
                    for r in chain_rules(iface, &change.key, rules) {
                        out.push(rule_cmd(&name, &r));
                    }
                }
            }
        }
    }
    if let Some(policy) = &delta.server {
        static_tail(iface, policy, &mut out);
    }
    // Phase 4: added elements.
    let mut added = Vec::new();
    for change in &delta.peers {
        for e in &change.add_elements {
            added.push((*e, element_value(iface, &change.key, e)));
        }
    }
    element_commands("add", iface, &added, &mut out);
    out
}

/// A batch document.
pub(crate) fn batch(commands: Vec<Value>) -> Value {
    object("nftables", Value::Array(commands))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_comments_round_trip() {
        let p = ServerPolicy {
            forwarding: false,
            masquerade4: Some(InterfaceName::new("eth0").unwrap()),
            masquerade6: None,
            peer_to_peer: true,
            default_verdict: Verdict::Deny,
        };
        let c = policy_comment(&p);
        assert_eq!(c, "wgm v1 fwd=0 p2p=1 def=deny m4=eth0 m6=-");
        assert_eq!(parse_policy_comment(&c), Some(p));
        assert!(c.len() < 128);
        assert_eq!(parse_policy_comment("wgm v1 fwd=0"), None);
        assert_eq!(parse_policy_comment("something else"), None);
    }

    /// Where the rules of `up_I` that send a packet on (or drop it) stand, by what they
    /// match: the allow lists' verdict maps, `oifname I` (peer to peer), `oifname != I`.
    fn up_positions(policy: &ServerPolicy) -> (usize, Option<usize>, Option<usize>) {
        let iface = InterfaceName::new("wg0").unwrap();
        let rules = static_rules(StaticChain::Up, &iface, policy);
        let find = |f: &dyn Fn(&Rule) -> bool| rules.iter().position(f);
        let vmap = find(&|r| r.expr[0].get("vmap").is_some()).unwrap();
        let oif = |op: &str, r: &Rule| {
            r.expr[0]["match"]["op"] == op && r.expr[0]["match"]["left"] == meta("oifname")
        };
        (vmap, find(&|r| oif("==", r)), find(&|r| oif("!=", r)))
    }

    #[test]
    fn an_allow_list_decides_before_peer_to_peer_traffic_is_accepted() {
        let iface = InterfaceName::new("wg0").unwrap();
        let mut policy = ServerPolicy {
            peer_to_peer: true,
            ..ServerPolicy::default()
        };
        let rules = static_rules(StaticChain::Up, &iface, &policy);
        let (vmap, p2p, not_p2p) = up_positions(&policy);
        let p2p = p2p.unwrap();
        assert!(vmap < p2p, "the allow lists come first: {rules:#?}");
        assert_eq!(rules[p2p].expr[1], jump("ok_wg0"));
        assert_eq!(not_p2p, None);
        // Refused: dropped before anything else decides, lists included.
        policy.peer_to_peer = false;
        let rules = static_rules(StaticChain::Up, &iface, &policy);
        let (vmap, p2p, _) = up_positions(&policy);
        let p2p = p2p.unwrap();
        assert!(p2p < vmap);
        assert_eq!(rules[p2p].expr[1], jump("xup_wg0"));
    }

    /// Whatever lets a peer's packet through (established, its allow list, peer to peer,
    /// the default) goes through `ok_I`, which holds traffic to another peer to the
    /// receiver's count, quota and download rate (`dq_I`), as `dn_I` holds traffic from
    /// outside, before it accepts.
    #[test]
    fn traffic_between_peers_is_held_to_the_receivers_side_too() {
        let iface = InterfaceName::new("wg0").unwrap();
        for policy in [
            ServerPolicy {
                peer_to_peer: true,
                ..ServerPolicy::default()
            },
            ServerPolicy {
                peer_to_peer: true,
                forwarding: false,
                default_verdict: Verdict::Deny,
                ..ServerPolicy::default()
            },
        ] {
            let up = static_rules(StaticChain::Up, &iface, &policy);
            assert!(
                up.iter().all(|r| !r.expr.contains(&accept())),
                "nothing in up_wg0 accepts by itself: {up:#?}"
            );
            let passes = up
                .iter()
                .filter(|r| r.expr.contains(&jump("ok_wg0")))
                .count();
            let want = if policy.default_verdict == Verdict::Allow {
                3
            } else {
                2
            };
            assert_eq!(passes, want, "{up:#?}");
            assert_eq!(
                static_rules(StaticChain::Accepted, &iface, &policy),
                vec![
                    rule(vec![eq(meta("oifname"), json!("wg0")), jump("dq_wg0")]),
                    rule(vec![accept()]),
                ]
            );
            let down = static_rules(StaticChain::Down, &iface, &policy);
            assert_eq!(down[0], rule(vec![jump("dq_wg0")]));
            let dq = static_rules(StaticChain::DownCount, &iface, &policy);
            assert!(dq.iter().all(|r| r.expr.last() != Some(&accept())));
            assert!(dq[0].expr[0].to_string().contains("@dn4_wg0"), "{dq:#?}");
            assert!(dq.iter().any(|r| r.expr.len() == 2
                && r.expr[1] == jump("xdn_wg0")
                && r.expr[0].to_string().contains("@ld6n_wg0")));
        }
        let key = wgm_core::keys::PrivateKey::generate().public_key();
        let chain = chain_rules(&iface, &key, &["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(chain[0].expr.last(), Some(&jump("ok_wg0")));
        assert_eq!(chain[1].expr, vec![jump("xup_wg0")]);
    }

    #[test]
    fn forwarding_off_drops_all_but_peer_to_peer_traffic() {
        let iface = InterfaceName::new("wg0").unwrap();
        let policy = ServerPolicy {
            forwarding: false,
            peer_to_peer: true,
            ..ServerPolicy::default()
        };
        let rules = static_rules(StaticChain::Up, &iface, &policy);
        let (vmap, p2p, not_p2p) = up_positions(&policy);
        let not_p2p = not_p2p.unwrap();
        assert!(not_p2p < vmap && vmap < p2p.unwrap(), "{rules:#?}");
        assert_eq!(rules[not_p2p].expr[1], jump("xup_wg0"));
        // Towards the peers everything forwarded is dropped (peer-to-peer traffic is
        // decided in up_I).
        let down = static_rules(StaticChain::Down, &iface, &policy);
        assert!(down.iter().any(|r| r.expr == vec![jump("xdn_wg0")]));
        let on = static_rules(StaticChain::Down, &iface, &ServerPolicy::default());
        assert!(!on.iter().any(|r| r.expr == vec![jump("xdn_wg0")]));
    }

    #[test]
    fn names_fit_and_differ() {
        let iface = InterfaceName::new("wg-office.1=+").unwrap();
        let key = wgm_core::keys::PrivateKey::generate().public_key();
        for kind in [
            ObjectKind::Quota,
            ObjectKind::LimitUp,
            ObjectKind::LimitDown,
            ObjectKind::Chain,
        ] {
            assert!(object_name(kind, &iface, &key).len() <= 32);
        }
        let mut names = std::collections::BTreeSet::new();
        for id in SetId::all() {
            assert!(names.insert(id.name(&iface)));
        }
        for chain in StaticChain::ALL {
            assert!(names.insert(chain.name(&iface)));
        }
    }
}
