//! [`NftFirewall`]: the firewall of `wgm_core::backend::firewall` on nftables, through the
//! `nft` program and its JSON (libnftables) schema.

mod read;
mod render;

use std::fmt;
use std::io;
use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use wgm_core::backend::firewall::{FirewallBackend, FirewallDelta, LiveFirewall};
use wgm_core::names::InterfaceName;
use wgm_core::{Error, Result};

const BACKEND: &str = "nftables";

/// What went wrong running `nft`.
#[derive(Debug, thiserror::Error)]
enum NftError {
    #[error("{op}: could not run {program}: {source}")]
    Spawn {
        op: String,
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{op}: nft failed ({status}): {stderr}")]
    Failed {
        op: String,
        status: String,
        stderr: String,
    },
    #[error("{op}: nft printed JSON this backend cannot read: {source}")]
    BadJson {
        op: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A firewall on nftables.
///
/// ## What lives where
///
/// One table, `inet wgm`, owned by wgm (IPv4 and IPv6 in one); nothing else is ever read,
/// changed or flushed. Per server, named after its interface `I`:
///
/// | object | what |
/// |---|---|
/// | chain `fwd_I` | base chain, `filter` hook `forward` priority 0, policy accept: `iifname I jump up_I`, `oifname I jump dn_I`; its first rule's comment records the server policy (`wgm v1 fwd=1 p2p=0 def=allow m4=- m6=-`) |
/// | chain `up_I` | from the peers: count (`@up4_I`), quota and rate (`quota name ip saddr map @qd4_I jump xup_I`, `@qr4_I` counts only, `limit name ip saddr map @lu4_I jump xup_I`), peer-to-peer refused (`oifname I jump xup_I`), forwarding off (`oifname != I jump xup_I`), `ct state established,related jump ok_I`, the allow lists (`ip saddr vmap @acl4_I`), peer-to-peer allowed (`oifname I jump ok_I`: after the lists, so a peer with a list reaches other peers only where its list allows), the default verdict (`jump ok_I` or `jump xup_I`) — each lookup for `ip` and `ip6`, hosts and networks |
/// | chain `ok_I` | what a peer's side lets through: `oifname I jump dq_I` (traffic to another peer is held to the receiver's side too), then `accept` |
/// | chain `dn_I` | to the peers from outside: `jump dq_I`, forwarding off, established, the default verdict |
/// | chain `dq_I` | what a peer receives: count (`@dn4_I`), quota, download rate (`@ld4_I`), each dropping through `xdn_I`; returns otherwise |
/// | chains `xup_I`, `xdn_I` | count the drop in the peer's element of `@x4_I`/`@x6_I` (by source, by destination), then drop |
/// | chain `nat_I` | base chain, `nat` hook `postrouting` priority 100: `oifname M ip saddr @peers4_I masquerade` per family |
/// | sets `peers4_I`, `up4_I`, `dn4_I`, `x4_I` (and `…6_I`) | hash sets of the peers' host addresses (tunnel addresses, a `/32` or `/128` routed to a peer), each element commented with the peer's key; the last three with a counter in each element |
/// | sets `peers4n_I`, `up4n_I`, `dn4n_I`, `x4n_I` (and `…6n_I`) | the same for the peers' networks (a delegated prefix, a routed network) in interval sets (`flags interval`), so that a lookup finds the network holding an address |
/// | maps `qd4_I`, `qr4_I` (address → quota), `lu4_I`, `ld4_I` (address → limit), `acl4_I` (address → `jump p_<tag>`), and their `…n_I` interval twins for networks | the peer's objects, by address or network; every rule that looks up a set looks up both twins (a packet's address is in at most one: networks of a server never overlap, nor hold another peer's address) |
/// | quota `q_<tag>` | `over N bytes used U`, comment `I KEY WINDOW` |
/// | limits `lu_<tag>`, `ld_<tag>` | `rate over R bytes/second`, comment `I KEY` |
/// | chain `p_<tag>` | the peer's allow list: one `jump ok_I` rule per destination (commented with the rule's text), then `jump xup_I` (commented `wgm end KEY`) |
///
/// `<tag>` is [`wgm_core::backend::firewall::peer_tag`]: 16 hex digits, so object names
/// stay within 32 characters.
///
/// ## How quotas and counters survive
///
/// A peer's quota is a named object of its own, referenced from maps; the rules only name
/// the maps. Replacing the static part rewrites rules (the base chains are deleted and
/// made again, the others flushed) and `add`s sets and maps, a no-op where they exist, so
/// no element, counter or quota is touched. Changing a peer adds and deletes only its own
/// elements and objects; `add quota` on an existing quota updates its size in place and
/// keeps its used bytes. Counters live in set elements, so a peer's counters last as long
/// as its elements: changing its rate or allow list keeps them, removing an address loses
/// that address's share.
///
/// ## What nft 1.0.6 cannot do, and what follows
///
/// - There is no `destroy`: deleting an absent element or object fails the batch, so
///   deltas are planned from a read and a concurrent change by someone else fails the
///   apply (re-read and plan again).
/// - Limit objects cannot be updated (`add limit` on an existing one is a no-op): a new
///   rate removes and adds the limit in the same batch.
/// - A quota's comment cannot be updated, so a new period recreates the quota (used 0).
/// - Chain comments are not taken from JSON; the policy is recorded in a rule comment.
/// - A base chain's hook or priority cannot be changed: the static part deletes and adds
///   its base chains each time it is written (in the same atomic batch).
/// - `add set` on an existing set of another definition fails the batch (`File exists`;
///   its flags and type cannot be changed). A set or map whose definition differs (a
///   table of the layout where every set was an interval set, or one changed by hand), or
///   that holds an element of the other shape (a host address in a network set) makes the
///   static part read as drift, and writing it deletes and makes that set again, empty,
///   in the same batch after the rules that referred to it; the read does not report the
///   outdated set's elements, so the planned delta adds them back. Quotas, limits and
///   allow chains are objects outside the sets and stay (a quota keeps its used bytes);
///   the counters in an outdated set's elements start again from 0 (`nft -j` cannot
///   set an element's counter).
/// - Interval sets refuse an element that overlaps another (`interval overlaps with an
///   existing one`); a host address and a network holding it live in different sets and
///   are not refused. `FirewallState::validate` refuses every overlap beforehand.
/// - Every `nft` run reads the table's chains, sets and objects into its cache first, and
///   a batch that adds or deletes elements also reads every element of every interval set
///   of the table (to check overlaps). That is why host addresses live in hash sets: one
///   peer's change then costs time in proportion to the number of objects and of routed
///   networks of the table, not of peers (at 10 000 dual-stack peers, every tenth with
///   objects: 16 ms, or 46 ms when those 1 000 also have a delegated prefix;
///   `benches/README.md`).
/// - The kernel refuses (`No such file or directory`) an element of a map made
///   in the same batch whose quota, limit or chain is made after the map: a batch that
///   writes the static part makes the sets and maps after the peers' objects.
///
/// ## Namespaces
///
/// [`NftFirewall::in_netns`] runs `ip netns exec NAME nft …` (an argv, never a shell):
/// `ip` enters the namespace made by `ip netns add NAME` for the one `nft` process. This
/// needs no unsafe code in this crate (a `pre_exec` `setns` would).
///
/// ## Errors
///
/// No `nft` (or no `ip` for a namespace) on `PATH` is [`wgm_core::Error::Unsupported`];
/// `Operation not permitted` from nft is `PermissionDenied`; any other failure is
/// `Backend { backend: "nftables" }` with the command and nft's standard error (which holds
/// no secrets: keys here are public keys).
///
/// ## Use
///
/// Cheap to share; calls for different servers may run concurrently (each is one `nft`
/// process; the kernel serialises batches).
///
/// ```no_run
/// # async fn demo() -> wgm_core::Result<()> {
/// use wgm_backend_kernel::NftFirewall;
/// use wgm_core::backend::firewall::{plan_firewall, FirewallBackend, FirewallState};
/// use wgm_core::names::InterfaceName;
/// use wgm_core::policy::ServerPolicy;
///
/// let fw = NftFirewall::new(); // or NftFirewall::in_netns("blue")?
/// let wg0 = InterfaceName::new("wg0")?;
/// let desired = FirewallState::new(wg0.clone(), ServerPolicy::default());
/// let live = fw.read_firewall(&wg0).await?;
/// fw.apply_firewall(&wg0, &plan_firewall(&desired, live.as_ref())).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct NftFirewall {
    netns: Option<String>,
    program: Option<String>,
}

impl fmt::Debug for NftFirewall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NftFirewall")
            .field("netns", &self.netns)
            .finish_non_exhaustive()
    }
}

impl NftFirewall {
    /// `nft` from `PATH`, in the caller's network namespace.
    pub fn new() -> Self {
        Self::default()
    }

    /// `nft` inside the network namespace `name` (made with `ip netns add NAME`), run as
    /// `ip netns exec NAME nft …`. `/run/netns/NAME` is accepted too. Refused with
    /// `InvalidInput` when the name is empty or holds `/` (other than that prefix), `.` or
    /// `..`, or starts with `-`.
    ///
    /// ```
    /// use wgm_backend_kernel::NftFirewall;
    /// assert!(NftFirewall::in_netns("blue").is_ok());
    /// assert!(NftFirewall::in_netns("/run/netns/blue").is_ok());
    /// assert!(NftFirewall::in_netns("../etc").is_err());
    /// ```
    pub fn in_netns(name: &str) -> Result<Self> {
        let name = name.strip_prefix("/run/netns/").unwrap_or(name);
        if name.is_empty()
            || name.contains('/')
            || name == "."
            || name == ".."
            || name.starts_with('-')
            || name.contains('\0')
        {
            return Err(Error::invalid(
                "netns",
                "must be the name of a namespace in /run/netns (no '/', not '.' or '..', no leading '-')",
            ));
        }
        Ok(NftFirewall {
            netns: Some(name.to_owned()),
            program: None,
        })
    }

    /// Use `program` instead of `nft` from `PATH` (tests: a missing program).
    #[doc(hidden)]
    #[must_use]
    pub fn with_program(mut self, program: impl Into<String>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// The JSON batch (libnftables schema) that [`FirewallBackend::apply_firewall`] sends
    /// for `delta` on `interface`, as text: for a dry run, or to compare with a full
    /// `nft -f`.
    ///
    /// ```
    /// use wgm_backend_kernel::NftFirewall;
    /// use wgm_core::backend::firewall::{plan_firewall, FirewallState};
    /// use wgm_core::names::InterfaceName;
    /// use wgm_core::policy::ServerPolicy;
    /// let wg0 = InterfaceName::new("wg0")?;
    /// let delta = plan_firewall(&FirewallState::new(wg0.clone(), ServerPolicy::default()), None);
    /// let json = NftFirewall::new().render(&wg0, &delta);
    /// assert!(json.contains(r#""name":"fwd_wg0""#));
    /// # Ok::<(), wgm_core::Error>(())
    /// ```
    ///
    /// Sets and maps that exist with an outdated definition are made again by
    /// [`FirewallBackend::apply_firewall`], which lists the table to find them; this
    /// rendering, which reads nothing, assumes there are none.
    pub fn render(&self, interface: &InterfaceName, delta: &FirewallDelta) -> String {
        render::batch(render::delta_commands(interface, delta, &[])).to_string()
    }

    fn program(&self) -> &str {
        self.program.as_deref().unwrap_or("nft")
    }

    /// Run `nft ARGS` (inside the namespace if one is set) with `stdin`; its stdout, or
    /// `Err((status, stderr))` when it failed.
    async fn run(
        &self,
        op: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> std::result::Result<std::result::Result<Vec<u8>, (String, String)>, Error> {
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.as_str(), self.program()]);
                c
            }
            None => Command::new(self.program()),
        };
        command
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawned = command.spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let program = if self.netns.is_some() {
                    "ip"
                } else {
                    self.program()
                };
                return Err(Error::unsupported(format!(
                    "the nftables firewall needs `{program}` on PATH (install nftables{})",
                    if self.netns.is_some() {
                        " and iproute2"
                    } else {
                        ""
                    }
                )));
            }
            Err(source) => {
                return Err(Error::backend(
                    BACKEND,
                    NftError::Spawn {
                        op: op.to_owned(),
                        program: self.program().to_owned(),
                        source,
                    },
                ))
            }
        };
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error means nft exited early; its status and stderr say why.
            let _ = pipe.write_all(input).await;
            drop(pipe);
        }
        let out = child.wait_with_output().await.map_err(|source| {
            Error::backend(
                BACKEND,
                NftError::Spawn {
                    op: op.to_owned(),
                    program: self.program().to_owned(),
                    source,
                },
            )
        })?;
        if out.status.success() {
            return Ok(Ok(out.stdout));
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        // `ip netns exec` of a missing namespace, or nft missing inside it.
        if self.netns.is_some() && stderr.contains("exec of \"") && stderr.contains("No such file")
        {
            return Err(Error::unsupported(format!(
                "the nftables firewall needs `{}` on PATH: {stderr}",
                self.program()
            )));
        }
        if stderr.contains("Operation not permitted") {
            return Err(Error::denied(format!(
                "{op}: nftables requires CAP_NET_ADMIN: {stderr}"
            )));
        }
        Ok(Err((out.status.to_string(), stderr)))
    }

    fn failed(op: &str, (status, stderr): (String, String)) -> Error {
        Error::backend(
            BACKEND,
            NftError::Failed {
                op: op.to_owned(),
                status,
                stderr,
            },
        )
    }

    /// The table as listed; `None` when it does not exist.
    async fn list(&self) -> Result<Option<read::Table>> {
        let op = "nft -j list table inet wgm";
        let out = match self
            .run(
                op,
                &["-j", "list", "table", render::FAMILY, render::TABLE],
                None,
            )
            .await?
        {
            Ok(out) => out,
            Err((_, stderr)) if stderr.contains("No such file or directory") => return Ok(None),
            Err(failure) => return Err(Self::failed(op, failure)),
        };
        let listing: read::Listing = serde_json::from_slice(&out).map_err(|source| {
            Error::backend(
                BACKEND,
                NftError::BadJson {
                    op: op.to_owned(),
                    source,
                },
            )
        })?;
        Ok(Some(read::Table::parse(listing)))
    }

    async fn send(&self, op: &str, batch: &serde_json::Value) -> Result<()> {
        let text = batch.to_string();
        match self
            .run(op, &["-j", "-f", "-"], Some(text.as_bytes()))
            .await?
        {
            Ok(_) => Ok(()),
            Err(failure) => Err(Self::failed(op, failure)),
        }
    }
}

#[async_trait]
impl FirewallBackend for NftFirewall {
    fn name(&self) -> &'static str {
        BACKEND
    }

    async fn read_firewall(&self, interface: &InterfaceName) -> Result<Option<LiveFirewall>> {
        Ok(self.list().await?.and_then(|t| t.live(interface)))
    }

    async fn apply_firewall(&self, interface: &InterfaceName, delta: &FirewallDelta) -> Result<()> {
        delta.validate()?;
        if delta.is_empty() {
            return Ok(());
        }
        // Writing the static part makes outdated sets again (one more listing, only then:
        // the first apply, a new policy, a repair).
        let outdated = match &delta.server {
            Some(_) => self
                .list()
                .await?
                .map(|t| t.outdated_sets(interface))
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let commands = render::delta_commands(interface, delta, &outdated);
        let op = format!(
            "apply firewall of {interface} ({} commands)",
            commands.len()
        );
        self.send(&op, &render::batch(commands)).await
    }

    async fn remove_firewall(&self, interface: &InterfaceName) -> Result<()> {
        let Some(table) = self.list().await? else {
            return Ok(());
        };
        let owned = table.owned_by(interface);
        if owned.is_empty() {
            return Ok(());
        }
        let base = |name: &str| serde_json::json!({"family": render::FAMILY, "table": render::TABLE, "name": name});
        let mut commands = Vec::new();
        if owned.everything {
            commands.push(serde_json::json!({"delete": {"table": {"family": render::FAMILY, "name": render::TABLE}}}));
        } else {
            // Rules first (they refer to sets and chains), then sets and maps (their
            // elements refer to chains and objects), then chains, then objects.
            for c in &owned.chains {
                commands.push(serde_json::json!({"flush": {"chain": base(c)}}));
            }
            for (kind, s) in &owned.sets {
                commands.push(serde_json::json!({"delete": {*kind: base(s)}}));
            }
            for c in &owned.chains {
                commands.push(serde_json::json!({"delete": {"chain": base(c)}}));
            }
            for q in &owned.quotas {
                commands.push(serde_json::json!({"delete": {"quota": base(q)}}));
            }
            for l in &owned.limits {
                commands.push(serde_json::json!({"delete": {"limit": base(l)}}));
            }
        }
        let op = format!("remove firewall of {interface}");
        self.send(&op, &render::batch(commands)).await
    }
}
