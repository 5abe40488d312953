//! The REST API through a real HTTP client against the running `wgm-server` binary.

mod harness;
mod identity;
mod protection;
mod shared;

use reqwest::Method;
use serde_json::{json, Value};

use harness::{admin_setup, keys_in, Api, Options};

/// Every server and peer endpoint, `ETag`s and a stale `If-Match`, pagination and
/// filters, configs and QR codes, history, diff, rollback, import and export; and no
/// secret of the run in the server's log.
#[tokio::test(flavor = "multi_thread")]
async fn servers_and_peers_end_to_end() {
    let (_store, server, api, mut secrets) = admin_setup(Options::default()).await;

    // Create, show, list.
    let created = api
        .post(
            "/api/v1/servers",
            json!({"name": "office", "listen_port": 51820, "ipv4_pool": "10.8.0.0/24",
                   "endpoint": "vpn.example.org:51820", "dns": ["fd00::53"]}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.etag(), "\"1\"");
    let sid = created.body["id"].as_str().unwrap().to_owned();
    let got = api.get("/api/v1/servers/office").await.ok();
    assert_eq!(got.body["id"], sid.as_str());
    assert_eq!(got.etag(), "\"1\"");
    let by_id = api.get(&format!("/api/v1/servers/{sid}")).await.ok();
    assert_eq!(by_id.body["name"], "office");
    let list = api.get("/api/v1/servers?name=OFF").await.ok();
    assert_eq!(list.body["total"], 1);
    assert_eq!(api.get("/api/v1/servers?name=nope").await.body["total"], 0);

    // A stale If-Match changes nothing; the current one works.
    let stale = api
        .call(
            Method::PATCH,
            "/api/v1/servers/office",
            Some(json!({"mtu": 1400})),
            &[("If-Match", "\"7\"")],
        )
        .await;
    stale.err(412, "precondition_failed", None);
    assert_eq!(stale.etag(), "\"1\"");
    let after = api.get("/api/v1/servers/office").await.ok();
    assert_eq!(
        (after.body["mtu"].clone(), after.etag()),
        (json!(1420), "\"1\"".to_owned())
    );
    let changed = api
        .call(
            Method::PATCH,
            "/api/v1/servers/office",
            Some(json!({"mtu": 1400, "client_template": {"tunnel": "split", "keepalive": 15}})),
            &[("If-Match", "\"1\"")],
        )
        .await
        .ok();
    assert_eq!(changed.etag(), "\"2\"");
    assert_eq!(changed.body["client_template"]["tunnel"], "split");
    // Nothing to change is bad input, not a server error.
    api.patch("/api/v1/servers/office", json!({"mtu": 1400}))
        .await
        .err(400, "invalid_input", Some("server"));

    // Peers: one, numbered in one revision, bulk in one revision.
    let one = api
        .post(
            "/api/v1/servers/office/peers",
            json!({"name": "alice", "description": "laptop"}),
        )
        .await;
    assert_eq!(one.status, 201, "{}", one.text);
    assert_eq!(one.etag(), "\"3\"");
    assert_eq!(one.body[0]["address_v4"], "10.8.0.2");
    let many = api
        .post(
            "/api/v1/servers/office/peers",
            json!({"name": "dev", "count": 3}),
        )
        .await;
    assert_eq!(many.status, 201, "{}", many.text);
    assert_eq!(many.body.as_array().unwrap().len(), 3);
    assert_eq!(many.etag(), "\"4\"", "one revision for --count");
    let bulk = api
        .post(
            "/api/v1/servers/office/peers/bulk",
            json!({"peers": [{"name": "site-a", "allowed_ips": ["192.168.10.0/24"]},
                             {"name": "site-b", "ipv4": "none", "keepalive": 0}]}),
        )
        .await;
    assert_eq!(bulk.status, 201, "{}", bulk.text);
    assert_eq!(bulk.etag(), "\"5\"");
    assert_eq!(bulk.body[1]["address_v4"], Value::Null);

    // Pagination and filters.
    let page = api.get("/api/v1/servers/office/peers?limit=2").await.ok();
    assert_eq!(page.body["total"], 6);
    assert_eq!(page.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(page.body["next_offset"], 2);
    assert_eq!(page.etag(), "\"5\"");
    let last = api
        .get("/api/v1/servers/office/peers?limit=2&offset=4")
        .await
        .ok();
    assert_eq!(last.body["next_offset"], Value::Null);
    let devs = api.get("/api/v1/servers/office/peers?name=dev-").await.ok();
    assert_eq!(devs.body["total"], 3);

    // Change, disable, enable, keys.
    let set = api
        .patch(
            "/api/v1/servers/office/peers/alice",
            json!({"description": null, "keepalive": 30, "expires_at": "30d"}),
        )
        .await
        .ok();
    assert_eq!(set.body["description"], Value::Null);
    assert!(set.body["expires_at"].is_string());
    let off = api
        .post("/api/v1/servers/office/peers/dev-1/disable", json!({}))
        .await
        .ok();
    assert_eq!(off.body["enabled"], false);
    assert_eq!(
        api.get("/api/v1/servers/office/peers?state=disabled")
            .await
            .body["total"],
        1
    );
    assert_eq!(
        api.get("/api/v1/servers/office/peers?state=enabled")
            .await
            .body["total"],
        5
    );
    api.post("/api/v1/servers/office/peers/dev-1/enable", json!({}))
        .await
        .ok();
    let before_key = api.get("/api/v1/servers/office/peers/alice").await.body["public_key"].clone();
    let rotated = api
        .post("/api/v1/servers/office/peers/alice/rotate-key", json!({}))
        .await
        .ok();
    assert_ne!(rotated.body["public_key"], before_key);
    api.post("/api/v1/servers/office/peers/alice/rotate-psk", json!({}))
        .await
        .ok();
    let restored = api
        .post(
            "/api/v1/servers/office/peers/alice/restore-keys",
            json!({"from": 3}),
        )
        .await
        .ok();
    assert_eq!(restored.body["public_key"], before_key);

    // Client config: JSON, text, QR (SVG and PNG).
    let cfg = api
        .get("/api/v1/servers/office/peers/alice/config")
        .await
        .ok();
    assert_eq!(cfg.headers["cache-control"], "no-store");
    let text = cfg.body["config"].as_str().unwrap().to_owned();
    assert!(text.contains("[Interface]") && text.contains("PrivateKey"));
    secrets.extend(keys_in(&text));
    let plain = api
        .get("/api/v1/servers/office/peers/alice/config?format=text")
        .await
        .ok();
    assert!(plain.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(plain.text, text);
    let svg = api
        .get("/api/v1/servers/office/peers/alice/config/qr")
        .await
        .ok();
    assert_eq!(svg.headers["content-type"], "image/svg+xml");
    assert!(svg.text.contains("<svg"));
    let png = api
        .http
        .get(format!(
            "{}/api/v1/servers/office/peers/alice/config/qr?format=png",
            api.base
        ))
        .bearer_auth(api.token.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(png.status(), 200);
    assert_eq!(png.bytes().await.unwrap()[..4], [0x89, b'P', b'N', b'G']);

    // Bring your own key: text config, QR refused.
    let byo = api
        .post(
            "/api/v1/servers/office/peers",
            json!({"name": "byo", "public_key": "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="}),
        )
        .await;
    assert_eq!(byo.status, 201, "{}", byo.text);
    let c = api
        .get("/api/v1/servers/office/peers/byo/config")
        .await
        .ok();
    assert_eq!(c.body["complete"], false);
    api.get("/api/v1/servers/office/peers/byo/config/qr")
        .await
        .err(400, "invalid_input", Some("peer.private_key"));

    // Remove one, with a stale If-Match first.
    let stale = api
        .call(
            Method::DELETE,
            "/api/v1/servers/office/peers/dev-3",
            None,
            &[("If-Match", "\"1\"")],
        )
        .await;
    stale.err(412, "precondition_failed", None);
    api.get("/api/v1/servers/office/peers/dev-3").await.ok();
    let head = api.get("/api/v1/servers/office").await.etag();
    let removed = api
        .call(
            Method::DELETE,
            "/api/v1/servers/office/peers/dev-3",
            None,
            &[("If-Match", &head)],
        )
        .await
        .ok();
    assert_eq!(removed.body["name"], "dev-3");
    api.get("/api/v1/servers/office/peers/dev-3")
        .await
        .err(404, "not_found", None);

    // Server key, export, status, history, diff, rollback.
    let rk = api
        .post("/api/v1/servers/office/rotate-key", json!({}))
        .await
        .ok();
    assert_ne!(rk.body["public_key"], created.body["public_key"]);
    let back = api
        .post("/api/v1/servers/office/restore-key", json!({"from": 1}))
        .await
        .ok();
    assert_eq!(back.body["public_key"], created.body["public_key"]);
    let export = api.get("/api/v1/servers/office/config").await.ok();
    let server_text = export.body["config"].as_str().unwrap().to_owned();
    assert!(server_text.contains("ListenPort = 51820"));
    secrets.extend(keys_in(&server_text));
    let status = api.get("/api/v1/servers/office/status").await.ok();
    assert_eq!(status.body["hosts"], json!([]));
    let hist = api.get("/api/v1/servers/office/history?limit=3").await.ok();
    assert_eq!(hist.body["items"].as_array().unwrap().len(), 3);
    assert_eq!(hist.body["next_after"], 3);
    assert_eq!(
        hist.body["items"][0]["changes"][0]["kind"],
        "server_created"
    );
    let hist2 = api.get("/api/v1/servers/office/history?after=3").await.ok();
    assert_eq!(hist2.body["items"][0]["revision"], 4);
    let diff = api
        .get("/api/v1/servers/office/diff?from=2&to=4")
        .await
        .ok();
    let kinds: Vec<&str> = diff.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["peer_added"; 4]);
    api.get("/api/v1/servers/office/diff?from=2")
        .await
        .err(400, "invalid_input", Some("to"));
    let rb = api
        .post("/api/v1/servers/office/rollback", json!({"revision": 3}))
        .await
        .ok();
    assert_eq!(rb.body["restored"], 3);
    let after_rb = api.get("/api/v1/servers/office/peers").await.ok();
    assert_eq!(after_rb.body["total"], 1, "back to alice alone");

    // Import a wg-quick file as a new server, in one revision.
    let imported = api
        .post(
            "/api/v1/servers/import",
            json!({"name": "branch", "config": "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\nListenPort = 51821\nAddress = fd42:1::1/64, 10.42.0.1/24\n\n[Peer]\n# Name = bob\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\nAllowedIPs = fd42:1::2/128, 10.42.0.2/32\n"}),
        )
        .await;
    assert_eq!(imported.status, 201, "{}", imported.text);
    assert_eq!(imported.body["peer_count"], 1);
    assert_eq!(imported.etag(), "\"1\"");
    secrets.push("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=".into());
    api.post(
        "/api/v1/servers/import",
        json!({"name": "bad", "config": "[Interface]\nPrivateKey = nope\n"}),
    )
    .await
    .err(422, "parse", None);

    // Delete.
    let del = api.delete("/api/v1/servers/branch").await.ok();
    assert_eq!(del.body["name"], "branch");
    api.get("/api/v1/servers/branch")
        .await
        .err(404, "not_found", None);

    server.assert_no_secret_logged(&secrets);
}

/// Bad input is a 4xx naming the field, never a server error.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_names_the_field() {
    let (_store, server, api, secrets) = admin_setup(Options::default()).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/api/v1/servers",
            json!({"name": "a", "listen_port": 0}),
            "server.listen_port",
        ),
        (
            "/api/v1/servers",
            json!({"name": "a", "listen_port": 70000}),
            "server.listen_port",
        ),
        (
            "/api/v1/servers",
            json!({"name": "a", "listen_port": "x"}),
            "server.listen_port",
        ),
        ("/api/v1/servers", json!({"listen_port": 1}), "server"),
        (
            "/api/v1/servers",
            json!({"name": "a\nb", "listen_port": 1}),
            "server.name",
        ),
        (
            "/api/v1/servers",
            json!({"name": "a", "listen_port": 1, "ipv4_pool": "10.0.0.0/33"}),
            "server.ipv4_pool",
        ),
        (
            "/api/v1/servers",
            json!({"name": "a", "listen_port": 1, "ipv6_pool": "10.0.0.0/8"}),
            "server.ipv6_pool",
        ),
        (
            "/api/v1/servers",
            json!({"name": "a", "listen_port": 1, "mtu": 100}),
            "server.mtu",
        ),
        (
            "/api/v1/servers",
            json!({"name": "a", "listen_port": 1, "dns": ["ok.example", 5]}),
            "server.dns[1]",
        ),
        (
            "/api/v1/servers",
            json!({"name": "a", "listen_port": 1, "dns": ["224.0.0.1"]}),
            "server.dns[0]",
        ),
        (
            "/api/v1/servers",
            json!({"name": "a", "listen_port": 1, "strategy": "fastest"}),
            "server.strategy",
        ),
        (
            "/api/v1/servers",
            json!({"name": "a", "listen_port": 1, "endpoint": "no port"}),
            "server.endpoint",
        ),
        (
            "/api/v1/servers",
            json!({"name": "a", "listen_port": 1, "bogus": 1}),
            "server.bogus",
        ),
    ];
    for (path, body, field) in cases {
        let a = api.post(path, body.clone()).await;
        a.err(400, "invalid_input", Some(field));
    }
    api.post(
        "/api/v1/servers",
        json!({"name": "office", "listen_port": 51820}),
    )
    .await
    .ok();
    let peer_cases: Vec<(Value, &str)> = vec![
        (json!({"name": ""}), "peer.name"),
        (json!({"name": "p", "keepalive": -1}), "peer.keepalive"),
        (
            json!({"name": "p", "allowed_ips": ["10.1.0.0/16", "1.2.3.4/33"]}),
            "peer.allowed_ips[1]",
        ),
        (
            json!({"name": "p", "allowed_ips": ["0.0.0.0/0"]}),
            "peer.allowed_ips[0]",
        ),
        (json!({"name": "p", "ipv6": "none"}), "peer.ipv6"),
        (json!({"name": "p", "ipv4": "010.0.0.1"}), "peer.ipv4"),
        (
            json!({"name": "p", "public_key": "short"}),
            "peer.public_key",
        ),
        (
            json!({"name": "p", "expires_at": "tomorrow"}),
            "peer.expires_at",
        ),
        (json!({"name": "p", "count": 0}), "peer.count"),
        (
            json!({"name": "p", "count": 2, "endpoint": "h.example:1"}),
            "peer.count",
        ),
    ];
    for (body, field) in peer_cases {
        let a = api.post("/api/v1/servers/office/peers", body.clone()).await;
        a.err(400, "invalid_input", Some(field));
    }
    api.post(
        "/api/v1/servers/office/peers/bulk",
        json!({"peers": [{"name": "ok"}, {"name": "p", "allowed_ips": ["x"]}]}),
    )
    .await
    .err(400, "invalid_input", Some("peers[1].allowed_ips[0]"));
    api.get("/api/v1/servers/office/peers?limit=0")
        .await
        .err(400, "invalid_input", Some("limit"));
    api.get("/api/v1/servers/office/peers?limit=abc").await.err(
        400,
        "invalid_input",
        Some("limit"),
    );
    api.get("/api/v1/servers/office/peers?state=gone")
        .await
        .err(400, "invalid_input", Some("state"));
    api.get("/api/v1/servers/office/history?after=-1")
        .await
        .err(400, "invalid_input", Some("after"));
    api.get("/api/v1/audit?since=yesterday")
        .await
        .err(400, "invalid_input", Some("audit.since"));
    api.call(
        Method::PATCH,
        "/api/v1/servers/office",
        Some(json!({"mtu": 1400})),
        &[("If-Match", "7")],
    )
    .await
    .err(400, "invalid_input", Some("If-Match"));
    // Not JSON, too large, broken JSON, unknown routes and methods.
    let raw = api
        .http
        .post(format!("{}/api/v1/servers", api.base))
        .bearer_auth(api.token.as_deref().unwrap())
        .body("name=a")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 415);
    let big = json!({"name": "x".repeat(2 << 20), "listen_port": 1});
    // On a connection of its own: the server answers before reading the whole body and
    // closes that connection, which a pooled client could otherwise reuse.
    let own = harness::Api {
        http: reqwest::Client::new(),
        ..api.clone()
    };
    own.post("/api/v1/servers", big)
        .await
        .err(413, "payload_too_large", None);
    let broken = api
        .http
        .post(format!("{}/api/v1/servers", api.base))
        .bearer_auth(api.token.as_deref().unwrap())
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), 400);
    api.get("/api/v1/nothing").await.err(404, "not_found", None);
    api.call(Method::PUT, "/api/v1/servers", None, &[])
        .await
        .err(405, "method_not_allowed", None);
    api.get("/api/v1/servers/no-such")
        .await
        .err(404, "not_found", None);
    server.assert_no_secret_logged(&secrets);
}

/// `/health`, `/ready`, `/metrics` (HTTP and Manager counts for anyone; per-peer
/// WireGuard metrics for an authenticated scrape), the OpenAPI document, request ids.
#[tokio::test(flavor = "multi_thread")]
async fn operations_endpoints() {
    let (_store, server, api, secrets) = admin_setup(Options::default()).await;
    let anon = harness::Api::new(&server);
    assert_eq!(anon.get("/health").await.ok().body["status"], "ok");
    assert_eq!(anon.get("/ready").await.ok().body["status"], "ok");
    api.post(
        "/api/v1/servers",
        json!({"name": "office", "listen_port": 51820, "ipv4_pool": "10.8.0.0/24"}),
    )
    .await
    .ok();
    api.post("/api/v1/servers/office/peers", json!({"name": "alice"}))
        .await
        .ok();
    let m = anon.get("/metrics").await.ok();
    assert!(m.text.contains("wgm_http_requests_total{"), "{}", m.text);
    assert!(m.text.contains("route=\"/api/v1/servers/{server}/peers\""));
    assert!(m.text.contains("wgm_http_request_duration_seconds_bucket"));
    assert!(m
        .text
        .contains("wgm_manager_operations_total{operation=\"peer.add\",outcome=\"ok\"} 1"));
    assert!(
        !m.text.contains("wireguard_sent_bytes_total"),
        "no peers for anonymous scrapes"
    );
    let m = api.get("/metrics").await.ok();
    let line = m
        .text
        .lines()
        .find(|l| l.starts_with("wireguard_sent_bytes_total{"))
        .unwrap_or_else(|| panic!("{}", m.text));
    for label in [
        "interface=\"office\"",
        "public_key=\"",
        "allowed_ips=\"",
        "name=\"alice\"",
    ] {
        assert!(line.contains(label), "{line}");
    }
    assert!(m.text.contains("wireguard_received_bytes_total{"));
    assert!(m.text.contains("wireguard_latest_handshake_seconds{"));
    let doc = anon.get("/api/v1/openapi.json").await.ok();
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc.body["paths"]["/api/v1/servers/{server}/peers"]["post"].is_object());
    assert!(doc.body["components"]["schemas"]["ErrorBody"].is_object());
    let a = anon
        .call(Method::GET, "/health", None, &[("x-request-id", "req-42")])
        .await;
    assert_eq!(a.headers["x-request-id"], "req-42");
    let b = anon.get("/health").await;
    assert_eq!(b.headers["x-request-id"].len(), 36);
    let log = server.log_text();
    assert!(
        log.contains("\"request_id\":\"req-42\""),
        "request ids are logged"
    );
    assert!(log.contains("\"route\":\"/api/v1/servers/{server}/peers\""));
    assert!(log.contains("\"principal\":\"user:admin\""));
    server.assert_no_secret_logged(&secrets);
}

/// Firewall policy over HTTP: a server's and a peer's, one revision each, bad input
/// per field, If-Match, who may change it (never a `user`, not even on their own peer);
/// and the plan: what each host's agent still has to apply.
#[tokio::test(flavor = "multi_thread")]
async fn policy_and_plan() {
    let (store, server, api, mut secrets) = admin_setup(Options::default()).await;
    api.post(
        "/api/v1/servers",
        json!({"name": "office", "listen_port": 51820, "ipv4_pool": "10.8.0.0/24"}),
    )
    .await
    .ok();
    let pw = "user-password-42";
    tokio::task::block_in_place(|| store.add_user("bob", "user", pw));
    secrets.push(pw.to_owned());
    let (bob_token, _) = Api::new(&server).login("bob", pw).await;
    let bob = Api::new(&server).as_token(&bob_token);
    api.post(
        "/api/v1/servers/office/peers",
        json!({"name": "laptop", "owner": "bob"}),
    )
    .await
    .ok();

    // The server's policy: defaults, then a change (one revision, ETag).
    let p = api.get("/api/v1/servers/office/policy").await.ok();
    assert_eq!(p.body["policy"]["forwarding"], true);
    assert_eq!(p.body["policy"]["default_verdict"], "allow");
    assert_eq!(p.etag(), "\"2\"");
    let set = api
        .put(
            "/api/v1/servers/office/policy",
            json!({"masquerade4": "eth0", "default_verdict": "deny"}),
        )
        .await
        .ok();
    assert_eq!(set.body["revision"], 3);
    assert_eq!(set.etag(), "\"3\"");
    assert_eq!(set.body["policy"]["masquerade4"], "eth0");
    assert_eq!(set.body["policy"]["peer_to_peer"], false);
    let shown = api.get("/api/v1/servers/office").await.ok();
    assert_eq!(shown.body["policy"], set.body["policy"]);
    // Bad input names the field; a stale If-Match changes nothing.
    api.put(
        "/api/v1/servers/office/policy",
        json!({"default_verdict": "maybe"}),
    )
    .await
    .err(400, "invalid_input", Some("policy.default_verdict"));
    api.put(
        "/api/v1/servers/office/policy",
        json!({"masquerade4": "not an interface"}),
    )
    .await
    .err(400, "invalid_input", Some("policy.masquerade4"));
    api.put("/api/v1/servers/office/policy", json!({"nope": 1}))
        .await
        .err(400, "invalid_input", None);
    api.call(
        Method::PUT,
        "/api/v1/servers/office/policy",
        Some(json!({})),
        &[("If-Match", "\"2\"")],
    )
    .await
    .err(412, "precondition_failed", None);
    assert_eq!(
        api.get("/api/v1/servers/office/policy").await.etag(),
        "\"3\""
    );

    // A peer's policy.
    let peer = api
        .put(
            "/api/v1/servers/office/peers/laptop/policy",
            json!({"allow": ["fd00::/64:tcp:443", "10.0.0.0/8"], "rate_up": "10mbit", "quota": "1GiB/30d"}),
        )
        .await
        .ok();
    assert_eq!(peer.etag(), "\"4\"");
    let pol = &peer.body["policy"];
    assert_eq!(pol["allow"], json!(["[fd00::/64]:tcp:443", "10.0.0.0/8"]));
    assert_eq!(pol["rate_up"], "10mbit");
    assert!(pol["rate_down"].is_null());
    assert_eq!(pol["quota_action"], "drop");
    let start = pol["quota_start"].as_u64().unwrap();
    assert!(start > 1_700_000_000, "{pol}");
    // The same quota again keeps its start; no quota clears it.
    let again = api
        .put(
            "/api/v1/servers/office/peers/laptop/policy",
            json!({"quota": "1GiB/30d", "quota_action": "report"}),
        )
        .await
        .ok();
    assert_eq!(again.body["policy"]["quota_start"], start);
    assert!(again.body["policy"]["allow"].is_null());
    assert_eq!(again.body["policy"]["quota_action"], "report");
    for (body, field) in [
        (json!({"allow": ["10.0.0.0/8:icmp:80"]}), "policy.allow[0]"),
        (json!({"rate_up": "fast"}), "policy.rate_up"),
        (json!({"quota": "1GiB"}), "policy.quota"),
    ] {
        api.put("/api/v1/servers/office/peers/laptop/policy", body)
            .await
            .err(400, "invalid_input", Some(field));
    }
    let overlapping = api
        .put(
            "/api/v1/servers/office/peers/laptop/policy",
            json!({"allow": ["10.0.0.0/8", "10.1.0.0/16"]}),
        )
        .await;
    overlapping.err(400, "invalid_input", Some("peer.policy.allow[1]"));

    // A user sees the policy of their own peer but may not change it.
    let own = bob.get("/api/v1/servers/office/peers/laptop").await.ok();
    assert_eq!(own.body["policy"]["quota"], "1GiB/30d");
    let denied = bob
        .put("/api/v1/servers/office/peers/laptop/policy", json!({}))
        .await;
    assert!(
        matches!(denied.status.as_u16(), 403 | 404),
        "{}",
        denied.text
    );
    let denied = bob.put("/api/v1/servers/office/policy", json!({})).await;
    assert!(
        matches!(denied.status.as_u16(), 403 | 404),
        "{}",
        denied.text
    );
    let after = api.get("/api/v1/servers/office/peers/laptop").await.ok();
    assert_eq!(after.body["policy"]["quota_action"], "report", "unchanged");

    // The plan: a host that applied revision 3 has the peer's two policy changes to do;
    // one at the head has nothing; with no report there is no host.
    let plan = api.get("/api/v1/servers/office/plan").await.ok();
    assert_eq!(plan.body["hosts"], json!([]));
    tokio::task::block_in_place(|| {
        store.report("office", "h1", 3);
        store.report("office", "h2", 5);
    });
    let plan = api.get("/api/v1/servers/office/plan").await.ok();
    assert_eq!(plan.body["revision"], 5);
    let hosts = plan.body["hosts"].as_array().unwrap();
    let h1 = hosts.iter().find(|h| h["host"] == "h1").unwrap();
    let h2 = hosts.iter().find(|h| h["host"] == "h2").unwrap();
    assert_eq!(h1["applied"], 3);
    assert_eq!(h1["converged"], false);
    let pending = h1["pending"].as_array().unwrap();
    assert!(!pending.is_empty(), "{h1}");
    assert!(
        pending.iter().any(|e| e.to_string().contains("laptop")),
        "{h1}"
    );
    assert_eq!(h2["pending"], json!([]));
    assert_eq!(h2["converged"], true);
    // A user may not read the whole server's plan.
    let denied = bob.get("/api/v1/servers/office/plan").await;
    assert!(
        matches!(denied.status.as_u16(), 403 | 404),
        "{}",
        denied.text
    );

    server.assert_no_secret_logged(&secrets);
}
