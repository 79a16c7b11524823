//! SIP and SIPS URIs (RFC 3261 19.1) and name-addr values (`"Alice" <sip:a@b>;tag=1`).

use core::fmt;
use std::net::{IpAddr, SocketAddr};

use super::error::ParseError;

/// A SIP or SIPS URI: `sip:user@host:port;param=value;flag?header=value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uri {
    /// `sips` rather than `sip`.
    pub secure: bool,
    /// The user part, if any (still percent-escaped as received).
    pub user: Option<String>,
    /// The host: a name, an IPv4 address, or an IPv6 address without brackets.
    pub host: String,
    /// The port, if given.
    pub port: Option<u16>,
    /// URI parameters in order (`transport=tcp`, `lr`); names lower-cased.
    pub params: Vec<(String, Option<String>)>,
    /// Everything after `?`, unparsed.
    pub headers: Option<String>,
}

impl Uri {
    /// A `sip:` URI for a user at an address.
    pub fn new(user: Option<&str>, host: &str, port: Option<u16>) -> Uri {
        Uri {
            secure: false,
            user: user.map(str::to_owned),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            params: Vec::new(),
            headers: None,
        }
    }

    /// Parses a SIP or SIPS URI.
    pub fn parse(s: &str) -> Result<Uri, ParseError> {
        let s = s.trim();
        let (secure, rest) = if let Some(r) = strip_prefix_ci(s, "sips:") {
            (true, r)
        } else if let Some(r) = strip_prefix_ci(s, "sip:") {
            (false, r)
        } else {
            return Err(ParseError::BadUri("scheme is not sip: or sips:"));
        };
        let (rest, headers) = match rest.split_once('?') {
            Some((a, h)) => (a, Some(h.to_owned())),
            None => (rest, None),
        };
        // The user part ends at the last '@' before any parameter (a user may hold ';').
        let (user, hostpart) = match rest.rfind('@') {
            Some(i) => {
                let u = &rest[..i];
                if u.is_empty() {
                    return Err(ParseError::BadUri("empty user part"));
                }
                // Drop a password (`user:password@`): never kept, never printed.
                let u = u.split_once(':').map_or(u, |(a, _)| a);
                (Some(u.to_owned()), &rest[i + 1..])
            }
            None => (None, rest),
        };
        let (hostport, params) = match hostpart.split_once(';') {
            Some((h, p)) => (h, Some(p)),
            None => (hostpart, None),
        };
        let (host, port) = split_host_port(hostport)?;
        let params = params.map(parse_params).unwrap_or_default();
        Ok(Uri {
            secure,
            user,
            host,
            port,
            params,
            headers,
        })
    }

    /// A URI parameter's value (`Some(None)` for a flag such as `lr`).
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// The `transport` parameter, lower-cased.
    pub fn transport(&self) -> Option<String> {
        self.param("transport")
            .flatten()
            .map(|t| t.to_ascii_lowercase())
    }

    /// The socket address if the host is an IP literal (port defaulting to 5060, or 5061 for
    /// SIPS).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.host.parse().ok()?;
        let default = if self.secure { 5061 } else { 5060 };
        Some(SocketAddr::new(ip, self.port.unwrap_or(default)))
    }

    /// Sets or replaces a parameter.
    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        self.params.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.params
            .push((name.to_ascii_lowercase(), value.map(str::to_owned)));
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        for (n, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

/// A From, To or Contact value: an optional display name, a URI and header parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name, without quotes.
    pub display: Option<String>,
    /// The address.
    pub uri: Uri,
    /// Header parameters (`tag`, `expires`, `+sip.instance`), names lower-cased.
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    /// A bare address without display name or parameters.
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display: None,
            uri,
            params: Vec::new(),
        }
    }

    /// Parses `"Name" <uri>;params`, `Name <uri>;params` or `uri;params` (where the URI's
    /// own parameters become header parameters, RFC 3261 20.10).
    pub fn parse(s: &str) -> Result<NameAddr, ParseError> {
        let s = s.trim();
        if let Some(lt) = find_unquoted(s, '<') {
            let display = s[..lt].trim();
            let display = display
                .strip_prefix('"')
                .and_then(|d| d.strip_suffix('"'))
                .unwrap_or(display);
            let rest = &s[lt + 1..];
            let gt = rest
                .find('>')
                .ok_or(ParseError::BadHeader("name-addr without '>'"))?;
            let uri = Uri::parse(&rest[..gt])?;
            let after = rest[gt + 1..].trim();
            let params = match after.strip_prefix(';') {
                Some(p) => parse_params(p),
                None if after.is_empty() => Vec::new(),
                None => return Err(ParseError::BadHeader("text after '>'")),
            };
            Ok(NameAddr {
                display: (!display.is_empty()).then(|| display.replace("\\\"", "\"")),
                uri,
                params,
            })
        } else {
            let (u, p) = match s.split_once(';') {
                Some((u, p)) => (u, parse_params(p)),
                None => (s, Vec::new()),
            };
            Ok(NameAddr {
                display: None,
                uri: Uri::parse(u)?,
                params: p,
            })
        }
    }

    /// A header parameter's value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten()
    }

    /// Sets or replaces a header parameter.
    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        self.params.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.params
            .push((name.to_ascii_lowercase(), value.map(str::to_owned)));
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "\"{}\" ", d.replace('"', "\\\""))?;
        }
        write!(f, "<{}>", self.uri)?;
        for (n, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        Ok(())
    }
}

/// Splits `host[:port]` or `[v6][:port]`.
pub(crate) fn split_host_port(s: &str) -> Result<(String, Option<u16>), ParseError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(ParseError::BadUri("empty host"));
    }
    let (host, port) = if let Some(r) = s.strip_prefix('[') {
        let end = r
            .find(']')
            .ok_or(ParseError::BadUri("IPv6 host without ']'"))?;
        let host = &r[..end];
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(ParseError::BadUri("bad IPv6 address"));
        }
        let after = &r[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(ParseError::BadUri("text after IPv6 host")),
        };
        (host, port)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
    {
        return Err(ParseError::BadUri("bad host"));
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or(ParseError::BadUri("bad port"))?,
        ),
    };
    Ok((host.to_owned(), port))
}

/// Parses `a=1;b;c="x"` into lower-cased names and values.
pub(crate) fn parse_params(s: &str) -> Vec<(String, Option<String>)> {
    s.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n.trim().to_ascii_lowercase(), Some(v.trim().to_owned())),
            None => (p.to_ascii_lowercase(), None),
        })
        .collect()
}

/// The first `c` outside double quotes.
pub(crate) fn find_unquoted(s: &str, c: char) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, ch) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && ch == '\\' {
            escaped = true;
        } else if ch == '"' {
            quoted = !quoted;
        } else if !quoted && ch == c {
            return Some(i);
        }
    }
    None
}

/// Splits a header value at commas outside quotes and angle brackets.
pub(crate) fn split_list(s: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut angle = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, ch) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match ch {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty())
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len()
        && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes()))
    .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_parts() {
        let u = Uri::parse("sips:alice:secret@[::1]:5071;transport=TCP;lr?subject=x").unwrap();
        assert!(u.secure);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, Some(5071));
        assert_eq!(u.transport().as_deref(), Some("tcp"));
        assert_eq!(u.param("lr"), Some(None));
        assert_eq!(u.headers.as_deref(), Some("subject=x"));
        // The password is dropped.
        assert_eq!(
            u.to_string(),
            "sips:alice@[::1]:5071;transport=TCP;lr?subject=x"
        );
        assert_eq!(u.socket_addr(), Some("[::1]:5071".parse().unwrap()));
        let u = Uri::parse("SIP:bob@example.com").unwrap();
        assert_eq!(u.port, None);
        assert_eq!(u.socket_addr(), None);
        for bad in [
            "tel:+123",
            "sip:",
            "sip:a@",
            "sip:a@b:0",
            "sip:a@b:99999",
            "sip:[::1",
            "sip:a@b c",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(
            "\"Alice \\\"A\\\"\" <sip:alice@a.example;transport=udp>;tag=1928301774",
        )
        .unwrap();
        assert_eq!(n.display.as_deref(), Some("Alice \"A\""));
        assert_eq!(n.uri.transport().as_deref(), Some("udp"));
        assert_eq!(n.tag(), Some("1928301774"));
        // Without angle brackets, parameters belong to the header (RFC 3261 20.10).
        let n = NameAddr::parse("sip:bob@b.example;tag=a6c85cf").unwrap();
        assert_eq!(n.tag(), Some("a6c85cf"));
        assert!(n.uri.params.is_empty());
        let n = NameAddr::parse("Bob <sip:bob@b.example>").unwrap();
        assert_eq!(n.display.as_deref(), Some("Bob"));
        assert_eq!(n.to_string(), "\"Bob\" <sip:bob@b.example>");
        assert!(NameAddr::parse("<sip:bob@b.example").is_err());
    }

    #[test]
    fn list_splitting_respects_quotes_and_brackets() {
        let v: Vec<_> = split_list("\"a,b\" <sip:x@y;p=1,2>, <sip:z@w> , sip:q@r").collect();
        assert_eq!(v, ["\"a,b\" <sip:x@y;p=1,2>", "<sip:z@w>", "sip:q@r"]);
    }
}
