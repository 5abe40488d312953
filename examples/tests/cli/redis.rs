//! The same commands on Redis (`--store redis://…?namespace=…`), in a key namespace of
//! the test's own, whose keys are deleted afterwards. Opt-in with `WGM_TEST_REDIS_URL`
//! (needs `redis-cli`; with the switch on, a server that does not answer fails the test).

use std::process::Command;

use wgm_test_support::{require, Suite};

use crate::postgres::walkthrough;

/// A namespace of keys, deleted on drop (through `redis-cli`, with argv, no shell).
pub(crate) struct Namespace {
    url: String,
    name: String,
}

impl Namespace {
    pub(crate) fn new(url: &str) -> Namespace {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Namespace {
            url: url.to_owned(),
            name: format!("wgm-cli-{}-{t}", std::process::id()),
        }
    }

    pub(crate) fn store_url(&self) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}namespace={}", self.url, self.name)
    }

    pub(crate) fn keys(&self) -> Vec<String> {
        let out = Command::new("redis-cli")
            .args(["-u", &self.url, "--scan", "--pattern"])
            .arg(format!("{{{}}}:*", self.name))
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let keys = self.keys();
        for chunk in keys.chunks(100) {
            let _ = Command::new("redis-cli")
                .args(["-u", &self.url, "DEL"])
                .args(chunk)
                .output();
        }
    }
}

#[test]
fn the_cli_works_on_redis() {
    let Some(redis) = require(Suite::Redis, &["redis-cli"]) else {
        return;
    };
    let ns = Namespace::new(redis.url());
    walkthrough(ns.store_url(), "Redis", || {
        // Everything lives under the namespace's hash tag.
        let keys = ns.keys();
        assert!(keys.len() > 5, "{keys:?}");
    });
}
