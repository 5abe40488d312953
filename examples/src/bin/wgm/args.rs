//! The command line, as clap derive types.
//!
//! Closed sets of words (`--backend`, `--strategy`, `--tunnel`, `--active`) are
//! [`ValueEnum`]s; numbers such as `--count` are parsed by `value_parser`s built on
//! `wgm-core`'s strict parsers (the `parse` module); other values are taken as text and
//! parsed by the command with those parsers. Either way a bad *value* is exit code 2 with
//! a message naming the flag (and the library's field, where the library refused it),
//! while a malformed *command line* (unknown flag, missing argument) is a usage error,
//! exit code 1.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use wgm_core::integrity::AuditHead;
use wgm_core::ipam::Strategy;
use wgm_core::keys::PublicKey;
use wgm_core::manager::AddrRequest;
use wgm_core::model::{RevisionNo, TokenId, TunnelMode};
use wgm_core::names::{
    Description, HostName, InterfaceName, PeerName, RoleName, ServerName, UserName,
};
use wgm_core::net::{DnsEntry, Endpoint, FwMark, Keepalive, ListenPort, Mtu};
use wgm_core::policy::{FilterRule, Quota, QuotaAction, Rate, Verdict};

use crate::parse::{self, List, OrNone, When};

/// `--backend`: what drives the live WireGuard device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// Kernel WireGuard when the kernel has it (built in, loaded or loadable), else
    /// wireguard-go
    Auto,
    /// Linux kernel WireGuard over generic netlink
    Kernel,
    /// wireguard-go over its UAPI socket
    Userspace,
}

/// `--strategy`: how addresses are allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    /// The lowest free address
    Sequential,
    /// A random free address
    Random,
}

impl From<StrategyArg> for Strategy {
    fn from(s: StrategyArg) -> Strategy {
        match s {
            StrategyArg::Sequential => Strategy::Sequential,
            StrategyArg::Random => Strategy::Random,
        }
    }
}

/// `--tunnel`: what clients route through the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TunnelArg {
    /// All traffic
    Full,
    /// Only the server's networks
    Split,
}

impl From<TunnelArg> for TunnelMode {
    fn from(t: TunnelArg) -> TunnelMode {
        match t {
            TunnelArg::Full => TunnelMode::Full,
            TunnelArg::Split => TunnelMode::Split,
        }
    }
}

/// A yes/no switch (`true`/`false` are accepted too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum YesNo {
    /// On
    #[value(alias = "true")]
    Yes,
    /// Off
    #[value(alias = "false")]
    No,
}

impl From<YesNo> for bool {
    fn from(v: YesNo) -> bool {
        v == YesNo::Yes
    }
}

/// wgm — an IPv6-first WireGuard manager.
///
/// Desired state lives in a store (an SQLite file by default); every change is one
/// revision with an audit record; `apply` brings a live interface in line.
#[derive(Debug, Parser)]
#[command(
    name = "wgm",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_help = "Exit codes: 0 ok, 1 usage error, 2 invalid input, 3 not found, 4 conflict, \
                  5 permission denied, 6 backend or store unavailable.\n\
                  The master key can also be given as base64 in WGM_MASTER_KEY.\n\
                  Documentation: docs/cli.md"
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Store URL, sqlite:PATH or postgres:… [default: an SQLite file in the data directory]
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "WGM_STORE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub store: Option<String>,

    /// Machine-readable JSON on stdout (errors as one JSON line on stderr)
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,

    /// Act as the owner of this API token instead of the local administrator
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "WGM_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Master key file [default: beside the SQLite file, e.g. wgm.key]
    ///
    /// Must be a regular file (or a symbolic link to one) owned by you or root, mode 0600
    /// or stricter; a FIFO, socket, device or directory is refused without being opened.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "WGM_MASTER_KEY_FILE",
        value_name = "PATH",
        hide_env_values = true
    )]
    pub master_key_file: Option<PathBuf>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the store and the master key (done on first use anyway)
    Init,
    /// Create a dual-stack demo server with three peers and show their client configs
    Quickstart(QuickstartArgs),
    /// Servers: one WireGuard interface each
    #[command(subcommand)]
    Server(ServerCmd),
    /// Peers of a server
    #[command(subcommand)]
    Peer(PeerCmd),
    /// A server's firewall policy (peers' policies: wgm peer set)
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Show what `apply` would change on the live interface
    Plan(LiveArgs),
    /// Bring the live interface in line with the store
    Apply(ApplyArgs),
    /// Live state of the interface: handshakes, endpoints, transfer per peer
    Status(StatusArgs),
    /// Keep applying until interrupted (Ctrl-C)
    Reconcile(ReconcileArgs),
    /// Revisions of a server, oldest first
    History(HistoryArgs),
    /// What changed between two revisions of a server
    Diff(DiffArgs),
    /// Restore a server's configuration as of a revision (as a new revision)
    Rollback(RollbackArgs),
    /// The audit log (every change and every secret export)
    Audit(AuditArgs),
    /// Users and their roles
    #[command(subcommand)]
    User(UserCmd),
    /// API tokens
    #[command(subcommand)]
    Token(TokenCmd),
    /// Whole stores: copy everything into an empty store of any engine
    #[command(subcommand)]
    Store(StoreCmd),
    /// Write a backup of the whole store, sealed with the master key, to a file
    Backup(BackupArgs),
    /// Restore a backup file into an empty store (or, with --force, in place of one)
    Restore(RestoreArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(CompletionsArgs),
}

/// `wgm quickstart`.
#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Name of the server to create
    #[arg(default_value = "demo", value_parser = parse::server_name)]
    pub name: ServerName,
    /// Interface name [default: the server name]
    #[arg(long, value_name = "IFACE")]
    pub interface: Option<String>,
    /// UDP listen port
    // Text, parsed by the command after it has looked for an existing server: a second
    // quick start reports the server whatever the other options say (README).
    #[arg(long, value_name = "N", default_value = "51820")]
    pub listen_port: String,
    /// IPv6 pool [default: a random RFC 4193 /64]
    #[arg(long, value_name = "CIDR")]
    pub ipv6: Option<String>,
    /// IPv4 pool, or `none`
    #[arg(long, value_name = "CIDR|none", default_value = "10.42.0.0/24")]
    pub ipv4: String,
    /// Endpoint clients connect to (HOST:PORT; an IPv6 address in brackets)
    #[arg(long, value_name = "HOST:PORT")]
    pub endpoint: Option<String>,
    /// Also draw each client config as a QR code
    #[arg(long)]
    pub qr: bool,
}

/// `wgm server …`.
#[derive(Debug, Subcommand)]
pub enum ServerCmd {
    /// Create a server
    Create(ServerCreate),
    /// List servers
    #[command(visible_alias = "ls")]
    List,
    /// Show one server
    Show(ServerRef),
    /// Delete a server and its peers (history is kept)
    #[command(visible_alias = "rm")]
    Delete(ServerRef),
    /// Change a server's settings
    Set(ServerSet),
    /// Print the server's wg-quick config (with its private key)
    Export(ServerExport),
    /// Import a wg-quick server config as a new server with its peers (one revision)
    Import(ServerImport),
    /// Generate a new key pair for the server (clients need new configs)
    RotateKey(ServerRef),
    /// Bring back the key pair the server had at an earlier revision (rollback never
    /// does; clients need new configs)
    RestoreKey(ServerRestoreKey),
}

/// `wgm server restore-key`.
#[derive(Debug, Args)]
pub struct ServerRestoreKey {
    /// Server name or id
    pub server: String,
    /// The revision whose key to bring back
    #[arg(long, value_name = "REVISION", value_parser = parse::restore_from)]
    pub from: RevisionNo,
}

/// A server by name or id.
#[derive(Debug, Args)]
pub struct ServerRef {
    /// Server name or id
    pub server: String,
}

/// `wgm server create`.
#[derive(Debug, Args)]
pub struct ServerCreate {
    /// Server name
    #[arg(value_parser = parse::server_name)]
    pub name: ServerName,
    /// UDP listen port (1-65535)
    #[arg(long, value_name = "N", value_parser = parse::server_listen_port)]
    pub listen_port: ListenPort,
    /// Interface name on the host [default: the server name]
    #[arg(long, value_name = "IFACE", value_parser = parse::interface)]
    pub interface: Option<InterfaceName>,
    /// IPv6 pool [default: a random RFC 4193 /64]
    #[arg(long, value_name = "CIDR", value_parser = parse::ipv6_pool)]
    pub ipv6: Option<Ipv6Net>,
    /// IPv4 pool, or `none` [default: none]
    #[arg(long, value_name = "CIDR|none", value_parser = parse::ipv4_pool)]
    pub ipv4: Option<OrNone<Ipv4Net>>,
    /// Endpoint advertised to clients (HOST:PORT; an IPv6 address in brackets)
    #[arg(long, value_name = "HOST:PORT", value_parser = parse::server_endpoint)]
    pub endpoint: Option<Endpoint>,
    /// DNS servers for clients, comma-separated
    #[arg(long, value_name = "IP,...", value_parser = parse::server_dns)]
    pub dns: Option<List<DnsEntry>>,
    /// MTU (at least 1280; default 1420)
    #[arg(long, value_name = "N", value_parser = parse::server_mtu)]
    pub mtu: Option<Mtu>,
    /// Address allocation
    #[arg(long, value_enum)]
    pub strategy: Option<StrategyArg>,
    /// Firewall mark (decimal or 0x hex)
    #[arg(long, value_name = "N", value_parser = parse::server_fwmark)]
    pub fwmark: Option<FwMark>,
    /// Client tunnel: all traffic or only the server's networks
    #[arg(long, value_enum)]
    pub tunnel: Option<TunnelArg>,
    /// Delegate IPv6 prefixes to peers (`peer add --prefix`) out of this network
    #[arg(long, value_name = "CIDR", value_parser = parse::delegation_pool)]
    pub delegation: Option<Ipv6Net>,
    /// Length of each delegated prefix
    #[arg(
        long,
        value_name = "N",
        default_value = "64",
        requires = "delegation",
        value_parser = parse::delegation_len
    )]
    pub delegation_len: u8,
    /// The host that runs the server: its `wgm-agent` (with `servers = "assigned"`)
    /// applies it
    #[arg(long, value_name = "HOST", value_parser = parse::server_host)]
    pub host: Option<HostName>,
}

/// `wgm server set`.
#[derive(Debug, Args)]
pub struct ServerSet {
    /// Server name or id
    pub server: String,
    /// New name
    #[arg(long, value_name = "NAME", value_parser = parse::server_name)]
    pub rename: Option<ServerName>,
    /// UDP listen port
    #[arg(long, value_name = "N", value_parser = parse::server_listen_port)]
    pub listen_port: Option<ListenPort>,
    /// Endpoint advertised to clients, or `none`
    #[arg(long, value_name = "HOST:PORT|none", value_parser = parse::server_endpoint_or_none)]
    pub endpoint: Option<OrNone<Endpoint>>,
    /// DNS servers for clients, comma-separated, or `none`
    #[arg(long, value_name = "IP,...|none", value_parser = parse::server_dns)]
    pub dns: Option<List<DnsEntry>>,
    /// MTU
    #[arg(long, value_name = "N", value_parser = parse::server_mtu)]
    pub mtu: Option<Mtu>,
    /// Firewall mark, or `none`
    #[arg(long, value_name = "N|none", value_parser = parse::server_fwmark_or_none)]
    pub fwmark: Option<OrNone<FwMark>>,
    /// Address allocation
    #[arg(long, value_enum)]
    pub strategy: Option<StrategyArg>,
    /// Client tunnel: all traffic or only the server's networks
    #[arg(long, value_enum)]
    pub tunnel: Option<TunnelArg>,
    /// Persistent keepalive in client configs (0-65535 s, 0 = off)
    #[arg(long, value_name = "SECS", value_parser = parse::client_keepalive)]
    pub client_keepalive: Option<Keepalive>,
    /// Whether the interface should exist: `no` makes the next apply remove it
    #[arg(long, value_enum, value_name = "yes|no")]
    pub active: Option<YesNo>,
    /// The host that runs the server (its agent applies it), or `none`
    #[arg(long, value_name = "HOST|none", value_parser = parse::server_host_or_none)]
    pub host: Option<OrNone<HostName>>,
}

/// `wgm server export`.
#[derive(Debug, Args)]
pub struct ServerExport {
    /// Server name or id
    pub server: String,
    /// Write to this file (mode 0600, atomically) instead of stdout
    ///
    /// FILE must not exist yet or be a regular file, which is replaced by a new one;
    /// a symbolic link, FIFO, socket, device or directory there is refused.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `wgm server import`.
#[derive(Debug, Args)]
pub struct ServerImport {
    /// Name of the new server
    #[arg(value_parser = parse::server_name)]
    pub name: ServerName,
    /// The wg-quick file (`-` for stdin)
    #[arg(long, value_name = "PATH")]
    pub file: PathBuf,
    /// Accept PreUp/PostUp/PreDown/PostDown lines (they are dropped, never run)
    #[arg(long)]
    pub allow_hooks: bool,
    /// Interface name [default: the server name]
    #[arg(long, value_name = "IFACE", value_parser = parse::interface)]
    pub interface: Option<InterfaceName>,
}

/// `wgm peer …`.
#[derive(Debug, Subcommand)]
pub enum PeerCmd {
    /// Add a peer (or NAME-1..NAME-N with --count N, in one revision)
    Add(PeerAdd),
    /// List the peers of a server
    #[command(visible_alias = "ls")]
    List(ServerRef),
    /// Show one peer
    Show(PeerRef),
    /// Change a peer's settings
    Set(PeerSet),
    /// Enable a peer
    Enable(PeerRef),
    /// Disable a peer (it keeps its addresses and keys)
    Disable(PeerRef),
    /// Remove a peer (its addresses are quarantined)
    #[command(visible_alias = "rm")]
    Remove(PeerRef),
    /// Generate a new key pair for a peer (it needs a new config)
    RotateKey(PeerRef),
    /// Generate a new preshared key for a peer
    RotatePsk(PeerRef),
    /// Bring back the key pair and preshared key a peer had at an earlier revision
    /// (rollback never does; the peer needs its config again)
    RestoreKeys(PeerRestoreKeys),
    /// Print the peer's client wg-quick config (with its private key)
    Config(PeerConfig),
}

/// `wgm peer restore-keys`.
#[derive(Debug, Args)]
pub struct PeerRestoreKeys {
    /// The peer
    #[command(flatten)]
    pub peer: PeerRef,
    /// The revision whose keys to bring back
    #[arg(long, value_name = "REVISION", value_parser = parse::restore_from)]
    pub from: RevisionNo,
}

/// A peer by server and name (or public key, or id).
#[derive(Debug, Args)]
pub struct PeerRef {
    /// Server name or id
    pub server: String,
    /// Peer name, public key or id
    pub peer: String,
}

/// `wgm peer add`.
#[derive(Debug, Args)]
pub struct PeerAdd {
    /// Server name or id
    pub server: String,
    /// Peer name (with --count: the base of NAME-1..NAME-N)
    #[arg(value_parser = parse::peer_name)]
    pub name: PeerName,
    /// IPv6 address: auto or ADDR
    #[arg(long, value_name = "auto|ADDR", default_value = "auto", value_parser = parse::ipv6_request)]
    pub ipv6: AddrRequest<Ipv6Addr>,
    /// IPv4 address: auto, none or ADDR (auto = none when the server has no IPv4 pool)
    #[arg(long, value_name = "auto|none|ADDR", default_value = "auto", value_parser = parse::ipv4_request)]
    pub ipv4: AddrRequest<Ipv4Addr>,
    /// Delegated IPv6 prefix: auto, none or CIDR
    #[arg(long, value_name = "auto|none|CIDR", default_value = "none", value_parser = parse::prefix_request)]
    pub prefix: AddrRequest<Ipv6Net>,
    /// The peer's own public key (wgm then never holds its private key)
    #[arg(long, value_name = "KEY", value_parser = parse::peer_public_key)]
    pub public_key: Option<PublicKey>,
    /// Extra networks routed to the peer, comma-separated
    #[arg(long, value_name = "CIDR,...", value_parser = parse::peer_allowed_ips)]
    pub allowed_ips: Option<List<IpNet>>,
    /// Persistent keepalive (0-65535 s, 0 = off) [default: the server's client template]
    #[arg(long, value_name = "SECS", value_parser = parse::peer_keepalive)]
    pub keepalive: Option<Keepalive>,
    /// A fixed endpoint of the peer (site-to-site)
    #[arg(long, value_name = "HOST:PORT", value_parser = parse::peer_endpoint)]
    pub endpoint: Option<Endpoint>,
    /// Disable automatically at this time (RFC 3339, or a duration like 30d, 12h)
    #[arg(long, value_name = "TIME", value_parser = parse::peer_expires)]
    pub expires: Option<When>,
    /// Owner (a user name)
    #[arg(long, value_name = "USER")]
    pub owner: Option<String>,
    /// Free-text description
    #[arg(long, value_name = "TEXT", value_parser = parse::description)]
    pub description: Option<Description>,
    /// No preshared key
    #[arg(long)]
    pub no_psk: bool,
    /// Add NAME-1 .. NAME-N (1-100000)
    #[arg(long, value_name = "N", value_parser = parse::peer_count)]
    pub count: Option<u32>,
}

/// `wgm peer set`.
#[derive(Debug, Args)]
pub struct PeerSet {
    /// Server name or id
    pub server: String,
    /// Peer name, public key or id
    pub peer: String,
    /// New name
    #[arg(long, value_name = "NAME", value_parser = parse::peer_name)]
    pub rename: Option<PeerName>,
    /// Description, or `none`
    #[arg(long, value_name = "TEXT|none", value_parser = parse::description_or_none)]
    pub description: Option<OrNone<Description>>,
    /// Extra networks routed to the peer (replaces the list), or `none`
    #[arg(long, value_name = "CIDR,...|none", value_parser = parse::peer_allowed_ips)]
    pub allowed_ips: Option<List<IpNet>>,
    /// Persistent keepalive (0-65535 s)
    #[arg(long, value_name = "SECS", value_parser = parse::peer_keepalive)]
    pub keepalive: Option<Keepalive>,
    /// Fixed endpoint, or `none`
    #[arg(long, value_name = "HOST:PORT|none", value_parser = parse::peer_endpoint_or_none)]
    pub endpoint: Option<OrNone<Endpoint>>,
    /// Expiry (RFC 3339 or a duration like 30d), or `never`
    #[arg(long, value_name = "TIME|never", value_parser = parse::peer_expires_or_never)]
    pub expires: Option<OrNone<When>>,
    /// Owner (a user name), or `none`
    #[arg(long, value_name = "USER|none")]
    pub owner: Option<String>,
    /// Firewall: destinations the peer may reach (`CIDR[:PROTO[:PORTS]]`, comma-separated),
    /// or `none` to follow the server's default verdict
    #[arg(long, value_name = "RULE,...|none", value_parser = parse::peer_allow)]
    pub allow: Option<OrNone<Vec<FilterRule>>>,
    /// Firewall: the most the peer may send (10mbit, 1MBps), or `none`
    #[arg(long, value_name = "RATE|none", value_parser = parse::peer_rate_up)]
    pub rate_up: Option<OrNone<Rate>>,
    /// Firewall: the most the peer may receive, or `none`
    #[arg(long, value_name = "RATE|none", value_parser = parse::peer_rate_down)]
    pub rate_down: Option<OrNone<Rate>>,
    /// Firewall: traffic volume per period, both directions (10GiB/30d), or `none`
    #[arg(long, value_name = "BYTES/PERIOD|none", value_parser = parse::peer_quota)]
    pub quota: Option<OrNone<Quota>>,
    /// Firewall: what happens once the quota is used up
    #[arg(long, value_name = "drop|report", value_parser = parse::peer_quota_action)]
    pub quota_action: Option<QuotaAction>,
}

/// `wgm policy …`.
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Show a server's firewall policy and its peers' policies
    Show(ServerRef),
    /// Change a server's firewall policy
    Set(PolicySet),
}

/// `wgm policy set`.
#[derive(Debug, Args)]
pub struct PolicySet {
    /// Server name or id
    pub server: String,
    /// Forward the peers' traffic to other interfaces
    #[arg(long, value_name = "on|off", value_parser = parse::forwarding)]
    pub forwarding: Option<bool>,
    /// Masquerade the peers' IPv4 traffic leaving through IFACE, or `none`
    #[arg(long, value_name = "IFACE|none", value_parser = parse::masquerade4)]
    pub masquerade4: Option<OrNone<InterfaceName>>,
    /// Masquerade the peers' IPv6 traffic leaving through IFACE, or `none`
    #[arg(long, value_name = "IFACE|none", value_parser = parse::masquerade6)]
    pub masquerade6: Option<OrNone<InterfaceName>>,
    /// Let peers reach each other through the server
    #[arg(long, value_name = "allow|deny", value_parser = parse::peer_to_peer)]
    pub peer_to_peer: Option<bool>,
    /// The verdict for traffic nothing else decides
    #[arg(long = "default", value_name = "allow|deny", value_parser = parse::default_verdict)]
    pub default_verdict: Option<Verdict>,
}

/// `wgm peer config`.
#[derive(Debug, Args)]
pub struct PeerConfig {
    /// Server name or id
    pub server: String,
    /// Peer name, public key or id
    pub peer: String,
    /// Draw the config as a QR code in the terminal
    #[arg(long, conflicts_with = "json")]
    pub qr: bool,
    /// Write to this file (mode 0600, atomically) instead of stdout
    ///
    /// FILE must not exist yet or be a regular file, which is replaced by a new one;
    /// a symbolic link, FIFO, socket, device or directory there is refused.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Where and how the live interface is driven.
#[derive(Debug, Args)]
pub struct BackendArg {
    /// What drives the WireGuard device
    #[arg(long, value_enum, default_value_t = BackendKind::Auto)]
    pub backend: BackendKind,
    /// Name of this host in the record of applied revisions [default: the hostname]
    #[arg(long, env = "WGM_HOST", value_name = "NAME")]
    pub host: Option<String>,
    /// The firewall: `nft` also converges the server's firewall policy in nftables
    /// (table `inet wgm`; needs root and `nft`) and shows quota use in status; `none`
    /// leaves the firewall alone
    #[arg(long, env = "WGM_FIREWALL", value_enum, default_value_t = FirewallKind::None)]
    pub firewall: FirewallKind,
}

/// `--firewall`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FirewallKind {
    /// nftables, through the `nft` program
    Nft,
    /// Leave the firewall alone
    None,
}

/// `wgm plan` / `wgm status`.
#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Server name or id
    pub server: String,
    /// The backend
    #[command(flatten)]
    pub backend: BackendArg,
}

/// `wgm status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Server name or id
    pub server: String,
    /// The backend
    #[command(flatten)]
    pub backend: BackendArg,
    /// Show what each host's agent last reported (applied revision, device, heartbeat),
    /// from the store, without touching a device
    #[arg(long)]
    pub reported: bool,
}

/// `wgm apply`.
#[derive(Debug, Args)]
#[allow(clippy::struct_excessive_bools)] // independent command-line flags, not a state
pub struct ApplyArgs {
    /// Server name or id
    pub server: String,
    /// The backend
    #[command(flatten)]
    pub backend: BackendArg,
    /// Show the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Remove peers on the device that wgm does not know (default: report them)
    #[arg(long)]
    pub remove_unmanaged: bool,
    /// Replace every peer at once (resets every tunnel; only to repair a device)
    #[arg(long)]
    pub full_resync: bool,
    /// Read the device back in full after applying, even when it acknowledged every change
    #[arg(long)]
    pub verify: bool,
}

/// `wgm reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Server name or id
    pub server: String,
    /// The backend
    #[command(flatten)]
    pub backend: BackendArg,
    /// Seconds between passes (1-86400)
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse::reconcile_interval)]
    pub interval: u64,
    /// Remove peers on the device that wgm does not know (default: report them)
    #[arg(long)]
    pub remove_unmanaged: bool,
}

/// `wgm history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Server name or id
    pub server: String,
    /// Only revisions after this one
    #[arg(long, value_name = "REV", value_parser = parse::history_after)]
    pub after: Option<RevisionNo>,
    /// At most this many revisions
    #[arg(long, value_name = "N", value_parser = parse::history_limit)]
    pub limit: Option<u64>,
}

/// `wgm diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Server name or id
    pub server: String,
    /// From revision
    #[arg(value_parser = parse::diff_from)]
    pub from: RevisionNo,
    /// To revision
    #[arg(value_parser = parse::diff_to)]
    pub to: RevisionNo,
}

/// `wgm rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Server name or id
    pub server: String,
    /// The revision to restore
    #[arg(value_parser = parse::rollback_revision)]
    pub revision: RevisionNo,
}

/// `wgm audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only records of this server
    #[arg(long, value_name = "SERVER")]
    pub server: Option<String>,
    /// Only records of this actor (e.g. local:root, user:alice)
    #[arg(long, value_name = "ACTOR")]
    pub actor: Option<String>,
    /// From this time (RFC 3339, or a duration ago like 1h, 7d)
    #[arg(long, value_name = "TIME", value_parser = parse::audit_since)]
    pub since: Option<When>,
    /// Until this time (RFC 3339, or a duration ago)
    #[arg(long, value_name = "TIME", value_parser = parse::audit_until)]
    pub until: Option<When>,
    /// At most this many records
    #[arg(long, value_name = "N", value_parser = parse::audit_limit)]
    pub limit: Option<u64>,
    /// Verify the chain of the whole log instead of listing: every record's keyed link,
    /// no record missing, the last record equal to the stored head. Prints the head as
    /// SEQ:HASH (the last record's number, ':', its 64-hex-digit link); keep a copy
    /// outside the store and pass it to --expect later
    #[arg(long)]
    pub verify: bool,
    /// With --verify: fail unless this head, printed by an earlier `wgm audit --verify`
    /// as SEQ:HASH (e.g. 12:3f9a…, 64 hex digits after the colon), is still a record of
    /// the chain with the same link; catches records deleted or rewritten together with
    /// the stored head
    #[arg(long, value_name = "SEQ:HASH", requires = "verify", value_parser = parse::audit_head)]
    pub expect: Option<AuditHead>,
}

/// `wgm user …`.
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a user
    Add(UserAdd),
    /// List users
    #[command(visible_alias = "ls")]
    List,
    /// Show one user
    Show(UserRef),
    /// Disable a user (not the last administrator)
    Disable(UserRef),
    /// Enable a user
    Enable(UserRef),
    /// Give a user exactly this role
    Role(UserRole),
    /// Set a user's password (read from stdin)
    Passwd(UserRef),
    /// Delete a user and their tokens
    #[command(visible_alias = "rm")]
    Delete(UserRef),
}

/// A user by name or id.
#[derive(Debug, Args)]
pub struct UserRef {
    /// User name or id
    pub user: String,
}

/// `wgm user add`.
#[derive(Debug, Args)]
pub struct UserAdd {
    /// User name
    #[arg(value_parser = parse::user_name)]
    pub name: UserName,
    /// Role: admin, operator, auditor, user, or a custom role
    #[arg(long, value_name = "ROLE", value_parser = parse::role_name)]
    pub role: RoleName,
    /// Limit the role to this server
    #[arg(long, value_name = "SERVER")]
    pub server: Option<String>,
    /// Read a password from stdin (one line)
    #[arg(long)]
    pub password_stdin: bool,
    /// E-mail address
    #[arg(long, value_name = "EMAIL")]
    pub email: Option<String>,
}

/// `wgm user role`.
#[derive(Debug, Args)]
pub struct UserRole {
    /// User name or id
    pub user: String,
    /// Role: admin, operator, auditor, user, or a custom role
    #[arg(value_parser = parse::role_name)]
    pub role: RoleName,
    /// Limit the role to this server
    #[arg(long, value_name = "SERVER")]
    pub server: Option<String>,
}

/// `wgm token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create an API token (shown once)
    Create(TokenCreate),
    /// List tokens
    #[command(visible_alias = "ls")]
    List(TokenList),
    /// Revoke a token
    Revoke(TokenRevoke),
}

/// `wgm token create`.
#[derive(Debug, Args)]
pub struct TokenCreate {
    /// The user the token acts as
    pub user: String,
    /// A label
    #[arg(long, value_name = "LABEL", default_value = "cli")]
    pub name: String,
    /// Narrow to these permissions, comma-separated: resource:action, optionally :own and @server:ID
    #[arg(long, value_name = "PERM,...")]
    pub scope: Option<String>,
    /// Expiry (RFC 3339, or a duration like 90d)
    #[arg(long, value_name = "TIME", value_parser = parse::token_expires)]
    pub expires: Option<When>,
}

/// `wgm token list`.
#[derive(Debug, Args)]
pub struct TokenList {
    /// Only this user's tokens
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
}

/// `wgm token revoke`.
#[derive(Debug, Args)]
pub struct TokenRevoke {
    /// Token id
    #[arg(value_parser = parse::token_id)]
    pub id: TokenId,
}

/// `wgm completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    pub shell: clap_complete::Shell,
}

/// `wgm store …`.
#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Copy everything a store holds into an empty store (any engine)
    Copy(CopyArgs),
}

/// `wgm store copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The store to copy: an sqlite, postgres or redis URL
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// The empty store to copy into
    #[arg(long, value_name = "URL")]
    pub to: String,
}

/// `wgm backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup file to write (mode 0600, written atomically)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Replace an existing file
    #[arg(long)]
    pub force: bool,
}

/// `wgm restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file to read
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The empty store to restore into
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Replace everything the target store holds, atomically (stop the agents and
    /// servers that use it first)
    #[arg(long)]
    pub force: bool,
}
