//! Files the CLI writes or reads at paths users name: `--out` writes only to a new file
//! or an existing regular file (never through or over a symbolic link, FIFO, socket,
//! device or directory), and the master key file must be a regular file, refused before
//! it is opened (a FIFO there used to make `wgm` wait forever).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{check_failure, mode, Env, Run};

/// Longest a refused command may take before the test calls it hung (it should take
/// well under a second; this is only a guard so a regression fails instead of hanging).
const HANG: Duration = Duration::from_secs(60);

/// Run `cmd` to its end, or kill it (by its own handle) and fail once [`HANG`] passed.
fn run_or_kill(mut cmd: Command) -> Run {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn wgm");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait wgm").is_some() {
            break;
        }
        if started.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wgm hung for {HANG:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("wgm output");
    eprintln!("(finished in {:?})", started.elapsed());
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn mkfifo(p: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
}

fn is_fifo(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_fifo())
}

/// Every regular file under `dir`, recursively (links are not followed).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let t = std::fs::symlink_metadata(&p).unwrap().file_type();
            if t.is_dir() {
                todo.push(p);
            } else if t.is_file() {
                out.push(p);
            }
        }
    }
    out
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A server `office` with a peer `alice`; alice's private key (from her config).
fn office_with_alice(env: &Env) -> String {
    env.server("office", 51820);
    env.ok(&["peer", "add", "office", "alice"]);
    let cfg = env.ok(&["peer", "config", "office", "alice"]);
    cfg.lines()
        .find_map(|l| l.strip_prefix("PrivateKey = "))
        .expect("a private key in the config")
        .to_owned()
}

fn audit_count(env: &Env) -> usize {
    env.json(&["audit"]).as_array().expect("array").len()
}

#[test]
fn out_refuses_a_symlink_and_leaves_it_its_target_and_no_key_anywhere() {
    let env = Env::new();
    let key = office_with_alice(&env);
    let server_key = env
        .ok(&["server", "export", "office"])
        .lines()
        .find_map(|l| l.strip_prefix("PrivateKey = "))
        .unwrap()
        .to_owned();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target.conf");
    std::fs::write(&target, "precious\n").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = outside.path().join("link.conf");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let dangling = outside.path().join("dangling.conf");
    let nowhere = outside.path().join("nowhere.conf");
    std::os::unix::fs::symlink(&nowhere, &dangling).unwrap();
    let audit_before = audit_count(&env);
    for out in [&link, &dangling] {
        let shown = out.to_str().unwrap();
        for args in [
            &["peer", "config", "office", "alice", "--out", shown][..],
            &["server", "export", "office", "--out", shown],
        ] {
            let r = env.run(args);
            check_failure(args, &r, 1);
            assert!(
                r.stderr.contains(shown) && r.stderr.contains("symbolic link"),
                "names the path and what it is: {}",
                r.stderr
            );
            assert!(!r.stderr.contains(&key) && !r.stderr.contains(&server_key));
        }
    }
    // The links are still links to the same places; the target kept its bytes and mode;
    // nothing was created through the dangling link; no temporary file was left.
    assert_eq!(std::fs::read_link(&link).unwrap(), target);
    assert_eq!(std::fs::read_link(&dangling).unwrap(), nowhere);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    assert_eq!(mode(&target), 0o644);
    assert!(!nowhere.exists());
    assert_eq!(
        names_in(outside.path()),
        ["dangling.conf", "link.conf", "target.conf"]
    );
    // No key bytes anywhere: not in any file of either directory.
    for f in files_under(outside.path())
        .into_iter()
        .chain(files_under(env.dir.path()))
    {
        let bytes = std::fs::read(&f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(&key) && !text.contains(&server_key),
            "{} holds a private key",
            f.display()
        );
    }
    // Refused before the secret was produced: no export was audited.
    assert_eq!(audit_count(&env), audit_before);
}

#[test]
fn out_refuses_a_fifo_without_hanging_and_leaves_it() {
    let env = Env::new();
    office_with_alice(&env);
    let fifo = env.path("out.fifo");
    mkfifo(&fifo);
    let shown = fifo.to_str().unwrap();
    for args in [
        &["peer", "config", "office", "alice", "--out", shown][..],
        &["server", "export", "office", "--out", shown],
    ] {
        let r = run_or_kill(env.cmd(args));
        check_failure(args, &r, 1);
        assert!(
            r.stderr.contains(shown) && r.stderr.contains("FIFO"),
            "{}",
            r.stderr
        );
        assert!(is_fifo(&fifo), "the FIFO is still there");
    }
    // A directory is refused the same way.
    let dir = env.path("a-dir");
    std::fs::create_dir(&dir).unwrap();
    let args = [
        "peer",
        "config",
        "office",
        "alice",
        "--out",
        dir.to_str().unwrap(),
    ];
    let r = env.run(&args);
    check_failure(&args, &r, 1);
    assert!(r.stderr.contains("directory"), "{}", r.stderr);
}

#[test]
fn out_replaces_an_existing_regular_file_with_a_private_one() {
    let env = Env::new();
    let key = office_with_alice(&env);
    let out = env.path("alice.conf");
    std::fs::write(&out, "old\n").unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    env.ok(&[
        "peer",
        "config",
        "office",
        "alice",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains(&key), "{text}");
    assert_eq!(mode(&out), 0o600);
    assert!(std::fs::symlink_metadata(&out)
        .unwrap()
        .file_type()
        .is_file());
}

#[test]
fn a_master_key_path_that_is_a_fifo_is_refused_promptly() {
    let env = Env::new();
    env.server("office", 51820);
    let fifo = env.path("fifo.key");
    mkfifo(&fifo);
    let shown = fifo.to_str().unwrap();
    // --master-key-file, and WGM_MASTER_KEY_FILE.
    let mut by_flag = env.bare();
    by_flag.args([
        "--store",
        &env.store,
        "--master-key-file",
        shown,
        "server",
        "list",
    ]);
    let mut by_env = env.bare();
    by_env
        .env("WGM_MASTER_KEY_FILE", &fifo)
        .args(["--store", &env.store, "server", "list"]);
    for cmd in [by_flag, by_env] {
        let r = run_or_kill(cmd);
        check_failure(&["server", "list"], &r, 6);
        assert!(
            r.stderr.contains(shown) && r.stderr.contains("FIFO"),
            "names the path and what it is: {}",
            r.stderr
        );
        assert!(is_fifo(&fifo));
    }
    // The default key file (beside the SQLite file) as a FIFO, on a new store: it is
    // neither opened nor replaced by a new key.
    let default_key = env.path("fresh.key");
    mkfifo(&default_key);
    let mut cmd = env.bare();
    cmd.args([
        "--store",
        &format!("sqlite://{}", env.path("fresh.db").display()),
        "init",
    ]);
    let r = run_or_kill(cmd);
    check_failure(&["init"], &r, 6);
    assert!(r.stderr.contains("FIFO"), "{}", r.stderr);
    assert!(is_fifo(&default_key));
}

#[test]
fn a_master_key_symlink_to_a_private_regular_file_is_followed() {
    let env = Env::new();
    env.server("office", 51820);
    let link = env.path("link.key");
    std::os::unix::fs::symlink(&env.key, &link).unwrap();
    let mut cmd = env.bare();
    cmd.args(["--store", &env.store, "--master-key-file"])
        .arg(&link)
        .args(["server", "list"]);
    let r = run_or_kill(cmd);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // A link to a key others can read is refused like the file itself.
    std::fs::set_permissions(&env.key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut cmd = env.bare();
    cmd.args(["--store", &env.store, "--master-key-file"])
        .arg(&link)
        .args(["server", "list"]);
    let r = run_or_kill(cmd);
    check_failure(&["server", "list"], &r, 6);
    assert!(r.stderr.contains("chmod 600"), "{}", r.stderr);
}
