//! The nftables firewall at 10 000 peers: adding one peer incrementally
//! (`NftFirewall::apply_firewall` of the planned delta: that peer's elements and objects,
//! one `nft -j -f -` batch) against rewriting wgm's whole table (`nft -j -f FILE` with
//! `delete table inet wgm` and the full table, as a tool that regenerates its ruleset
//! does). Also the initial load and one full read (`read_firewall`, which parses
//! `nft -j list table inet wgm`).
//!
//! The server has 10 000 peers with an IPv4 and an IPv6 address each; every tenth has a
//! quota, an upload rate limit and a two-rule allow list (so 1 000 quota, 1 000 limit
//! objects and 1 000 allow chains); every tenth (`WGM_BENCH_ROUTED_EVERY=N`: every Nth,
//! 0 for none) also has a delegated IPv6 `/56`, a network in the interval sets. Each round adds a new peer (a different one each time,
//! planned against the table as first read), then rewrites the whole table with that peer
//! in it; the two run alternately and each line is the median (min–max) of the rounds.
//! Both sides run `nft` through `ip netns exec` in a namespace the bench creates and
//! deletes.
//!
//! Needs root, `ip` and `nft`, and `WGM_TEST_NETNS=1`; without the switch it prints one
//! line and exits. Run: `WGM_TEST_NETNS=1 cargo bench -p wgm-benches --bench firewall`
//! (`WGM_BENCH_ROUNDS=N` for N rounds, default 7; `WGM_BENCH_PEERS=N` for another size).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wgm_backend_kernel::NftFirewall;
use wgm_core::backend::firewall::{plan_firewall, FirewallBackend, FirewallState, PeerFirewall};
use wgm_core::keys::PrivateKey;
use wgm_core::names::InterfaceName;
use wgm_core::policy::{PeerPolicy, ServerPolicy};
use wgm_test_support::{require, Suite};

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The peer's two host addresses, `i` in each family, and, when `i` is a multiple of
/// `routed_every` (not 0), a delegated IPv6 prefix `2001:db8:…/56` of its own.
fn addressed(mut p: PeerFirewall, i: u32, routed_every: u32) -> PeerFirewall {
    let v4 = Ipv4Addr::from(0x0a00_0000 + i);
    let v6 = Ipv6Addr::from(0xfd00_0000_0000_0000_0000_0000_0000_0000_u128 + u128::from(i));
    p.addresses = vec![
        format!("{v4}/32").parse().unwrap(),
        format!("{v6}/128").parse().unwrap(),
    ];
    if routed_every != 0 && i.is_multiple_of(routed_every) {
        let prefix = Ipv6Addr::from((0x2001_0db8_u128 << 96) | (u128::from(i) << 72));
        p.addresses.push(format!("{prefix}/56").parse().unwrap());
    }
    p
}

fn peer(i: u32, routed_every: u32) -> PeerFirewall {
    let policy = if i.is_multiple_of(10) {
        PeerPolicy {
            quota: Some("10GiB/30d".parse().unwrap()),
            rate_up: Some("20mbit".parse().unwrap()),
            allow: Some(vec![
                "192.0.2.0/24:tcp:443".parse().unwrap(),
                "[2001:db8::/32]:udp:53".parse().unwrap(),
            ]),
            ..PeerPolicy::default()
        }
    } else {
        PeerPolicy::default()
    };
    addressed(PeerFirewall::new(Vec::new(), policy, 0), i, routed_every)
}

fn median(v: &mut [Duration]) -> (Duration, Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    if require(Suite::Netns, &["ip", "nft"]).is_none() {
        return;
    }
    let peers = env_number("WGM_BENCH_PEERS", 10_000);
    let rounds = env_number("WGM_BENCH_ROUNDS", 7).max(1);
    let routed_every = u32::try_from(env_number("WGM_BENCH_ROUTED_EVERY", 10)).unwrap();
    let ns = Netns(format!("wgmb-fw-{}", std::process::id()));
    assert!(Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap()
        .success());
    let fw = NftFirewall::in_netns(&ns.0).unwrap();
    let wg = InterfaceName::new("wg0").unwrap();
    let mut desired = FirewallState::new(wg.clone(), ServerPolicy::default());
    let n = u32::try_from(peers).unwrap();
    for i in 1..=n {
        desired
            .peers
            .insert(PrivateKey::generate().public_key(), peer(i, routed_every));
    }

    let t = Instant::now();
    fw.apply_firewall(&wg, &plan_firewall(&desired, None))
        .await
        .unwrap();
    let initial = t.elapsed();
    let t = Instant::now();
    let live = fw.read_firewall(&wg).await.unwrap().unwrap();
    let read = t.elapsed();
    assert_eq!(live.peers.len(), peers);
    assert!(plan_firewall(&desired, Some(&live)).is_empty());

    let file = std::env::temp_dir().join(format!("wgm-bench-fw-{}.json", std::process::id()));
    let mut incremental = Vec::new();
    let mut full = Vec::new();
    let mut batch_bytes = (0, 0);
    for round in 0..rounds {
        // A new peer, planned against the table as first read: a delta for it alone.
        let i = n + 1 + u32::try_from(round).unwrap();
        let key = PrivateKey::generate().public_key();
        // Every other round the new peer has a quota, a limit and an allow list.
        let new = if round % 2 == 0 {
            peer(i, 0)
        } else {
            peer(10 * i, 0)
        };
        let mut one = desired.clone();
        one.peers.clear();
        one.peers.insert(key, addressed(new, i, routed_every));
        let mut delta = plan_firewall(&one, Some(&live));
        delta.peers.retain(|c| c.key == key);
        assert_eq!(delta.peers.len(), 1);
        desired.peers.insert(key, one.peers[&key].clone());
        batch_bytes.0 = fw.render(&wg, &delta).len();

        // The whole table, as a regenerating tool writes it.
        let whole = fw.render(&wg, &plan_firewall(&desired, None));
        let whole = format!(
            "{{\"nftables\":[{{\"delete\":{{\"table\":{{\"family\":\"inet\",\"name\":\"wgm\"}}}}}},{}",
            &whole["{\"nftables\":[".len()..]
        );
        batch_bytes.1 = whole.len();
        std::fs::write(&file, &whole).unwrap();

        let t = Instant::now();
        fw.apply_firewall(&wg, &delta).await.unwrap();
        incremental.push(t.elapsed());

        let t = Instant::now();
        let status = Command::new("ip")
            .args(["netns", "exec", &ns.0, "nft", "-j", "-f"])
            .arg(&file)
            .stdin(Stdio::null())
            .status()
            .unwrap();
        full.push(t.elapsed());
        assert!(status.success());
    }
    let _ = std::fs::remove_file(&file);
    let after = fw.read_firewall(&wg).await.unwrap().unwrap();
    assert!(plan_firewall(&desired, Some(&after)).is_empty());

    let (im, imin, imax) = median(&mut incremental);
    let (fm, fmin, fmax) = median(&mut full);
    let routed = if routed_every == 0 {
        String::new()
    } else {
        format!("; every {routed_every}th with a delegated /56")
    };
    println!("nftables firewall, {peers} peers (dual-stack; every tenth with quota, limit and allow list{routed}), {rounds} rounds");
    println!("  initial load (one batch)          {:9.1} ms", ms(initial));
    println!("  read_firewall (list + parse)      {:9.1} ms", ms(read));
    println!(
        "  add one peer: apply_firewall      {:9.1} ms  ({:.1}–{:.1})  batch {} bytes",
        ms(im),
        ms(imin),
        ms(imax),
        batch_bytes.0
    );
    println!(
        "  add one peer: nft -f whole table  {:9.1} ms  ({:.1}–{:.1})  batch {} bytes",
        ms(fm),
        ms(fmin),
        ms(fmax),
        batch_bytes.1
    );
    println!(
        "  ratio whole / incremental         {:9.1}×",
        fm.as_secs_f64() / im.as_secs_f64()
    );
}
