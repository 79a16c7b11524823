//! The header values a SIP stack reads everywhere: the method, the top Via, CSeq, and the
//! canonical spelling of header names (compact forms expanded).

use core::fmt;
use std::borrow::Cow;

use super::error::ParseError;

/// A SIP method.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// OPTIONS
    Options,
    /// REGISTER
    Register,
    /// UPDATE (RFC 3311): a session change inside a dialog.
    Update,
    /// Any other method (INFO, PRACK, ...), as received.
    Other(String),
}

impl Method {
    /// Parses a method token (methods are case-sensitive, RFC 3261 7.1).
    pub fn parse(s: &str) -> Result<Method, ParseError> {
        Ok(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "UPDATE" => Method::Update,
            _ if !s.is_empty() && s.bytes().all(is_token) => Method::Other(s.to_owned()),
            _ => return Err(ParseError::BadStartLine("bad method")),
        })
    }

    /// The method token.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Update => "UPDATE",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The top Via's parts that transactions and responses need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP`, `TLS`, ... upper-cased.
    pub transport: String,
    /// sent-by host.
    pub host: String,
    /// sent-by port.
    pub port: Option<u16>,
    /// The `branch` parameter.
    pub branch: Option<String>,
    /// The `received` parameter.
    pub received: Option<String>,
    /// The `rport` parameter: `Some(None)` when present without value.
    pub rport: Option<Option<u16>>,
}

/// The CSeq header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number.
    pub seq: u32,
    /// Method.
    pub method: Method,
}

/// Compact forms (RFC 3261 7.3.3 and later RFCs) and the canonical spelling of common names.
const NAMES: &[(&str, Option<&str>)] = &[
    ("Accept", None),
    ("Allow", None),
    ("Authorization", None),
    ("Call-ID", Some("i")),
    ("Contact", Some("m")),
    ("Content-Encoding", Some("e")),
    ("Content-Length", Some("l")),
    ("Content-Type", Some("c")),
    ("CSeq", None),
    ("Event", Some("o")),
    ("Expires", None),
    ("From", Some("f")),
    ("Max-Forwards", None),
    ("Min-Expires", None),
    ("Proxy-Authenticate", None),
    ("Proxy-Authorization", None),
    ("Record-Route", None),
    ("Refer-To", Some("r")),
    ("Require", None),
    ("Route", None),
    ("Server", None),
    ("Subject", Some("s")),
    ("Supported", Some("k")),
    ("To", Some("t")),
    ("Unsupported", None),
    ("User-Agent", None),
    ("Via", Some("v")),
    ("Warning", None),
    ("WWW-Authenticate", None),
];

/// The canonical spelling of a header name, expanding compact forms.
pub fn canonical_name(name: &str) -> Cow<'static, str> {
    for (full, compact) in NAMES {
        if full.eq_ignore_ascii_case(name) || compact.is_some_and(|c| c.eq_ignore_ascii_case(name))
        {
            return Cow::Borrowed(full);
        }
    }
    Cow::Owned(name.to_owned())
}

/// Whether a byte may be part of a token (RFC 3261 25.1).
pub(crate) fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Parses one Via value: `SIP/2.0/UDP host:port;branch=z9hG4bK...;rport`.
pub fn parse_via(v: &str) -> Result<Via, ParseError> {
    let v = v.trim();
    let (proto, rest) = v
        .split_once(|c: char| c.is_ascii_whitespace())
        .ok_or(ParseError::BadHeader("Via without sent-by"))?;
    let mut p = proto.split('/').map(str::trim);
    let (Some(name), Some(ver), Some(transport)) = (p.next(), p.next(), p.next()) else {
        return Err(ParseError::BadHeader("Via protocol"));
    };
    if !name.eq_ignore_ascii_case("SIP") || ver != "2.0" || transport.is_empty() {
        return Err(ParseError::BadHeader("Via protocol"));
    }
    let rest = rest.trim();
    let (sent_by, params) = match rest.split_once(';') {
        Some((s, p)) => (s, super::uri::parse_params(p)),
        None => (rest, Vec::new()),
    };
    let (host, port) =
        super::uri::split_host_port(sent_by).map_err(|_| ParseError::BadHeader("Via sent-by"))?;
    let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let rport = match get("rport") {
        None => None,
        Some(None) => Some(None),
        Some(Some(p)) => Some(Some(
            p.parse().map_err(|_| ParseError::BadHeader("Via rport"))?,
        )),
    };
    Ok(Via {
        transport: transport.to_ascii_uppercase(),
        host,
        port,
        branch: get("branch").flatten(),
        received: get("received").flatten(),
        rport,
    })
}
