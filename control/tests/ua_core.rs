//! Two sans-IO user-agent cores and scripted proxies in simulated time: no sockets, no clock,
//! no engine. A little network carries each core's transmits to the element at the address;
//! proxies forward as RFC 3261 16 asks (Via, Record-Route with or without `lr`, loose and
//! strict routing), and media requests are answered by a fake engine that records them.
//!
//! What a real proxy taught us (issue 23): a caller that ignores Record-Route sends its ACK
//! and BYE to the wrong place, and the call through the proxy cannot hang up.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use srtp_control::media::{Allocation, StreamRef};
use srtp_control::sdp::{Direction, KeyMethod};
use srtp_control::sip::message::{Header, Message, Method, StartLine};
use srtp_control::sip::transport::{Flow, Protocol};
use srtp_control::sip::uri::{NameAddr, Uri};
use srtp_control::ua::core::{Command, Destination, MediaDone, MediaOp, Payload, UaCore, UaEvent};
use srtp_control::ua::{EndedBy, UaConfig, UasEvent};
use srtp_engine::model::{LegStats, Mode, StreamStats};

const ALICE: &str = "127.0.0.1:5001";
const BOB: &str = "127.0.0.2:5002";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A proxy's script.
#[derive(Clone)]
struct Proxy {
    at: SocketAddr,
    /// Record-Route values to add (several: a double record-route on a transport change).
    record_route: Vec<String>,
    /// Where requests for the callee go (its registered contact).
    callee: SocketAddr,
    /// Every request that crossed it, as `METHOD uri` with its Route headers.
    seen: Vec<String>,
}

impl Proxy {
    fn new(at: &str, record_route: &[&str]) -> Proxy {
        Proxy {
            at: addr(at),
            record_route: record_route.iter().map(|s| s.to_string()).collect(),
            callee: addr(BOB),
            seen: Vec::new(),
        }
    }

    fn is_me(&self, u: &Uri) -> bool {
        u.socket_addr() == Some(self.at)
            || self
                .record_route
                .iter()
                .any(|r| NameAddr::parse(r).unwrap().uri.socket_addr() == u.socket_addr())
    }

    /// RFC 3261 16.4-16.6 and 16.12, stateless: strict-route fix-up, loose-route pop, Via,
    /// Record-Route on dialog-forming INVITEs, forward. Responses lose our Via.
    fn forward(&mut self, from: SocketAddr, mut m: Message) -> Option<(SocketAddr, Message)> {
        if !m.is_request() {
            let mut vias: Vec<String> = m.header_values("Via").map(str::to_owned).collect();
            vias.remove(0);
            m.remove("Via");
            insert_front(&mut m, "Via", &vias);
            let v = m.top_via().ok()?;
            let next = format!("{}:{}", v.host, v.port.unwrap_or(5060))
                .parse()
                .ok()?;
            return Some((next, m));
        }
        let StartLine::Request { method, uri } = m.start.clone() else {
            return None;
        };
        let mut routes: Vec<String> = m.header_values("Route").map(str::to_owned).collect();
        let mut uri = uri;
        if self.is_me(&uri) && !routes.is_empty() {
            // A strict router's request (16.4): the last Route is the real target.
            let last = routes.pop().unwrap();
            uri = NameAddr::parse(&last).unwrap().uri;
        }
        while routes
            .first()
            .is_some_and(|r| self.is_me(&NameAddr::parse(r).unwrap().uri))
        {
            routes.remove(0);
        }
        self.seen.push(format!(
            "{method} {uri} [{}] from {from}",
            routes.join(", ")
        ));
        m.remove("Route");
        for r in &routes {
            m.push("Route", r.clone());
        }
        m.start = StartLine::Request {
            method: method.clone(),
            uri: uri.clone(),
        };
        let mut vias: Vec<String> = m.header_values("Via").map(str::to_owned).collect();
        vias.insert(
            0,
            format!(
                "SIP/2.0/UDP {};branch=z9hG4bK{}",
                self.at,
                srtp_control::sip::token()
            ),
        );
        m.remove("Via");
        insert_front(&mut m, "Via", &vias);
        if method == Method::Invite && m.to().ok()?.tag().is_none() {
            let mut rr: Vec<String> = m.header_values("Record-Route").map(str::to_owned).collect();
            for (i, r) in self.record_route.iter().enumerate() {
                rr.insert(i, r.clone());
            }
            m.remove("Record-Route");
            insert_front(&mut m, "Record-Route", &rr);
        }
        let next = match routes.first() {
            Some(r) => NameAddr::parse(r).unwrap().uri.socket_addr()?,
            None if uri.user.as_deref() == Some("bob") && uri.host == "example.org" => self.callee,
            None => uri.socket_addr()?,
        };
        Some((next, m))
    }
}

fn insert_front(m: &mut Message, name: &'static str, values: &[String]) {
    for v in values.iter().rev() {
        m.headers.insert(
            0,
            Header {
                name: Cow::Borrowed(name),
                value: v.clone(),
            },
        );
    }
}

/// The fake engine's record of what it was asked.
#[derive(Default)]
struct FakeEngine {
    next: u64,
    ops: Vec<String>,
    /// Fail every request about an existing stream (an engine that restarted).
    restarted: bool,
}

/// A stream's statistics with one leg that received `packets_in` packets.
fn stats(id: u64, packets_in: u64) -> StreamStats {
    StreamStats {
        id,
        mode: Mode::SendRecv,
        paused: false,
        generated: 0,
        pacing_skips: 0,
        legs: vec![LegStats {
            packets_in,
            ..LegStats::default()
        }],
    }
}

impl FakeEngine {
    fn answer(
        &mut self,
        who: &str,
        op: MediaOp,
    ) -> Result<MediaDone, srtp_control::media::MediaError> {
        let stream_op = !matches!(op, MediaOp::Prepare | MediaOp::Open { .. });
        if self.restarted && stream_op {
            self.ops.push(format!("{who} refused"));
            return Err(srtp_control::media::MediaError::EngineRestarted);
        }
        Ok(match op {
            MediaOp::Prepare | MediaOp::Open { .. } => {
                self.next += 1;
                self.ops.push(format!(
                    "{who} {}",
                    if matches!(op, MediaOp::Prepare) {
                        "prepare"
                    } else {
                        match op {
                            MediaOp::Open { held: true, .. } => "open held",
                            _ => "open",
                        }
                    }
                ));
                MediaDone::Allocated(Allocation {
                    stream: StreamRef {
                        id: self.next,
                        generation: 0,
                    },
                    rtp: format!("127.0.0.9:{}", 30000 + 2 * self.next)
                        .parse()
                        .unwrap(),
                    rtcp: Some(
                        format!("127.0.0.9:{}", 30001 + 2 * self.next)
                            .parse()
                            .unwrap(),
                    ),
                    fingerprint: None,
                })
            }
            MediaOp::Apply { stream, n, prev } => {
                let u = srtp_control::media::engine_update(
                    stream.id,
                    &n,
                    prev.as_deref(),
                    Some(srtp_control::media::engine_mode(n.direction)),
                );
                // The fields the update sets, as the engine reads them.
                let u = serde_json::to_value(&u).unwrap();
                let keys: Vec<&String> = u
                    .as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| !matches!(k.as_str(), "stream" | "leg"))
                    .collect();
                self.ops.push(format!(
                    "{who} apply {} {keys:?} mode={}",
                    stream.id,
                    u["mode"].as_str().unwrap_or("-")
                ));
                MediaDone::Applied
            }
            MediaOp::Sending(s, on) => {
                let what = if on { "send" } else { "stop" };
                self.ops.push(format!("{who} {what} {}", s.id));
                MediaDone::Applied
            }
            MediaOp::Stats(s) => MediaDone::Stats(Some(stats(s.id, 0))),
            MediaOp::Close(s) => {
                self.ops.push(format!("{who} close {}", s.id));
                MediaDone::Stats(Some(stats(s.id, 7)))
            }
        })
    }
}

/// Two cores, some proxies, a clock.
struct Net {
    now: Instant,
    alice: UaCore,
    bob: UaCore,
    proxies: Vec<Proxy>,
    engine: FakeEngine,
    /// Datagrams in flight: (to, from, message).
    wire: VecDeque<(SocketAddr, SocketAddr, Message)>,
    alice_events: Vec<UaEvent>,
    bob_events: Vec<UaEvent>,
    /// Drop every ACK that reaches bob (a broken proxy).
    drop_acks_to_bob: bool,
    /// Messages that reached no one.
    lost: Vec<String>,
    /// Every message delivered to bob, by summary.
    to_bob: Vec<String>,
}

impl Net {
    fn new(bob_cfg: impl FnOnce(&mut UaConfig), proxies: Vec<Proxy>) -> Net {
        let now = Instant::now();
        let alice = UaCore::new(
            UaConfig::new("alice", Protocol::Udp, addr(ALICE)),
            addr(ALICE),
            now,
        );
        let mut cfg = UaConfig::new("bob", Protocol::Udp, addr(BOB));
        bob_cfg(&mut cfg);
        let bob = UaCore::new(cfg, addr(BOB), now);
        Net {
            now,
            alice,
            bob,
            proxies,
            engine: FakeEngine::default(),
            wire: VecDeque::new(),
            alice_events: Vec::new(),
            bob_events: Vec::new(),
            drop_acks_to_bob: false,
            lost: Vec::new(),
            to_bob: Vec::new(),
        }
    }

    fn core(&mut self, at: SocketAddr) -> Option<(&mut UaCore, &'static str)> {
        if at == addr(ALICE) {
            Some((&mut self.alice, "alice"))
        } else if at == addr(BOB) {
            Some((&mut self.bob, "bob"))
        } else {
            None
        }
    }

    /// Moves everything until nothing is left to move.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for at in [addr(ALICE), addr(BOB)] {
                let (core, who) = self.core(at).unwrap();
                let mut out = Vec::new();
                while let Some(t) = core.poll_transmit() {
                    out.push(t);
                }
                let mut media = Vec::new();
                while let Some(m) = core.poll_media() {
                    media.push(m);
                }
                let mut events = Vec::new();
                while let Some(e) = core.poll_event() {
                    events.push(e);
                }
                moved |= !out.is_empty() || !media.is_empty() || !events.is_empty();
                for t in out {
                    let to = match t.to {
                        Destination::Flow(f) => f.peer(),
                        Destination::Hop { addr, .. } => addr,
                    };
                    if let Payload::Sip(m) = t.payload {
                        self.wire.push_back((to, at, m));
                    }
                }
                for m in media {
                    let r = self.engine.answer(who, m.op);
                    let now = self.now;
                    self.core(at).unwrap().0.handle_media(now, m.id, r);
                }
                if at == addr(ALICE) {
                    self.alice_events.extend(events);
                } else {
                    self.bob_events.extend(events);
                }
            }
            while let Some((to, from, m)) = self.wire.pop_front() {
                moved = true;
                let now = self.now;
                if to == addr(BOB) {
                    if self.drop_acks_to_bob && m.method() == Some(Method::Ack) && m.is_request() {
                        continue;
                    }
                    self.to_bob.push(m.summary());
                }
                if let Some((core, _)) = self.core(to) {
                    core.handle_message(now, m, Flow::Udp(from));
                } else if let Some(p) = self.proxies.iter_mut().find(|p| {
                    p.at == to
                        || p.record_route
                            .iter()
                            .any(|r| NameAddr::parse(r).unwrap().uri.socket_addr() == Some(to))
                }) {
                    let at = p.at;
                    if let Some((next, fwd)) = p.forward(from, m) {
                        self.wire.push_back((next, at, fwd));
                    }
                } else {
                    self.lost.push(format!("{to}: {}", m.summary()));
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the network never settled");
    }

    /// Advances the clock, firing timers on the way.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            let next = [self.alice.poll_timeout(), self.bob.poll_timeout()]
                .into_iter()
                .flatten()
                .filter(|t| *t <= end)
                .min();
            let Some(t) = next else { break };
            self.now = t.max(self.now);
            let now = self.now;
            self.alice.handle_timeout(now);
            self.bob.handle_timeout(now);
            self.settle();
        }
        self.now = end;
    }

    fn call(&mut self, first_hop: &str, delayed_offer: bool) -> String {
        let id = format!("call-{}", srtp_control::sip::token());
        let now = self.now;
        self.alice.handle_command(
            now,
            Command::Call {
                call_id: id.clone(),
                target: Uri::parse("sip:bob@example.org").unwrap(),
                next_hop: addr(first_hop),
                delayed_offer,
            },
        );
        self.settle();
        id
    }

    fn connected(&self, id: &str) -> bool {
        self.alice_events
            .iter()
            .any(|e| matches!(e, UaEvent::Connected(i) if i.call_id == id))
    }

    fn hangup(&mut self, who: &str, id: &str) {
        let now = self.now;
        let core = if who == "alice" {
            &mut self.alice
        } else {
            &mut self.bob
        };
        core.handle_command(
            now,
            Command::Hangup {
                call_id: id.to_owned(),
            },
        );
        self.settle();
    }

    /// Our hangup's end, as the caller (alice) saw it.
    fn alice_ended(&self, id: &str) -> Option<&srtp_control::ua::Ended> {
        self.alice_events.iter().find_map(|e| match e {
            UaEvent::Ended(x) if x.call_id == id => Some(&**x),
            _ => None,
        })
    }

    fn bob_ended(&self, id: &str) -> Option<(EndedBy, bool)> {
        self.bob_events.iter().find_map(|e| match e {
            UaEvent::Uas(UasEvent::Ended {
                call_id, by, bye, ..
            }) if call_id == id => Some((by.clone(), matches!(bye, Some(Ok(()))))),
            _ => None,
        })
    }
}

#[test]
fn a_direct_call_sets_up_and_hangs_up() {
    let mut net = Net::new(|_| {}, vec![]);
    let id = net.call(BOB, false);
    assert!(net.connected(&id), "{:?}", net.alice_events);
    net.hangup("alice", &id);
    let e = net.alice_ended(&id).expect("alice's hangup ended");
    assert!(matches!(e.bye, Some(Ok(()))), "BYE answered 200: {e:?}");
    assert_eq!(
        e.stats.as_ref().map(|s| s.legs[0].packets_in),
        Some(7),
        "final stats come back"
    );
    assert_eq!(net.bob_ended(&id), Some((EndedBy::Peer, false)));
    assert!(net.lost.is_empty(), "{:?}", net.lost);
    // The engine was asked in order: prepare, open held, the answer applied, bob's media
    // started by the ACK, stop before BYE, close.
    let ops = net.engine.ops.join("\n");
    assert!(
        ops.starts_with("alice prepare\nbob open held\nalice apply 1 ")
            && ops.contains("\nbob send 2\nalice stop 1\n"),
        "{ops}"
    );
    assert!(ops.contains("alice stop 1\n"), "{ops}");
    assert_eq!(net.alice.calls() + net.bob.calls(), 0);
}

/// The caller hangs up through a record-routing loose router: the ACK and the BYE carry the
/// Route and go to the proxy; the callee's own BYE goes back through it too.
#[test]
fn calls_through_a_loose_router_hang_up_both_ways() {
    let p = Proxy::new("127.0.0.3:5060", &["<sip:127.0.0.3:5060;lr;ftag=x;did=7a>"]);
    let mut net = Net::new(|_| {}, vec![p]);
    let id = net.call("127.0.0.3:5060", false);
    assert!(
        net.connected(&id),
        "{:?} lost {:?}",
        net.alice_events,
        net.lost
    );
    let seen = net.proxies[0].seen.clone();
    assert!(
        seen.iter()
            .any(|s| s.starts_with("ACK sip:bob@127.0.0.2:5002")),
        "the ACK went through the proxy to bob's Contact: {seen:?}"
    );
    assert!(
        net.to_bob.iter().any(|s| s.starts_with("ACK")),
        "{:?}",
        net.to_bob
    );
    net.hangup("alice", &id);
    let seen = net.proxies[0].seen.clone();
    assert!(
        seen.iter()
            .any(|s| s.starts_with("BYE sip:bob@127.0.0.2:5002 []")),
        "{seen:?}"
    );
    assert!(matches!(net.alice_ended(&id).unwrap().bye, Some(Ok(()))));
    assert!(net.lost.is_empty(), "{:?}", net.lost);

    // Now bob hangs up.
    let id = net.call("127.0.0.3:5060", false);
    assert!(net.connected(&id));
    let bob_bye_count = net.proxies[0]
        .seen
        .iter()
        .filter(|s| s.starts_with("BYE sip:alice"))
        .count();
    net.hangup("bob", &id);
    let seen = &net.proxies[0].seen;
    assert_eq!(
        seen.iter()
            .filter(|s| s.starts_with("BYE sip:alice@127.0.0.1:5001"))
            .count(),
        bob_bye_count + 1,
        "bob's BYE went back through the proxy: {seen:?}"
    );
    assert_eq!(net.bob_ended(&id), Some((EndedBy::Hangup, true)));
}

/// RFC 2543 strict router (no `lr`): the BYE's Request-URI is the proxy, the callee's
/// Contact travels as the last Route; the proxy puts it back.
#[test]
fn a_strict_router_gets_the_request_uri_rewrite() {
    let p = Proxy::new("127.0.0.3:5060", &["<sip:127.0.0.3:5060>"]);
    let mut net = Net::new(|_| {}, vec![p]);
    let id = net.call("127.0.0.3:5060", false);
    assert!(
        net.connected(&id),
        "{:?} lost {:?}",
        net.alice_events,
        net.lost
    );
    net.hangup("alice", &id);
    assert!(matches!(net.alice_ended(&id).unwrap().bye, Some(Ok(()))));
    assert!(
        net.proxies[0]
            .seen
            .iter()
            .any(|s| s.starts_with("BYE sip:bob@127.0.0.2:5002")),
        "{:?}",
        net.proxies[0].seen
    );
    assert!(net.lost.is_empty(), "{:?}", net.lost);
}

/// Two proxies; the second record-routes twice (its two interfaces, as a proxy that changes
/// transport between hops does with `r2=on`). Both ends' BYEs cross both proxies.
#[test]
fn two_proxies_and_a_double_record_route() {
    let p1 = Proxy {
        callee: addr("127.0.0.4:5060"),
        ..Proxy::new("127.0.0.3:5060", &["<sip:127.0.0.3:5060;lr>"])
    };
    let p2 = Proxy::new(
        "127.0.0.4:5060",
        &[
            "<sip:127.0.0.5:5070;transport=tcp;lr;r2=on>",
            "<sip:127.0.0.4:5060;lr;r2=on>",
        ],
    );
    let mut net = Net::new(|_| {}, vec![p1, p2]);
    let id = net.call("127.0.0.3:5060", false);
    assert!(
        net.connected(&id),
        "{:?} lost {:?}",
        net.alice_events,
        net.lost
    );
    net.hangup("bob", &id);
    assert_eq!(net.bob_ended(&id), Some((EndedBy::Hangup, true)));
    let id = net.call("127.0.0.3:5060", false);
    net.hangup("alice", &id);
    assert!(matches!(net.alice_ended(&id).unwrap().bye, Some(Ok(()))));
    // Each BYE visits the proxies in path order: bob's reaches the second proxy first,
    // alice's the first (the caller's route set is the Record-Route reversed).
    let byes = |p: &Proxy| -> Vec<String> {
        p.seen
            .iter()
            .filter(|s| s.starts_with("BYE"))
            .map(|s| s.rsplit(" from ").next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        byes(&net.proxies[0]),
        vec!["127.0.0.4:5060", ALICE],
        "{:?}",
        net.proxies[0].seen
    );
    assert_eq!(
        byes(&net.proxies[1]),
        vec![BOB, "127.0.0.3:5060"],
        "{:?}",
        net.proxies[1].seen
    );
    assert!(net.lost.is_empty(), "{:?}", net.lost);
}

/// A delayed offer each way: the INVITE has no SDP, the offer comes in the 200 and the answer
/// in the ACK; media starts when the ACK's answer is applied.
#[test]
fn delayed_offers_both_ways() {
    // Our caller sends the INVITE without SDP.
    let mut net = Net::new(|_| {}, vec![]);
    let id = net.call(BOB, true);
    assert!(net.connected(&id), "{:?}", net.bob_events);
    let ops = net.engine.ops.join("\n");
    // Bob offered (prepare), alice answered with a stream opened from bob's offer; bob's
    // stream got the answer from the ACK.
    assert!(
        ops.starts_with("bob prepare\nalice open\nbob apply 1"),
        "{ops}"
    );
    assert!(
        net.bob_events
            .iter()
            .any(|e| matches!(e, UaEvent::Uas(UasEvent::Answered(_)))),
        "bob reports it answered once the ACK came"
    );
    net.hangup("alice", &id);
    assert!(matches!(net.alice_ended(&id).unwrap().bye, Some(Ok(()))));
}

/// An ACK that never reaches the answerer (the proxy bug of issue 23): after 64*T1 the
/// answerer stops its media and ends the call with BYE, instead of sending forever.
#[test]
fn no_ack_ends_the_call_and_its_media() {
    let mut net = Net::new(|_| {}, vec![]);
    net.drop_acks_to_bob = true;
    let id = net.call(BOB, false);
    assert!(net.connected(&id));
    net.advance(Duration::from_secs(33));
    assert_eq!(net.bob_ended(&id).map(|e| e.0), Some(EndedBy::NoAck));
    let ops = net.engine.ops.join("\n");
    assert!(
        ops.contains("bob open held") && ops.contains("bob close 2"),
        "{ops}"
    );
    assert!(
        !ops.contains("bob send 2"),
        "media started without an ACK: {ops}"
    );
}

/// A re-INVITE from the peer, built by hand from the dialog alice holds.
fn reinvite(net: &mut Net, id: &str, dir: Direction, cseq: u32, plain: bool) {
    let d = net.alice.dialog(id).expect("alice's dialog").clone();
    let mut m = Message::request(
        Method::Invite,
        Uri::parse("sip:alice@127.0.0.1:5001").unwrap(),
    );
    m.push(
        "Via",
        format!(
            "SIP/2.0/UDP {BOB};branch=z9hG4bK{}",
            srtp_control::sip::token()
        ),
    )
    .push("Max-Forwards", "70")
    .push("From", d.remote_uri.to_string())
    .push("To", d.local_uri.to_string())
    .push("Call-ID", id.to_owned())
    .push("CSeq", format!("{cseq} INVITE"))
    .push("Contact", format!("<sip:bob@{BOB}>"));
    let proto = if plain { "RTP/AVP" } else { "RTP/SAVP" };
    let crypto = if plain {
        ""
    } else {
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
    };
    let sdp = format!(
        "v=0\r\no=- 1 {cseq} IN IP4 127.0.0.9\r\ns=-\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\nm=audio 30004 {proto} 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n{crypto}a={}\r\n",
        dir.as_str()
    );
    m.set_body("application/sdp", sdp.into_bytes());
    let now = net.now;
    net.alice.handle_message(now, m, Flow::Udp(addr(BOB)));
    net.settle();
}

/// Hold and resume from the peer (a=sendonly, then a=sendrecv) are applied to our stream
/// (engine mode recv, then sendrecv) and answered 200 with the matching direction; an offer
/// our policy refuses (plain RTP while SRTP is required) gets 488 and changes nothing.
#[test]
fn hold_and_resume_from_the_peer_reach_the_stream() {
    let mut net = Net::new(|_| {}, vec![]);
    let id = net.call(BOB, false);
    assert!(net.connected(&id));
    let before = net.engine.ops.len();
    reinvite(&mut net, &id, Direction::SendOnly, 5, true);
    assert!(
        net.to_bob.last().unwrap().starts_with("488"),
        "{:?}",
        net.to_bob
    );
    assert_eq!(
        net.engine.ops.len(),
        before,
        "a refused re-offer changes nothing"
    );

    reinvite(&mut net, &id, Direction::SendOnly, 6, false);
    let last = net.engine.ops.last().unwrap().clone();
    assert!(
        last.starts_with("alice apply 1") && last.ends_with("mode=recv"),
        "{last}"
    );
    assert!(last.contains("\"crypto\""), "the peer's new keys: {last}");
    assert!(
        net.to_bob.last().unwrap().starts_with("200 OK (INVITE)"),
        "{:?}",
        net.to_bob
    );
    let updated: Vec<&String> = net
        .alice_events
        .iter()
        .filter_map(|e| match e {
            UaEvent::Uas(UasEvent::Updated { change, .. }) => Some(change),
            _ => None,
        })
        .collect();
    assert!(updated[0].contains("on hold by the peer"), "{updated:?}");

    reinvite(&mut net, &id, Direction::SendRecv, 7, false);
    let last = net.engine.ops.last().unwrap().clone();
    assert!(
        last.ends_with("mode=sendrecv") && !last.contains("crypto"),
        "same keys kept: {last}"
    );
    // An older CSeq is out of order (RFC 3261 12.2.2).
    reinvite(&mut net, &id, Direction::SendRecv, 6, false);
    assert!(
        net.to_bob.last().unwrap().starts_with("500"),
        "{:?}",
        net.to_bob
    );
}

/// Stopping: every set-up call gets a BYE, the engine streams are closed, new INVITEs get
/// 503, and the core says Idle when nothing is left.
#[test]
fn shutdown_ends_every_call() {
    let mut net = Net::new(|_| {}, vec![]);
    let a = net.call(BOB, false);
    let b = net.call(BOB, false);
    assert!(net.connected(&a) && net.connected(&b));
    let now = net.now;
    net.bob.handle_command(now, Command::Shutdown);
    net.settle();
    for id in [&a, &b] {
        assert_eq!(net.bob_ended(id), Some((EndedBy::Shutdown, true)), "{id}");
    }
    assert!(net.bob_events.iter().any(|e| matches!(e, UaEvent::Idle)));
    let closes = net
        .engine
        .ops
        .iter()
        .filter(|o| o.starts_with("bob close"))
        .count();
    assert_eq!(closes, 2, "{:?}", net.engine.ops);
    let c = net.call(BOB, false);
    let failed = net.alice_events.iter().any(|e| {
        matches!(e, UaEvent::CallFailed { call_id, error } if *call_id == c && error.to_string().contains("503"))
    });
    assert!(failed, "{:?}", net.alice_events);
}

/// The engine restarted under a live call: the next request about its stream fails, and a
/// re-offer is refused with 500 and the call ended, rather than answered with stale media.
#[test]
fn a_restarted_engine_ends_the_calls_it_lost() {
    let mut net = Net::new(|c| c.security.method = KeyMethod::Sdes, vec![]);
    let id = net.call(BOB, false);
    assert!(net.connected(&id));
    net.engine.restarted = true;
    net.hangup("alice", &id);
    let e = net.alice_ended(&id).unwrap();
    assert!(matches!(e.bye, Some(Ok(()))), "the BYE still goes: {e:?}");
    assert!(e.stats.is_none(), "no stats from a stream that is gone");
}

/// UPDATE (RFC 3311) with an offer inside a confirmed dialog: applied to the stream like a
/// re-INVITE and answered in its 200; without a body it is a refresh answered 200 with no SDP.
#[test]
fn update_with_an_offer_reaches_the_stream() {
    let mut net = Net::new(|_| {}, vec![]);
    let id = net.call(BOB, false);
    assert!(net.connected(&id));
    let d = net.alice.dialog(&id).expect("alice's dialog").clone();
    let update = |cseq: u32, sdp: Option<String>, net: &mut Net| {
        let mut m = Message::request(
            Method::Update,
            Uri::parse("sip:alice@127.0.0.1:5001").unwrap(),
        );
        m.push(
            "Via",
            format!(
                "SIP/2.0/UDP {BOB};branch=z9hG4bK{}",
                srtp_control::sip::token()
            ),
        )
        .push("Max-Forwards", "70")
        .push("From", d.remote_uri.to_string())
        .push("To", d.local_uri.to_string())
        .push("Call-ID", id.clone())
        .push("CSeq", format!("{cseq} UPDATE"));
        if let Some(b) = sdp {
            m.set_body("application/sdp", b.into_bytes());
        }
        let now = net.now;
        net.alice.handle_message(now, m, Flow::Udp(addr(BOB)));
        net.settle();
    };
    let before = net.engine.ops.len();
    update(9, None, &mut net);
    assert!(
        net.to_bob.last().unwrap().starts_with("200 OK (UPDATE)"),
        "{:?}",
        net.to_bob
    );
    assert_eq!(net.engine.ops.len(), before, "a refresh changes nothing");
    // A new codec (PCMA) and new keys, inactive.
    let sdp = "v=0\r\no=- 1 9 IN IP4 127.0.0.9\r\ns=-\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\nm=audio 30004 RTP/SAVP 8\r\na=rtpmap:8 PCMA/8000\r\na=rtcp-mux\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\na=inactive\r\n";
    update(10, Some(sdp.into()), &mut net);
    let last = net.engine.ops.last().unwrap().clone();
    assert!(last.starts_with("alice apply 1"), "{last}");
    assert!(
        last.contains("\"codec\"") && last.contains("\"crypto\""),
        "{last}"
    );
    assert!(
        last.ends_with("mode=recv"),
        "inactive: we send nothing: {last}"
    );
    assert!(
        net.to_bob.last().unwrap().starts_with("200 OK (UPDATE)"),
        "{:?}",
        net.to_bob
    );
}
