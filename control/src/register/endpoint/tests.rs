//! The registration state machine in simulated time.

use super::*;
use zeroize::Zeroizing;

fn policy(n: usize) -> Arc<Policy> {
    let regs = (0..n)
        .map(|i| {
            let mut r = RegistrarSpec::at(
                &format!("r{i}"),
                "127.0.0.1",
                format!("127.0.0.1:{}", 5060 + i).parse().unwrap(),
                Protocol::Udp,
            );
            r.domain = Uri::new(None, "example.test", None);
            r
        })
        .collect();
    let mut p = Policy::new(regs, Protocol::Udp, "127.0.0.1:5070".parse().unwrap());
    p.options_keepalive = Some(Duration::from_secs(10));
    p.keepalive_timeout = Duration::from_secs(2);
    Arc::new(p)
}

fn ok(req: &Message, expires: Option<u32>) -> Message {
    let mut r = Message::response_to(req, 200, "OK", Some("x"));
    if let Some(e) = expires {
        r.push("Expires", e.to_string());
    }
    r
}

fn sent(e: &mut Endpoint) -> Vec<(usize, Message)> {
    let mut v = Vec::new();
    while let Some(t) = e.poll_transmit() {
        if let Payload::Sip(m) = t.payload {
            v.push((t.registrar, m));
        }
    }
    v
}

fn endpoint(p: Arc<Policy>, t0: Instant) -> Endpoint {
    Endpoint::new(
        p,
        Identity {
            user: "alice".into(),
            auth: None,
        },
        t0,
        t0,
        0.0,
    )
}

#[test]
fn a_shortened_grant_refreshes_at_expiry_minus_the_delta() {
    let t0 = Instant::now();
    let mut p = (*policy(1)).clone();
    p.spread_refreshes = false;
    p.options_keepalive = None;
    let mut e = endpoint(Arc::new(p), t0);
    e.handle_timeout(t0);
    let (_, reg) = sent(&mut e).pop().unwrap();
    assert_eq!(reg.header("Expires"), Some("3600"));
    e.handle_response(t0, ok(&reg, Some(120)));
    assert!(matches!(
        e.poll_event(),
        Some(Event::Registered { granted: 120, .. })
    ));
    assert_eq!(e.poll_timeout(), Some(t0 + Duration::from_secs(115)));
    let t1 = t0 + Duration::from_secs(115);
    e.handle_timeout(t1);
    let (_, refresh) = sent(&mut e).pop().unwrap();
    assert_eq!(refresh.call_id().unwrap(), reg.call_id().unwrap());
    assert!(refresh.cseq().unwrap().seq > reg.cseq().unwrap().seq);
    e.handle_response(t1, ok(&refresh, Some(120)));
    assert_eq!(
        e.poll_event(),
        Some(Event::Refreshed {
            registrar: 0,
            granted: 120,
            interval: Duration::from_secs(115)
        })
    );
    assert_eq!(e.registered_with(t1), Some(0));
}

/// RFC 5626: with instance ids, the Contact carries `+sip.instance` (a version 4 UUID URN)
/// and a `reg-id` per registrar; the Request-URI and To are the registrar and the address of
/// record.
#[test]
fn instance_ids_and_addressing_in_the_register() {
    let t0 = Instant::now();
    let mut p = (*policy(2)).clone();
    p.instance_id = true;
    let mut e = endpoint(Arc::new(p), t0);
    e.handle_timeout(t0);
    let (_, reg) = sent(&mut e).pop().unwrap();
    let contact = reg.header("Contact").unwrap();
    let uuid = contact
        .split("urn:uuid:")
        .nth(1)
        .and_then(|r| r.split('>').next())
        .unwrap();
    assert_eq!(uuid.len(), 36, "{contact}");
    assert_eq!(uuid.as_bytes()[14], b'4', "version 4: {uuid}");
    assert!(contact.ends_with(";reg-id=1"), "{contact}");
    assert_eq!(reg.header("Supported"), Some("outbound, path"));
    match &reg.start {
        crate::sip::StartLine::Request { uri, .. } => {
            assert_eq!(
                uri.to_string(),
                "sip:127.0.0.1",
                "the registrar on port 5060"
            )
        }
        _ => unreachable!(),
    }
    assert!(reg.to().unwrap().uri.to_string().ends_with("@example.test"));
}

#[test]
fn udp_retransmissions_back_off_from_t1_to_t2() {
    let t0 = Instant::now();
    let mut e = endpoint(policy(2), t0);
    e.handle_timeout(t0);
    assert_eq!(sent(&mut e).len(), 1);
    let mut t = t0;
    let mut intervals = Vec::new();
    while let Some(next) = e.poll_timeout() {
        if next > t0 + Duration::from_secs(31) {
            break;
        }
        t = next;
        e.handle_timeout(t);
        while let Some(ev) = e.poll_event() {
            if let Event::Retransmitted { interval, .. } = ev {
                intervals.push(interval.as_millis());
            }
        }
    }
    assert_eq!(&intervals[..5], &[500, 1000, 2000, 4000, 4000]);
    let _ = t;
}

#[test]
fn keepalive_loss_fails_over_and_a_probe_answer_falls_back() {
    let t0 = Instant::now();
    let mut e = endpoint(policy(2), t0);
    e.handle_timeout(t0);
    let (_, reg) = sent(&mut e).pop().unwrap();
    e.handle_response(t0, ok(&reg, Some(600)));
    while e.poll_event().is_some() {}
    // The primary goes silent: keepalives time out, twice, back to back (fast).
    let mut t = t0;
    let mut to_backup = None;
    for _ in 0..20 {
        t = e.poll_timeout().unwrap();
        e.handle_timeout(t);
        for (r, m) in sent(&mut e) {
            if r == 1 && m.method() == Some(Method::Register) {
                to_backup = Some(m);
            }
        }
        if to_backup.is_some() {
            break;
        }
    }
    let mut lost = None;
    while let Some(ev) = e.poll_event() {
        if let Event::Lost {
            detect, failures, ..
        } = ev
        {
            lost = Some((detect, failures));
        }
    }
    let (detect, failures) = lost.expect("primary declared lost");
    assert_eq!(failures, 2);
    assert_eq!(detect, Duration::from_secs(4), "two 2 s keepalive timeouts");
    assert!(t - t0 <= policy(2).detection_budget().unwrap());
    e.handle_response(t, ok(&to_backup.unwrap(), Some(600)));
    let evs: Vec<_> = std::iter::from_fn(|| e.poll_event()).collect();
    assert!(
        evs.iter()
            .any(|ev| matches!(ev, Event::FailedOver { from: 0, to: 1, .. })),
        "{evs:?}"
    );
    assert_eq!(e.registered_with(t), Some(1));
    // Within a probe interval, the primary is probed; it answers, we move back and
    // unregister from the backup.
    let mut probe = None;
    for _ in 0..20 {
        t = e.poll_timeout().unwrap();
        e.handle_timeout(t);
        for (r, m) in sent(&mut e) {
            if r == 0 && m.method() == Some(Method::Options) {
                probe = Some(m);
            } else if r == 1 && m.method() == Some(Method::Options) {
                // Keepalives to the backup are answered.
                e.handle_response(t, ok(&m, None));
            }
        }
        if probe.is_some() {
            break;
        }
    }
    e.handle_response(t, ok(&probe.unwrap(), None));
    let (r, reg0) = sent(&mut e).pop().unwrap();
    assert_eq!((r, reg0.method()), (0, Some(Method::Register)));
    e.handle_response(t, ok(&reg0, Some(600)));
    let out = sent(&mut e);
    assert!(
        out.iter()
            .any(|(r, m)| *r == 1 && m.header("Expires") == Some("0")),
        "Expires: 0 to the backup"
    );
    assert_eq!(e.registered_with(t), Some(0));
    assert!(
        std::iter::from_fn(|| e.poll_event())
            .any(|ev| matches!(ev, Event::FellBack { from: 1, to: 0, .. }))
    );
}

#[test]
fn a_challenge_is_answered_once_and_a_second_refusal_is_reported() {
    let t0 = Instant::now();
    let mut e = Endpoint::new(
        policy(1),
        Identity {
            user: "bob".into(),
            auth: Some(("bob".into(), Zeroizing::new("pw".into()))),
        },
        t0,
        t0,
        0.0,
    );
    e.handle_timeout(t0);
    let (_, mut req) = sent(&mut e).pop().unwrap();
    // The first challenge is answered, and so is a new nonce (the registrar restarted and
    // forgot ours)...
    for nonce in ["n1", "n2"] {
        let mut c = Message::response_to(&req, 401, "Unauthorized", Some("x"));
        c.push(
            "WWW-Authenticate",
            format!("Digest realm=\"r\", nonce=\"{nonce}\""),
        );
        e.handle_response(t0, c);
        req = sent(&mut e).pop().unwrap().1;
        let auth = req.header("Authorization").unwrap();
        assert!(
            auth.contains("username=\"bob\"") && auth.contains(nonce),
            "{auth}"
        );
    }
    // ...but a refusal of the nonce we just answered means the credentials are wrong.
    let mut c = Message::response_to(&req, 401, "Unauthorized", Some("x"));
    c.push("WWW-Authenticate", "Digest realm=\"r\", nonce=\"n2\"");
    e.handle_response(t0, c);
    assert!(matches!(
        e.poll_event(),
        Some(Event::Rejected { code: 401, .. })
    ));
    assert!(sent(&mut e).is_empty());
    assert_eq!(
        format!("{:?}", e.id).find("pw"),
        None,
        "no password in Debug"
    );
}

#[test]
fn aligned_lands_on_the_phase() {
    let t0 = Instant::now();
    let p = Duration::from_secs(100);
    let a = aligned(t0, 0.25, p, t0 + Duration::from_secs(30));
    assert_eq!(a, t0 + Duration::from_secs(125));
    let a = aligned(t0, 0.25, p, t0 + Duration::from_secs(10));
    assert_eq!(a, t0 + Duration::from_secs(25));
}
