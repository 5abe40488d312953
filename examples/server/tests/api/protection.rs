//! Rate limits, TLS (with reload on SIGHUP), graceful shutdown, CORS.

use std::time::Duration;

use serde_json::json;

use crate::harness::{admin_setup, install_provider, Api, Options, Server, Store};

/// Per client address and per principal: 429 with `Retry-After`, nothing done.
#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_answer_429_with_retry_after() {
    // Per address: 8 a minute.
    let (_store, server, api, secrets) =
        admin_setup(Options::default().env("WGM_SERVER_RATE_PER_ADDRESS", "8/60")).await;
    let mut refused = None;
    for i in 0..20 {
        let a = api.get("/api/v1/servers").await;
        if a.status == 429 {
            refused = Some((i, a));
            break;
        }
    }
    let (i, a) = refused.expect("limited");
    assert!(i <= 8, "refused after {i} requests");
    a.err(429, "throttled", None);
    assert_eq!(a.body["kind"], "rate_limited");
    let secs: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=8).contains(&secs), "{secs}");
    // Health and readiness are not limited.
    Api::new(&server).get("/health").await.ok();
    server.assert_no_secret_logged(&secrets);
    drop(server);

    // Per principal: 5 a minute, whatever the address.
    let (_store, server, api, secrets) =
        admin_setup(Options::default().env("WGM_SERVER_RATE_PER_PRINCIPAL", "5/60")).await;
    let mut statuses = Vec::new();
    for n in 0..8 {
        let a = api
            .post(
                "/api/v1/servers",
                json!({"name": format!("s{n}"), "listen_port": 51820 + n}),
            )
            .await;
        statuses.push(a.status.as_u16());
        if a.status == 429 {
            assert!(a.headers.contains_key("retry-after"));
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        3,
        "{statuses:?}"
    );
    // What was refused was not done.
    let anon = Api::new(&server);
    let (access, _) = anon.login("admin", crate::harness::ADMIN_PASSWORD).await;
    let _ = access;
    server.assert_no_secret_logged(&secrets);
}

fn cert(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let c =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let pem = c.cert.pem();
    let (cp, kp) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cp, &pem).unwrap();
    std::fs::write(&kp, c.signing_key.serialize_pem()).unwrap();
    (cp, kp, pem)
}

fn client_trusting(pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// TLS from certificate and key files; SIGHUP loads new ones without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn tls_with_a_test_certificate_and_reload_on_sighup() {
    install_provider();
    let store = Store::sqlite();
    let certs = tempfile::tempdir().unwrap();
    let (crt, key, pem1) = cert(certs.path(), "live");
    let server = Server::start(
        &store,
        Options {
            tls: Some((crt.clone(), key.clone())),
            ..Options::default()
        },
    );
    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "{}",
        server.base
    );
    let url = server.url("/health").replace("127.0.0.1", "localhost");
    let c1 = client_trusting(&pem1);
    assert_eq!(c1.get(&url).send().await.unwrap().status(), 200);
    // Plain HTTP to the TLS port does not get an answer.
    let plain = server.url("/health").replace("https://", "http://");
    let r = reqwest::Client::new().get(&plain).send().await;
    assert!(r.is_err() || !r.unwrap().status().is_success());
    // A client that does not trust the certificate is refused.
    assert!(reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .is_err());

    // New files, SIGHUP: new connections get the new certificate.
    let (crt2, key2, pem2) = cert(certs.path(), "next");
    std::fs::rename(&crt2, &crt).unwrap();
    std::fs::rename(&key2, &key).unwrap();
    server.signal("HUP");
    let c2 = client_trusting(&pem2);
    let mut ok = false;
    for _ in 0..50 {
        if c2.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ok,
        "the reloaded certificate is served:\n{}",
        server.log_text()
    );
    assert!(server
        .log_text()
        .contains("TLS certificate and key reloaded"));
    // Still the same process.
    assert!(server.log_text().matches("\"listening\"").count() == 1);
}

/// SIGTERM lets an in-flight request finish, then the process exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_in_flight_requests() {
    let (_store, mut server, api, secrets) = admin_setup(Options::default()).await;
    api.post(
        "/api/v1/servers",
        json!({"name": "office", "listen_port": 51820}),
    )
    .await
    .ok();
    // A large bulk add takes a while; SIGTERM arrives while it runs.
    let inflight = {
        let api = api.clone();
        tokio::spawn(async move {
            api.post(
                "/api/v1/servers/office/peers",
                json!({"name": "bulk", "count": 3000}),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.signal("TERM");
    let a = inflight.await.unwrap();
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body.as_array().unwrap().len(), 3000);
    let mut exited = None;
    for _ in 0..100 {
        if let Some(st) = server.child.try_wait().unwrap() {
            exited = Some(st);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = exited.expect("the server exits after SIGTERM");
    assert!(st.success(), "{st:?}");
    assert!(server.log_text().contains("shutting down"));
    server.assert_no_secret_logged(&secrets);
}

/// CORS answers only the origins of the allow-list.
#[tokio::test(flavor = "multi_thread")]
async fn cors_allow_list() {
    let (_store, server, _api, _) =
        admin_setup(Options::default().env("WGM_SERVER_CORS_ORIGINS", "https://admin.example.org"))
            .await;
    let c = reqwest::Client::new();
    let pre = |origin: &'static str| {
        c.request(reqwest::Method::OPTIONS, server.url("/api/v1/servers"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let ok = pre("https://admin.example.org").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://admin.example.org"
    );
    let other = pre("https://evil.example").await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
}
