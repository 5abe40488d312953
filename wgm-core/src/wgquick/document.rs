//! The lossless layer: a wg-quick file as a list of classified lines.
//!
//! [`Document::parse`] checks the syntax every wg-quick file must have (sections, known
//! keys in the right section, one `[Interface]`, hooks only when allowed, a size limit)
//! and remembers every byte, so [`Document::to_text`] gives back the input exactly:
//! comments, blank lines, spacing, key case, CRLF line endings and a missing final
//! newline included. Values are not interpreted here; the typed layer
//! ([`WgQuickConfig`](super::WgQuickConfig)) does that, with the line numbers kept here.

use std::fmt;
use std::ops::Range;

use zeroize::Zeroizing;

use crate::{Error, Result};

/// Limits and permissions for parsing a wg-quick file.
///
/// The default refuses hooks (`PreUp`, `PostUp`, `PreDown`, `PostDown`) and inputs over
/// 1 MiB.
///
/// ```
/// use wgm_core::wgquick::ParseOptions;
/// let opts = ParseOptions::default();
/// assert!(!opts.allow_hooks);
/// assert_eq!(opts.max_bytes, 1 << 20);
/// let trusting = ParseOptions { allow_hooks: true, ..ParseOptions::default() };
/// assert!(trusting.allow_hooks);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseOptions {
    /// Accept `PreUp`/`PostUp`/`PreDown`/`PostDown` lines. They are shell commands that
    /// `wg-quick` runs as root, so an import from an untrusted source must leave this off.
    pub allow_hooks: bool,
    /// Reject inputs longer than this many bytes.
    pub max_bytes: usize,
}

impl ParseOptions {
    /// The default size limit: 1 MiB, far above any hand-written file. Server exports
    /// with thousands of peers are larger (10 000 peers with names, preshared keys and
    /// dual-stack addresses take about 2 MB): raise the limit explicitly to import them.
    pub const DEFAULT_MAX_BYTES: usize = 1 << 20;
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            allow_hooks: false,
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }
}

/// The two kinds of section in a wg-quick file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SectionKind {
    /// `[Interface]`: the local device (one per file).
    Interface,
    /// `[Peer]`: one remote peer (any number).
    Peer,
}

impl SectionKind {
    /// The header as `wg-quick` writes it, e.g. `[Peer]`.
    pub fn header(self) -> &'static str {
        match self {
            SectionKind::Interface => "[Interface]",
            SectionKind::Peer => "[Peer]",
        }
    }

    /// The section name without brackets, used as the prefix of error fields.
    pub fn name(self) -> &'static str {
        match self {
            SectionKind::Interface => "Interface",
            SectionKind::Peer => "Peer",
        }
    }
}

/// Every key `wg(8)` and `wg-quick(8)` understand. Matching is case-insensitive, as in
/// both tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Key {
    /// `[Interface] PrivateKey` (wg).
    PrivateKey,
    /// `[Interface] ListenPort` (wg).
    ListenPort,
    /// `[Interface] FwMark` (wg).
    FwMark,
    /// `[Interface] Address` (wg-quick), repeatable, comma lists.
    Address,
    /// `[Interface] DNS` (wg-quick), repeatable, comma lists.
    Dns,
    /// `[Interface] MTU` (wg-quick).
    Mtu,
    /// `[Interface] Table` (wg-quick): `auto`, `off` or a routing table.
    Table,
    /// `[Interface] PreUp` hook (wg-quick), repeatable.
    PreUp,
    /// `[Interface] PostUp` hook (wg-quick), repeatable.
    PostUp,
    /// `[Interface] PreDown` hook (wg-quick), repeatable.
    PreDown,
    /// `[Interface] PostDown` hook (wg-quick), repeatable.
    PostDown,
    /// `[Interface] SaveConfig` (wg-quick): `true` or `false`.
    SaveConfig,
    /// `[Peer] PublicKey` (wg), required in every peer.
    PublicKey,
    /// `[Peer] PresharedKey` (wg).
    PresharedKey,
    /// `[Peer] AllowedIPs` (wg), repeatable, comma lists.
    AllowedIps,
    /// `[Peer] Endpoint` (wg): `host:port` or `[v6]:port`.
    Endpoint,
    /// `[Peer] PersistentKeepalive` (wg): seconds or `off`.
    PersistentKeepalive,
}

impl Key {
    /// Every key, interface keys first.
    pub const ALL: [Key; 17] = [
        Key::PrivateKey,
        Key::ListenPort,
        Key::FwMark,
        Key::Address,
        Key::Dns,
        Key::Mtu,
        Key::Table,
        Key::PreUp,
        Key::PostUp,
        Key::PreDown,
        Key::PostDown,
        Key::SaveConfig,
        Key::PublicKey,
        Key::PresharedKey,
        Key::AllowedIps,
        Key::Endpoint,
        Key::PersistentKeepalive,
    ];

    /// The spelling `wg-quick` documents, e.g. `AllowedIPs`.
    pub fn canonical(self) -> &'static str {
        match self {
            Key::PrivateKey => "PrivateKey",
            Key::ListenPort => "ListenPort",
            Key::FwMark => "FwMark",
            Key::Address => "Address",
            Key::Dns => "DNS",
            Key::Mtu => "MTU",
            Key::Table => "Table",
            Key::PreUp => "PreUp",
            Key::PostUp => "PostUp",
            Key::PreDown => "PreDown",
            Key::PostDown => "PostDown",
            Key::SaveConfig => "SaveConfig",
            Key::PublicKey => "PublicKey",
            Key::PresharedKey => "PresharedKey",
            Key::AllowedIps => "AllowedIPs",
            Key::Endpoint => "Endpoint",
            Key::PersistentKeepalive => "PersistentKeepalive",
        }
    }

    /// Look a key up, ignoring ASCII case (`allowedips` is `AllowedIPs`).
    ///
    /// ```
    /// use wgm_core::wgquick::Key;
    /// assert_eq!(Key::lookup("allowedips"), Some(Key::AllowedIps));
    /// assert_eq!(Key::lookup("Allowed IPs"), None);
    /// ```
    pub fn lookup(text: &str) -> Option<Key> {
        Key::ALL
            .into_iter()
            .find(|k| k.canonical().eq_ignore_ascii_case(text))
    }

    /// The section the key belongs to.
    pub fn section(self) -> SectionKind {
        match self {
            Key::PublicKey
            | Key::PresharedKey
            | Key::AllowedIps
            | Key::Endpoint
            | Key::PersistentKeepalive => SectionKind::Peer,
            _ => SectionKind::Interface,
        }
    }

    /// `PreUp`, `PostUp`, `PreDown` or `PostDown`: a shell command `wg-quick` runs as root.
    pub fn is_hook(self) -> bool {
        matches!(
            self,
            Key::PreUp | Key::PostUp | Key::PreDown | Key::PostDown
        )
    }

    /// Whether the key may appear on several lines of one section (the values add up).
    pub fn is_repeatable(self) -> bool {
        self.is_hook() || matches!(self, Key::Address | Key::Dns | Key::AllowedIps)
    }

    /// Whether the value is secret (never shown in errors or `Debug`).
    pub fn is_secret(self) -> bool {
        matches!(self, Key::PrivateKey | Key::PresharedKey)
    }

    /// The error field for this key: section and key, e.g. `Peer.AllowedIPs`.
    pub fn field(self) -> &'static str {
        match self {
            Key::PrivateKey => "Interface.PrivateKey",
            Key::ListenPort => "Interface.ListenPort",
            Key::FwMark => "Interface.FwMark",
            Key::Address => "Interface.Address",
            Key::Dns => "Interface.DNS",
            Key::Mtu => "Interface.MTU",
            Key::Table => "Interface.Table",
            Key::PreUp => "Interface.PreUp",
            Key::PostUp => "Interface.PostUp",
            Key::PreDown => "Interface.PreDown",
            Key::PostDown => "Interface.PostDown",
            Key::SaveConfig => "Interface.SaveConfig",
            Key::PublicKey => "Peer.PublicKey",
            Key::PresharedKey => "Peer.PresharedKey",
            Key::AllowedIps => "Peer.AllowedIPs",
            Key::Endpoint => "Peer.Endpoint",
            Key::PersistentKeepalive => "Peer.PersistentKeepalive",
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.canonical())
    }
}

/// How a line ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LineEnding {
    /// `\n`.
    Lf,
    /// `\r\n` (files written on Windows).
    CrLf,
    /// The last line of a file without a final newline.
    None,
}

impl LineEnding {
    /// The bytes of the ending.
    pub fn as_str(self) -> &'static str {
        match self {
            LineEnding::Lf => "\n",
            LineEnding::CrLf => "\r\n",
            LineEnding::None => "",
        }
    }
}

/// What a line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LineKind {
    /// Empty or only spaces and tabs.
    Blank,
    /// Only a comment (`#` and what follows, possibly indented).
    Comment,
    /// A section header, possibly followed by a comment.
    Section(SectionKind),
    /// `Key = value`, possibly followed by a comment.
    Entry(Key),
}

/// One line of a [`Document`]: where it is, what it is, and its parts.
#[derive(Clone, PartialEq, Eq)]
pub struct Line {
    number: usize,
    /// The line without its ending, as a range of the document's text.
    span: Range<usize>,
    ending: LineEnding,
    kind: LineKind,
    /// The key as written (entries only).
    key: Range<usize>,
    /// The value, trimmed (entries only).
    value: Range<usize>,
    /// From `#` to the end of the line, if there is a comment.
    comment: Option<Range<usize>>,
}

/// A parsed wg-quick file that renders back byte for byte.
///
/// The text is held in zeroizing memory: a `[Interface]` section usually carries a
/// private key. For the same reason there is no `Display`; [`Document::to_text`] is the
/// explicit way to get the file back, and `Debug` hides secret values.
///
/// ```
/// use wgm_core::wgquick::{Document, LineKind, ParseOptions, SectionKind};
/// let text = "# site A\r\n[Interface]\r\naddress=fd00::1/64  # ULA\r\n";
/// let doc = Document::parse(text, &ParseOptions::default())?;
/// assert_eq!(*doc.to_text(), text);
/// assert_eq!(doc.lines()[1].kind(), LineKind::Section(SectionKind::Interface));
/// let line = &doc.lines()[2];
/// assert_eq!(doc.value(line), Some("fd00::1/64"));
/// assert_eq!(doc.comment_text(line), Some("ULA"));
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Document {
    text: Zeroizing<String>,
    lines: Vec<Line>,
}

impl Line {
    /// The 1-based line number.
    pub fn number(&self) -> usize {
        self.number
    }

    /// What the line is.
    pub fn kind(&self) -> LineKind {
        self.kind
    }

    /// How the line ends.
    pub fn ending(&self) -> LineEnding {
        self.ending
    }

    /// The key of an entry line.
    pub fn key(&self) -> Option<Key> {
        match self.kind {
            LineKind::Entry(k) => Some(k),
            _ => None,
        }
    }
}

/// Characters that never appear in a wg-quick file we accept: control characters other
/// than tab (a lone `\r`, NUL, U+0085 NEL), the Unicode line and paragraph separators,
/// bidirectional overrides and isolates, and the byte-order mark. Each of them either
/// splits lines differently in different tools or hides what a line really says.
pub(crate) fn is_forbidden_char(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}' | '\u{feff}'
        )
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Trim spaces and tabs from both ends of `range` within `text`.
fn trim_range(text: &str, range: Range<usize>) -> Range<usize> {
    let s = &text[range.clone()];
    let lead = s.len() - s.trim_start_matches(is_blank).len();
    let trail = s.len() - s.trim_end_matches(is_blank).len();
    if lead == s.len() {
        return range.start..range.start;
    }
    (range.start + lead)..(range.end - trail)
}

/// A key as written may be shown in an error only if it cannot be a pasted secret:
/// short and made of letters, digits, `_` and `-`.
fn printable_key(text: &str) -> Option<&str> {
    (text.len() <= 24
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    .then_some(text)
}

impl Document {
    /// Parse `text`, checking the syntax of every line.
    ///
    /// Errors ([`Error::Parse`], 1-based line numbers): input over `max_bytes`; control or
    /// bidirectional formatting characters; a line that is neither blank, a comment, a
    /// section header nor `Key = value`; an unknown section or key; a key outside any
    /// section or in the wrong one; an empty value (hooks excepted); a hook when
    /// `allow_hooks` is off; a second `[Interface]`.
    pub fn parse(text: &str, opts: &ParseOptions) -> Result<Document> {
        if text.len() > opts.max_bytes {
            let mut cut = opts.max_bytes;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let line = text[..cut].bytes().filter(|&b| b == b'\n').count() + 1;
            return Err(Error::parse(
                line,
                "file",
                format!("input is larger than the limit of {} bytes", opts.max_bytes),
            ));
        }

        let mut lines = Vec::with_capacity(text.len() / 32 + 1);
        let mut section: Option<SectionKind> = None;
        let mut interface_line: Option<usize> = None;
        let mut start = 0;
        let mut number = 0;
        while start < text.len() {
            number += 1;
            let (content_end, ending, next) = match text[start..].find('\n') {
                Some(i) => {
                    let nl = start + i;
                    if nl > start && text.as_bytes()[nl - 1] == b'\r' {
                        (nl - 1, LineEnding::CrLf, nl + 1)
                    } else {
                        (nl, LineEnding::Lf, nl + 1)
                    }
                }
                None => (text.len(), LineEnding::None, text.len()),
            };
            let line = parse_line(text, number, start..content_end, ending, section, opts)?;
            if let LineKind::Section(kind) = line.kind {
                if kind == SectionKind::Interface {
                    if let Some(first) = interface_line {
                        return Err(Error::parse(
                            number,
                            "Interface",
                            format!("a second [Interface] section (the first is on line {first})"),
                        ));
                    }
                    interface_line = Some(number);
                }
                section = Some(kind);
            }
            lines.push(line);
            start = next;
        }
        Ok(Document {
            text: Zeroizing::new(text.to_owned()),
            lines,
        })
    }

    /// The file, byte for byte as it was parsed. The result may contain a private key,
    /// hence the zeroizing wrapper.
    pub fn to_text(&self) -> Zeroizing<String> {
        self.text.clone()
    }

    /// The file as a string slice, byte for byte as it was parsed (may contain secrets).
    pub fn as_text(&self) -> &str {
        &self.text
    }

    /// Every line, in order (line `n` is at index `n - 1`).
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// The text of `line` without its ending.
    pub fn line_text<'a>(&'a self, line: &Line) -> &'a str {
        &self.text[line.span.clone()]
    }

    /// The key of an entry line as written (original case and no surrounding spaces).
    pub fn key_text<'a>(&'a self, line: &Line) -> Option<&'a str> {
        matches!(line.kind, LineKind::Entry(_)).then(|| &self.text[line.key.clone()])
    }

    /// The value of an entry line, without surrounding spaces and without a trailing
    /// comment.
    pub fn value<'a>(&'a self, line: &Line) -> Option<&'a str> {
        matches!(line.kind, LineKind::Entry(_)).then(|| &self.text[line.value.clone()])
    }

    /// The comment of a line, from `#` to the end of the line.
    pub fn comment<'a>(&'a self, line: &Line) -> Option<&'a str> {
        line.comment.clone().map(|r| &self.text[r])
    }

    /// The comment of a line without the `#` and without surrounding spaces.
    pub fn comment_text<'a>(&'a self, line: &Line) -> Option<&'a str> {
        self.comment(line).map(|c| c[1..].trim_matches(is_blank))
    }
}

fn parse_line(
    text: &str,
    number: usize,
    span: Range<usize>,
    ending: LineEnding,
    section: Option<SectionKind>,
    opts: &ParseOptions,
) -> Result<Line> {
    let content = &text[span.clone()];
    // Printable ASCII and tabs need no closer look; anything else is checked per char.
    let plain = content
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) || b == b'\t');
    if !plain && content.chars().any(is_forbidden_char) {
        return Err(Error::parse(
            number,
            "line",
            "contains a control, line-separator or bidirectional formatting character",
        ));
    }
    let comment = content.find('#').map(|i| (span.start + i)..span.end);
    let before = span.start..comment.as_ref().map_or(span.end, |c| c.start);
    let body = trim_range(text, before);
    let mut line = Line {
        number,
        span,
        ending,
        kind: LineKind::Blank,
        key: 0..0,
        value: 0..0,
        comment,
    };
    if body.is_empty() {
        line.kind = if line.comment.is_some() {
            LineKind::Comment
        } else {
            LineKind::Blank
        };
        return Ok(line);
    }
    let body_text = &text[body.clone()];
    if body_text.starts_with('[') {
        let kind = if body_text.eq_ignore_ascii_case("[Interface]") {
            SectionKind::Interface
        } else if body_text.eq_ignore_ascii_case("[Peer]") {
            SectionKind::Peer
        } else {
            return Err(Error::parse(
                number,
                "section",
                "expected [Interface] or [Peer]",
            ));
        };
        line.kind = LineKind::Section(kind);
        return Ok(line);
    }
    let Some(eq) = body_text.find('=') else {
        return Err(Error::parse(
            number,
            "line",
            "expected a section header, `Key = value` or a comment",
        ));
    };
    let key_range = trim_range(text, body.start..body.start + eq);
    let value_range = trim_range(text, body.start + eq + 1..body.end);
    let key_text = &text[key_range.clone()];
    let Some(key) = Key::lookup(key_text) else {
        return Err(match printable_key(key_text) {
            Some(k) if !k.is_empty() => Error::parse(number, k.to_owned(), "unknown key"),
            _ => Error::parse(
                number,
                "line",
                "unknown key (not shown: it could be a secret)",
            ),
        });
    };
    let field = key.field();
    let Some(current) = section else {
        return Err(Error::parse(
            number,
            field,
            "key outside of an [Interface] or [Peer] section",
        ));
    };
    if current != key.section() {
        return Err(Error::parse(
            number,
            field,
            format!(
                "belongs in {}, not in {}",
                key.section().header(),
                current.header()
            ),
        ));
    }
    if key.is_hook() && !opts.allow_hooks {
        return Err(Error::parse(
            number,
            field,
            "hooks run shell commands as root and are refused unless the import allows hooks",
        ));
    }
    if value_range.is_empty() && !key.is_hook() {
        return Err(Error::parse(number, field, "empty value"));
    }
    line.kind = LineKind::Entry(key);
    line.key = key_range;
    line.value = value_range;
    Ok(line)
}

impl fmt::Debug for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for line in &self.lines {
            list.entry(&DebugLine { doc: self, line });
        }
        list.finish()
    }
}

impl fmt::Debug for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Line")
            .field("number", &self.number)
            .field("kind", &self.kind)
            .field("ending", &self.ending)
            .finish_non_exhaustive()
    }
}

struct DebugLine<'a> {
    doc: &'a Document,
    line: &'a Line,
}

impl fmt::Debug for DebugLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self.line.kind {
            LineKind::Entry(key) if key.is_secret() => {
                format!(
                    "{} = (redacted)",
                    self.doc.key_text(self.line).unwrap_or_default()
                )
            }
            _ => self.doc.line_text(self.line).to_owned(),
        };
        write!(f, "{}: {:?}", self.line.number, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Document> {
        Document::parse(text, &ParseOptions::default())
    }

    fn err_line(text: &str) -> (usize, String) {
        match parse(text) {
            Err(Error::Parse {
                line,
                field,
                reason,
            }) => (line, format!("{field}: {reason}")),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn round_trips_odd_spacing_endings_and_comments() {
        for text in [
            "",
            "\n",
            "[Interface]",
            "[Interface]\n",
            "  [interface]   # the server\r\n\tAddress=10.0.0.1/24,fd00::1/64\r\n",
            "# only a comment",
            "#\n#\n\n\n[Peer]\npublickey =x\n",
            "[Interface]\nPostUp =\n",
            "[Interface]\r\nMTU = 1420\n\r\n",
        ] {
            let opts = ParseOptions {
                allow_hooks: true,
                ..ParseOptions::default()
            };
            let doc = Document::parse(text, &opts).unwrap();
            assert_eq!(doc.as_text(), text);
            assert_eq!(*doc.to_text(), text);
        }
    }

    #[test]
    fn classifies_lines() {
        let doc = parse("# a\n\n[Interface] # b\n  mtu = 1420 # c = d\n[PEER]\nEndpoint=[::1]:5")
            .unwrap();
        let kinds: Vec<_> = doc.lines().iter().map(Line::kind).collect();
        assert_eq!(
            kinds,
            [
                LineKind::Comment,
                LineKind::Blank,
                LineKind::Section(SectionKind::Interface),
                LineKind::Entry(Key::Mtu),
                LineKind::Section(SectionKind::Peer),
                LineKind::Entry(Key::Endpoint),
            ]
        );
        let mtu = &doc.lines()[3];
        assert_eq!(doc.key_text(mtu), Some("mtu"));
        assert_eq!(doc.value(mtu), Some("1420"));
        assert_eq!(doc.comment(mtu), Some("# c = d"));
        assert_eq!(doc.comment_text(mtu), Some("c = d"));
        assert_eq!(doc.comment_text(&doc.lines()[2]), Some("b"));
        assert_eq!(doc.value(&doc.lines()[5]), Some("[::1]:5"));
        assert_eq!(doc.lines()[5].ending(), LineEnding::None);
        assert_eq!(doc.lines()[5].number(), 6);
    }

    #[test]
    fn keys_are_case_insensitive() {
        for key in Key::ALL {
            assert_eq!(
                key.field(),
                format!("{}.{}", key.section().name(), key.canonical())
            );
            assert_eq!(Key::lookup(&key.canonical().to_uppercase()), Some(key));
            assert_eq!(Key::lookup(&key.canonical().to_lowercase()), Some(key));
        }
    }

    #[test]
    fn rejections_name_the_line() {
        assert_eq!(err_line("[Interface]\n[Interface]\n").0, 2);
        assert!(err_line("[Interface]\n\n[interface]\n")
            .1
            .contains("line 1"));
        assert_eq!(
            err_line("\n[Interface]\nFoo = 1\n"),
            (3, "Foo: unknown key".into())
        );
        assert_eq!(err_line("Address = 10.0.0.1/24\n").0, 1);
        assert_eq!(err_line("[Peer]\nAddress = 10.0.0.1/24\n").0, 2);
        assert_eq!(err_line("[Interface]\nPublicKey = x\n").0, 2);
        assert_eq!(err_line("[Interface]\nMTU =\n").0, 2);
        assert_eq!(err_line("[Interface]\nMTU\n").0, 2);
        assert_eq!(err_line("[Interfaces]\n").0, 1);
        assert_eq!(err_line("[ Interface ]\n").0, 1);
        assert_eq!(
            err_line("[Interface]\nMTU = 1420\rAddress = ::1/128\n").0,
            2
        );
        assert_eq!(err_line("[Interface]\n\u{feff}MTU = 1420\n").0, 2);
        assert_eq!(
            err_line("[Interface]\nDNS = 1.1.1.1\u{2028}PostUp = x\n").0,
            2
        );
        assert_eq!(err_line("[Interface]\nMTU = 1\u{202e}420\n").0, 2);
        assert_eq!(err_line("[Interface]\n\0\n").0, 2);
        let (line, msg) = err_line("[Interface]\n\n\nPostUp = rm -rf /\n");
        assert_eq!(line, 4);
        assert!(
            msg.contains("Interface.PostUp") && msg.contains("hooks"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_keys_that_could_be_secrets_are_not_echoed() {
        let secret = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk";
        let (_, msg) = err_line(&format!("[Interface]\n{secret}=\n"));
        assert!(!msg.contains(secret), "{msg}");
        let doc = parse(&format!("[Interface]\nPrivateKey = {secret}=\n")).unwrap();
        let debug = format!("{doc:?}");
        assert!(!debug.contains(secret), "{debug}");
        assert!(debug.contains("PrivateKey = (redacted)"), "{debug}");
    }

    #[test]
    fn size_limit_names_the_line() {
        let opts = ParseOptions {
            max_bytes: 20,
            ..ParseOptions::default()
        };
        let text = "[Interface]\nMTU = 1420\nListenPort = 1\n";
        match Document::parse(text, &opts) {
            Err(Error::Parse { line, field, .. }) => {
                assert_eq!(line, 2);
                assert_eq!(field, "file");
            }
            other => panic!("{other:?}"),
        }
        let exact = ParseOptions {
            max_bytes: text.len(),
            ..ParseOptions::default()
        };
        assert!(Document::parse(text, &exact).is_ok());
    }

    #[test]
    fn hooks_with_permission_keep_their_text() {
        let opts = ParseOptions {
            allow_hooks: true,
            ..ParseOptions::default()
        };
        let doc = Document::parse(
            "[Interface]\nPostUp = iptables -A FORWARD -i %i -j ACCEPT\n",
            &opts,
        )
        .unwrap();
        assert_eq!(
            doc.value(&doc.lines()[1]),
            Some("iptables -A FORWARD -i %i -j ACCEPT")
        );
    }
}
