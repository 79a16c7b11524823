//! Parsing and building SIP messages, and a property test of the stream reader.

use super::*;

/// RFC 3261 24.2, F1 (with the SDP body cut short).
const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n\
Max-Forwards: 70\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
Call-ID: 3848276298220188511@atlanta.example.com\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@client.atlanta.example.com;transport=tcp>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

#[test]
fn parses_rfc_example() {
    let m = Message::parse(INVITE.as_bytes()).unwrap();
    m.validate().unwrap();
    assert_eq!(m.method(), Some(Method::Invite));
    assert_eq!(
        m.call_id().unwrap(),
        "3848276298220188511@atlanta.example.com"
    );
    let via = m.top_via().unwrap();
    assert_eq!(via.transport, "TCP");
    assert_eq!(via.branch.as_deref(), Some("z9hG4bK74bf9"));
    assert_eq!(m.from().unwrap().tag(), Some("9fxced76sl"));
    assert_eq!(
        m.cseq().unwrap(),
        CSeq {
            seq: 1,
            method: Method::Invite
        }
    );
    assert_eq!(m.body, b"v=0\n");
    // Round trip.
    let again = Message::parse(&m.to_bytes()).unwrap();
    assert_eq!(again, m);
}

#[test]
fn compact_folded_and_cased_headers() {
    let raw = "\r\n\r\nBYE sip:b@h SIP/2.0\n\
v: SIP/2.0/UDP 10.0.0.1:5060\n ;branch=z9hG4bKx;rport\n\
VIA  : SIP/2.0/UDP 10.0.0.2\n\
f: <sip:a@h>;tag=1\n\
t:<sip:b@h>;tag=2\n\
i: abc\n\
cseq: 2 BYE\n\
l: 0\n\n";
    let m = Message::parse(raw.as_bytes()).unwrap();
    m.validate().unwrap();
    let via = m.top_via().unwrap();
    assert_eq!(via.host, "10.0.0.1");
    assert_eq!(via.branch.as_deref(), Some("z9hG4bKx"));
    assert_eq!(via.rport, Some(None));
    assert_eq!(m.header_values("Via").count(), 2);
    assert_eq!(m.call_id().unwrap(), "abc");
    assert_eq!(m.to().unwrap().tag(), Some("2"));
}

#[test]
fn rejects_garbage_with_a_reason() {
    let cases: &[(&str, ParseError)] = &[
        (
            "HELLO\r\n\r\n",
            ParseError::BadStartLine("not METHOD URI SIP/2.0"),
        ),
        (
            "INVITE sip:a@b SIP/3.0\r\n\r\n",
            ParseError::BadStartLine("version is not SIP/2.0"),
        ),
        (
            "SIP/2.0 99 Weird\r\n\r\n",
            ParseError::BadStartLine("status code not 100-699"),
        ),
        (
            "INVITE sip:a@b SIP/2.0\r\nNo colon here\r\n\r\n",
            ParseError::BadHeader("line without ':'"),
        ),
        (
            "INVITE sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n",
            ParseError::BadHeader("bad header name"),
        ),
        (
            "INVITE sip:a@b SIP/2.0\r\nContent-Length: 9\r\n\r\nabc",
            ParseError::BadContentLength("longer than the datagram"),
        ),
        (
            "INVITE sip:a@b SIP/2.0\r\nContent-Length: x\r\n\r\n",
            ParseError::BadContentLength("not a number"),
        ),
        ("INVITE sip:a@b SIP/2.0\r\nTo: x", ParseError::Unterminated),
        (
            "INVITE http://a SIP/2.0\r\n\r\n",
            ParseError::BadUri("scheme is not sip: or sips:"),
        ),
    ];
    for (raw, want) in cases {
        assert_eq!(
            Message::parse(raw.as_bytes()).unwrap_err(),
            *want,
            "{raw:?}"
        );
    }
    let m = Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: 1 INVITE\r\nCall-ID: x\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n").unwrap();
    assert_eq!(
        m.validate().unwrap_err(),
        ParseError::BadHeader("CSeq method differs from the request's")
    );
    let mut big = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        big.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    assert_eq!(Message::parse(&big).unwrap_err(), ParseError::TooLarge);
}

#[test]
fn stream_framing_and_keepalives() {
    let raw = INVITE.as_bytes();
    for cut in [0, 10, raw.len() - 1] {
        assert_eq!(
            Message::parse_stream(&raw[..cut]).unwrap(),
            StreamRead::Incomplete
        );
    }
    let mut two = raw.to_vec();
    two.extend_from_slice(raw);
    let StreamRead::Message(m, used) = Message::parse_stream(&two).unwrap() else {
        panic!("expected a message");
    };
    assert_eq!(used, raw.len());
    assert_eq!(m.body, b"v=0\n");
    assert_eq!(
        Message::parse_stream(b"\r\n\r\nINVITE").unwrap(),
        StreamRead::Keepalive {
            used: 4,
            ping: true
        }
    );
    assert_eq!(
        Message::parse_stream(b"\r\n").unwrap(),
        StreamRead::Keepalive {
            used: 2,
            ping: false
        }
    );
    assert_eq!(
        Message::parse_stream(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n").unwrap_err(),
        ParseError::BadContentLength("missing on a stream transport")
    );
}

#[test]
fn responses_copy_the_right_headers() {
    let req = Message::parse(INVITE.as_bytes()).unwrap();
    let r = Message::response_to(&req, 180, "Ringing", Some("8321234356"));
    assert_eq!(r.code(), Some(180));
    assert_eq!(r.to().unwrap().tag(), Some("8321234356"));
    assert_eq!(r.header("Contact"), None);
    assert_eq!(r.method(), Some(Method::Invite));
    assert_eq!(r.transaction_key(), req.transaction_key());
    assert_eq!(r.summary(), "180 Ringing (INVITE)");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9][A-Za-z0-9.!%*_+~-]{0,11}"
    }

    fn value() -> impl Strategy<Value = String> {
        "[ -~]{0,40}".prop_map(|v| v.trim().to_owned())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any bytes: an error or a message, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Message::parse(&b);
            let _ = Message::parse_stream(&b);
            if let Ok(m) = Message::parse(&b) {
                let _ = m.validate();
                let _ = m.top_via();
                let _ = m.transaction_key();
            }
        }

        /// A real message with one byte changed or cut short: never a panic.
        #[test]
        fn mutated_messages_never_panic(i in 0usize..400, b in any::<u8>(), cut in 0usize..420) {
            let mut m = INVITE.as_bytes().to_vec();
            let i = i % m.len();
            m[i] = b;
            let _ = Message::parse(&m).map(|m| m.validate());
            let _ = Message::parse_stream(&m[..cut.min(m.len())]);
        }

        /// Built messages print and parse back to themselves, by datagram and by stream.
        #[test]
        fn build_print_parse_round_trip(
            method in "[A-Z]{3,9}",
            user in token(),
            headers in proptest::collection::vec((token(), value()), 0..12),
            body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let method = Method::parse(&method).unwrap();
            let mut m = Message::request(method, Uri::parse(&format!("sip:{user}@127.0.0.1:5060")).unwrap());
            for (n, v) in &headers {
                if n.eq_ignore_ascii_case("Content-Length") || n.eq_ignore_ascii_case("l") {
                    continue;
                }
                let name: &'static str = Box::leak(canonical_name(n).into_owned().into_boxed_str());
                m.push(name, v.clone());
            }
            m.body = body;
            let bytes = m.to_bytes();
            let mut back = Message::parse(&bytes).unwrap();
            back.remove("Content-Length");
            prop_assert_eq!(&back, &m);
            let StreamRead::Message(s, used) = Message::parse_stream(&bytes).unwrap() else {
                panic!("a whole message");
            };
            prop_assert_eq!(used, bytes.len());
            let mut s = *s;
            s.remove("Content-Length");
            prop_assert_eq!(s, m);
        }
    }
}
