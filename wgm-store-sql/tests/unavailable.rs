//! A PostgreSQL server that is not there fails the open in a few seconds (the connect
//! timeout, 5 s by default), not after sqlx's retries for the whole acquire timeout, and
//! as a `store` error (the CLI's exit code 6) that says why. Needs no server: the URL
//! names a loopback port nothing listens on.

use std::time::Instant;

use wgm_core::Error;
use wgm_store_sql::{SqlOptions, SqlStore};

/// A loopback port nothing listens on: bound by the OS, then closed again.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind a free port");
    l.local_addr().expect("local address").port()
}

#[tokio::test]
async fn a_refused_postgres_connection_is_a_store_error_with_the_reason() {
    let url = format!("postgres://wgm:hunter2@127.0.0.1:{}/wgm", free_port());
    let started = Instant::now();
    let r = SqlStore::open_with(&url, SqlOptions::default()).await;
    // Printed, never asserted: tests do not depend on timing.
    eprintln!("failed after {:?}", started.elapsed());
    let Err(e) = r else {
        panic!("a port nothing listens on gave a store")
    };
    assert!(
        matches!(
            e,
            Error::Store {
                store: "postgres",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.code(), "store");
    let msg = e.to_string();
    assert!(msg.contains("cannot connect within 5 s"), "{msg}");
    assert!(msg.to_lowercase().contains("refused"), "the reason: {msg}");
    assert!(!msg.contains("hunter2"), "never the password: {msg}");
}
