//! SDP session descriptions (RFC 8866): parsing and printing, with the attributes that
//! offer/answer reads kept in order and unknown ones carried through untouched.

use core::fmt;
use std::net::IpAddr;

use thiserror::Error;

/// Why text is not an SDP description. Every variant is the peer's fault.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SdpError {
    /// The body is not UTF-8.
    #[error("SDP is not UTF-8 text")]
    NotText,
    /// A line is not `<letter>=<value>`.
    #[error("SDP line {line}: not <type>=<value>")]
    BadLine {
        /// 1-based line number.
        line: usize,
    },
    /// A required line is missing or out of place.
    #[error("SDP: {0}")]
    Structure(&'static str),
    /// A line's value is malformed.
    #[error("SDP line {line}: bad {what}")]
    BadValue {
        /// 1-based line number.
        line: usize,
        /// Which field.
        what: &'static str,
    },
    /// Too many lines or media sections: which limit.
    #[error("SDP too large: more than {limit} {what}")]
    TooLarge {
        /// `lines` or `m-lines`.
        what: &'static str,
        /// The most that is taken.
        limit: usize,
    },
}

/// `c=IN IP4 <addr>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The connection address.
    pub addr: IpAddr,
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "IN IP4 {a}"),
            IpAddr::V6(a) => write!(f, "IN IP6 {a}"),
        }
    }
}

/// An attribute line `a=name[:value]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    /// Name (case kept as received; compare without case).
    pub name: String,
    /// Value after the colon.
    pub value: Option<String>,
}

/// One media section (`m=` and what follows it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Media {
    /// `audio`, `video`, ...
    pub kind: String,
    /// Transport port (0: rejected or disabled).
    pub port: u16,
    /// The transport protocol (`RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`, ...).
    pub proto: String,
    /// Formats (payload type numbers for RTP).
    pub formats: Vec<String>,
    /// Media-level `c=`.
    pub connection: Option<Connection>,
    /// Other lines kept verbatim (`b=`, `i=`), in order.
    pub other: Vec<(char, String)>,
    /// Attributes in order.
    pub attributes: Vec<Attribute>,
}

/// A session description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// `o=` username.
    pub origin_user: String,
    /// `o=` session id.
    pub session_id: u64,
    /// `o=` session version (incremented on each change, RFC 3264 8).
    pub session_version: u64,
    /// `o=` address type (`IP4`, `IP6`).
    pub origin_addr_type: String,
    /// `o=` address (some equipment puts a host name here).
    pub origin_addr: String,
    /// `s=`.
    pub name: String,
    /// Session-level `c=`.
    pub connection: Option<Connection>,
    /// Session-level lines kept verbatim (`b=`, `t=`, `i=`, ...), in order, except `t=`
    /// which is always written as `t=0 0` when absent.
    pub other: Vec<(char, String)>,
    /// Session-level attributes.
    pub attributes: Vec<Attribute>,
    /// Media sections.
    pub media: Vec<Media>,
}

const MAX_LINES: usize = 1024;
const MAX_MEDIA: usize = 16;

fn find<'a>(attrs: &'a [Attribute], name: &'a str) -> impl Iterator<Item = &'a Attribute> + 'a {
    attrs
        .iter()
        .filter(move |a| a.name.eq_ignore_ascii_case(name))
}

impl Media {
    /// Values of every attribute with this name.
    pub fn attrs<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        find(&self.attributes, name).map(|a| a.value.as_deref().unwrap_or(""))
    }

    /// Whether a flag attribute (`a=rtcp-mux`) is present.
    pub fn has(&self, name: &str) -> bool {
        find(&self.attributes, name).next().is_some()
    }

    /// Adds an attribute.
    pub fn push_attr(&mut self, name: &str, value: Option<String>) {
        self.attributes.push(Attribute {
            name: name.to_owned(),
            value,
        });
    }

    /// The direction attribute, `sendrecv` when none.
    pub fn direction(&self) -> Direction {
        for a in &self.attributes {
            if let Some(d) = Direction::parse(&a.name) {
                return d;
            }
        }
        Direction::SendRecv
    }
}

impl Session {
    /// Parses an SDP body.
    pub fn parse(body: &[u8]) -> Result<Session, SdpError> {
        let text = core::str::from_utf8(body).map_err(|_| SdpError::NotText)?;
        let mut lines = Vec::new();
        for (i, raw) in text.split('\n').enumerate() {
            let l = raw.strip_suffix('\r').unwrap_or(raw);
            if l.trim().is_empty() {
                continue;
            }
            if lines.len() == MAX_LINES {
                return Err(SdpError::TooLarge {
                    what: "lines",
                    limit: MAX_LINES,
                });
            }
            let b = l.as_bytes();
            if b.len() < 2 || b[1] != b'=' || !b[0].is_ascii_lowercase() {
                return Err(SdpError::BadLine { line: i + 1 });
            }
            lines.push((i + 1, b[0] as char, &l[2..]));
        }
        let mut it = lines.into_iter().peekable();
        match it.next() {
            Some((_, 'v', "0")) => {}
            _ => return Err(SdpError::Structure("first line is not v=0")),
        }
        let (oline, o) = match it.next() {
            Some((n, 'o', v)) => (n, v),
            _ => return Err(SdpError::Structure("o= must follow v=")),
        };
        let of: Vec<&str> = o.split_ascii_whitespace().collect();
        if of.len() != 6 || of[3] != "IN" {
            return Err(SdpError::BadValue {
                line: oline,
                what: "origin",
            });
        }
        let bad_o = SdpError::BadValue {
            line: oline,
            what: "origin",
        };
        let mut s = Session {
            origin_user: of[0].to_owned(),
            session_id: of[1].parse().map_err(|_| bad_o.clone())?,
            session_version: of[2].parse().map_err(|_| bad_o.clone())?,
            origin_addr_type: of[4].to_owned(),
            origin_addr: of[5].to_owned(),
            name: String::new(),
            connection: None,
            other: Vec::new(),
            attributes: Vec::new(),
            media: Vec::new(),
        };
        let mut seen_s = false;
        for (n, t, v) in it {
            match t {
                'm' => {
                    if s.media.len() == MAX_MEDIA {
                        return Err(SdpError::TooLarge {
                            what: "m-lines",
                            limit: MAX_MEDIA,
                        });
                    }
                    s.media.push(parse_m(n, v)?);
                }
                'c' => {
                    let c = parse_c(n, v)?;
                    match s.media.last_mut() {
                        Some(m) => m.connection = Some(c),
                        None => s.connection = Some(c),
                    }
                }
                'a' => {
                    let (name, value) = match v.split_once(':') {
                        Some((a, b)) => (a.trim(), Some(b.trim().to_owned())),
                        None => (v.trim(), None),
                    };
                    let a = Attribute {
                        name: name.to_owned(),
                        value,
                    };
                    match s.media.last_mut() {
                        Some(m) => m.attributes.push(a),
                        None => s.attributes.push(a),
                    }
                }
                's' if s.media.is_empty() => {
                    seen_s = true;
                    s.name = v.to_owned();
                }
                _ => match s.media.last_mut() {
                    Some(m) => m.other.push((t, v.to_owned())),
                    None => s.other.push((t, v.to_owned())),
                },
            }
        }
        if !seen_s {
            return Err(SdpError::Structure("no s= line"));
        }
        for (i, m) in s.media.iter().enumerate() {
            if m.port != 0 && m.connection.is_none() && s.connection.is_none() {
                let _ = i;
                return Err(SdpError::Structure("a media section has no c= line"));
            }
        }
        Ok(s)
    }

    /// A description of our own, addressed at `addr`.
    pub fn ours(addr: IpAddr, session_id: u64, version: u64, media: Vec<Media>) -> Session {
        Session {
            origin_user: "srtp-control".into(),
            session_id,
            session_version: version,
            origin_addr_type: if addr.is_ipv4() { "IP4" } else { "IP6" }.into(),
            origin_addr: addr.to_string(),
            name: "srtp-control".into(),
            connection: Some(Connection { addr }),
            other: Vec::new(),
            attributes: Vec::new(),
            media,
        }
    }

    /// The connection address of a media section (its own, or the session's).
    pub fn media_addr(&self, m: &Media) -> Option<IpAddr> {
        m.connection.or(self.connection).map(|c| c.addr)
    }

    /// The description as text (CRLF line ends).
    pub fn to_text(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v=0\r\n")?;
        write!(
            f,
            "o={} {} {} IN {} {}\r\n",
            self.origin_user,
            self.session_id,
            self.session_version,
            self.origin_addr_type,
            self.origin_addr
        )?;
        write!(
            f,
            "s={}\r\n",
            if self.name.is_empty() {
                "-"
            } else {
                &self.name
            }
        )?;
        if let Some(c) = &self.connection {
            write!(f, "c={c}\r\n")?;
        }
        let mut has_t = false;
        for (t, v) in &self.other {
            has_t |= *t == 't';
            write!(f, "{t}={v}\r\n")?;
        }
        if !has_t {
            write!(f, "t=0 0\r\n")?;
        }
        write_attrs(f, &self.attributes)?;
        for m in &self.media {
            write!(f, "m={} {} {}", m.kind, m.port, m.proto)?;
            for fmt_ in &m.formats {
                write!(f, " {fmt_}")?;
            }
            write!(f, "\r\n")?;
            if let Some(c) = &m.connection {
                write!(f, "c={c}\r\n")?;
            }
            for (t, v) in &m.other {
                write!(f, "{t}={v}\r\n")?;
            }
            write_attrs(f, &m.attributes)?;
        }
        Ok(())
    }
}

fn write_attrs(f: &mut fmt::Formatter<'_>, attrs: &[Attribute]) -> fmt::Result {
    for a in attrs {
        match &a.value {
            Some(v) => write!(f, "a={}:{v}\r\n", a.name)?,
            None => write!(f, "a={}\r\n", a.name)?,
        }
    }
    Ok(())
}

fn parse_m(line: usize, v: &str) -> Result<Media, SdpError> {
    let mut p = v.split_ascii_whitespace();
    let (Some(kind), Some(port), Some(proto)) = (p.next(), p.next(), p.next()) else {
        return Err(SdpError::BadValue {
            line,
            what: "media line",
        });
    };
    // `port/count` is allowed; we use the first port.
    let port = port.split('/').next().unwrap_or(port);
    let port = port.parse().map_err(|_| SdpError::BadValue {
        line,
        what: "media port",
    })?;
    Ok(Media {
        kind: kind.to_owned(),
        port,
        proto: proto.to_owned(),
        formats: p.map(str::to_owned).collect(),
        connection: None,
        other: Vec::new(),
        attributes: Vec::new(),
    })
}

fn parse_c(line: usize, v: &str) -> Result<Connection, SdpError> {
    let f: Vec<&str> = v.split_ascii_whitespace().collect();
    if f.len() != 3 || f[0] != "IN" || !(f[1] == "IP4" || f[1] == "IP6") {
        return Err(SdpError::BadValue {
            line,
            what: "connection",
        });
    }
    // A TTL or count suffix (`/127`) belongs to multicast, which we do not do.
    let a = f[2].split('/').next().unwrap_or(f[2]);
    let addr = a.parse().map_err(|_| SdpError::BadValue {
        line,
        what: "connection address",
    })?;
    Ok(Connection { addr })
}

/// A media direction (RFC 3264 5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Both ways.
    SendRecv,
    /// We send only.
    SendOnly,
    /// We receive only.
    RecvOnly,
    /// Neither (hold).
    Inactive,
}

impl Direction {
    /// Parses an attribute name.
    pub fn parse(s: &str) -> Option<Direction> {
        Some(match s.to_ascii_lowercase().as_str() {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }

    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// (sends, receives) from the point of view of the side that wrote it.
    fn flags(self) -> (bool, bool) {
        match self {
            Direction::SendRecv => (true, true),
            Direction::SendOnly => (true, false),
            Direction::RecvOnly => (false, true),
            Direction::Inactive => (false, false),
        }
    }

    fn from_flags(sends: bool, receives: bool) -> Direction {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// The answer's direction for an offered one, given what we want (RFC 3264 6.1).
    pub fn answer(self, ours: Direction) -> Direction {
        let (peer_sends, peer_recvs) = self.flags();
        let (we_send, we_recv) = ours.flags();
        Direction::from_flags(we_send && peer_recvs, we_recv && peer_sends)
    }

    /// The narrower of two directions of the same side (what both allow).
    pub fn narrowest(self, other: Direction) -> Direction {
        let (a, b) = (self.flags(), other.flags());
        Direction::from_flags(a.0 && b.0, a.1 && b.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4317 2.1 (offer with two audio codecs and telephone events).
    const OFFER: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com\r\n\
s=\r\n\
c=IN IP4 192.0.2.101\r\n\
t=0 0\r\n\
m=audio 49172 RTP/AVP 0 8 97\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:97 iLBC/8000\r\n\
m=video 51372 RTP/AVP 31 32\r\n\
a=rtpmap:31 H261/90000\r\n\
a=sendonly\r\n";

    #[test]
    fn parses_and_prints_rfc4317_offer() {
        let s = Session::parse(OFFER.as_bytes()).unwrap();
        assert_eq!(s.origin_user, "alice");
        assert_eq!(s.media.len(), 2);
        assert_eq!(s.media[0].formats, ["0", "8", "97"]);
        assert_eq!(
            s.media_addr(&s.media[0]),
            Some("192.0.2.101".parse().unwrap())
        );
        assert_eq!(s.media[0].attrs("rtpmap").count(), 3);
        assert_eq!(s.media[1].direction(), Direction::SendOnly);
        assert_eq!(s.origin_addr, "host.atlanta.example.com");
        // An empty s= is written as "s=-" (RFC 8866 5.3); otherwise printing round-trips.
        let again = Session::parse(s.to_text().as_bytes()).unwrap();
        assert_eq!(again.name, "-");
        assert_eq!(
            Session {
                name: String::new(),
                ..again.clone()
            },
            s
        );
        assert_eq!(again.to_text(), s.to_text());
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(
            Session::parse(b"o=x\r\n").unwrap_err(),
            SdpError::Structure("first line is not v=0")
        );
        assert_eq!(
            Session::parse(b"v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio x RTP/AVP 0\r\n")
                .unwrap_err(),
            SdpError::BadValue {
                line: 4,
                what: "media port"
            }
        );
        assert_eq!(
            Session::parse(b"v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio 5 RTP/AVP 0\r\n")
                .unwrap_err(),
            SdpError::Structure("a media section has no c= line")
        );
        assert_eq!(
            Session::parse(b"v=0\r\nbogus\r\n").unwrap_err(),
            SdpError::BadLine { line: 2 }
        );
        assert_eq!(
            Session::parse(&[0xff, 0xfe]).unwrap_err(),
            SdpError::NotText
        );
    }

    #[test]
    fn direction_answers() {
        use Direction::*;
        assert_eq!(SendOnly.answer(SendRecv), RecvOnly);
        assert_eq!(RecvOnly.answer(SendRecv), SendOnly);
        assert_eq!(Inactive.answer(SendRecv), Inactive);
        assert_eq!(SendRecv.answer(RecvOnly), RecvOnly);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Any text: an error or a session, never a panic; offer/answer on whatever parses
        /// never panics either.
        #[test]
        fn arbitrary_sdp_never_panics(lines in proptest::collection::vec("[a-z]=[ -~]{0,60}", 0..20), cut in 0usize..400) {
            let mut text = String::from("v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\n");
            for l in &lines {
                text.push_str(l);
                text.push_str("\r\n");
            }
            let cut = cut.min(text.len());
            for t in [&text[..], text.get(..cut).unwrap_or("")] {
                if let Ok(s) = Session::parse(t.as_bytes()) {
                    let _ = crate::sdp::plan_answer(&crate::sdp::SecurityConfig::default(), &s, None);
                }
            }
            for l in &lines {
                let _ = crate::sdp::CryptoAttr::parse(&l[2..]);
            }
        }
    }

    #[test]
    fn the_media_limit_is_said_with_its_number() {
        let sdp = |n: usize| {
            let mut t = String::from(
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n",
            );
            for k in 0..n {
                t.push_str(&format!("m=audio {} RTP/AVP 0\r\n", 5000 + 2 * k));
            }
            t
        };
        assert_eq!(Session::parse(sdp(16).as_bytes()).unwrap().media.len(), 16);
        let e = Session::parse(sdp(17).as_bytes()).unwrap_err();
        assert_eq!(e.to_string(), "SDP too large: more than 16 m-lines");
    }
}
