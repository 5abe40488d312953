//! Running the `wgm` binary against a private SQLite store in a temporary directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// A private world for one test: a temporary HOME, an SQLite store and a key file.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: String,
    pub key: PathBuf,
}

/// The result of one run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(o: &Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = format!("sqlite://{}", dir.path().join("wgm.db").display());
        let key = dir.path().join("wgm.key");
        Env { dir, store, key }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A bare command: no store or key options, a private HOME, no inherited WGM_*.
    pub fn bare(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_wgm"));
        for var in [
            "WGM_STORE",
            "WGM_TOKEN",
            "WGM_MASTER_KEY",
            "WGM_MASTER_KEY_FILE",
            "WGM_LOG",
            "XDG_DATA_HOME",
        ] {
            c.env_remove(var);
        }
        c.env("HOME", self.dir.path().join("home"));
        c.env("NO_COLOR", "1");
        c.stdin(Stdio::null());
        c
    }

    /// A command on this test's store and key file.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.bare();
        c.arg("--store").arg(&self.store);
        c.arg("--master-key-file").arg(&self.key);
        c.args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(&self.cmd(args).output().expect("run wgm"))
    }

    pub fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        let mut c = self.cmd(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn wgm");
        {
            let mut stdin = child.stdin.take().expect("stdin");
            // The binary may refuse before reading everything; a closed pipe is fine.
            let _ = stdin.write_all(input);
        }
        Run::from(&child.wait_with_output().expect("wait wgm"))
    }

    /// Run and require exit code 0; the stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, 0,
            "wgm {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            r.code, r.stdout, r.stderr
        );
        r.stdout
    }

    /// Run with `--json` and parse the stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("wgm {args:?}: not JSON ({e}): {out}"))
    }

    /// Run and require exit code `code`; the stderr, which must be one line.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let r = self.run(args);
        check_failure(args, &r, code);
        r.stderr
    }

    /// Create a dual-stack server `name` on `port` with fixed pools.
    pub fn server(&self, name: &str, port: u16) -> Value {
        self.json(&[
            "server",
            "create",
            name,
            "--listen-port",
            &port.to_string(),
            "--ipv6",
            "fd12:3456:789a:1::/64",
            "--ipv4",
            "10.8.0.0/24",
            "--endpoint",
            "vpn.example.org:51820",
        ])
    }

    /// Everything a rejected command must leave unchanged: servers, every server's
    /// history and peers, users, tokens, and the number of audit records.
    pub fn snapshot(&self) -> Value {
        let servers = self.json(&["server", "list"]);
        let mut per_server = Vec::new();
        for s in servers.as_array().expect("array") {
            let name = s["name"].as_str().expect("name");
            per_server.push(serde_json::json!({
                "history": self.json(&["history", name]),
                "peers": self.json(&["peer", "list", name]),
            }));
        }
        let audit = self.json(&["audit"]);
        let writes = audit
            .as_array()
            .expect("array")
            .iter()
            .filter(|r| r["entry"]["action"] != "secret.export")
            .count();
        serde_json::json!({
            "servers": servers,
            "per_server": per_server,
            "users": self.json(&["user", "list"]),
            "tokens": self.json(&["token", "list"]),
            "audit_writes": writes,
        })
    }
}

/// Assert a failure with `code` and a one-line message.
pub fn check_failure(args: &[&str], r: &Run, code: i32) {
    assert_eq!(
        r.code, code,
        "wgm {args:?}: expected exit {code}, got {}\nstdout: {}\nstderr: {}",
        r.code, r.stdout, r.stderr
    );
    assert_eq!(
        r.stderr.trim_end().lines().count(),
        1,
        "wgm {args:?}: the error must be one line: {:?}",
        r.stderr
    );
    assert!(
        r.stdout.is_empty(),
        "wgm {args:?}: nothing on stdout on failure: {}",
        r.stdout
    );
}

/// Mode bits of a file.
pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}
