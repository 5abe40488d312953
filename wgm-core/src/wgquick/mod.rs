//! The wg-quick file format: one parser, one renderer, QR codes.
//!
//! Two layers:
//!
//! - [`Document`] is **lossless**: every line classified (blank, comment, section header,
//!   `Key = value` with an optional trailing comment), every byte kept, so
//!   [`Document::to_text`] reproduces the input exactly — comments, blank lines, order,
//!   spacing, key case, CRLF endings and a missing final newline. It rejects, with the
//!   1-based line number, what neither `wg(8)` nor `wg-quick(8)` would accept: unknown
//!   sections or keys, keys outside a section or in the wrong one, a second
//!   `[Interface]`, empty values, and also hooks unless [`ParseOptions::allow_hooks`],
//!   inputs over [`ParseOptions::max_bytes`], and control, line-separator or
//!   bidirectional formatting characters anywhere.
//! - [`WgQuickConfig`] is **typed**: keys, addresses, endpoints, ports... as the types of
//!   [`keys`](crate::keys) and [`net`](crate::net), every `Address`/`AllowedIPs`/`DNS`
//!   line and comma list gathered in order, names and comments attached to their
//!   section. [`render`] writes one canonical layout, and `parse(render(x)) == x` for
//!   every `x` that `render` accepts.
//!
//! [`ParsedConfig`] holds both: the typed view of a file and the document that renders
//! the file back byte for byte.
//!
//! Keys are matched without ASCII case, as `wg(8)` and `wg-quick(8)` do: `[peer]`,
//! `allowedips = ...` and `ALLOWEDIPS = ...` all work. Values are as strict as `wg(8)`
//! (44-character canonical base64 keys, `[v6]:port` endpoints, ...) and stricter where
//! the tools are lax in dangerous ways (no hex or leading-zero IPv4, no zone ids; see
//! [`net`](crate::net)). Single-valued keys may appear once per section; every peer needs
//! a `PublicKey`; two peers may not share one, nor use the interface's own key; an MTU
//! below 1280 is refused when the interface has an IPv6 address.
//!
//! # Hooks
//!
//! `PreUp`, `PostUp`, `PreDown` and `PostDown` are shell commands that `wg-quick` runs as
//! root. [`parse`] refuses them unless the caller sets
//! [`allow_hooks`](ParseOptions::allow_hooks) (an import from a trusted file), naming the
//! line and the key. [`render`] writes a hook only when the configuration explicitly
//! carries one; wgm's own builders never set any.
//!
//! # Names and comments
//!
//! Managers keep a peer's name in a comment. A section's comments are the block of
//! comment lines directly above its header (no blank line between), a comment on the
//! header line, and every comment inside the section (trailing comments of entries
//! included). Its name is, in order of preference:
//!
//! 1. the first comment that is a name tag ([`name_from_comment`]): `# Name = alice`
//!    (wgm, hand-written files), `# Name: alice` (wireguard-ui),
//!    `# friendly_name = alice`, `# -WGP- Display name: alice` (wg-portal),
//!    `# Client: alice (id)` (wg-easy);
//! 2. else a single comment line directly above the header (`# alice` then `[Peer]`);
//! 3. else the comment on the header line (`[Peer] # alice`).
//!
//! The comment the name came from is not repeated in `comments`. Comments at the top of
//! the file, separated from the first section by a blank line, are the file's
//! [`comments`](WgQuickConfig::comments). The renderer writes `# Name = ...` and the
//! other comments right below each header, and refuses names and comments that could
//! break out of their line (newlines, `\r`, U+2028, NEL, bidirectional overrides), so a
//! name can never become a `PostUp` line.
//!
//! ```
//! use wgm_core::wgquick::{self, ParseOptions, ParsedConfig};
//!
//! let text = "\
//! ## Managed by hand
//!
//! [Interface]
//! PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
//! Address = 10.8.0.1/24
//! Address = fd42:42:42::1/64   # ULA
//! ListenPort = 51820
//!
//! ## alice
//! [peer]
//! publickey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
//! AllowedIPs = 10.8.0.2/32, fd42:42:42::2/128
//! Endpoint = [2001:db8::1]:51820
//! ";
//! let parsed = ParsedConfig::parse(text, &ParseOptions::default())?;
//! assert_eq!(*parsed.to_text(), text);               // byte for byte
//! let cfg = parsed.config();
//! assert_eq!(cfg.comments, ["Managed by hand"]);
//! assert_eq!(cfg.interface.addresses.len(), 2);
//! assert_eq!(cfg.interface.comments, ["ULA"]);
//! assert_eq!(cfg.peers[0].name.as_deref(), Some("alice"));
//! assert_eq!(cfg.peers[0].endpoint.as_ref().unwrap().to_string(), "[2001:db8::1]:51820");
//!
//! // The canonical rendering reads back as the same configuration.
//! let canonical = wgquick::render(cfg)?;
//! assert_eq!(&wgquick::parse(&canonical, &ParseOptions::default())?, cfg);
//!
//! // Hooks are refused unless allowed.
//! let hooked = "[Interface]\nPostUp = iptables -A FORWARD -i %i -j ACCEPT\n";
//! let err = wgquick::parse(hooked, &ParseOptions::default()).unwrap_err();
//! assert!(err.to_string().starts_with("line 2: invalid Interface.PostUp"));
//! # Ok::<(), wgm_core::Error>(())
//! ```

mod config;
mod document;
#[cfg(feature = "qr")]
mod qr;
mod render;

use zeroize::Zeroizing;

pub use config::{name_from_comment, Hooks, InterfaceSection, PeerSection, Table, WgQuickConfig};
pub use document::{Document, Key, Line, LineEnding, LineKind, ParseOptions, SectionKind};
#[cfg(feature = "qr")]
pub use qr::{qr_png, qr_svg, qr_terminal};
pub use render::{render, validate};

use crate::Result;

/// Parse a wg-quick file into its typed configuration.
///
/// Use [`ParsedConfig::parse`] to also keep the document for a byte-exact re-render.
/// Errors are [`Error::Parse`](crate::Error::Parse) with the 1-based line number; see the
/// [module docs](self) for every rule.
pub fn parse(text: &str, opts: &ParseOptions) -> Result<WgQuickConfig> {
    let doc = Document::parse(text, opts)?;
    WgQuickConfig::from_document(&doc)
}

/// A parsed file: its typed configuration and the lossless document it came from.
///
/// ```
/// use wgm_core::wgquick::{ParseOptions, ParsedConfig};
/// let text = "[INTERFACE]\r\n\tmtu=1420\r\n";
/// let parsed = ParsedConfig::parse(text, &ParseOptions::default())?;
/// assert_eq!(*parsed.to_text(), text);
/// assert_eq!(parsed.config().interface.mtu.unwrap().get(), 1420);
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedConfig {
    document: Document,
    config: WgQuickConfig,
}

impl ParsedConfig {
    /// Parse `text` into both layers.
    pub fn parse(text: &str, opts: &ParseOptions) -> Result<ParsedConfig> {
        let document = Document::parse(text, opts)?;
        let config = WgQuickConfig::from_document(&document)?;
        Ok(ParsedConfig { document, config })
    }

    /// The lossless document.
    pub fn document(&self) -> &Document {
        &self.document
    }

    /// The typed configuration.
    pub fn config(&self) -> &WgQuickConfig {
        &self.config
    }

    /// The typed configuration, dropping the document.
    pub fn into_config(self) -> WgQuickConfig {
        self.config
    }

    /// Both parts.
    pub fn into_parts(self) -> (Document, WgQuickConfig) {
        (self.document, self.config)
    }

    /// The original text, byte for byte (it may hold keys, hence the zeroizing wrapper).
    pub fn to_text(&self) -> Zeroizing<String> {
        self.document.to_text()
    }
}
