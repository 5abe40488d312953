//! `add_peer` one call at a time on a fresh SQLite store, opened as the CLI and the
//! Python bindings open it (`wgm_cli::open`): the Rust side of the comparison with
//! `benches/python/bench_add_peer.py`, which does exactly the same from Python.
//!
//! ```text
//! cargo bench -p wgm-benches --bench add_peer_sequential [-- --count N]
//! ```
//!
//! Each call is driven like a blocking Python call: `block_on` on a multi-threaded tokio
//! runtime from the calling thread. Prints peers per second, milliseconds per call
//! (mean, median, 99th percentile), and the process's CPU time per call (all threads;
//! `CLOCK_PROCESS_CPUTIME_ID`, as Python's `time.process_time`), which the disk's
//! latency does not blur: on a shared machine the wall time of an SQLite commit varies
//! from run to run far more than what the bindings add.

use std::time::{Duration, Instant};

use wgm_cli::open::{open, KeySource, OpenOptions};
use wgm_core::manager::{NewPeer, NewServer};
use wgm_core::names::{InterfaceName, PeerName, ServerName};
use wgm_core::net::ListenPort;

fn main() {
    let mut count: u32 = 10_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--count" {
            count = args
                .next()
                .and_then(|v| v.parse().ok())
                .expect("--count takes a number");
        }
    }
    assert!(count > 0, "--count must be at least 1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let t0 = Instant::now();
    let opened = rt
        .block_on(open(OpenOptions {
            store: Some(format!("sqlite:{}", dir.path().join("wgm.db").display())),
            key: KeySource::File(dir.path().join("wgm.key")),
            local_admin: true,
            jwt: None,
        }))
        .expect("open the store");
    let open_ms = t0.elapsed().as_secs_f64() * 1e3;
    let m = opened.manager;
    let admin = opened.local.expect("asked for").principal("bench");
    let mut spec = NewServer::new(
        ServerName::new("bench").expect("a valid name"),
        InterfaceName::new("bench").expect("a valid name"),
        ListenPort::new(51820).expect("a valid port"),
    );
    spec.ipv6_pool = Some("fd00:b::/64".parse().expect("a network"));
    spec.ipv4_pool = Some("10.64.0.0/16".parse().expect("a network"));
    let server = rt
        .block_on(m.create_server(&admin, spec))
        .expect("create the server")
        .id;
    let mut per_call: Vec<Duration> = Vec::with_capacity(count as usize);
    let cpu_start = cpu_time();
    let start = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        let name = PeerName::new(format!("p{i}")).expect("a valid name");
        rt.block_on(m.add_peer(&admin, server, NewPeer::new(name)))
            .expect("add_peer");
        per_call.push(t.elapsed());
    }
    let total = start.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_start);
    per_call.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("open store           {open_ms:8.1} ms");
    println!("add_peer x{count:<9} {:8.2} s", total.as_secs_f64());
    println!(
        "  peers/s            {:8.0}",
        f64::from(count) / total.as_secs_f64()
    );
    println!(
        "  ms per call        {:8.3} mean, {:.3} median, {:.3} p99",
        ms(total) / f64::from(count),
        ms(per_call[per_call.len() / 2]),
        ms(per_call[(per_call.len() * 99 / 100).min(per_call.len() - 1)])
    );
    println!(
        "  CPU ms per call    {:8.3} (all threads)",
        ms(cpu) / f64::from(count)
    );
}

/// CPU time of the whole process (every thread) so far.
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}
