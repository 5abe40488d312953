//! The agent in one process, on the in-memory store and WireGuard backend (no root):
//! it applies what is committed after it started, one agent per server and host, it
//! releases its leases on shutdown, and it follows assignments. The same against
//! wireguard-go, PostgreSQL and real processes is in `tests/agent_netns.rs`.

use std::sync::Arc;
use std::time::Duration;

use wgm_cli::agent::config::{AgentConfig, Selection};
use wgm_cli::agent::Agent;
use wgm_core::backend::{MemoryWireGuard, WireGuardBackend};
use wgm_core::manager::{Host, Manager, NewPeer, NewServer, ServerUpdate};
use wgm_core::names::{HostName, InterfaceName, PeerName, ServerName};
use wgm_core::net::ListenPort;
use wgm_core::rbac::Principal;
use wgm_core::seal::{MasterKey, Sealer};
use wgm_core::store::MemoryStore;
use wgm_core::Error;

struct World {
    m: Arc<Manager>,
    admin: Principal,
    wg: Arc<MemoryWireGuard>,
    store: Arc<MemoryStore>,
}

fn world() -> World {
    let store = Arc::new(MemoryStore::new());
    let (m, local) = Manager::builder(store.clone(), Sealer::new(MasterKey::generate()))
        .build_with_local_admin();
    World {
        m: Arc::new(m),
        admin: local.principal("root"),
        wg: Arc::new(MemoryWireGuard::new()),
        store,
    }
}

fn cfg() -> AgentConfig {
    AgentConfig {
        selection: Selection::Assigned,
        reconcile_interval: Duration::from_secs(3600),
        heartbeat_interval: Duration::from_secs(1),
        lease_ttl: Duration::from_secs(30),
        ..AgentConfig::default()
    }
}

fn agent(w: &World, holder: &str) -> Agent {
    let host = Host::new("h1", w.wg.clone(), Some(Arc::new(w.wg.network())));
    Agent::new(w.m.clone(), w.admin.clone(), host, cfg())
        .unwrap()
        .with_holder(holder)
}

async fn server(
    w: &World,
    name: &str,
    iface: &str,
    host: Option<&str>,
) -> wgm_core::model::ServerId {
    // One listen port per server of an installation.
    let port = 51820
        + u16::try_from(
            w.m.list_servers(&w.admin, wgm_core::model::Page::ALL)
                .await
                .unwrap()
                .len(),
        )
        .unwrap();
    let mut spec = NewServer::new(
        ServerName::new(name).unwrap(),
        InterfaceName::new(iface).unwrap(),
        ListenPort::new(port).unwrap(),
    );
    spec.host = host.map(|h| HostName::new(h).unwrap());
    w.m.create_server(&w.admin, spec).await.unwrap().id
}

/// Wait (bounded) until `f` holds.
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn peers_on(w: &World, iface: &str) -> usize {
    w.wg.read_device(&InterfaceName::new(iface).unwrap())
        .await
        .unwrap()
        .map_or(0, |d| d.peers.len())
}

#[tokio::test]
async fn applies_commits_refuses_a_second_agent_and_releases_on_shutdown() {
    let w = world();
    let s = server(&w, "office", "wg-office", Some("h1")).await;
    let _other = server(&w, "elsewhere", "wg-else", Some("h2")).await;
    w.m.add_peer(&w.admin, s, NewPeer::new(PeerName::new("alice").unwrap()))
        .await
        .unwrap();

    let mut a = agent(&w, "test/a");
    a.start().await.unwrap();
    assert_eq!(
        a.servers().into_iter().map(|(_, n)| n).collect::<Vec<_>>(),
        ["office"],
        "only the server assigned to h1"
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(a.run(async move {
        let _ = stopped.await;
    }));
    eventually("the first pass", async || {
        peers_on(&w, "wg-office").await == 1
    })
    .await;
    assert_eq!(peers_on(&w, "wg-else").await, 0, "a server of another host");

    // A commit made after the agent started reaches the device through the feed.
    w.m.add_peer(&w.admin, s, NewPeer::new(PeerName::new("bob").unwrap()))
        .await
        .unwrap();
    eventually("bob on the device", async || {
        peers_on(&w, "wg-office").await == 2
    })
    .await;
    let head = w.m.get_server(&w.admin, s).await.unwrap().revision;
    eventually("a report at the head", async || {
        w.m.host_reports(&w.admin, s)
            .await
            .unwrap()
            .iter()
            .any(|r| {
                r.host.as_str() == "h1"
                    && r.applied == Some(head)
                    && r.converged
                    && r.agent == "test/a"
            })
    })
    .await;

    // A lost wake-up: the feed says so, and the agent catches up from the store.
    w.store.disrupt_feeds();
    w.m.add_peer(&w.admin, s, NewPeer::new(PeerName::new("carol").unwrap()))
        .await
        .unwrap();
    eventually("carol on the device", async || {
        peers_on(&w, "wg-office").await == 3
    })
    .await;

    // A second agent for the same server and host refuses to start, naming the holder.
    let mut b = agent(&w, "test/b");
    match b.start().await {
        Err(Error::Conflict { .. }) => {}
        other => panic!("a second agent started: {other:?}"),
    }
    let msg = agent(&w, "test/b").start().await.unwrap_err().to_string();
    assert!(msg.contains("test/a"), "{msg}");

    // Shutdown: leases released, tunnels untouched; then another agent may start.
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert_eq!(peers_on(&w, "wg-office").await, 3, "the device stays up");
    let mut c = agent(&w, "test/c");
    c.start().await.unwrap();
}

#[tokio::test]
async fn follows_assignments() {
    let w = world();
    let s = server(&w, "office", "wg-office", None).await;
    w.m.add_peer(&w.admin, s, NewPeer::new(PeerName::new("alice").unwrap()))
        .await
        .unwrap();
    let mut a = agent(&w, "test/a");
    a.start().await.unwrap();
    assert!(a.servers().is_empty());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(a.run(async move {
        let _ = stopped.await;
    }));
    // Assigned to h1: the agent takes it and applies it.
    w.m.update_server(
        &w.admin,
        s,
        ServerUpdate {
            host: Some(Some(HostName::new("h1").unwrap())),
            ..ServerUpdate::default()
        },
    )
    .await
    .unwrap();
    eventually("the newly assigned server applied", async || {
        peers_on(&w, "wg-office").await == 1
    })
    .await;
    // Assigned elsewhere: the agent lets it go (the device stays) and releases the lease.
    w.m.update_server(
        &w.admin,
        s,
        ServerUpdate {
            host: Some(Some(HostName::new("h2").unwrap())),
            ..ServerUpdate::default()
        },
    )
    .await
    .unwrap();
    let req = || wgm_core::model::LeaseRequest {
        server_id: s,
        host: HostName::new("h1").unwrap(),
        holder: "test/z".into(),
        now: w.m.now(),
        ttl: time::Duration::seconds(30),
        take_over: None,
    };
    eventually("the lease released", async || {
        w.m.acquire_lease(&w.admin, &req()).await.is_ok()
    })
    .await;
    w.m.add_peer(&w.admin, s, NewPeer::new(PeerName::new("bob").unwrap()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        peers_on(&w, "wg-office").await,
        1,
        "applied after it was assigned away"
    );
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}

/// A lease of the agent's own that lapsed between two renewals (as after a store outage
/// longer than its time to live) is taken again with a new fencing number, and the
/// agent keeps applying: its reports carry the new number.
#[tokio::test]
async fn a_lapsed_lease_of_its_own_is_taken_again() {
    let w = world();
    let s = server(&w, "office", "wg-office", Some("h1")).await;
    let host = Host::new("h1", w.wg.clone(), Some(Arc::new(w.wg.network())));
    // Renewals less often than the lease lives: every renewal finds it lapsed.
    let cfg = AgentConfig {
        heartbeat_interval: Duration::from_millis(600),
        lease_ttl: Duration::from_millis(200),
        ..cfg()
    };
    let mut a = Agent::new(w.m.clone(), w.admin.clone(), host, cfg)
        .unwrap()
        .with_holder("test/a");
    a.start().await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(a.run(async move {
        let _ = stopped.await;
    }));
    eventually("a renewal with a new number", async || {
        w.m.host_reports(&w.admin, s)
            .await
            .unwrap()
            .iter()
            .any(|r| r.fencing >= 3)
    })
    .await;
    w.m.add_peer(&w.admin, s, NewPeer::new(PeerName::new("late").unwrap()))
        .await
        .unwrap();
    eventually("still applying", async || {
        peers_on(&w, "wg-office").await == 1
    })
    .await;
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}

/// What an agent reports is shown in tables: text with control characters (a forged
/// report meant to rewrite a terminal) is refused, naming the field.
#[tokio::test]
async fn a_report_with_control_characters_is_refused() {
    let w = world();
    let s = server(&w, "office", "wg-office", Some("h1")).await;
    let report = |agent: &str, error: Option<&str>| wgm_core::model::HostReport {
        server_id: s,
        host: HostName::new("h1").unwrap(),
        agent: agent.into(),
        fencing: 1,
        applied: None,
        instance: None,
        converged: false,
        peers: 0,
        error: error.map(Into::into),
        heartbeat: w.m.now(),
    };
    for (r, field) in [
        (report("a\x1b[2J", None), "report.agent"),
        (report("", None), "report.agent"),
        (report("a", Some("line\nforged")), "report.error"),
    ] {
        match w.m.report_host(&w.admin, &r).await {
            Err(Error::InvalidInput { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{other:?}"),
        }
    }
    assert!(w.m.host_reports(&w.admin, s).await.unwrap().is_empty());
    w.m.report_host(&w.admin, &report("h1/1/2", Some("one line")))
        .await
        .unwrap();
}
