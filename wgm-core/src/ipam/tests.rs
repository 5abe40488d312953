//! Unit and property tests of the IPAM (known answers from docs/security.md, exhaustion,
//! pairing, quarantine, delegation, all-or-nothing, large pools, and a naive model).
// Tests: unwrap on known-good literals; the model runner is one long match by design;
// short names (a, b, m, r) keep the address arithmetic readable.
#![allow(
    clippy::unwrap_used,
    clippy::too_many_lines,
    clippy::many_single_char_names
)]

use super::*;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}
fn v6net(s: &str) -> Ipv6Net {
    s.parse().unwrap()
}
fn v4net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}
fn rng() -> StdRng {
    StdRng::seed_from_u64(0x5eed)
}
const T0: OffsetDateTime = datetime!(2025-01-01 0:00 UTC);
const STRATEGIES: [Strategy; 2] = [Strategy::Sequential, Strategy::Random];

/// Per-/64 exclusions: IID 0, 128 RFC 2526 anycast IDs, 2^24 RFC 5453 IIDs.
const EXCLUDED_PER_64: u128 = 1 + 128 + (1 << 24);

fn is_invalid(e: &Error) -> bool {
    matches!(e, Error::InvalidInput { .. })
}
fn is_conflict(e: &Error) -> bool {
    matches!(e, Error::Conflict { .. })
}
fn is_exhausted(e: &Error) -> bool {
    matches!(e, Error::PoolExhausted { .. })
}

// ---------------------------------------------------------------- known answers

#[test]
fn v6_known_answer_exclusions_of_fd12_3456_789a_1() {
    let mut pool = Pool::new(net("fd12:3456:789a:1::/64")).unwrap();
    let excluded = [
        ("fd12:3456:789a:1::", Exclusion::SubnetRouterAnycast),
        (
            "fd12:3456:789a:1:fdff:ffff:ffff:ff80",
            Exclusion::ReservedSubnetAnycast,
        ),
        (
            "fd12:3456:789a:1:fdff:ffff:ffff:ffc0",
            Exclusion::ReservedSubnetAnycast,
        ),
        (
            "fd12:3456:789a:1:fdff:ffff:ffff:ffff",
            Exclusion::ReservedSubnetAnycast,
        ),
        (
            "fd12:3456:789a:1:200:5eff:fe00:0",
            Exclusion::ReservedInterfaceIdentifier,
        ),
        (
            "fd12:3456:789a:1:200:5eff:fe00:5213",
            Exclusion::ReservedInterfaceIdentifier,
        ),
        (
            "fd12:3456:789a:1:200:5eff:feff:ffff",
            Exclusion::ReservedInterfaceIdentifier,
        ),
    ];
    for (a, why) in excluded {
        assert_eq!(pool.exclusion(ip(a)), Some(why), "{a}");
        assert!(!pool.is_free(ip(a)), "{a}");
        let e = pool.claim(ip(a), "peer.address").unwrap_err();
        assert!(is_invalid(&e), "{a}: {e}");
        assert!(e.to_string().contains("peer.address"), "{e}");
        assert!(e.to_string().contains(&why.to_string()), "{e}");
        assert!(pool.reserve(ip(a)).is_err());
    }
    // The neighbours of each excluded range are usable.
    for a in [
        "fd12:3456:789a:1::1",
        "fd12:3456:789a:1:fdff:ffff:ffff:ff7f",
        "fd12:3456:789a:1:fe00::",
        "fd12:3456:789a:1:200:5eff:fdff:ffff",
        "fd12:3456:789a:1:200:5eff:ff00:0",
        "fd12:3456:789a:1:ffff:ffff:ffff:ffff",
    ] {
        assert_eq!(pool.exclusion(ip(a)), None, "{a}");
        pool.claim(ip(a), "peer.address").unwrap();
    }
    assert_eq!(pool.capacity(), (1u128 << 64) - EXCLUDED_PER_64);
    assert_eq!(pool.free_count(), pool.capacity() - 6);
    pool.check_invariants();
}

#[test]
fn sequential_skips_excluded_runs_arithmetically() {
    // Jumps over each excluded run in one step, including into the next /64.
    let pool = Pool::new(net("fd00::/63")).unwrap();
    assert_eq!(pool.next_free_from(0), Some(1));
    assert_eq!(
        pool.next_free_from(0x0200_5eff_fe00_0000),
        Some(0x0200_5eff_ff00_0000)
    );
    assert_eq!(
        pool.next_free_from(0x0200_5eff_fe12_3456),
        Some(0x0200_5eff_ff00_0000)
    );
    assert_eq!(
        pool.next_free_from(0xfdff_ffff_ffff_ff80),
        Some(0xfe00_0000_0000_0000)
    );
    assert_eq!(pool.next_free_from(1 << 64), Some((1 << 64) + 1));
    assert_eq!(
        pool.next_free_from((1 << 64) + 0x0200_5eff_fe00_0001),
        Some((1 << 64) + 0x0200_5eff_ff00_0000)
    );
    assert_eq!(pool.next_free_from((2 << 64) - 1), Some((2 << 64) - 1));
    assert_eq!(pool.next_free_from(2 << 64), None);
    assert_eq!(pool.capacity(), 2 * ((1u128 << 64) - EXCLUDED_PER_64));
}

#[test]
fn v4_known_answers() {
    let mut p24 = Pool::new(net("10.8.0.0/24")).unwrap();
    assert_eq!(p24.capacity(), 254);
    assert_eq!(p24.exclusion(ip("10.8.0.0")), Some(Exclusion::Network));
    assert_eq!(p24.exclusion(ip("10.8.0.255")), Some(Exclusion::Broadcast));
    for a in ["10.8.0.0", "10.8.0.255"] {
        let e = p24.claim(ip(a), "peer.address").unwrap_err();
        assert!(is_invalid(&e), "{e}");
    }
    p24.claim(ip("10.8.0.1"), "peer.address").unwrap();
    p24.claim(ip("10.8.0.254"), "peer.address").unwrap();

    let mut p31 = Pool::new(net("10.8.0.0/31")).unwrap();
    assert_eq!(p31.capacity(), 2);
    p31.claim(ip("10.8.0.0"), "a").unwrap();
    p31.claim(ip("10.8.0.1"), "a").unwrap();
    assert_eq!(p31.free_count(), 0);

    let mut p32 = Pool::new(net("10.8.0.7/32")).unwrap();
    assert_eq!(p32.capacity(), 1);
    assert_eq!(
        p32.allocate(Strategy::Random, &mut rng()).unwrap(),
        ip("10.8.0.7")
    );
    assert!(is_exhausted(
        &p32.allocate(Strategy::Sequential, &mut rng()).unwrap_err()
    ));

    assert_eq!(Pool::new(net("10.8.0.0/30")).unwrap().capacity(), 2);
    assert_eq!(
        Pool::new(net("10.0.0.0/8")).unwrap().capacity(),
        (1 << 24) - 2
    );
}

#[test]
fn v6_smaller_than_64_applies_the_rules_that_fall_inside() {
    // IID 0 is both the /64's and the pool's subnet-router anycast.
    assert_eq!(Pool::new(net("fd00::/126")).unwrap().capacity(), 3);
    // The pool's own network address is its subnet-router anycast.
    let p = Pool::new(net("fd00::4/126")).unwrap();
    assert_eq!(p.capacity(), 3);
    assert_eq!(
        p.exclusion(ip("fd00::4")),
        Some(Exclusion::SubnetRouterAnycast)
    );
    // /127 keeps one address; a /128 has none and is refused.
    assert_eq!(Pool::new(net("fd00::2/127")).unwrap().capacity(), 1);
    assert!(is_invalid(&Pool::new(net("fd00::1/128")).unwrap_err()));
    // A /120 whose upper half is RFC 2526 anycast: 256 - 128 - 1 (its network address).
    let p = Pool::new(net("fd00::fdff:ffff:ffff:ff00/120")).unwrap();
    assert_eq!(p.capacity(), 127);
    assert_eq!(
        p.exclusion(ip("fd00::fdff:ffff:ffff:ff80")),
        Some(Exclusion::ReservedSubnetAnycast)
    );
    // Entirely inside the RFC 5453 range: nothing usable.
    assert!(Pool::new(net("fd00::200:5eff:fe00:0/104")).is_err());
    // A /96 straddling nothing: only its network address.
    assert_eq!(
        Pool::new(net("fd00::1:0:0/96")).unwrap().capacity(),
        (1 << 32) - 1
    );
}

#[test]
fn rejects_bad_pools() {
    for bad in [
        "10.8.0.1/24",
        "fd00::1/64",
        "0.0.0.0/0",
        "0.0.0.0/8",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "224.0.0.0/4",
        "255.255.255.255/32",
        "::/0",
        "::/64",
        "::1/128",
        "::ffff:0:0/96",
        "fe80::/64",
        "ff02::/64",
        "8000::/1",
    ] {
        let e = Pool::new(net(bad)).unwrap_err();
        assert!(is_invalid(&e), "{bad}: {e}");
        assert!(e.to_string().contains("pool"), "{e}");
    }
    // Host bits: the error names the network.
    let e = Pool::new(net("10.8.0.1/24")).unwrap_err();
    assert!(e.to_string().contains("10.8.0.0/24"), "{e}");
    assert!(Pool::new(net("2000::/3")).is_ok());
}

#[test]
fn claim_errors_name_the_reason() {
    let mut p = Pool::new(net("10.8.0.0/24")).unwrap();
    p.reserve(ip("10.8.0.1")).unwrap();
    p.reserve(ip("10.8.0.1")).unwrap(); // idempotent
    assert!(p.is_reserved(ip("10.8.0.1")));
    let e = p.claim(ip("10.8.0.1"), "peer.address").unwrap_err();
    assert!(is_conflict(&e) && e.to_string().contains("reserved"), "{e}");
    let e = p.claim(ip("10.9.0.1"), "peer.address").unwrap_err();
    assert!(is_invalid(&e) && e.to_string().contains("outside"), "{e}");
    let e = p.claim(ip("fd00::1"), "peer.address").unwrap_err();
    assert!(is_invalid(&e), "{e}");
    p.claim(ip("10.8.0.9"), "peer.address").unwrap();
    let e = p.claim(ip("10.8.0.9"), "peer.address").unwrap_err();
    assert!(
        is_conflict(&e) && e.to_string().contains("already in use"),
        "{e}"
    );
    let e = p.reserve(ip("10.8.0.9")).unwrap_err();
    assert!(is_conflict(&e), "{e}");
    assert!(is_invalid(&p.claim_index(256, "peer.address").unwrap_err()));
    // Release is idempotent and frees reservations too.
    p.release(ip("10.8.0.9"));
    p.release(ip("10.8.0.9"));
    p.release(ip("10.8.0.1"));
    p.release(ip("192.0.2.1"));
    assert_eq!(p.free_count(), 254);
    assert_eq!(p.reserved().count(), 0);
    p.check_invariants();
}

// ---------------------------------------------------------------- exhaustion (F2)

fn exhaust(net_s: &str, expected: &[&str]) {
    for strategy in STRATEGIES {
        let mut p = Pool::new(net(net_s)).unwrap();
        let mut r = rng();
        let mut got = BTreeSet::new();
        for _ in 0..expected.len() {
            assert!(got.insert(p.allocate(strategy, &mut r).unwrap()));
        }
        let want: BTreeSet<IpAddr> = expected.iter().map(|a| ip(a)).collect();
        assert_eq!(got, want, "{net_s} {strategy:?}");
        assert_eq!(p.free_count(), 0);
        for _ in 0..3 {
            let e = p.allocate(strategy, &mut r).unwrap_err();
            assert!(is_exhausted(&e), "{e}");
            assert!(e.to_string().contains(net_s), "{e}");
        }
        assert_eq!(p.taken_count(), expected.len() as u128);
        // A released address comes straight back.
        p.release(ip(expected[0]));
        assert_eq!(p.allocate(strategy, &mut r).unwrap(), ip(expected[0]));
        p.check_invariants();
    }
}

#[test]
fn exhausts_a_v4_slash_30_exactly() {
    exhaust("10.8.0.0/30", &["10.8.0.1", "10.8.0.2"]);
}

#[test]
fn exhausts_a_v6_slash_126_exactly() {
    exhaust("fd00::/126", &["fd00::1", "fd00::2", "fd00::3"]);
    exhaust("fd00::4/126", &["fd00::5", "fd00::6", "fd00::7"]);
}

#[test]
fn exhausts_a_v6_slash_120_with_anycast_half_under_random() {
    let net_s = "fd00::fdff:ffff:ffff:ff00/120";
    let expected: Vec<String> = (1..128)
        .map(|i| format!("fd00::fdff:ffff:ffff:ff{i:02x}"))
        .collect();
    let refs: Vec<&str> = expected.iter().map(String::as_str).collect();
    exhaust(net_s, &refs);
}

// ---------------------------------------------------------------- large pools

#[test]
fn a_slash_8_allocates_100k_sequentially_in_one_run() {
    let mut p = Pool::new(net("10.0.0.0/8")).unwrap();
    let mut r = rng();
    let mut last = None;
    for _ in 0..100_000 {
        last = Some(p.allocate(Strategy::Sequential, &mut r).unwrap());
    }
    // 100 000 = 0x0186a0: 10.1.134.160.
    assert_eq!(last, Some(ip("10.1.134.160")));
    assert_eq!(p.runs(), 1, "sequential allocations merge into one run");
    assert_eq!(p.free_count(), (1 << 24) - 2 - 100_000);
    // A gap is reused first.
    p.release(ip("10.0.3.7"));
    assert_eq!(
        p.allocate(Strategy::Sequential, &mut r).unwrap(),
        ip("10.0.3.7")
    );
}

#[test]
fn a_slash_8_allocates_100k_randomly_without_duplicates() {
    let mut p = Pool::new(net("10.0.0.0/8")).unwrap();
    let mut r = rng();
    let mut seen = BTreeSet::new();
    for _ in 0..100_000 {
        let a = p.allocate(Strategy::Random, &mut r).unwrap();
        assert!(p.exclusion(a).is_none());
        assert!(seen.insert(a), "duplicate {a}");
    }
    assert_eq!(p.free_count(), (1 << 24) - 2 - 100_000);
    assert!(p.runs() <= 100_000);
    p.check_invariants();
}

#[test]
fn a_slash_48_pool_allocates_without_materialising_exclusions() {
    let mut p = Pool::new(net("fd00:1::/48")).unwrap();
    assert_eq!(p.capacity(), 65536 * ((1u128 << 64) - EXCLUDED_PER_64));
    assert_eq!(
        p.exclusion(ip("fd00:1:0:ffff::")),
        Some(Exclusion::SubnetRouterAnycast)
    );
    assert_eq!(
        p.exclusion(ip("fd00:1:0:1234:fdff:ffff:ffff:ff9a")),
        Some(Exclusion::ReservedSubnetAnycast)
    );
    assert_eq!(
        p.exclusion(ip("fd00:1:0:beef:200:5eff:fe12:3456")),
        Some(Exclusion::ReservedInterfaceIdentifier)
    );
    let mut r = rng();
    for i in 1..=10_000u32 {
        let a = p.allocate(Strategy::Sequential, &mut r).unwrap();
        assert_eq!(p.index_of(a), Some(u128::from(i)));
    }
    let mut blocks = BTreeSet::new();
    for _ in 0..10_000 {
        let a = p.allocate(Strategy::Random, &mut r).unwrap();
        assert!(p.exclusion(a).is_none());
        if let IpAddr::V6(a) = a {
            blocks.insert(a.segments()[3]);
        }
    }
    // Random draws spread over the /64s of the /48.
    assert!(blocks.len() > 5_000, "{}", blocks.len());
    assert_eq!(p.taken_count(), 20_000);
    assert_eq!(p.runs(), 10_001);
}

// ---------------------------------------------------------------- dual stack

fn dual(v6: &str, v4: Option<&str>) -> DualStack {
    DualStack::new(v6net(v6), v4.map(v4net), None).unwrap()
}

fn idx(ds: &DualStack, a: &Allocation) -> (u128, Option<u128>) {
    (
        ds.v6().index_of(IpAddr::V6(a.v6)).unwrap(),
        a.v4.map(|v4| ds.v4().unwrap().index_of(IpAddr::V4(v4)).unwrap()),
    )
}

#[test]
fn sequential_pairs_host_indices() {
    let mut ds = dual("fd42::/64", Some("10.42.0.0/24"));
    ds.reserve(ip("fd42::1"), T0).unwrap();
    ds.reserve(ip("10.42.0.1"), T0).unwrap();
    let mut r = rng();
    for i in 2..12u128 {
        let a = ds
            .allocate_pair(Strategy::Sequential, true, &mut r, T0)
            .unwrap();
        assert_eq!(idx(&ds, &a), (i, Some(i)));
    }
    let a = ds
        .allocate_pair(Strategy::Sequential, true, &mut r, T0)
        .unwrap();
    assert_eq!(a.v6, "fd42::c".parse::<Ipv6Addr>().unwrap());
    assert_eq!(a.v4, Some(Ipv4Addr::new(10, 42, 0, 12)));
    // A v6-only peer takes index 13; the next pair skips to 14 in both families.
    let a = ds
        .allocate_pair(Strategy::Sequential, false, &mut r, T0)
        .unwrap();
    assert_eq!(idx(&ds, &a), (13, None));
    let a = ds
        .allocate_pair(Strategy::Sequential, true, &mut r, T0)
        .unwrap();
    assert_eq!(idx(&ds, &a), (14, Some(14)));
    // An explicit v4 claim elsewhere: the pair moves past it.
    ds.claim(ip("10.42.0.15"), "peer.address", T0).unwrap();
    let a = ds
        .allocate_pair(Strategy::Sequential, true, &mut r, T0)
        .unwrap();
    assert_eq!(idx(&ds, &a), (16, Some(16)));
    ds.check_invariants();
}

#[test]
fn pairing_falls_back_to_independent_when_no_common_index() {
    // v4 /30 (indices 1, 2) and v6 /126 (1, 2, 3); v6 1 and 2 taken, v4 1 taken.
    let mut ds = dual("fd00::/126", Some("10.0.0.0/30"));
    ds.claim(ip("fd00::1"), "a", T0).unwrap();
    ds.claim(ip("fd00::2"), "a", T0).unwrap();
    ds.claim(ip("10.0.0.1"), "a", T0).unwrap();
    let a = ds
        .allocate_pair(Strategy::Sequential, true, &mut rng(), T0)
        .unwrap();
    assert_eq!(idx(&ds, &a), (3, Some(2)));
    ds.check_invariants();
}

#[test]
fn random_pairs_draw_each_family_independently() {
    let mut ds = dual("fd42::/64", Some("10.0.0.0/8"));
    let mut r = rng();
    let mut v6s = BTreeSet::new();
    let mut v4s = BTreeSet::new();
    for _ in 0..1000 {
        let a = ds
            .allocate_pair(Strategy::Random, true, &mut r, T0)
            .unwrap();
        assert!(ds.v6().exclusion(IpAddr::V6(a.v6)).is_none());
        assert!(v6s.insert(a.v6) && v4s.insert(a.v4.unwrap()));
        // The interface identifier is not confined to the IPv4 index range.
        let (i6, _) = idx(&ds, &a);
        assert!(i6 >= 1 << 24, "{i6}");
    }
    assert_eq!(ds.free_v4(), Some((1 << 24) - 2 - 1000));
}

#[test]
fn pair_allocation_is_all_or_nothing() {
    for strategy in STRATEGIES {
        // v4 runs out first: the v6 address taken on the way is given back.
        let mut ds = dual("fd00::/64", Some("10.0.0.0/30"));
        let mut r = rng();
        ds.allocate_pair(strategy, true, &mut r, T0).unwrap();
        ds.allocate_pair(strategy, true, &mut r, T0).unwrap();
        let before = (ds.free_v6(), ds.free_v4());
        let e = ds.allocate_pair(strategy, true, &mut r, T0).unwrap_err();
        assert!(
            is_exhausted(&e) && e.to_string().contains("10.0.0.0/30"),
            "{e}"
        );
        assert_eq!((ds.free_v6(), ds.free_v4()), before);
        // v6-only still works.
        ds.allocate_pair(strategy, false, &mut r, T0).unwrap();

        // v6 runs out first: no IPv4 address is held.
        let mut ds = dual("fd00::/126", Some("10.0.0.0/24"));
        for _ in 0..3 {
            ds.allocate_pair(strategy, true, &mut r, T0).unwrap();
        }
        let before = (ds.free_v6(), ds.free_v4());
        let e = ds.allocate_pair(strategy, true, &mut r, T0).unwrap_err();
        assert!(
            is_exhausted(&e) && e.to_string().contains("fd00::/126"),
            "{e}"
        );
        assert_eq!((ds.free_v6(), ds.free_v4()), before);

        // IPv4 asked of a v6-only server: an error, nothing held.
        let mut ds = dual("fd00::/126", None);
        let e = ds.allocate_pair(strategy, true, &mut r, T0).unwrap_err();
        assert!(is_invalid(&e), "{e}");
        assert_eq!(ds.free_v6(), 3);
        assert_eq!(ds.free_v4(), None);
        ds.check_invariants();
    }
}

#[test]
fn release_allocation_returns_both_addresses() {
    // F3: create failed after allocation, the free counts are back where they were.
    let mut ds = dual("fd00::/64", Some("10.0.0.0/24"));
    let before = (ds.free_v6(), ds.free_v4());
    let a = ds
        .allocate_pair(Strategy::Random, true, &mut rng(), T0)
        .unwrap();
    ds.release_allocation(&a);
    assert_eq!((ds.free_v6(), ds.free_v4()), before);
}

#[test]
fn quarantine_holds_until_the_deadline() {
    let mut ds = dual("fd00::/126", Some("10.0.0.0/30"));
    let mut r = rng();
    let a = ds
        .allocate_pair(Strategy::Sequential, true, &mut r, T0)
        .unwrap();
    let until = T0 + Duration::hours(1);
    for addr in a.addrs() {
        ds.release_with_quarantine(addr, until);
    }
    assert_eq!(ds.quarantined().count(), 2);
    assert_eq!(ds.quarantined_until(IpAddr::V6(a.v6)), Some(until));
    ds.check_invariants();

    let half = T0 + Duration::minutes(30);
    assert!(!ds.is_free(IpAddr::V6(a.v6), half));
    let e = ds
        .claim(IpAddr::V6(a.v6), "peer.address", half)
        .unwrap_err();
    assert!(
        is_conflict(&e) && e.to_string().contains("quarantined"),
        "{e}"
    );
    assert!(is_conflict(
        &ds.reserve(a.v4.map(IpAddr::V4).unwrap(), half).unwrap_err()
    ));
    // The /30 has one other v4 address; after it, v4 is exhausted while quarantined.
    let b = ds
        .allocate_pair(Strategy::Sequential, true, &mut r, half)
        .unwrap();
    assert_ne!(b.v4, a.v4);
    assert_ne!(b.v6, a.v6);
    assert!(is_exhausted(
        &ds.allocate_pair(Strategy::Random, true, &mut r, half)
            .unwrap_err()
    ));

    // At the deadline it is free again and handed out.
    assert!(ds.is_free(IpAddr::V6(a.v6), until));
    let c = ds
        .allocate_pair(Strategy::Sequential, true, &mut r, until)
        .unwrap();
    assert_eq!(c.v4, a.v4);
    assert_eq!(ds.quarantine_len(), 0);
    ds.check_invariants();
}

#[test]
fn quarantine_restore_extend_and_release() {
    let mut ds = dual("fd00::/64", None);
    let a = ip("fd00::9");
    // Restoring a persisted quarantine on a fresh allocator holds the address.
    ds.release_with_quarantine(a, T0 + Duration::hours(1));
    assert!(ds.v6().is_taken(a));
    // A later deadline extends; an earlier one does not shorten.
    ds.release_with_quarantine(a, T0 + Duration::hours(3));
    ds.release_with_quarantine(a, T0 + Duration::hours(2));
    assert_eq!(ds.quarantined_until(a), Some(T0 + Duration::hours(3)));
    assert_eq!(ds.expire_quarantine(T0 + Duration::hours(2)), 0);
    // Rollback gives it back to its peer: held, no longer quarantined.
    assert!(ds.restore_quarantined(a));
    assert!(!ds.restore_quarantined(a));
    assert_eq!(ds.expire_quarantine(T0 + Duration::days(1)), 0);
    assert!(ds.v6().is_taken(a));
    // Excluded and outside addresses are ignored.
    ds.release_with_quarantine(ip("fd00::"), T0);
    ds.release_with_quarantine(ip("fd01::1"), T0);
    ds.release_with_quarantine(ip("10.0.0.1"), T0);
    assert_eq!(ds.quarantine_len(), 0);
    // Plain release ends a quarantine at once.
    ds.release_with_quarantine(a, T0 + Duration::days(9));
    ds.release(a);
    assert_eq!(ds.quarantine_len(), 0);
    assert!(ds.is_free(a, T0));
    // A reserved address loses its reservation when quarantined.
    ds.reserve(ip("fd00::1"), T0).unwrap();
    ds.release_with_quarantine(ip("fd00::1"), T0 + Duration::hours(1));
    assert!(!ds.v6().is_reserved(ip("fd00::1")));
    ds.claim(ip("fd00::1"), "peer.address", T0 + Duration::hours(1))
        .unwrap();
    ds.check_invariants();
}

// ---------------------------------------------------------------- prefix delegation

#[test]
fn delegates_64s_from_a_48_around_the_address_pool() {
    let mut ds =
        DualStack::new(v6net("fd00:1::/64"), None, Some((v6net("fd00:1::/48"), 64))).unwrap();
    let mut r = rng();
    assert_eq!(ds.prefixes().unwrap().capacity(), 65536);
    assert_eq!(ds.free_prefixes(), Some(65535));
    let e = ds
        .claim_prefix(v6net("fd00:1::/64"), "peer.prefix", T0)
        .unwrap_err();
    assert!(
        is_conflict(&e) && e.to_string().contains("address pool"),
        "{e}"
    );
    assert_eq!(
        ds.allocate_prefix(Strategy::Sequential, &mut r, T0)
            .unwrap(),
        v6net("fd00:1:0:1::/64")
    );
    ds.claim_prefix(v6net("fd00:1:0:2::/64"), "peer.prefix", T0)
        .unwrap();
    assert!(is_conflict(
        &ds.claim_prefix(v6net("fd00:1:0:2::/64"), "peer.prefix", T0)
            .unwrap_err()
    ));
    for bad in ["fd00:1:0:3::/56", "fd00:1:0:3::1/64", "fd00:2::/64"] {
        let e = ds.claim_prefix(v6net(bad), "peer.prefix", T0).unwrap_err();
        assert!(
            is_invalid(&e) && e.to_string().contains("peer.prefix"),
            "{bad}: {e}"
        );
    }
    assert_eq!(
        ds.allocate_prefix(Strategy::Sequential, &mut r, T0)
            .unwrap(),
        v6net("fd00:1:0:3::/64")
    );
    let mut seen = BTreeSet::new();
    for _ in 0..1000 {
        let p = ds.allocate_prefix(Strategy::Random, &mut r, T0).unwrap();
        assert!(seen.insert(p) && p.prefix_len() == 64 && v6net("fd00:1::/48").contains(&p));
        assert_ne!(p, v6net("fd00:1::/64"));
    }
    assert_eq!(ds.free_prefixes(), Some(65535 - 1003));

    // Quarantine works for prefixes as for addresses.
    let p = v6net("fd00:1:0:2::/64");
    ds.release_prefix_with_quarantine(p, T0 + Duration::hours(1));
    assert!(is_conflict(
        &ds.claim_prefix(p, "peer.prefix", T0).unwrap_err()
    ));
    assert_eq!(ds.quarantined_prefixes().count(), 1);
    ds.claim_prefix(p, "peer.prefix", T0 + Duration::hours(1))
        .unwrap();
    ds.release_prefix(p);
    ds.release_prefix(p);
    assert!(ds.prefixes().unwrap().is_free(p));
    ds.check_invariants();
}

#[test]
fn delegation_sizes_and_exhaustion() {
    let p = PrefixPool::new(v6net("fd00:1::/48"), 56).unwrap();
    assert_eq!(p.capacity(), 256);
    assert_eq!(p.prefix_at(255), Some(v6net("fd00:1:0:ff00::/56")));
    assert_eq!(p.index_of(v6net("fd00:1:0:ff00::/56")), Some(255));
    for strategy in STRATEGIES {
        let mut p = PrefixPool::new(v6net("fd00:1::/62"), 64).unwrap();
        let mut r = rng();
        let got: BTreeSet<Ipv6Net> = (0..4)
            .map(|_| p.allocate(strategy, &mut r).unwrap())
            .collect();
        assert_eq!(got.len(), 4);
        assert!(is_exhausted(&p.allocate(strategy, &mut r).unwrap_err()));
    }
    assert!(PrefixPool::new(v6net("fd00:1::/48"), 47).is_err());
    assert!(PrefixPool::new(v6net("fd00:1::/48"), 129).is_err());
    assert!(PrefixPool::new(v6net("fd00:1::1/48"), 64).is_err());
    assert!(PrefixPool::new(v6net("ff00::/48"), 64).is_err());
    // A pool bigger than one delegated prefix reserves all it overlaps.
    let ds = DualStack::new(v6net("fd00:1::/62"), None, Some((v6net("fd00:1::/48"), 64))).unwrap();
    assert_eq!(ds.free_prefixes(), Some(65536 - 4));
    // A parent entirely inside the address pool leaves nothing to delegate.
    let e =
        DualStack::new(v6net("fd00:1::/48"), None, Some((v6net("fd00:1::/56"), 64))).unwrap_err();
    assert!(is_invalid(&e), "{e}");
    // Without delegation, asking for a prefix is an error.
    let mut ds = dual("fd00::/64", None);
    assert!(is_invalid(
        &ds.allocate_prefix(Strategy::Sequential, &mut rng(), T0)
            .unwrap_err()
    ));
}

#[test]
fn dual_stack_rejects_bad_pools_with_the_family_in_the_field() {
    let e = DualStack::new(v6net("fd00::1/64"), None, None).unwrap_err();
    assert!(e.to_string().contains("ipv6.pool"), "{e}");
    let e = DualStack::new(v6net("fd00::/64"), Some(v4net("10.0.0.1/24")), None).unwrap_err();
    assert!(e.to_string().contains("ipv4.pool"), "{e}");
}

#[test]
fn strategy_serde_is_lowercase() {
    assert_eq!(
        serde_json::to_string(&Strategy::Random).unwrap(),
        "\"random\""
    );
    assert_eq!(
        serde_json::from_str::<Strategy>("\"sequential\"").unwrap(),
        Strategy::Sequential
    );
    assert!(serde_json::from_str::<Strategy>("\"Random\"").is_err());
    assert_eq!(Strategy::default(), Strategy::Sequential);
}

// ---------------------------------------------------------------- model-based property test

mod model {
    use super::*;
    use proptest::prelude::{
        any, prop_assert, prop_assert_eq, prop_oneof, proptest, ProptestConfig,
    };
    use proptest::strategy::Strategy as Gen;
    use proptest::test_runner::TestCaseError;

    /// Exclusion rules written independently of the implementation, by address.
    fn naive_excluded(pool: IpNet, addr: IpAddr) -> bool {
        match (pool, addr) {
            (IpNet::V4(n), IpAddr::V4(a)) => {
                n.prefix_len() <= 30 && (a == n.network() || a == n.broadcast())
            }
            (IpNet::V6(n), IpAddr::V6(a)) => {
                let s = a.segments();
                a == n.network()
                    || s[4..] == [0, 0, 0, 0]
                    || (s[4] == 0x0200 && s[5] == 0x5eff && (0xfe00..=0xfeff).contains(&s[6]))
                    || (s[4] == 0xfdff && s[5] == 0xffff && s[6] == 0xffff && s[7] >= 0xff80)
            }
            _ => true,
        }
    }

    fn addrs_of(pool: IpNet) -> Vec<IpAddr> {
        pool.hosts()
            .collect::<Vec<_>>()
            .into_iter()
            .chain([pool.network(), pool.broadcast()])
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc { random: bool, want_v4: bool },
        Claim { v4: bool, i: usize },
        Reserve { v4: bool, i: usize },
        Release { v4: bool, i: usize },
        Quarantine { v4: bool, i: usize, minutes: i64 },
        Advance { minutes: i64 },
        AllocPrefix { random: bool },
        ClaimPrefix { i: usize },
        ReleasePrefix { i: usize },
        QuarantinePrefix { i: usize, minutes: i64 },
    }

    fn op() -> impl Gen<Value = Op> {
        prop_oneof![
            6 => (any::<bool>(), any::<bool>()).prop_map(|(random, want_v4)| Op::Alloc { random, want_v4 }),
            2 => (any::<bool>(), 0usize..300).prop_map(|(v4, i)| Op::Claim { v4, i }),
            1 => (any::<bool>(), 0usize..300).prop_map(|(v4, i)| Op::Reserve { v4, i }),
            3 => (any::<bool>(), 0usize..300).prop_map(|(v4, i)| Op::Release { v4, i }),
            2 => (any::<bool>(), 0usize..300, 0i64..120).prop_map(|(v4, i, minutes)| Op::Quarantine { v4, i, minutes }),
            2 => (0i64..60).prop_map(|minutes| Op::Advance { minutes }),
            1 => any::<bool>().prop_map(|random| Op::AllocPrefix { random }),
            1 => (0usize..32).prop_map(|i| Op::ClaimPrefix { i }),
            1 => (0usize..32).prop_map(|i| Op::ReleasePrefix { i }),
            1 => (0usize..32, 0i64..120).prop_map(|(i, minutes)| Op::QuarantinePrefix { i, minutes }),
        ]
    }

    /// (IPv6 pool, IPv4 pool, delegation) configurations with different rules in play.
    /// IPv6 pool, IPv4 pool, delegation `(parent, length)`.
    type Config = (
        &'static str,
        Option<&'static str>,
        Option<(&'static str, u8)>,
    );
    const CONFIGS: [Config; 4] = [
        ("fd00::/124", Some("10.0.0.0/28"), Some(("fd00::/60", 64))),
        (
            "fd00::fdff:ffff:ffff:ff00/120",
            Some("10.0.0.0/31"),
            Some(("fd01::/62", 64)),
        ),
        ("fd00::200:5eff:fdff:fff0/124", Some("192.0.2.7/32"), None),
        ("fd00::1:0/123", None, Some(("fd00::/64", 66))),
    ];

    #[derive(Default)]
    struct Model {
        taken: BTreeSet<IpAddr>,
        reserved: BTreeSet<IpAddr>,
        quarantine: BTreeMap<IpAddr, OffsetDateTime>,
        ptaken: BTreeSet<Ipv6Net>,
        preserved: BTreeSet<Ipv6Net>,
        pquarantine: BTreeMap<Ipv6Net, OffsetDateTime>,
    }

    impl Model {
        fn expire(&mut self, now: OffsetDateTime) {
            let gone: Vec<IpAddr> = self
                .quarantine
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(a, _)| *a)
                .collect();
            for a in gone {
                self.quarantine.remove(&a);
                self.taken.remove(&a);
            }
            let gone: Vec<Ipv6Net> = self
                .pquarantine
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(a, _)| *a)
                .collect();
            for p in gone {
                self.pquarantine.remove(&p);
                self.ptaken.remove(&p);
            }
        }
    }

    fn run(config: usize, ops: &[Op]) -> std::result::Result<(), TestCaseError> {
        let (v6s, v4s, del) = CONFIGS[config];
        let v6 = net(v6s);
        let v4 = v4s.map(net);
        let mut ds =
            DualStack::new(v6net(v6s), v4s.map(v4net), del.map(|(p, l)| (v6net(p), l))).unwrap();
        let v6_addrs = addrs_of(v6);
        let v4_addrs = v4.map(addrs_of).unwrap_or_default();
        let prefixes: Vec<Ipv6Net> = del
            .map(|(p, l)| v6net(p).subnets(l).unwrap().collect())
            .unwrap_or_default();
        let mut m = Model::default();
        for p in &prefixes {
            if p.contains(&v6net(v6s)) || v6net(v6s).contains(p) {
                m.ptaken.insert(*p);
                m.preserved.insert(*p);
            }
        }
        let mut now = T0;
        let mut r = rng();
        let pick = |v4f: bool, i: usize| -> Option<IpAddr> {
            let list = if v4f { &v4_addrs } else { &v6_addrs };
            if list.is_empty() {
                None
            } else {
                Some(list[i % list.len()])
            }
        };
        let usable = |m: &Model, list: &[IpAddr], pool: IpNet| -> Vec<IpAddr> {
            list.iter()
                .copied()
                .filter(|a| !naive_excluded(pool, *a) && !m.taken.contains(a))
                .collect()
        };

        for op in ops {
            match op.clone() {
                Op::Alloc { random, want_v4 } => {
                    m.expire(now);
                    let strategy = if random {
                        Strategy::Random
                    } else {
                        Strategy::Sequential
                    };
                    let free6 = usable(&m, &v6_addrs, v6);
                    let free4 = v4.map(|p| usable(&m, &v4_addrs, p));
                    let res = ds.allocate_pair(strategy, want_v4, &mut r, now);
                    if free6.is_empty() {
                        prop_assert!(is_exhausted(res.as_ref().unwrap_err()));
                    } else if want_v4 && free4.is_none() {
                        prop_assert!(is_invalid(res.as_ref().unwrap_err()));
                    } else if want_v4 && free4.as_ref().is_some_and(Vec::is_empty) {
                        prop_assert!(is_exhausted(res.as_ref().unwrap_err()));
                    } else {
                        let a = res.unwrap();
                        let a6 = IpAddr::V6(a.v6);
                        prop_assert!(free6.contains(&a6), "v6 {} not free in the model", a6);
                        prop_assert_eq!(a.v4.is_some(), want_v4);
                        if let Some(a4) = a.v4.map(IpAddr::V4) {
                            prop_assert!(
                                free4.as_ref().unwrap().contains(&a4),
                                "v4 {} not free",
                                a4
                            );
                            m.taken.insert(a4);
                        }
                        m.taken.insert(a6);
                        if !random {
                            // Sequential: lowest common index, else lowest each.
                            let i6 = |a: &IpAddr| ds.v6().index_of(*a).unwrap();
                            let i4 = |a: &IpAddr| ds.v4().unwrap().index_of(*a).unwrap();
                            let low6 = free6.iter().map(i6).min().unwrap();
                            if let Some(a4) = a.v4.map(IpAddr::V4) {
                                let f4 = free4.as_ref().unwrap();
                                let set6: BTreeSet<u128> = free6.iter().map(i6).collect();
                                let common = f4.iter().map(i4).filter(|i| set6.contains(i)).min();
                                if let Some(c) = common {
                                    prop_assert_eq!(i6(&a6), c);
                                    prop_assert_eq!(i4(&a4), c);
                                } else {
                                    prop_assert_eq!(i6(&a6), low6);
                                    prop_assert_eq!(i4(&a4), f4.iter().map(i4).min().unwrap());
                                }
                            } else {
                                prop_assert_eq!(i6(&a6), low6);
                            }
                        }
                    }
                }
                Op::Claim { v4: f, i } | Op::Reserve { v4: f, i } => {
                    let reserve = matches!(op, Op::Reserve { .. });
                    let Some(a) = pick(f, i) else { continue };
                    let pool = if f { v4.unwrap() } else { v6 };
                    m.expire(now);
                    let res = if reserve {
                        ds.reserve(a, now)
                    } else {
                        ds.claim(a, "peer.address", now)
                    };
                    if naive_excluded(pool, a) {
                        prop_assert!(is_invalid(res.as_ref().unwrap_err()), "{:?}", res);
                    } else if m.quarantine.contains_key(&a) {
                        prop_assert!(is_conflict(res.as_ref().unwrap_err()));
                    } else if reserve && m.reserved.contains(&a) {
                        prop_assert!(res.is_ok());
                    } else if m.taken.contains(&a) {
                        prop_assert!(is_conflict(res.as_ref().unwrap_err()));
                    } else {
                        prop_assert!(res.is_ok(), "{:?}", res);
                        m.taken.insert(a);
                        if reserve {
                            m.reserved.insert(a);
                        }
                    }
                }
                Op::Release { v4: f, i } => {
                    let Some(a) = pick(f, i) else { continue };
                    ds.release(a);
                    m.taken.remove(&a);
                    m.reserved.remove(&a);
                    m.quarantine.remove(&a);
                }
                Op::Quarantine { v4: f, i, minutes } => {
                    let Some(a) = pick(f, i) else { continue };
                    let pool = if f { v4.unwrap() } else { v6 };
                    let until = now + Duration::minutes(minutes);
                    ds.release_with_quarantine(a, until);
                    if !naive_excluded(pool, a) {
                        m.taken.insert(a);
                        m.reserved.remove(&a);
                        let e = m.quarantine.entry(a).or_insert(until);
                        *e = (*e).max(until);
                    }
                }
                Op::Advance { minutes } => now += Duration::minutes(minutes),
                Op::AllocPrefix { random } => {
                    m.expire(now);
                    let strategy = if random {
                        Strategy::Random
                    } else {
                        Strategy::Sequential
                    };
                    let res = ds.allocate_prefix(strategy, &mut r, now);
                    let free: Vec<Ipv6Net> = prefixes
                        .iter()
                        .copied()
                        .filter(|p| !m.ptaken.contains(p))
                        .collect();
                    if prefixes.is_empty() {
                        prop_assert!(is_invalid(res.as_ref().unwrap_err()));
                    } else if free.is_empty() {
                        prop_assert!(is_exhausted(res.as_ref().unwrap_err()));
                    } else {
                        let p = res.unwrap();
                        prop_assert!(free.contains(&p));
                        if !random {
                            prop_assert_eq!(p, free[0]);
                        }
                        m.ptaken.insert(p);
                    }
                }
                Op::ClaimPrefix { i } => {
                    if prefixes.is_empty() {
                        continue;
                    }
                    let p = prefixes[i % prefixes.len()];
                    m.expire(now);
                    let res = ds.claim_prefix(p, "peer.prefix", now);
                    if m.ptaken.contains(&p) {
                        prop_assert!(is_conflict(res.as_ref().unwrap_err()));
                    } else {
                        prop_assert!(res.is_ok());
                        m.ptaken.insert(p);
                    }
                }
                Op::ReleasePrefix { i } => {
                    if prefixes.is_empty() {
                        continue;
                    }
                    let p = prefixes[i % prefixes.len()];
                    ds.release_prefix(p);
                    m.pquarantine.remove(&p);
                    if !m.preserved.contains(&p) {
                        m.ptaken.remove(&p);
                    }
                }
                Op::QuarantinePrefix { i, minutes } => {
                    if prefixes.is_empty() {
                        continue;
                    }
                    let p = prefixes[i % prefixes.len()];
                    let until = now + Duration::minutes(minutes);
                    ds.release_prefix_with_quarantine(p, until);
                    if !m.preserved.contains(&p) {
                        m.ptaken.insert(p);
                        let e = m.pquarantine.entry(p).or_insert(until);
                        *e = (*e).max(until);
                    }
                }
            }

            // After every step: same holdings, counts and quarantine as the model.
            ds.check_invariants();
            let free6 = usable(&m, &v6_addrs, v6);
            prop_assert_eq!(ds.free_v6(), free6.len() as u128);
            if let Some(p) = v4 {
                prop_assert_eq!(ds.free_v4(), Some(usable(&m, &v4_addrs, p).len() as u128));
            }
            for a in v6_addrs.iter().chain(&v4_addrs) {
                let pool = if a.is_ipv4() { v4.unwrap() } else { v6 };
                let model_free = !naive_excluded(pool, *a)
                    && (!m.taken.contains(a) || m.quarantine.get(a).is_some_and(|t| *t <= now));
                prop_assert_eq!(ds.is_free(*a, now), model_free, "is_free({})", a);
            }
            let q: BTreeMap<IpAddr, OffsetDateTime> = ds.quarantined().collect();
            prop_assert_eq!(&q, &m.quarantine);
            let q: BTreeMap<Ipv6Net, OffsetDateTime> = ds.quarantined_prefixes().collect();
            prop_assert_eq!(&q, &m.pquarantine);
            if !prefixes.is_empty() {
                let free = prefixes.iter().filter(|p| !m.ptaken.contains(p)).count() as u128;
                prop_assert_eq!(ds.free_prefixes(), Some(free));
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn dual_stack_matches_a_naive_model(
            config in 0usize..CONFIGS.len(),
            ops in proptest::collection::vec(op(), 1..120),
        ) {
            run(config, &ops)?;
        }
    }

    #[test]
    fn naive_rules_agree_with_the_pools() {
        for (v6s, v4s, _) in CONFIGS {
            let mut nets = vec![net(v6s)];
            nets.extend(v4s.map(net));
            for n in nets {
                let p = Pool::new(n).unwrap();
                let addrs = addrs_of(n);
                let usable = addrs.iter().filter(|a| !naive_excluded(n, **a)).count() as u128;
                assert_eq!(p.capacity(), usable, "{n}");
                for a in addrs {
                    assert_eq!(p.exclusion(a).is_some(), naive_excluded(n, a), "{a}");
                }
            }
        }
    }
}
