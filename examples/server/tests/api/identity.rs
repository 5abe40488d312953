//! Login, TOTP, refresh, logout, API tokens with scopes and expiry, RBAC denials, users,
//! roles, tokens and the audit log.

use reqwest::Method;
use serde_json::{json, Value};
use wgm_core::auth::totp::{Totp, TotpSecret};

use crate::harness::{admin_setup, Api, Options, ADMIN_PASSWORD};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn secret_of(uri: &str) -> TotpSecret {
    let q = uri.split_once('?').unwrap().1;
    let s = q
        .split('&')
        .find_map(|kv| kv.strip_prefix("secret="))
        .unwrap();
    TotpSecret::from_base32(s).unwrap()
}

/// Password login, refresh, logout (access and refresh tokens stop working), TOTP
/// enrolment and login with a code, password change ending sessions, throttling.
#[tokio::test(flavor = "multi_thread")]
async fn login_totp_refresh_logout() {
    let (_store, server, admin, mut secrets) = admin_setup(Options::default()).await;
    let anon = Api::new(&server);
    let carol_pw = "carol-Password-42!";
    secrets.push(carol_pw.into());
    admin
        .post(
            "/api/v1/users",
            json!({"name": "carol", "roles": [{"role": "operator"}], "password": carol_pw}),
        )
        .await
        .ok();

    // Wrong password: 401, same answer as an unknown user.
    let bad = anon
        .post(
            "/api/v1/login",
            json!({"user": "carol", "password": "wrong-password"}),
        )
        .await;
    bad.err(401, "unauthenticated", None);
    assert!(bad.headers.contains_key("www-authenticate"));
    let unknown = anon
        .post(
            "/api/v1/login",
            json!({"user": "nobody", "password": "wrong-password"}),
        )
        .await;
    assert_eq!(unknown.body["reason"], bad.body["reason"]);
    anon.get("/api/v1/servers")
        .await
        .err(401, "unauthenticated", None);
    anon.as_token("garbage")
        .get("/api/v1/servers")
        .await
        .err(401, "unauthenticated", None);

    // Login, use, refresh.
    let l = anon
        .post(
            "/api/v1/login",
            json!({"user": "carol", "password": carol_pw}),
        )
        .await
        .ok();
    assert_eq!(l.headers["cache-control"], "no-store");
    assert_eq!(l.body["token_type"], "Bearer");
    let (access, refresh) = (
        l.body["access_token"].as_str().unwrap().to_owned(),
        l.body["refresh_token"].as_str().unwrap().to_owned(),
    );
    secrets.extend([access.clone(), refresh.clone()]);
    let carol = anon.as_token(&access);
    assert_eq!(carol.get("/api/v1/me").await.ok().body["name"], "carol");
    // A refresh token is not an access token.
    anon.as_token(&refresh)
        .get("/api/v1/me")
        .await
        .err(401, "unauthenticated", None);
    let r = anon
        .post("/api/v1/refresh", json!({"refresh_token": refresh}))
        .await
        .ok();
    let access2 = r.body["access_token"].as_str().unwrap().to_owned();
    secrets.push(access2.clone());
    anon.as_token(&access2).get("/api/v1/me").await.ok();
    anon.post("/api/v1/refresh", json!({"refresh_token": access}))
        .await
        .err(401, "unauthenticated", None);

    // Logout ends the access token and the refresh token.
    let out = carol
        .post("/api/v1/logout", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(out.status, 204, "{}", out.text);
    carol
        .get("/api/v1/me")
        .await
        .err(401, "unauthenticated", None);
    anon.post("/api/v1/refresh", json!({"refresh_token": refresh}))
        .await
        .err(401, "unauthenticated", None);

    // TOTP: enrol, confirm, then login needs a code.
    let (access, _) = anon.login("carol", carol_pw).await;
    secrets.push(access.clone());
    let carol = anon.as_token(&access);
    let e = carol.post("/api/v1/me/totp", json!({})).await.ok();
    let uri = e.body["uri"].as_str().unwrap().to_owned();
    assert!(uri.starts_with("otpauth://totp/"));
    assert!(e.body["qr_svg"].as_str().unwrap().contains("<svg"));
    let secret = secret_of(&uri);
    secrets.push(
        uri.split("secret=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .to_owned(),
    );
    let totp = Totp::default();
    carol
        .post("/api/v1/me/totp/confirm", json!({"code": "000000x"}))
        .await
        .err(401, "unauthenticated", None);
    let t = now();
    let c = carol
        .post(
            "/api/v1/me/totp/confirm",
            json!({"code": totp.code_at(&secret, t)}),
        )
        .await;
    assert_eq!(c.status, 204, "{}", c.text);
    assert_eq!(
        admin.get("/api/v1/users/carol").await.ok().body["totp"],
        true
    );
    anon.post(
        "/api/v1/login",
        json!({"user": "carol", "password": carol_pw}),
    )
    .await
    .err(401, "unauthenticated", None);
    // The next step's code (the one just used cannot be replayed).
    let code = totp.code_at(&secret, t + 30);
    let l = anon
        .post(
            "/api/v1/login",
            json!({"user": "carol", "password": carol_pw, "totp": code}),
        )
        .await
        .ok();
    let access = l.body["access_token"].as_str().unwrap().to_owned();
    secrets.push(access.clone());

    // Changing one's password ends every session.
    let carol = anon.as_token(&access);
    let new_pw = "carol-New-Password-43!";
    secrets.push(new_pw.into());
    carol
        .put(
            "/api/v1/me/password",
            json!({"current": "wrong-one", "new": new_pw}),
        )
        .await
        .err(401, "unauthenticated", None);
    let p = carol
        .put(
            "/api/v1/me/password",
            json!({"current": carol_pw, "new": new_pw}),
        )
        .await;
    assert_eq!(p.status, 204, "{}", p.text);
    carol
        .get("/api/v1/me")
        .await
        .err(401, "unauthenticated", None);

    // Throttling from the library: repeated failures are refused with Retry-After.
    let mut throttled = None;
    for _ in 0..10 {
        let a = anon
            .post(
                "/api/v1/login",
                json!({"user": "admin", "password": "not-the-password"}),
            )
            .await;
        if a.status == 429 {
            throttled = Some(a);
            break;
        }
    }
    let t = throttled.expect("login throttled after repeated failures");
    t.err(429, "throttled", None);
    assert_eq!(t.body["kind"], "login");
    assert!(t.headers.contains_key("retry-after"));
    let _ = ADMIN_PASSWORD;
    server.assert_no_secret_logged(&secrets);
}

/// API tokens: the secret once, scopes narrow, expiry and revocation end them.
#[tokio::test(flavor = "multi_thread")]
async fn api_tokens_scopes_and_expiry() {
    let (_store, server, admin, mut secrets) = admin_setup(Options::default()).await;
    admin
        .post(
            "/api/v1/servers",
            json!({"name": "office", "listen_port": 51820}),
        )
        .await
        .ok();
    let t = admin
        .post(
            "/api/v1/tokens",
            json!({"name": "reader", "scopes": ["server:read", "peer:read@server:office"]}),
        )
        .await;
    assert_eq!(t.status, 201, "{}", t.text);
    let secret = t.body["secret"].as_str().unwrap().to_owned();
    secrets.push(secret.clone());
    let id = t.body["token"]["id"].as_str().unwrap().to_owned();
    assert_eq!(t.body["token"]["scopes"].as_array().unwrap().len(), 2);
    let reader = admin.as_token(&secret);
    reader.get("/api/v1/servers/office").await.ok();
    reader.get("/api/v1/servers/office/peers").await.ok();
    reader
        .post("/api/v1/servers", json!({"name": "x", "listen_port": 1}))
        .await
        .err(403, "permission_denied", None);
    reader
        .post("/api/v1/servers/office/peers", json!({"name": "p"}))
        .await
        .err(403, "permission_denied", None);
    reader
        .post("/api/v1/logout", json!({}))
        .await
        .err(400, "invalid_input", Some("Authorization"));
    let listed = admin.get("/api/v1/tokens").await.ok();
    assert!(listed.text.contains(&id));
    assert!(
        !listed.text.contains(&secret),
        "a listing never holds a secret"
    );
    admin
        .post(
            "/api/v1/tokens",
            json!({"name": "x", "scopes": ["audit:delete"]}),
        )
        .await
        .err(400, "invalid_input", Some("token.scopes[0]"));
    admin
        .post(
            "/api/v1/tokens",
            json!({"name": "x", "expires_at": "2020-01-01T00:00:00Z"}),
        )
        .await
        .err(400, "invalid_input", Some("token.expires_at"));

    // Expiry.
    let short = admin
        .post(
            "/api/v1/tokens",
            json!({"name": "short", "expires_at": "2s"}),
        )
        .await
        .ok();
    let s2 = short.body["secret"].as_str().unwrap().to_owned();
    secrets.push(s2.clone());
    admin.as_token(&s2).get("/api/v1/servers").await.ok();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    admin
        .as_token(&s2)
        .get("/api/v1/servers")
        .await
        .err(401, "unauthenticated", None);

    // Revocation.
    let r = admin.delete(&format!("/api/v1/tokens/{id}")).await;
    assert_eq!(r.status, 204, "{}", r.text);
    reader
        .get("/api/v1/servers")
        .await
        .err(401, "unauthenticated", None);
    admin
        .delete("/api/v1/tokens/not-a-uuid")
        .await
        .err(400, "invalid_input", Some("id"));
    server.assert_no_secret_logged(&secrets);
}

/// A `user` sees and changes only their own peers: another user's are 404, exactly as
/// peers that do not exist; nor can they act as an administrator.
#[tokio::test(flavor = "multi_thread")]
async fn a_user_cannot_see_or_change_another_users_peers() {
    let (_store, server, admin, mut secrets) = admin_setup(Options::default()).await;
    admin
        .post(
            "/api/v1/servers",
            json!({"name": "office", "listen_port": 51820}),
        )
        .await
        .ok();
    let anon = Api::new(&server);
    let mut as_user = Vec::new();
    for name in ["bob", "dave"] {
        let pw = format!("{name}-Password-123!");
        secrets.push(pw.clone());
        admin
            .post(
                "/api/v1/users",
                json!({"name": name, "roles": [{"role": "user"}], "password": pw}),
            )
            .await
            .ok();
        let (access, refresh) = anon.login(name, &pw).await;
        secrets.extend([access.clone(), refresh]);
        as_user.push(anon.as_token(&access));
    }
    let (bob, dave) = (&as_user[0], &as_user[1]);
    let added = bob
        .post(
            "/api/v1/servers/office/peers",
            json!({"name": "bob-laptop"}),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.text);
    let pid = added.body[0]["id"].as_str().unwrap().to_owned();
    dave.post(
        "/api/v1/servers/office/peers",
        json!({"name": "dave-phone"}),
    )
    .await
    .ok();

    // Dave: bob's peer does not exist for him, by name or id, on every path.
    for r in ["bob-laptop", pid.as_str()] {
        let base = format!("/api/v1/servers/office/peers/{r}");
        dave.get(&base).await.err(404, "not_found", None);
        dave.patch(&base, json!({"keepalive": 5}))
            .await
            .err(404, "not_found", None);
        dave.delete(&base).await.err(404, "not_found", None);
        dave.get(&format!("{base}/config"))
            .await
            .err(404, "not_found", None);
        dave.post(&format!("{base}/disable"), json!({}))
            .await
            .err(404, "not_found", None);
    }
    let mine = dave.get("/api/v1/servers/office/peers").await.ok();
    let names: Vec<&str> = mine.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dave-phone"]);
    // Nothing of bob's changed.
    let still = bob
        .get("/api/v1/servers/office/peers/bob-laptop")
        .await
        .ok();
    assert_eq!(still.body["enabled"], true);
    // Administrative acts are refused.
    dave.post("/api/v1/servers", json!({"name": "x", "listen_port": 1}))
        .await
        .err(403, "permission_denied", None);
    dave.get("/api/v1/audit")
        .await
        .err(403, "permission_denied", None);
    dave.post(
        "/api/v1/users",
        json!({"name": "eve", "roles": [{"role": "admin"}]}),
    )
    .await
    .err(403, "permission_denied", None);
    dave.get("/api/v1/users/bob")
        .await
        .err(404, "not_found", None);
    dave.patch(
        "/api/v1/servers/office/peers/dave-phone",
        json!({"allowed_ips": ["192.168.50.0/24"]}),
    )
    .await
    .err(403, "permission_denied", None);
    // The audit log holds the refusals.
    let audit = admin.get("/api/v1/audit?actor=user:dave").await.ok();
    assert!(audit.text.contains("\"denied\""), "{}", audit.text);
    server.assert_no_secret_logged(&secrets);
}

/// Users, roles, tokens and the audit log, through their endpoints.
#[tokio::test(flavor = "multi_thread")]
async fn users_roles_tokens_and_audit() {
    let (_store, server, admin, mut secrets) = admin_setup(Options::default()).await;
    admin
        .post(
            "/api/v1/servers",
            json!({"name": "office", "listen_port": 51820}),
        )
        .await
        .ok();
    // Roles.
    let roles = admin.get("/api/v1/roles").await.ok();
    assert!(roles.body["items"].as_array().unwrap().len() >= 4);
    let r = admin
        .put(
            "/api/v1/roles/helpdesk",
            json!({"description": "reads peers", "permissions": ["server:read", "peer:read@server:office"]}),
        )
        .await
        .ok();
    assert_eq!(r.body["permissions"].as_array().unwrap().len(), 2);
    admin
        .put(
            "/api/v1/roles/admin",
            json!({"description": "x", "permissions": []}),
        )
        .await
        .err(400, "invalid_input", Some("role.name"));
    admin
        .put(
            "/api/v1/roles/x",
            json!({"description": "x", "permissions": ["peer:fly"]}),
        )
        .await
        .err(400, "invalid_input", Some("role.permissions[0]"));
    // Users.
    let pw = "erin-Password-99!";
    secrets.push(pw.into());
    let u = admin
        .post(
            "/api/v1/users",
            json!({"name": "erin", "email": "erin@example.org", "password": pw,
                   "roles": [{"role": "helpdesk"}]}),
        )
        .await;
    assert_eq!(u.status, 201, "{}", u.text);
    assert_eq!(u.body["has_password"], true);
    admin
        .post("/api/v1/users", json!({"name": "erin", "roles": []}))
        .await
        .err(400, "invalid_input", Some("user.name"));
    admin
        .post(
            "/api/v1/users",
            json!({"name": "frank", "password": "short"}),
        )
        .await
        .err(400, "invalid_input", None);
    let list = admin.get("/api/v1/users?name=ER").await.ok();
    assert_eq!(list.body["total"], 1);
    let off = admin
        .patch("/api/v1/users/erin", json!({"active": false}))
        .await
        .ok();
    assert_eq!(off.body["active"], false);
    assert_eq!(
        admin.get("/api/v1/users?active=false").await.body["total"],
        1
    );
    admin
        .patch(
            "/api/v1/users/erin",
            json!({"active": true, "email": null, "roles": [{"role": "user", "server": "office"}]}),
        )
        .await
        .ok();
    let shown = admin.get("/api/v1/users/erin").await.ok();
    assert_eq!(shown.body["email"], Value::Null);
    assert!(shown.body["roles"][0]["scope"]["server"].is_string());
    let new_pw = "erin-Reset-Password-1";
    secrets.push(new_pw.into());
    let reset = admin
        .put("/api/v1/users/erin/password", json!({"new": new_pw}))
        .await;
    assert_eq!(reset.status, 204, "{}", reset.text);
    let (access, refresh) = Api::new(&server).login("erin", new_pw).await;
    secrets.extend([access, refresh]);
    // The last administrator stays.
    admin
        .patch("/api/v1/users/admin", json!({"active": false}))
        .await
        .err(409, "conflict", None);
    // A held role cannot go; a free one can.
    admin.delete("/api/v1/users/erin").await;
    let gone = admin.delete("/api/v1/roles/helpdesk").await;
    assert_eq!(gone.status, 204, "{}", gone.text);
    admin
        .get("/api/v1/users/erin")
        .await
        .err(404, "not_found", None);

    // Audit: query, filters, cursor, verify.
    let all = admin.get("/api/v1/audit?limit=2").await.ok();
    assert_eq!(all.body["items"].as_array().unwrap().len(), 2);
    let next = all.body["next_after_seq"].as_u64().unwrap();
    let more = admin
        .get(&format!("/api/v1/audit?after_seq={next}&limit=1000"))
        .await
        .ok();
    assert_eq!(more.body["items"][0]["seq"], next + 1);
    let by_server = admin.get("/api/v1/audit?server=office").await.ok();
    assert!(by_server.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["entry"]["server_id"].is_string()));
    let since = admin
        .get("/api/v1/audit?since=1h&actor=user:admin")
        .await
        .ok();
    assert!(!since.body["items"].as_array().unwrap().is_empty());
    let v = admin.get("/api/v1/audit/verify").await.ok();
    let head = v.body["head"].as_str().unwrap().to_owned();
    assert!(v.body["records"].as_u64().unwrap() > 5);
    admin
        .get(&format!("/api/v1/audit/verify?expect={head}"))
        .await
        .ok();
    admin.get("/api/v1/audit/verify?expect=1:00").await.err(
        400,
        "invalid_input",
        Some("audit.expect"),
    );
    let _ = Method::GET;
    server.assert_no_secret_logged(&secrets);
}
