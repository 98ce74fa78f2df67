//! Where a guest's outbound HTTP requests may go: `allowed_outbound_hosts`
//! patterns, and which addresses count as private.
//!
//! A pattern is `SCHEME://HOST[:PORT]`:
//! - SCHEME is `http`, `https` or `*`;
//! - HOST is a DNS name, `*.` and a domain (any name below it, not the
//!   domain itself), `*` (any name), an IPv4 address or a bracketed IPv6 one;
//! - PORT is a number or `*`; without it, the scheme's own (80 or 443).
//!
//! Private, loopback, link-local (cloud metadata included), shared and other
//! non-global addresses are reached only through a pattern that names the
//! address itself: never through a DNS name, whatever it resolves to, and
//! never through `*`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A pattern that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "outbound host pattern {pattern:?}: {problem}; write SCHEME://HOST[:PORT], e.g. \"https://api.example.com\", \"https://*.example.com\" or \"http://127.0.0.1:8080\""
)]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub problem: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Any,
    /// `*.example.com`, kept as `.example.com`.
    Below(String),
    Name(String),
    Address(IpAddr),
}

/// One `allowed_outbound_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// `None` for `*`.
    scheme: Option<Scheme>,
    host: Host,
    /// `None` for `*`; the scheme's own when not written (with scheme `*`,
    /// whichever scheme the request uses).
    port: Option<u16>,
    port_written: bool,
    text: String,
}

/// The two schemes a guest may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// The scheme's port when none is given.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The scheme named `text` (any case).
    pub fn parse(text: &str) -> Option<Scheme> {
        match text.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }
}

/// Where a request goes: scheme, host (lowercase, no trailing dot, IPv6
/// without brackets) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Its scheme.
    pub scheme: Scheme,
    /// Its host name or address, as text.
    pub host: String,
    /// Its port.
    pub port: u16,
}

impl Destination {
    /// The destination of a request to `host` (as a URL writes it) and `port`.
    pub fn new(scheme: Scheme, host: &str, port: Option<u16>) -> Destination {
        let host = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
        Destination { scheme, host, port: port.unwrap_or(scheme.default_port()) }
    }

    /// The host as an address, when it is one.
    pub fn address(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address() {
            Some(IpAddr::V6(_)) => write!(f, "{}://[{}]:{}", self.scheme.as_str(), self.host, self.port),
            _ => write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port),
        }
    }
}

impl Pattern {
    /// Reads one pattern.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let fail = |problem: &str| PatternError { pattern: text.to_owned(), problem: problem.to_owned() };
        let (scheme, rest) = text.split_once("://").ok_or_else(|| fail("it has no scheme"))?;
        let scheme = match scheme {
            "*" => None,
            s => Some(Scheme::parse(s).ok_or_else(|| fail("the scheme must be http, https or *"))?),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(fail("a pattern names a host, never a path, query or user"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (address, after) = v6.split_once(']').ok_or_else(|| fail("an IPv6 address needs its closing ]"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| fail("junk after the IPv6 address"))?),
            };
            let address: Ipv6Addr = address.parse().map_err(|_| fail("not an IPv6 address"))?;
            (Host::Address(IpAddr::V6(address)), port)
        } else {
            let (host, port) = match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            };
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            let host = if host == "*" {
                Host::Any
            } else if let Some(domain) = host.strip_prefix("*.") {
                check_name(domain).map_err(|p| fail(&p))?;
                Host::Below(format!(".{domain}"))
            } else if let Ok(address) = host.parse::<Ipv4Addr>() {
                Host::Address(IpAddr::V4(address))
            } else {
                check_name(&host).map_err(|p| fail(&p))?;
                Host::Name(host)
            };
            (host, port)
        };
        let (port, port_written) = match port {
            None => (scheme.map(Scheme::default_port), false),
            Some("*") => (None, true),
            Some(p) => (Some(p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(|| fail("bad port"))?), true),
        };
        Ok(Pattern { scheme, host, port, port_written, text: text.to_owned() })
    }

    /// The address the pattern names as its host, if it names one.
    pub fn address(&self) -> Option<IpAddr> {
        match self.host {
            Host::Address(address) => Some(address),
            _ => None,
        }
    }

    /// Whether the pattern lets a request reach `to`. A private address is
    /// let through only by a pattern that names it.
    pub fn allows(&self, to: &Destination) -> bool {
        if self.scheme.is_some_and(|s| s != to.scheme) {
            return false;
        }
        let port = match (self.port, self.port_written) {
            (Some(port), _) => port,
            (None, true) => to.port,
            (None, false) => to.scheme.default_port(),
        };
        if port != to.port {
            return false;
        }
        match (&self.host, to.address()) {
            (Host::Address(mine), Some(theirs)) => *mine == theirs,
            (Host::Any, Some(address)) => is_public(address),
            (Host::Any, None) => true,
            (Host::Below(domain), None) => to.host.ends_with(domain.as_str()),
            (Host::Name(name), None) => *name == to.host,
            _ => false,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let fine = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if fine { Ok(()) } else { Err(format!("{name:?} is not a host name")) }
}

/// A list of patterns; empty allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Pattern>);

impl From<Vec<Pattern>> for AllowList {
    fn from(patterns: Vec<Pattern>) -> Self {
        AllowList(patterns)
    }
}

impl AllowList {
    /// Reads every pattern of `entries`.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowList, PatternError> {
        entries.iter().map(|e| Pattern::parse(e.as_ref().trim())).collect::<Result<_, _>>().map(AllowList)
    }

    /// The patterns.
    pub fn patterns(&self) -> &[Pattern] {
        &self.0
    }

    /// Whether any pattern lets a request reach `to`.
    pub fn allows(&self, to: &Destination) -> bool {
        self.0.iter().any(|p| p.allows(to))
    }

    /// Whether the list allows nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The patterns as written, comma-separated.
    pub fn describe(&self) -> String {
        if self.0.is_empty() {
            return "none".into();
        }
        self.0.iter().map(|p| p.text.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// Whether a guest may reach `address` through a DNS name (or `*`): false
/// for loopback, private, shared (CGNAT), link-local (cloud metadata
/// included), unspecified, broadcast, multicast, documentation and reserved
/// ranges, in either family (IPv4 mapped into IPv6 judged as IPv4).
pub fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
                || first == 0x2001 && v6.segments()[1] == 0x0db8 // documentation
                || first == 0x0064 && v6.segments()[1] == 0xff9b // NAT64, maps IPv4
                || first == 0 // IPv4-compatible and other reserved
                || first == 0x2002) // 6to4, maps IPv4
        }
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    !(v4.is_private()
        || v4.is_loopback()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(url: &str) -> Destination {
        let (scheme, rest) = url.split_once("://").unwrap();
        let scheme = Scheme::parse(scheme).unwrap();
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && !rest.ends_with(']') => (h, Some(p.parse().unwrap())),
            _ => (rest, None),
        };
        Destination::new(scheme, host, port)
    }

    fn allows(patterns: &[&str], url: &str) -> bool {
        AllowList::parse(patterns).unwrap().allows(&to(url))
    }

    #[test]
    fn schemes_hosts_and_ports_match_as_written() {
        assert!(allows(&["https://api.example.com"], "https://api.example.com"));
        assert!(allows(&["https://api.example.com"], "https://API.example.com.:443"));
        assert!(!allows(&["https://api.example.com"], "http://api.example.com"));
        assert!(!allows(&["https://api.example.com"], "https://api.example.com:8443"));
        assert!(!allows(&["https://api.example.com"], "https://evil.example.com"));
        assert!(allows(&["https://api.example.com:*"], "https://api.example.com:8443"));
        assert!(allows(&["*://api.example.com"], "http://api.example.com"));
        assert!(allows(&["*://api.example.com"], "https://api.example.com"));
        assert!(!allows(&["*://api.example.com"], "https://api.example.com:80"));
        assert!(allows(&["https://*.example.com"], "https://a.b.example.com"));
        assert!(!allows(&["https://*.example.com"], "https://example.com"));
        assert!(!allows(&["https://*.example.com"], "https://badexample.com"));
        assert!(allows(&["http://127.0.0.1:8080"], "http://127.0.0.1:8080"));
        assert!(!allows(&["http://127.0.0.1:8080"], "http://127.0.0.1:8081"));
        assert!(allows(&["http://[::1]:9000"], "http://[::1]:9000"));
        assert!(!allows(&[], "https://api.example.com"));
    }

    #[test]
    fn private_addresses_need_a_pattern_naming_them() {
        assert!(allows(&["https://*:*"], "https://93.184.216.34:443"));
        for private in ["127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "[::1]"] {
            assert!(!allows(&["*://*:*"], &format!("http://{private}:80")), "{private}");
        }
        assert!(allows(&["http://169.254.169.254"], "http://169.254.169.254"));
    }

    #[test]
    fn non_global_addresses_are_not_public() {
        for text in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fd00:ec2::254",
        ] {
            assert!(!is_public(text.parse().unwrap()), "{text}");
        }
        for text in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(text.parse().unwrap()), "{text}");
        }
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        for (text, problem) in [
            ("api.example.com", "no scheme"),
            ("ftp://x.com", "scheme must be"),
            ("https://x.com/v1", "never a path"),
            ("https://user@x.com", "never a path"),
            ("https://x.com:99999", "bad port"),
            ("https://x..com", "not a host name"),
            ("https://[::1", "closing ]"),
        ] {
            let err = Pattern::parse(text).unwrap_err();
            assert!(err.to_string().contains(problem), "{text}: {err}");
        }
    }
}
