//! Checks that a resource is really there: root and namespaces, WireGuard in the kernel,
//! a program on `PATH`, a PostgreSQL or Redis server answering at the address of a URL.
//! Each check returns what is missing as a sentence fragment ("… but `wg` is not on
//! PATH"); none shows a URL's user information (it may hold a password).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a service gets to accept a connection and to answer.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Root, and a kernel with network namespaces.
pub(crate) fn netns() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("the test does not run as root (network namespaces need root)".into());
    }
    if !Path::new("/proc/self/ns/net").exists() {
        return Err("this kernel has no network namespaces (/proc/self/ns/net)".into());
    }
    Ok(())
}

/// Where the kernel shows WireGuard: the `wireguard` module's directory in sysfs, there
/// both when the module is loaded and when it is built in.
pub(crate) const WIREGUARD_MODULE: &str = "/sys/module/wireguard";

/// WireGuard in the running kernel: `module` (normally [`WIREGUARD_MODULE`]) exists.
pub(crate) fn kernel_wireguard(module: &Path) -> Result<(), String> {
    if module.exists() {
        return Ok(());
    }
    Err(format!(
        "this kernel has no WireGuard ({} does not exist: the `wireguard` module is \
         neither loaded nor built in; load it with `modprobe wireguard` where the kernel \
         has it, or run the tests of this suite in the VM that .ci/vm boots, whose kernel \
         has it)",
        module.display()
    ))
}

/// `tool` as an executable file: itself when it holds a `/`, else the first match on
/// `PATH`.
pub(crate) fn find_tool(tool: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if tool.contains('/') {
        let p = PathBuf::from(tool);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| executable(p))
}

/// Where a service listens, as a URL names it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// A host (name or address, without brackets) and a port.
    Tcp(String, u16),
    /// A Unix socket.
    Unix(PathBuf),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(host, port) if host.contains(':') => write!(f, "[{host}]:{port}"),
            Endpoint::Tcp(host, port) => write!(f, "{host}:{port}"),
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The parts of `scheme://[userinfo@]host[:port][/path][?query]` a probe needs.
struct UrlParts<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<&'a str>,
    path: &'a str,
    query: &'a str,
}

fn split_url(url: &str) -> Result<UrlParts<'_>, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("its URL has no scheme (expected SCHEME://HOST:PORT/…)".into());
    };
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    // User information ends at the last `@` of the authority.
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    // Several hosts (`h1:1,h2:2`): the first one.
    let hostport = hostport.split(',').next().unwrap_or_default();
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err("its URL has an unclosed `[` in the host".into());
        };
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    Ok(UrlParts {
        scheme,
        host,
        port,
        path,
        query,
    })
}

fn port(port: Option<&str>, default: u16) -> Result<u16, String> {
    match port {
        None | Some("") => Ok(default),
        Some(p) => p
            .parse()
            .map_err(|_| format!("its URL's port {p:?} is not a port number")),
    }
}

/// Where a `postgres://` or `postgresql://` URL points: its host and port, or a socket
/// directory given as `?host=/dir` (libpq's form), or `localhost:5432`.
pub(crate) fn postgres_endpoint(url: &str) -> Result<Endpoint, String> {
    let u = split_url(url)?;
    if u.scheme != "postgres" && u.scheme != "postgresql" {
        return Err(format!(
            "its URL's scheme is {:?}, not postgres or postgresql",
            u.scheme
        ));
    }
    let query_port = query_value(u.query, "port");
    let port = port(u.port.or(query_port), 5432)?;
    if u.host.is_empty() {
        return Ok(match query_value(u.query, "host") {
            Some(dir) if dir.starts_with('/') => {
                Endpoint::Unix(Path::new(dir).join(format!(".s.PGSQL.{port}")))
            }
            Some(host) if !host.is_empty() => Endpoint::Tcp(host.to_owned(), port),
            _ => Endpoint::Tcp("localhost".into(), port),
        });
    }
    Ok(Endpoint::Tcp(u.host.to_owned(), port))
}

/// Where a `redis://`, `rediss://` or `redis+unix://`/`unix://` URL points.
pub(crate) fn redis_endpoint(url: &str) -> Result<Endpoint, String> {
    let u = split_url(url)?;
    match u.scheme {
        "redis" | "rediss" => {
            let host = if u.host.is_empty() {
                "localhost"
            } else {
                u.host
            };
            Ok(Endpoint::Tcp(host.to_owned(), port(u.port, 6379)?))
        }
        "redis+unix" | "unix" if !u.path.is_empty() => Ok(Endpoint::Unix(PathBuf::from(u.path))),
        other => Err(format!(
            "its URL's scheme is {other:?}, not redis, rediss, redis+unix or unix"
        )),
    }
}

fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find_map(|(k, v)| (k == key).then_some(v))
}

/// A connection to an endpoint, TCP or Unix.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn open(at: &Endpoint) -> Result<Conn, String> {
        let conn = match at {
            Endpoint::Tcp(host, port) => {
                let addrs = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| format!("{at} does not resolve: {e}"))?;
                let mut last = format!("{at} resolves to no address");
                let mut found = None;
                for addr in addrs {
                    match TcpStream::connect_timeout(&addr, TIMEOUT) {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = format!("nothing answers at {at}: {e}"),
                    }
                }
                Conn::Tcp(found.ok_or(last)?)
            }
            Endpoint::Unix(path) => Conn::Unix(
                UnixStream::connect(path).map_err(|e| format!("nothing answers at {at}: {e}"))?,
            ),
        };
        let timeouts = match &conn {
            Conn::Tcp(s) => s
                .set_read_timeout(Some(TIMEOUT))
                .and_then(|()| s.set_write_timeout(Some(TIMEOUT))),
            Conn::Unix(s) => s
                .set_read_timeout(Some(TIMEOUT))
                .and_then(|()| s.set_write_timeout(Some(TIMEOUT))),
        };
        timeouts.map_err(|e| format!("cannot set timeouts on a connection to {at}: {e}"))?;
        Ok(conn)
    }

    /// Send `request` and read what comes back first (up to 64 bytes).
    fn ask(&mut self, at: &Endpoint, request: &[u8]) -> Result<Vec<u8>, String> {
        let mut buf = [0u8; 64];
        let n = match self {
            Conn::Tcp(s) => s.write_all(request).and_then(|()| s.read(&mut buf)),
            Conn::Unix(s) => s.write_all(request).and_then(|()| s.read(&mut buf)),
        }
        .map_err(|e| format!("{at} accepted a connection but did not answer: {e}"))?;
        Ok(buf[..n].to_vec())
    }
}

/// A PostgreSQL server answers at the URL's address: it replies `S` or `N` to an
/// `SSLRequest`, the first message of every PostgreSQL connection. Credentials and the
/// database are the test's own business (a wrong password fails the test there).
pub(crate) fn postgres(url: &str) -> Result<(), String> {
    let at = postgres_endpoint(url)?;
    let mut conn = Conn::open(&at)?;
    // Length 8, then the SSLRequest code 80877103.
    let reply = conn.ask(&at, &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])?;
    match reply.first() {
        Some(b'S' | b'N') => Ok(()),
        _ => Err(format!(
            "{at} is not a PostgreSQL server (it answered {:?} to an SSLRequest)",
            String::from_utf8_lossy(&reply)
        )),
    }
}

/// A Redis server answers at the URL's address: `PING` gets `+PONG` (or `-NOAUTH` from a
/// server that wants a password: it is there, the test authenticates itself).
pub(crate) fn redis(url: &str) -> Result<(), String> {
    let at = redis_endpoint(url)?;
    let mut conn = Conn::open(&at)?;
    let reply = conn.ask(&at, b"PING\r\n")?;
    if reply.starts_with(b"+PONG") || reply.starts_with(b"-NOAUTH") {
        Ok(())
    } else {
        Err(format!(
            "{at} is not a Redis server that answers (it answered {:?} to PING)",
            String::from_utf8_lossy(&reply)
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpListener};

    /// A loopback server that answers the first message of one connection with `reply`.
    pub(crate) struct Answering {
        pub(crate) addr: SocketAddr,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Drop for Answering {
        fn drop(&mut self) {
            if let Some(t) = self.thread.take() {
                // Unblock a listener nobody connected to, then wait for it.
                drop(TcpStream::connect(self.addr));
                t.join().expect("the fake server thread does not panic");
            }
        }
    }

    pub(crate) fn answering(reply: &'static [u8]) -> Answering {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let thread = std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 64];
                if s.read(&mut buf).is_ok_and(|n| n > 0) {
                    drop(s.write_all(reply));
                }
            }
        });
        Answering {
            addr,
            thread: Some(thread),
        }
    }

    #[test]
    fn postgres_urls() {
        let tcp = |h: &str, p| Ok(Endpoint::Tcp(h.into(), p));
        assert_eq!(
            postgres_endpoint("postgres://postgres@127.0.0.1:5432/postgres"),
            tcp("127.0.0.1", 5432)
        );
        assert_eq!(
            postgres_endpoint("postgresql://u:p%40ss@db.example:6000/x?sslmode=disable"),
            tcp("db.example", 6000)
        );
        assert_eq!(
            postgres_endpoint("postgres://u:a@b@[::1]:5433/x"),
            tcp("::1", 5433)
        );
        assert_eq!(postgres_endpoint("postgres://[::1]/x"), tcp("::1", 5432));
        assert_eq!(postgres_endpoint("postgres://h1:1,h2:2/x"), tcp("h1", 1));
        assert_eq!(postgres_endpoint("postgres:///x"), tcp("localhost", 5432));
        assert_eq!(
            postgres_endpoint("postgres:///x?host=/run/postgresql&port=5433"),
            Ok(Endpoint::Unix("/run/postgresql/.s.PGSQL.5433".into()))
        );
        for bad in [
            "127.0.0.1:5432",
            "mysql://h/x",
            "postgres://h:port/x",
            "postgres://[::1/x",
        ] {
            assert!(postgres_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redis_urls() {
        let tcp = |h: &str, p| Ok(Endpoint::Tcp(h.into(), p));
        assert_eq!(
            redis_endpoint("redis://127.0.0.1:6379"),
            tcp("127.0.0.1", 6379)
        );
        assert_eq!(redis_endpoint("redis://:secret@h/2"), tcp("h", 6379));
        assert_eq!(redis_endpoint("rediss://[::1]:7000"), tcp("::1", 7000));
        assert_eq!(
            redis_endpoint("redis+unix:///run/redis.sock"),
            Ok(Endpoint::Unix("/run/redis.sock".into()))
        );
        assert!(redis_endpoint("postgres://h/x").is_err());
        assert_eq!(Endpoint::Tcp("::1".into(), 1).to_string(), "[::1]:1");
    }

    #[test]
    fn services_that_answer_and_services_that_do_not() {
        let pg = |reply| {
            let s = answering(reply);
            postgres(&format!("postgres://u@{}/db", s.addr))
        };
        assert_eq!(pg(b"N"), Ok(()));
        assert_eq!(pg(b"S"), Ok(()));
        let err = pg(b"+PONG\r\n").unwrap_err();
        assert!(err.contains("not a PostgreSQL server"), "{err}");

        let redis_at = |reply| {
            let s = answering(reply);
            redis(&format!("redis://{}", s.addr))
        };
        assert_eq!(redis_at(b"+PONG\r\n"), Ok(()));
        assert_eq!(redis_at(b"-NOAUTH Authentication required.\r\n"), Ok(()));
        let err = redis_at(b"N").unwrap_err();
        assert!(err.contains("not a Redis server"), "{err}");

        let err = postgres("postgres://u@127.0.0.1:1/db").unwrap_err();
        assert!(err.starts_with("nothing answers at 127.0.0.1:1"), "{err}");
        let err = redis("redis+unix:///nonexistent/wgm.sock").unwrap_err();
        assert!(err.contains("/nonexistent/wgm.sock"), "{err}");
    }

    #[test]
    fn kernel_wireguard_is_the_module_directory() {
        assert_eq!(kernel_wireguard(Path::new("/")), Ok(()));
        let err = kernel_wireguard(Path::new("/nonexistent/sys/module/wireguard")).unwrap_err();
        assert!(err.contains("/nonexistent/sys/module/wireguard"), "{err}");
        assert!(err.contains("`wireguard` module"), "{err}");
        assert!(err.contains(".ci/vm"), "{err}");
    }

    #[test]
    fn tools() {
        assert!(find_tool("sh").is_some());
        assert!(find_tool("wgm-no-such-tool").is_none());
        assert!(find_tool("/bin/sh").is_some());
        // A directory and a file that is not executable are not tools.
        assert!(find_tool("/").is_none());
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        assert!(find_tool(manifest).is_none());
    }
}
