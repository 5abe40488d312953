//! A bounded load run against a running `wgm-server`: mixed reads and writes at a fixed
//! concurrency, reporting throughput, p50/p99 latency per kind and overall, and every
//! status seen. Exits non-zero on any 5xx or transport error.
//!
//! ```text
//! WGM_LOAD_TOKEN=wgm_… cargo run --release -p wgm-server --example load -- \
//!     http://127.0.0.1:8080 [REQUESTS=20000] [CONCURRENCY=64]
//! ```
//!
//! The mix, per request: 40 % show a peer, 20 % list a page of 50 peers, 10 % show the
//! server, 15 % add a peer, 10 % change a peer's description, 5 % remove a peer added
//! by this run. Writes go to one server (one revision each, compare-and-swap on its
//! head), which is the contended case.

// Statistics of a load run: counts and indices far below 2^52, never negative.
#![allow(clippy::cast_precision_loss, clippy::cast_sign_loss)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[derive(Default)]
struct Stats {
    latencies: BTreeMap<&'static str, Vec<Duration>>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

#[tokio::main]
async fn main() {
    #[allow(deprecated)] // ring: the workspace's only rustls provider.
    let provider = rustls::crypto::ring::default_provider();
    let _ = provider.install_default();
    let args: Vec<String> = std::env::args().collect();
    let base = args
        .get(1)
        .cloned()
        .expect("usage: load URL [REQUESTS] [CONCURRENCY]");
    let total: u64 = args.get(2).map_or(20_000, |v| v.parse().expect("REQUESTS"));
    let concurrency: u64 = args.get(3).map_or(64, |v| v.parse().expect("CONCURRENCY"));
    let token = std::env::var("WGM_LOAD_TOKEN").expect("WGM_LOAD_TOKEN");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency as usize)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let auth = format!("Bearer {token}");

    // Setup: a server with 200 peers (not measured).
    let r = http
        .post(format!("{base}/api/v1/servers"))
        .header("authorization", &auth)
        .json(&json!({"name": "load", "listen_port": 51999, "ipv4_pool": "10.99.0.0/16"}))
        .send()
        .await
        .expect("create server");
    assert!(
        r.status().is_success() || r.status() == 400,
        "create: {}",
        r.status()
    );
    let r = http
        .post(format!("{base}/api/v1/servers/load/peers"))
        .header("authorization", &auth)
        .json(&json!({"name": "seed", "count": 200}))
        .send()
        .await
        .expect("seed peers");
    assert!(r.status().is_success(), "seed: {}", r.status());

    let stats = Arc::new(Mutex::new(Stats::default()));
    let next = Arc::new(AtomicU64::new(0));
    let added = Arc::new(Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (http, base, auth, stats, next, added) = (
            http.clone(),
            base.clone(),
            auth.clone(),
            stats.clone(),
            next.clone(),
            added.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let seed = format!("seed-{}", n % 200 + 1);
                let pick = n % 20;
                let (kind, req) = match pick {
                    0..=7 => (
                        "get_peer",
                        http.get(format!("{base}/api/v1/servers/load/peers/{seed}")),
                    ),
                    8..=11 => (
                        "list_peers",
                        http.get(format!(
                            "{base}/api/v1/servers/load/peers?limit=50&offset={}",
                            n % 150
                        )),
                    ),
                    12..=13 => (
                        "get_server",
                        http.get(format!("{base}/api/v1/servers/load")),
                    ),
                    14..=16 => (
                        "add_peer",
                        http.post(format!("{base}/api/v1/servers/load/peers"))
                            .json(&json!({"name": format!("run-{n}")})),
                    ),
                    17..=18 => (
                        "update_peer",
                        http.patch(format!("{base}/api/v1/servers/load/peers/{seed}"))
                            .json(&json!({"description": format!("load {n}")})),
                    ),
                    _ => {
                        let victim = added.lock().unwrap().pop();
                        match victim {
                            Some(v) => (
                                "remove_peer",
                                http.delete(format!("{base}/api/v1/servers/load/peers/{v}")),
                            ),
                            None => (
                                "get_server",
                                http.get(format!("{base}/api/v1/servers/load")),
                            ),
                        }
                    }
                };
                let t = Instant::now();
                let res = req.header("authorization", &auth).send().await;
                let status = match res {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        let body = r.bytes().await.unwrap_or_default();
                        if kind == "add_peer" && s == 201 {
                            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                                if let Some(name) = v[0]["name"].as_str() {
                                    added.lock().unwrap().push(name.to_owned());
                                }
                            }
                        }
                        Some(s)
                    }
                    Err(_) => None,
                };
                let d = t.elapsed();
                let mut st = stats.lock().unwrap();
                st.latencies.entry(kind).or_default().push(d);
                st.latencies.entry("all").or_default().push(d);
                match status {
                    Some(s) => *st.statuses.entry(s).or_default() += 1,
                    None => st.errors += 1,
                }
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let elapsed = started.elapsed();
    let mut st = stats.lock().unwrap();
    println!(
        "{total} requests, concurrency {concurrency}, {:.2} s, {:.0} requests/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "{:<12} {:>7} {:>10} {:>10} {:>10}",
        "kind", "count", "p50 ms", "p99 ms", "max ms"
    );
    let kinds: Vec<&'static str> = st.latencies.keys().copied().collect();
    for k in kinds {
        let v = st.latencies.get_mut(k).unwrap();
        let (n, p50, p99) = (v.len(), pct(v, 0.50), pct(v, 0.99));
        let max = v.last().copied().unwrap_or_default();
        println!(
            "{k:<12} {n:>7} {:>10.2} {:>10.2} {:>10.2}",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
    }
    println!(
        "statuses: {:?}, transport errors: {}",
        st.statuses, st.errors
    );
    let fives: u64 = st
        .statuses
        .iter()
        .filter(|(s, _)| **s >= 500)
        .map(|(_, n)| n)
        .sum();
    if fives > 0 || st.errors > 0 {
        eprintln!(
            "FAILED: {fives} server errors, {} transport errors",
            st.errors
        );
        std::process::exit(1);
    }
}
