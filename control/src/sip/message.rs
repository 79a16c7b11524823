//! SIP messages (RFC 3261 7): parsing from datagrams and streams, building, printing.
//!
//! The parser is strict where a mistake would mislead us (start line, Content-Length, CSeq,
//! header names, sizes) and tolerant of what real equipment sends: compact header names,
//! any case, folded lines, bare LF line ends, leading CRLFs (keepalives), spaces before the
//! colon. Header names are stored in their full canonical form, so `i:` and `CALL-ID:` are
//! both found as `Call-ID`.

use core::fmt;
use std::borrow::Cow;

use super::uri::{NameAddr, Uri, split_list};

pub use super::error::{MAX_HEADERS, MAX_MESSAGE_BYTES, ParseError};
use super::headers::is_token;
pub use super::headers::{CSeq, Method, Via, canonical_name, parse_via};

/// The first line of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD uri SIP/2.0`
    Request {
        /// The method.
        method: Method,
        /// The Request-URI.
        uri: Uri,
    },
    /// `SIP/2.0 code reason`
    Response {
        /// Status code, 100-699.
        code: u16,
        /// Reason phrase.
        reason: String,
    },
}

/// One header line: canonical name and raw value (folding undone, ends trimmed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The canonical name (`Call-ID`, `Via`, or an extension name as received).
    pub name: Cow<'static, str>,
    /// The value.
    pub value: String,
}

/// A parsed or built SIP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Request or status line.
    pub start: StartLine,
    /// Headers in order.
    pub headers: Vec<Header>,
    /// The body (SDP), possibly empty.
    pub body: Vec<u8>,
}

/// The outcome of reading a stream (TCP/TLS) buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamRead {
    /// A whole message and the bytes it used.
    Message(Box<Message>, usize),
    /// A keepalive: `CRLFCRLF` ping (reply with CRLF) or a lone CRLF pong; the bytes used.
    Keepalive {
        /// Bytes consumed.
        used: usize,
        /// A ping (double CRLF) that wants a pong.
        ping: bool,
    },
    /// Not enough bytes yet.
    Incomplete,
}

impl Message {
    /// A request with no headers yet.
    pub fn request(method: Method, uri: Uri) -> Message {
        Message {
            start: StartLine::Request { method, uri },
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A response to `req` (RFC 3261 8.2.6.2): Via, From, To, Call-ID and CSeq copied; a To
    /// tag added when given and absent.
    pub fn response_to(req: &Message, code: u16, reason: &str, to_tag: Option<&str>) -> Message {
        let mut headers = Vec::with_capacity(8);
        for h in &req.headers {
            match &*h.name {
                "Via" | "From" | "Call-ID" | "CSeq" | "Record-Route" => headers.push(h.clone()),
                "To" => {
                    let mut h = h.clone();
                    if let Some(t) = to_tag
                        && !has_tag(&h.value)
                    {
                        h.value = format!("{};tag={t}", h.value);
                    }
                    headers.push(h);
                }
                _ => {}
            }
        }
        Message {
            start: StartLine::Response {
                code,
                reason: reason.to_owned(),
            },
            headers,
            body: Vec::new(),
        }
    }

    /// Parses one datagram (UDP). The body runs to Content-Length when present (the rest
    /// is ignored, RFC 3261 18.3), else to the end of the datagram.
    pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(ParseError::TooLarge);
        }
        let start = bytes
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(bytes.len());
        let bytes = &bytes[start..];
        let head_end = find_head_end(bytes).ok_or(ParseError::Unterminated)?;
        let mut msg = parse_head(&bytes[..head_end.0])?;
        let body = &bytes[head_end.1..];
        match msg.content_length()? {
            Some(n) if n > body.len() => {
                return Err(ParseError::BadContentLength("longer than the datagram"));
            }
            Some(n) => msg.body = body[..n].to_vec(),
            None => msg.body = body.to_vec(),
        }
        Ok(msg)
    }

    /// Reads the next message, keepalive or nothing from a stream buffer (TCP/TLS), where
    /// Content-Length is mandatory (RFC 3261 18.3).
    pub fn parse_stream(buf: &[u8]) -> Result<StreamRead, ParseError> {
        // RFC 5626 3.5.1: CRLFCRLF ping, CRLF pong.
        let crlfs = buf
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        if crlfs > 0 {
            if crlfs == buf.len() && crlfs < 4 && buf.starts_with(b"\r\n\r") {
                return Ok(StreamRead::Incomplete);
            }
            return Ok(StreamRead::Keepalive {
                used: crlfs,
                ping: crlfs >= 4,
            });
        }
        let Some((head, body_at)) = find_head_end(buf) else {
            if buf.len() > MAX_MESSAGE_BYTES {
                return Err(ParseError::TooLarge);
            }
            return Ok(StreamRead::Incomplete);
        };
        let mut msg = parse_head(&buf[..head])?;
        let n = msg.content_length()?.ok_or(ParseError::BadContentLength(
            "missing on a stream transport",
        ))?;
        if body_at + n > MAX_MESSAGE_BYTES {
            return Err(ParseError::TooLarge);
        }
        if buf.len() < body_at + n {
            return Ok(StreamRead::Incomplete);
        }
        msg.body = buf[body_at..body_at + n].to_vec();
        Ok(StreamRead::Message(Box::new(msg), body_at + n))
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Every value of a header, comma-separated lists split (RFC 3261 7.3.1).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .flat_map(|h| split_list(&h.value))
    }

    /// Appends a header.
    pub fn push(&mut self, name: &'static str, value: impl Into<String>) -> &mut Self {
        self.headers.push(Header {
            name: Cow::Borrowed(name),
            value: value.into(),
        });
        self
    }

    /// Replaces every instance of a header with one value.
    pub fn set(&mut self, name: &'static str, value: impl Into<String>) -> &mut Self {
        let value = value.into();
        match self
            .headers
            .iter()
            .position(|h| h.name.eq_ignore_ascii_case(name))
        {
            Some(i) => {
                self.headers[i].value = value;
                let mut seen = false;
                self.headers.retain(|h| {
                    if h.name.eq_ignore_ascii_case(name) {
                        let keep = !seen;
                        seen = true;
                        keep
                    } else {
                        true
                    }
                });
            }
            None => {
                self.push(name, value);
            }
        }
        self
    }

    /// Removes every instance of a header.
    pub fn remove(&mut self, name: &str) {
        self.headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }

    /// Sets the body with its Content-Type (Content-Length is written by `to_bytes`).
    pub fn set_body(&mut self, content_type: &'static str, body: Vec<u8>) {
        self.set("Content-Type", content_type);
        self.body = body;
    }

    /// The request method, or the CSeq method of a response.
    pub fn method(&self) -> Option<Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method.clone()),
            StartLine::Response { .. } => self.cseq().ok().map(|c| c.method),
        }
    }

    /// The status code of a response.
    pub fn code(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// Call-ID.
    pub fn call_id(&self) -> Result<&str, ParseError> {
        self.header("Call-ID").ok_or(ParseError::Missing("Call-ID"))
    }

    /// CSeq.
    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        let v = self.header("CSeq").ok_or(ParseError::Missing("CSeq"))?;
        let (n, m) = v
            .trim()
            .split_once(|c: char| c.is_ascii_whitespace())
            .ok_or(ParseError::BadHeader("CSeq"))?;
        let seq = n
            .parse()
            .map_err(|_| ParseError::BadHeader("CSeq number"))?;
        Ok(CSeq {
            seq,
            method: Method::parse(m.trim()).map_err(|_| ParseError::BadHeader("CSeq method"))?,
        })
    }

    /// From.
    pub fn from(&self) -> Result<NameAddr, ParseError> {
        NameAddr::parse(self.header("From").ok_or(ParseError::Missing("From"))?)
    }

    /// To.
    pub fn to(&self) -> Result<NameAddr, ParseError> {
        NameAddr::parse(self.header("To").ok_or(ParseError::Missing("To"))?)
    }

    /// The first Contact, if any.
    pub fn contact(&self) -> Option<NameAddr> {
        self.header_values("Contact")
            .next()
            .and_then(|c| NameAddr::parse(c).ok())
    }

    /// The top Via.
    pub fn top_via(&self) -> Result<Via, ParseError> {
        let v = self
            .header_values("Via")
            .next()
            .ok_or(ParseError::Missing("Via"))?;
        parse_via(v)
    }

    /// Content-Length, if present.
    pub fn content_length(&self) -> Result<Option<usize>, ParseError> {
        match self.header("Content-Length") {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| ParseError::BadContentLength("not a number")),
        }
    }

    /// The transaction key: top Via branch and method (ACK matches its INVITE, CANCEL
    /// keeps its own, RFC 3261 17.1.3 and 17.2.3).
    pub fn transaction_key(&self) -> Option<(String, Method)> {
        let branch = self.top_via().ok()?.branch?;
        let m = self.method()?;
        let m = if m == Method::Ack { Method::Invite } else { m };
        Some((branch, m))
    }

    /// Checks the headers every request must carry (RFC 3261 8.1.1) and that CSeq's method
    /// matches the request's.
    pub fn validate(&self) -> Result<(), ParseError> {
        self.call_id()?;
        let cseq = self.cseq()?;
        self.from()?;
        self.to()?;
        self.top_via()?;
        if let StartLine::Request { method, .. } = &self.start
            && *method != cseq.method
        {
            return Err(ParseError::BadHeader(
                "CSeq method differs from the request's",
            ));
        }
        Ok(())
    }

    /// The message as bytes, with a correct Content-Length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(512 + self.body.len());
        use fmt::Write;
        match &self.start {
            StartLine::Request { method, uri } => {
                let _ = write!(out, "{method} {uri} SIP/2.0\r\n");
            }
            StartLine::Response { code, reason } => {
                let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
            }
        }
        for h in &self.headers {
            if h.name.eq_ignore_ascii_case("Content-Length") {
                continue;
            }
            let _ = write!(out, "{}: {}\r\n", h.name, h.value);
        }
        let _ = write!(out, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// A one-line summary for logs: `INVITE sip:b@h` or `200 OK (INVITE)`.
    pub fn summary(&self) -> String {
        match &self.start {
            StartLine::Request { method, uri } => format!("{method} {uri}"),
            StartLine::Response { code, reason } => match self.cseq() {
                Ok(c) => format!("{code} {reason} ({})", c.method),
                Err(_) => format!("{code} {reason}"),
            },
        }
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

fn has_tag(v: &str) -> bool {
    NameAddr::parse(v).is_ok_and(|n| n.tag().is_some())
}

/// Where the header section ends: (end of the last header line, start of the body).
fn find_head_end(b: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\n' {
            if b.get(i + 1) == Some(&b'\n') {
                return Some((i, i + 2));
            }
            if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

fn parse_head(head: &[u8]) -> Result<Message, ParseError> {
    let head = core::str::from_utf8(head).map_err(|_| ParseError::NotText)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().ok_or(ParseError::BadStartLine("empty"))?;
    let start = parse_start_line(first)?;
    let mut headers: Vec<Header> = Vec::with_capacity(12);
    for line in lines {
        if line.starts_with([' ', '\t']) {
            // Folded continuation (RFC 3261 7.3.1): joins the previous value with one space.
            let last = headers
                .last_mut()
                .ok_or(ParseError::BadHeader("continuation line before any header"))?;
            last.value.push(' ');
            last.value.push_str(line.trim());
            continue;
        }
        if headers.len() == MAX_HEADERS {
            return Err(ParseError::TooLarge);
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(ParseError::BadHeader("line without ':'"))?;
        let name = name.trim_end();
        if name.is_empty() || !name.bytes().all(is_token) {
            return Err(ParseError::BadHeader("bad header name"));
        }
        headers.push(Header {
            name: canonical_name(name),
            value: value.trim().to_owned(),
        });
    }
    Ok(Message {
        start,
        headers,
        body: Vec::new(),
    })
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code: u16 = code
            .parse()
            .ok()
            .filter(|c| (100..=699).contains(c))
            .ok_or(ParseError::BadStartLine("status code not 100-699"))?;
        return Ok(StartLine::Response {
            code,
            reason: reason.trim().to_owned(),
        });
    }
    let mut parts = line.split(' ');
    let (Some(m), Some(u), Some(v), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::BadStartLine("not METHOD URI SIP/2.0"));
    };
    if !v.eq_ignore_ascii_case("SIP/2.0") {
        return Err(ParseError::BadStartLine("version is not SIP/2.0"));
    }
    Ok(StartLine::Request {
        method: Method::parse(m)?,
        uri: Uri::parse(u)?,
    })
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
