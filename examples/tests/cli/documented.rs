//! The JSON output of every command family against the shapes `docs/cli.md` documents,
//! read from the document itself: a field printed but not documented, or documented but
//! not printed, fails.
//!
//! The document writes shapes in two ways, and both are read here: tables whose first
//! column names the fields in code spans (`id`, `server_id`), and inline objects such as
//! `{"revision", "at", "changes": [{"kind", "id"}]}`, where a quoted string right after
//! `{` or `,` is a field and anything after `:` is its value (a nested object there is
//! the field's own shape).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::harness::Env;

/// The command-line reference, as compiled into this test.
const CLI_MD: &str = include_str!("../../../docs/cli.md");

/// An object's documented fields, each with the shape of its value when the document
/// gives one (`{…}` or `[{…}]`).
#[derive(Debug, Default, PartialEq)]
struct Shape {
    fields: Vec<(String, Option<Shape>)>,
}

impl Shape {
    fn names(&self) -> BTreeSet<String> {
        self.fields.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// The text of the section `## heading` (up to the next `## `).
fn section(heading: &str) -> &'static str {
    let start = CLI_MD
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("docs/cli.md has no section `## {heading}`"));
    let body = &CLI_MD[start + 1..];
    let end = body[3..].find("\n## ").map_or(body.len(), |i| i + 3);
    &body[..end]
}

/// Where `anchors` occur one after the other in `text` (whitespace runs match any
/// whitespace, so rewrapping a paragraph does not matter): the byte offset of the last
/// anchor's start.
fn locate(text: &str, anchors: &[&str]) -> usize {
    let mut from = 0;
    let mut at = 0;
    for anchor in anchors {
        let words: Vec<&str> = anchor.split_whitespace().collect();
        let found = (from..text.len())
            .filter(|&i| text.is_char_boundary(i))
            .find(|&i| {
                let mut rest = &text[i..];
                for (n, w) in words.iter().enumerate() {
                    if n > 0 {
                        let trimmed = rest.trim_start();
                        if trimmed.len() == rest.len() {
                            return false;
                        }
                        rest = trimmed;
                    }
                    match rest.strip_prefix(w) {
                        Some(r) => rest = r,
                        None => return false,
                    }
                }
                true
            })
            .unwrap_or_else(|| panic!("docs/cli.md: no {anchor:?} (after {anchors:?}[..])"));
        at = found;
        from = found + 1;
    }
    at
}

/// The inline shape (`{…}`) that starts at or after `anchors` in section `heading`.
fn inline(heading: &str, anchors: &[&str]) -> Shape {
    let text = section(heading);
    let at = locate(text, anchors);
    let open = text[at..]
        .find('{')
        .unwrap_or_else(|| panic!("docs/cli.md: no `{{` after {anchors:?}"))
        + at;
    let chars: Vec<char> = text[open..].chars().collect();
    let mut i = 0;
    parse_object(&chars, &mut i)
}

/// Read an object starting at `s[*i] == '{'`; leave `*i` after its `}`.
fn parse_object(s: &[char], i: &mut usize) -> Shape {
    assert_eq!(s[*i], '{');
    *i += 1;
    let mut shape = Shape::default();
    let mut expect_field = true;
    let mut brackets = 0usize;
    while *i < s.len() {
        match s[*i] {
            '}' => {
                *i += 1;
                return shape;
            }
            '"' => {
                let start = *i + 1;
                let end = s[start..]
                    .iter()
                    .position(|&c| c == '"')
                    .map(|n| start + n)
                    .expect("docs/cli.md: an unclosed quote in a JSON shape");
                if expect_field && brackets == 0 {
                    shape.fields.push((s[start..end].iter().collect(), None));
                    expect_field = false;
                }
                *i = end + 1;
            }
            ',' if brackets == 0 => {
                expect_field = true;
                *i += 1;
            }
            '[' => {
                brackets += 1;
                *i += 1;
            }
            ']' => {
                brackets = brackets.saturating_sub(1);
                *i += 1;
            }
            '{' => {
                let nested = parse_object(s, i);
                if let Some((_, value)) = shape.fields.last_mut() {
                    if value.is_none() && !nested.fields.is_empty() {
                        *value = Some(nested);
                    }
                }
            }
            _ => *i += 1,
        }
    }
    panic!("docs/cli.md: an unclosed `{{` in a JSON shape");
}

/// The code spans of a table cell that are field names (`id`, `server_id`).
fn names_in(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

/// The rows (cells split on unescaped `|`) of the first table after `anchors`.
fn table_rows(heading: &str, anchors: &[&str]) -> Vec<Vec<String>> {
    let text = section(heading);
    let at = locate(text, anchors);
    let rows: Vec<Vec<String>> = text[at..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // the header and the `|---|` line
        .map(|l| {
            l.replace("\\|", "\u{0}")
                .split('|')
                .map(|c| c.replace('\u{0}', "|").trim().to_owned())
                .collect()
        })
        .collect();
    assert!(!rows.is_empty(), "docs/cli.md: no table after {anchors:?}");
    rows
}

/// A table whose first column names the fields of a view.
fn table(heading: &str, anchors: &[&str]) -> Shape {
    Shape {
        fields: table_rows(heading, anchors)
            .iter()
            .flat_map(|row| names_in(&row[1]))
            .map(|n| (n, None))
            .collect(),
    }
}

/// Check `value` (an object, or an array of them) against `shape`, nested shapes included.
fn check(what: &str, shape: &Shape, value: &Value) {
    if let Some(items) = value.as_array() {
        for (n, item) in items.iter().enumerate() {
            check(&format!("{what}[{n}]"), shape, item);
        }
        return;
    }
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {value}"));
    let printed: BTreeSet<String> = object.keys().cloned().collect();
    let documented = shape.names();
    assert_eq!(
        printed,
        documented,
        "{what}: printed fields (left) differ from docs/cli.md (right); undocumented: {:?}, \
         not printed: {:?}",
        printed.difference(&documented).collect::<Vec<_>>(),
        documented.difference(&printed).collect::<Vec<_>>(),
    );
    for (name, nested) in &shape.fields {
        if let Some(nested) = nested {
            let v = &object[name];
            if v.is_object() || v.as_array().is_some_and(|a| a.iter().all(Value::is_object)) {
                check(&format!("{what}.{name}"), nested, v);
            }
        }
    }
}

/// Every plan item against the `op` table: `op` plus the fields of its row.
fn check_plan_items(what: &str, items: &Value) {
    let mut ops: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in table_rows(
        "The live interface: plan, apply, status, reconcile",
        &["each item has an `op` and its fields"],
    ) {
        for op in names_in(&row[1]) {
            let mut fields: BTreeSet<String> = names_in(&row[2]).into_iter().collect();
            fields.insert("op".into());
            ops.insert(op, fields);
        }
    }
    let items = items
        .as_array()
        .unwrap_or_else(|| panic!("{what}: not an array"));
    for item in items {
        let op = item["op"].as_str().expect("op");
        let documented = ops
            .get(op)
            .unwrap_or_else(|| panic!("{what}: op {op:?} is not in docs/cli.md's table"));
        let printed: BTreeSet<String> = item.as_object().unwrap().keys().cloned().collect();
        assert_eq!(&printed, documented, "{what}: fields of op {op:?}");
    }
}

/// An interface name no other test or process uses.
fn iface(tag: &str) -> String {
    format!("wgm{tag}{}", std::process::id() % 100_000)
}

#[test]
fn the_shape_reader_reads_fields_and_nested_shapes() {
    let chars: Vec<char> = r#"{"a", "b": "x"|"y", "c": [{"d", "e": {"f": ID}}], "g": {K: [V, W]}, "h" (or null), "i": "j" | {"k"}}"#
        .chars()
        .collect();
    let shape = parse_object(&chars, &mut 0);
    let names: Vec<&str> = shape.fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "g", "h", "i"]);
    let c = shape.fields[2].1.as_ref().unwrap();
    assert_eq!(c.names(), ["d", "e"].map(String::from).into());
    assert_eq!(
        c.fields[1].1.as_ref().unwrap().names(),
        ["f"].map(String::from).into()
    );
    assert!(
        shape.fields[3].1.is_none(),
        "a map has no documented fields"
    );
    assert_eq!(
        shape.fields[5].1.as_ref().unwrap().names(),
        ["k"].map(String::from).into()
    );
    assert_eq!(
        names_in("`id`, `server_id` and `\"x: y\"`"),
        ["id", "server_id"]
    );
    // An undocumented field fails the check.
    let doc = Shape {
        fields: vec![("a".into(), None)],
    };
    check("ok", &doc, &serde_json::json!({"a": 1}));
    let extra = std::panic::catch_unwind(|| check("x", &doc, &serde_json::json!({"a": 1, "b": 2})));
    assert!(extra.is_err());
}

#[test]
fn json_views_keep_their_documented_fields() {
    const SETUP: &str = "Setup: init, quickstart";
    const SERVERS: &str = "Servers";
    const PEERS: &str = "Peers";
    const LIVE: &str = "The live interface: plan, apply, status, reconcile";
    const HISTORY: &str = "History, diff, rollback";
    const AUDIT: &str = "Audit";
    const USERS: &str = "Users";
    const TOKENS: &str = "API tokens";

    let env = Env::new();
    check(
        "init",
        &inline(SETUP, &["says where they are. JSON:"]),
        &env.json(&["init"]),
    );
    let quick = [
        "quickstart",
        "--interface",
        &iface("q"),
        "--listen-port",
        "51999",
    ];
    check(
        "quickstart",
        &inline(SETUP, &["naming `server.interface`. JSON:"]),
        &env.json(&quick),
    );
    check(
        "quickstart again",
        &inline(SETUP, &["naming `server.interface`. JSON:", "`, or `"]),
        &env.json(&quick),
    );

    // Servers.
    let server_view = table(SERVERS, &["print a **ServerView**"]);
    check("server create", &server_view, &env.server("office", 51820));
    for args in [
        &["server", "list"][..],
        &["server", "show", "office"],
        &["server", "set", "office", "--mtu", "1400"],
        &["server", "rotate-key", "office"],
    ] {
        check(&args.join(" "), &server_view, &env.json(args));
    }
    check(
        "server export",
        &inline(SERVERS, &["`export` prints `{"]),
        &env.json(&["server", "export", "office"]),
    );
    let exported = env.path("office.conf");
    let exported = exported.to_str().unwrap();
    check(
        "server export --out",
        &inline(SERVERS, &["`export` prints `{", "(or"]),
        &env.json(&["server", "export", "office", "--out", exported]),
    );
    // A copy on the same host needs its own port, key and pools (servers of one
    // installation share none of them).
    let copy = std::fs::read_to_string(exported)
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("PrivateKey = ") {
                let k = wgm_core::keys::PrivateKey::generate();
                format!("PrivateKey = {}", k.expose_base64().as_str())
            } else {
                l.replace("ListenPort = 51820", "ListenPort = 51899")
                    .replace("10.8.0.", "10.9.0.")
                    .replace("fd12:3456:789a:1::", "fd12:3456:789a:2::")
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let copy_path = env.path("copy.conf");
    std::fs::write(&copy_path, copy).unwrap();
    let imported = env.json(&[
        "server",
        "import",
        "copy",
        "--file",
        copy_path.to_str().unwrap(),
        "--interface",
        &iface("i"),
    ]);
    check("server import", &server_view, &imported);
    check(
        "server delete",
        &inline(SERVERS, &["`delete` prints `{"]),
        &env.json(&["server", "delete", "copy"]),
    );

    // Peers.
    let peer_view = table(PEERS, &["one **PeerView**"]);
    check(
        "peer add",
        &peer_view,
        &env.json(&["peer", "add", "office", "alice"]),
    );
    env.json(&["peer", "add", "office", "bob"]);
    for args in [
        &["peer", "list", "office"][..],
        &["peer", "show", "office", "alice"],
        &["peer", "set", "office", "alice", "--description", "laptop"],
        &["peer", "disable", "office", "alice"],
        &["peer", "enable", "office", "alice"],
        &["peer", "rotate-key", "office", "alice"],
        &["peer", "rotate-psk", "office", "alice"],
    ] {
        check(&args.join(" "), &peer_view, &env.json(args));
    }
    let config = env.json(&["peer", "config", "office", "alice"]);
    check(
        "peer config",
        &inline(PEERS, &["`config` prints `{"]),
        &config,
    );
    check("peer config .peer", &peer_view, &config["peer"]);
    check(
        "peer remove",
        &inline(PEERS, &["`remove` prints `{"]),
        &env.json(&["peer", "remove", "office", "bob"]),
    );

    // The live interface, read only: a device that does not exist reads as absent.
    let live = iface("d");
    env.json(&[
        "server",
        "create",
        "live",
        "--listen-port",
        "51821",
        "--interface",
        &live,
        "--ipv4",
        "10.9.0.0/24",
    ]);
    env.json(&["peer", "add", "live", "carol"]);
    let plan = env.json(&["plan", "live"]);
    check("plan", &inline(LIVE, &["`plan` prints a **Plan**:"]), &plan);
    assert!(
        plan["items"].as_array().is_some_and(|i| i.len() > 3),
        "{plan}"
    );
    check_plan_items("plan.items", &plan["items"]);
    let report = env.json(&["apply", "live", "--dry-run"]);
    let report_shape = inline(LIVE, &["`apply` prints an **ApplyReport**:"]);
    check("apply --dry-run", &report_shape, &report);
    check_plan_items("apply --dry-run .plan.items", &report["plan"]["items"]);
    check_plan_items("apply --dry-run .remaining", &report["remaining"]);
    check(
        "status",
        &inline(LIVE, &["`status` prints a **Status**:"]),
        &env.json(&["status", "live"]),
    );

    // History, diff, rollback.
    let history_entry = inline(HISTORY, &["`history`: an array of"]);
    check("history", &history_entry, &env.json(&["history", "office"]));
    check(
        "diff",
        &inline(HISTORY, &["`diff`: an array of"]),
        &env.json(&["diff", "office", "1", "4"]),
    );
    let rollback = env.json(&["rollback", "office", "4"]);
    check("rollback", &inline(HISTORY, &["`rollback`:"]), &rollback);
    check("rollback .revision", &history_entry, &rollback["revision"]);

    // Users and tokens.
    let user_view = inline(USERS, &["**UserView**"]);
    check(
        "user add",
        &user_view,
        &env.json(&["user", "add", "ann", "--role", "auditor"]),
    );
    env.json(&["user", "add", "bo", "--role", "user"]);
    for args in [
        &["user", "list"][..],
        &["user", "show", "ann"],
        &["user", "role", "ann", "operator", "--server", "office"],
        &["user", "disable", "bo"],
        &["user", "enable", "bo"],
    ] {
        check(&args.join(" "), &user_view, &env.json(args));
    }
    let passwd = env.run_with_stdin(
        &["--json", "user", "passwd", "ann"],
        b"correct horse battery staple\n",
    );
    assert_eq!(passwd.code, 0, "{}", passwd.stderr);
    check(
        "user passwd",
        &inline(USERS, &["`passwd`:"]),
        &serde_json::from_str(&passwd.stdout).unwrap(),
    );
    let created = env.json(&[
        "token",
        "create",
        "ann",
        "--scope",
        "peer:read@server:office",
    ]);
    check("token create", &inline(TOKENS, &["`create`:"]), &created);
    let token_view = inline(TOKENS, &["**TokenView**"]);
    check("token create .token", &token_view, &created["token"]);
    check(
        "token create .token.scopes",
        &inline(TOKENS, &["where a Permission is"]),
        &created["token"]["scopes"],
    );
    check("token list", &token_view, &env.json(&["token", "list"]));
    let id = created["token"]["id"].as_str().unwrap();
    check(
        "token revoke",
        &inline(TOKENS, &["`revoke`:"]),
        &env.json(&["token", "revoke", id]),
    );
    check(
        "user delete",
        &inline(USERS, &["**UserView**", "`delete`:"]),
        &env.json(&["user", "delete", "bo"]),
    );

    // The audit log, which now holds every kind of record above.
    check(
        "audit",
        &inline(AUDIT, &["**JSON.** An array of"]),
        &env.json(&["audit"]),
    );
    check(
        "audit --verify",
        &inline(AUDIT, &["`--verify`:"]),
        &env.json(&["audit", "--verify"]),
    );

    // Errors.
    let r = env.run(&["--json", "server", "show", "nope"]);
    check(
        "error",
        &inline(
            "Exit codes and errors",
            &["With `--json` the line is a JSON object:"],
        ),
        &serde_json::from_str(r.stderr.trim()).unwrap(),
    );

    // Secrets never appear in views.
    let all = format!(
        "{}{}",
        env.json(&["server", "list"]),
        env.json(&["peer", "list", "office"])
    );
    assert!(
        !all.contains("private_key\":\"") && !all.contains("wgm1:"),
        "{all}"
    );
}

#[test]
fn store_copy_backup_and_restore_print_their_documented_fields() {
    const MOVING: &str = "Moving a store: store copy, backup, restore";
    let env = Env::new();
    env.server("office", 51820);
    let moved = inline(MOVING, &["**Moved** is"]);
    let file = env.path("b.backup");
    let file = file.to_str().unwrap();
    let backup = env.json(&["backup", file]);
    check("backup", &inline(MOVING, &["`backup`:"]), &backup);
    check("backup .backed_up", &moved, &backup["backed_up"]);
    let to = format!("sqlite://{}", env.path("r.db").display());
    let restore = env.json(&["restore", file, "--to", &to]);
    check("restore", &inline(MOVING, &["`restore`:"]), &restore);
    check("restore .restored", &moved, &restore["restored"]);
    let copy_to = format!("sqlite://{}", env.path("c.db").display());
    let copy = env.json(&["store", "copy", "--from", &env.store, "--to", &copy_to]);
    check("store copy", &inline(MOVING, &["`store copy`:"]), &copy);
    check("store copy .copied", &moved, &copy["copied"]);
}
