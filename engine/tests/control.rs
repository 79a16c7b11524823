//! The control socket over a real Unix socket: every command, every error code, events, a
//! storm of hostile lines, and batch creation; and the Prometheus endpoint scraped over HTTP,
//! checked by Prometheus's own `promtool`. Media runs over real loopback sockets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use srtp_engine::ctl::client::CtlClient;
use srtp_engine::ctl::protocol::COMMANDS;
use srtp_engine::ctl::protocol::ErrorCode;
use srtp_engine::ctl::{CtlOptions, CtlServer};
use srtp_engine::metrics::{METRICS, MetricsServer};
use srtp_engine::model::Event;
use srtp_engine::proto::rtp::write_header;
use srtp_engine::proto::srtp::{MasterKey, SrtpOutbound, SrtpPolicy, Suite};
use srtp_engine::runtime::MediaOptions;
use srtp_engine::runtime::{Engine, EngineOptions};

const SUITE: &str = "AES_CM_128_HMAC_SHA1_80";

struct Node {
    engine: Arc<Engine>,
    ctl: Option<CtlServer>,
    path: PathBuf,
}

impl Node {
    fn client(&self) -> CtlClient {
        CtlClient::connect(&self.path).expect("connects")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = self.ctl.take() {
            c.stop();
        }
        self.engine.shutdown();
    }
}

fn node(
    name: &str,
    ports: (u16, u16),
    tweak: impl FnOnce(&mut EngineOptions, &mut CtlOptions),
) -> Node {
    let mut opts = EngineOptions {
        workers: 2,
        pin: false,
        media: MediaOptions {
            port_min: ports.0,
            port_max: ports.1,
            ..MediaOptions::default()
        },
        ..EngineOptions::default()
    };
    let path =
        std::env::temp_dir().join(format!("srtp-ctl-test-{}-{name}.sock", std::process::id()));
    let mut ctl = CtlOptions {
        path: path.clone(),
        ..CtlOptions::default()
    };
    tweak(&mut opts, &mut ctl);
    let engine = Arc::new(Engine::start(opts).expect("engine starts"));
    let server = CtlServer::start(engine.clone(), ctl).expect("control socket opens");
    Node {
        engine,
        ctl: Some(server),
        path,
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn key(n: u8) -> Vec<u8> {
    (0..30u8).map(|i| i.wrapping_mul(7) ^ n).collect()
}

fn sdes(tx: u8, rx: u8) -> Value {
    json!({
        "type": "sdes",
        "tx": {"suite": SUITE, "keys": [{"key": b64(&key(tx))}]},
        "rx": {"suite": SUITE, "keys": [{"key": b64(&key(rx))}]},
    })
}

fn local_of(created: &Value) -> SocketAddr {
    created["legs"][0]["local"]
        .as_str()
        .expect("a local address")
        .parse()
        .unwrap()
}

fn code(r: Result<Value, srtp_engine::ctl::client::ClientError>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e.code().expect("an error reply").to_string(),
    }
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        sleep(Duration::from_millis(25));
    }
    f()
}

/// An echo stream on `a` and a sendrecv endpoint on `b` aimed at it, both made over the
/// control socket; returns (echo id, endpoint id).
fn echo_pair(a: &mut CtlClient, b: &mut CtlClient) -> (u64, u64) {
    let echo = a
        .request_json(
            "create",
            json!({"mode": "echo", "legs": [{"rtcp_mux": true, "crypto": sdes(2, 1)}]}),
        )
        .unwrap();
    let end = b
        .request_json(
            "create",
            json!({
                "mode": "sendrecv",
                "codec": {"name": "pcmu", "ptime_ms": 10},
                "rtcp_interval_ms": 300,
                "legs": [{"remote": local_of(&echo).to_string(), "rtcp_mux": true, "crypto": sdes(1, 2)}],
            }),
        )
        .unwrap();
    (echo["id"].as_u64().unwrap(), end["id"].as_u64().unwrap())
}

/// Pauses the endpoint, lets the last echoes land, and checks that every packet came back.
fn assert_all_echoed(b: &mut CtlClient, end: u64) -> u64 {
    b.request_json("update", json!({"stream": end, "paused": true}))
        .unwrap();
    sleep(Duration::from_millis(300));
    let s = b.request_json("stats", json!({"stream": end})).unwrap();
    let l = &s["legs"][0];
    let out = l["packets_out"].as_u64().unwrap();
    assert!(out >= 50, "endpoint sent {out}");
    assert_eq!(
        l["packets_in"].as_u64().unwrap(),
        out,
        "every packet echoed: {s}"
    );
    assert_eq!(l["lost"].as_i64().unwrap(), 0);
    assert_eq!(l["auth_failures"].as_u64().unwrap(), 0);
    out
}

#[test]
fn every_command_over_the_socket() {
    let a = node("cmd-a", (30_000, 30_199), |_, _| {});
    let b = node("cmd-b", (30_200, 30_399), |_, _| {});
    let (mut ca, mut cb) = (a.client(), b.client());
    let mut replies = Vec::new();

    let hello = ca.request_json("hello", Value::Null).unwrap();
    assert_eq!(hello["protocol"], 1);
    let caps = &hello["capabilities"];
    assert_eq!(caps["suites"].as_array().unwrap().len(), Suite::ALL.len());
    assert_eq!(caps["workers"], 2);
    assert_eq!(caps["dtls"], true);
    assert!(
        caps["dtls_fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("sha-256 ") && f.len() == 8 + 32 * 3 - 1),
        "{caps}"
    );
    assert!(matches!(
        caps["backend"].as_str(),
        Some("io_uring" | "epoll")
    ));
    assert_eq!(caps["events"].as_array().unwrap().len(), Event::NAMES.len());

    let (echo, end) = echo_pair(&mut ca, &mut cb);
    sleep(Duration::from_millis(1200));
    let sent = assert_all_echoed(&mut cb, end);

    let s = ca.request_json("stats", json!({"stream": echo})).unwrap();
    assert_eq!(s["legs"][0]["packets_in"].as_u64().unwrap(), sent);
    assert_eq!(s["legs"][0]["rx_suite"], SUITE);
    replies.push(s.to_string());

    let list = ca.request_json("streams", json!({})).unwrap();
    assert_eq!(list["total"], 1);
    assert_eq!(list["streams"][0]["id"], echo);
    replies.push(list.to_string());

    assert!(wait_until(Duration::from_secs(2), || {
        let st = ca.request_json("engine_stats", Value::Null).unwrap();
        st["packets_in"][SUITE].as_u64().unwrap() >= sent && st["streams"]["echo"] == 1
    }));
    let st = ca.request_json("engine_stats", Value::Null).unwrap();
    assert_eq!(st["workers"].as_array().unwrap().len(), 2);
    assert!(st["control"]["requests"].as_u64().unwrap() >= 4);
    replies.push(st.to_string());

    // Update: resume, move the remote, rekey, change direction; and what cannot be done.
    cb.request_json("update", json!({"stream": end, "paused": false}))
        .unwrap();
    cb.request_json(
        "update",
        json!({"stream": end, "crypto": sdes(1, 2), "mode": "sendrecv"}),
    )
    .unwrap();
    ca.request_json(
        "update",
        json!({"stream": echo, "remote": "127.0.0.1:9", "leg": 0}),
    )
    .unwrap();
    assert_eq!(
        code(ca.request_json(
            "update",
            json!({"stream": echo, "leg": 3, "remote": "127.0.0.1:9"})
        )),
        "invalid_argument"
    );
    assert_eq!(
        code(ca.request_json("update", json!({"stream": echo, "mode": "send"}))),
        "invalid_argument"
    );

    // Batches: one bad request among good ones fails alone, with its index.
    let good = json!({"mode": "recv", "legs": [{"rtcp_mux": true}]});
    let bad = json!({"mode": "recv", "legs": [{"rtcp_mux": true, "crypto": {"type": "sdes",
        "tx": {"suite": "NOPE", "keys": [{"key": b64(&key(3))}]},
        "rx": {"suite": SUITE, "keys": [{"key": b64(&key(3))}]}}}]});
    let batch = ca
        .request_json(
            "create_batch",
            json!({"streams": [good.clone(), bad, good]}),
        )
        .unwrap();
    assert_eq!(batch["created"], 2);
    assert_eq!(batch["failed"], 1);
    assert_eq!(batch["streams"][1]["error"]["code"], "unknown_suite");
    assert!(
        batch["streams"][1]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("streams[1].legs[0].crypto.tx.suite")
    );
    let ids: Vec<u64> = [0, 2]
        .iter()
        .map(|&i| batch["streams"][i]["id"].as_u64().unwrap())
        .collect();
    replies.push(batch.to_string());
    let del = ca
        .request_json(
            "delete_batch",
            json!({"streams": [ids[0], ids[1], 999_999]}),
        )
        .unwrap();
    assert_eq!(del["deleted"], 2);
    assert_eq!(del["results"][2]["error"]["code"], "no_such_stream");

    // Delete returns the final statistics; a second delete finds nothing.
    let fin = ca.request_json("delete", json!({"stream": echo})).unwrap();
    assert!(fin["legs"][0]["packets_in"].as_u64().unwrap() >= sent);
    replies.push(fin.to_string());
    assert_eq!(
        code(ca.request_json("delete", json!({"stream": echo}))),
        "no_such_stream"
    );
    assert_eq!(
        code(ca.request_json("stats", json!({"stream": echo}))),
        "no_such_stream"
    );
    ca.request_json("subscribe", json!({"events": ["media_silent"]}))
        .unwrap();
    ca.request_json("unsubscribe", json!({})).unwrap();

    // No reply carries key material.
    for k in [1u8, 2, 3] {
        let k64 = b64(&key(k));
        for r in &replies {
            assert!(!r.contains(&k64), "a key leaked into a reply");
        }
    }
}

#[test]
fn every_error_has_its_code_and_the_connection_stays_usable() {
    let n = node("err", (30_400, 30_403), |o, c| {
        o.workers = 1;
        c.max_batch = 3;
        c.max_line_bytes = 4096;
        c.max_connections = 3;
    });
    let mut c = n.client();
    let k = b64(&key(9));
    let sdes_with = |tx: Value| {
        json!({"mode": "echo", "legs": [{"rtcp_mux": true, "crypto": {"type": "sdes",
            "tx": tx, "rx": {"suite": SUITE, "keys": [{"key": k}]}}}]})
    };
    let cases: Vec<(&[u8], &str)> = vec![
        (b"{not json", "parse_error"),
        (b"[1,2]", "bad_request"),
        (br#"{"cmd":"hello"}"#, "bad_request"),
        (br#"{"id":1}"#, "bad_request"),
        (br#"{"id":{"a":1},"cmd":"hello"}"#, "bad_request"),
        (br#"{"id":1,"cmd":"hello","extra":true}"#, "bad_request"),
        (br#"{"id":1,"cmd":"create","mode":"echo","legs":[{"colour":"red"}]}"#, "bad_request"),
        (br#"{"id":1,"cmd":"stats","stream":"seven"}"#, "bad_request"),
        (br#"{"id":1,"cmd":"launch"}"#, "unknown_command"),
        (br#"{"id":1,"cmd":"create","mode":"relay","legs":[{}]}"#, "invalid_argument"),
        (br#"{"id":1,"cmd":"create","mode":"echo","legs":[{"socket":"shared"}]}"#, "invalid_argument"),
        (br#"{"id":1,"cmd":"create","mode":"send","legs":[{}],"codec":{"ptime_ms":5}}"#, "invalid_argument"),
        (br#"{"id":1,"cmd":"subscribe","events":["nope"]}"#, "invalid_argument"),
        (br#"{"id":1,"cmd":"create","mode":"echo","legs":[{"remote":"localhost:80"}]}"#, "bad_address"),
        (br#"{"id":1,"cmd":"create","mode":"echo","legs":[{"local_ip":"10.1.2.3"}]}"#, "unknown_local_ip"),
        (br#"{"id":1,"cmd":"delete","stream":12345}"#, "no_such_stream"),
        (br#"{"id":1,"cmd":"create","mode":"echo","legs":[{"crypto":{"type":"dtls","role":"client","fingerprint":"sha-256 AA"}}]}"#, "bad_fingerprint"),
        (br#"{"id":1,"cmd":"create","mode":"echo","legs":[{"crypto":{"type":"dtls","role":"client","fingerprint":"sha-1 00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00"}}]}"#, "invalid_argument"),
        (br#"{"id":1,"cmd":"delete_batch","streams":[1,2,3,4]}"#, "batch_too_large"),
    ];
    for (line, want) in cases {
        let reply = c.send_raw(line).unwrap();
        assert_eq!(reply["ok"], false, "{}", String::from_utf8_lossy(line));
        assert_eq!(
            reply["error"]["code"],
            want,
            "{} -> {reply}",
            String::from_utf8_lossy(line)
        );
        assert!(!reply["error"]["message"].as_str().unwrap().is_empty());
        assert_eq!(c.request_json("hello", Value::Null).unwrap()["protocol"], 1);
    }
    // Key problems: unknown suite, not base64, wrong length, bad MKI; the key never echoes.
    let short = b64(&[5u8; 20]);
    for (tx, want) in [
        (
            json!({"suite": "AES_CM_512", "keys": [{"key": k}]}),
            "unknown_suite",
        ),
        (
            json!({"suite": SUITE, "keys": [{"key": "%%%not-base64%%%"}]}),
            "bad_key",
        ),
        (
            json!({"suite": SUITE, "keys": [{"key": short}]}),
            "bad_key_length",
        ),
        (
            json!({"suite": SUITE, "keys": [{"key": k, "mki": 1}]}),
            "bad_key_params",
        ),
        (
            json!({"suite": SUITE, "keys": [{"key": k, "mki": 1, "mki_len": 9}]}),
            "bad_key_params",
        ),
        (
            json!({"suite": SUITE, "keys": [{"key": k, "lifetime": 0}]}),
            "bad_key_params",
        ),
        (
            json!({"suite": SUITE, "keys": [{"key": k}], "kdr": 3}),
            "bad_key_params",
        ),
        (
            json!({"suite": SUITE, "keys": [{"key": k}, {"key": k}]}),
            "bad_key_params",
        ),
        (json!({"suite": SUITE, "keys": 7}), "bad_request"),
    ] {
        let r = c.request_json("create", sdes_with(tx));
        let e = r.unwrap_err();
        assert_eq!(e.code().map(|c| c.as_str()), Some(want), "{e}");
        let msg = e.to_string();
        assert!(!msg.contains(&k) && !msg.contains(&short), "key in {msg}");
    }
    // A key sent where a number belongs is not repeated in the error.
    let e = c
        .request_json("stats", json!({"stream": k.clone()}))
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.as_str()), Some("bad_request"));
    assert!(!e.to_string().contains(&k), "{e}");

    // Four ports: two RTP/RTCP pairs, then the range is exhausted.
    for _ in 0..2 {
        c.request_json("create", json!({"mode": "recv", "legs": [{}]}))
            .unwrap();
    }
    assert_eq!(
        code(c.request_json("create", json!({"mode": "recv", "legs": [{}]}))),
        "ports_exhausted"
    );
    // An oversized line is skipped whole; the next request is answered.
    let mut long = br#"{"id":1,"cmd":"hello","pad":""#.to_vec();
    long.extend(std::iter::repeat_n(b'x', 10_000));
    long.extend_from_slice(b"\"}");
    let r = c.send_raw(&long).unwrap();
    assert_eq!(r["error"]["code"], "line_too_long");
    assert_eq!(c.request_json("hello", Value::Null).unwrap()["protocol"], 1);

    // Connections beyond the limit are told why and closed.
    let _c2 = n.client();
    let _c3 = n.client();
    let mut c4 = UnixStream::connect(&n.path).unwrap();
    let mut text = String::new();
    c4.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c4.read_to_string(&mut text).unwrap();
    assert!(text.contains("too_many_connections"), "{text}");
    assert_eq!(c.request_json("hello", Value::Null).unwrap()["protocol"], 1);

    // Worker full and shared-port conflicts come from the workers.
    let small = node("err-full", (30_410, 30_419), |o, _| {
        o.workers = 1;
        o.media.max_streams = 1;
    });
    let mut s = small.client();
    let shared = json!({"mode": "recv", "legs": [{"socket": "shared", "rtcp_mux": true, "remote": "127.0.0.1:7000"}]});
    s.request_json("create", shared.clone()).unwrap();
    assert_eq!(code(s.request_json("create", shared)), "worker_full");
    let two = node("err-shared", (30_420, 30_429), |o, _| o.workers = 1);
    let mut t = two.client();
    let shared = json!({"mode": "recv", "legs": [{"socket": "shared", "rtcp_mux": true, "remote": "127.0.0.1:7000"}]});
    t.request_json("create", shared.clone()).unwrap();
    assert_eq!(code(t.request_json("create", shared)), "remote_taken");
    // Once the engine stops, creation is refused with its own code.
    two.engine.shutdown();
    assert_eq!(
        code(t.request_json(
            "create",
            json!({"mode": "recv", "legs": [{"rtcp_mux": true}]})
        )),
        "shutting_down"
    );
}

/// Protected RTP from a test peer (the engine's own SRTP code; its interop with libsrtp2 is
/// tested elsewhere).
struct Peer {
    sock: UdpSocket,
    srtp: SrtpOutbound,
    seq: u16,
}

impl Peer {
    fn new(k: u8, seq: u16) -> Peer {
        let suite = Suite::from_sdp_name(SUITE).unwrap();
        let mk = MasterKey::new(suite, &key(k)).unwrap();
        Peer {
            sock: UdpSocket::bind("127.0.0.1:0").unwrap(),
            srtp: SrtpOutbound::new(SrtpPolicy::new(suite, mk)).unwrap(),
            seq,
        }
    }

    fn send(&mut self, to: SocketAddr, n: usize) {
        for _ in 0..n {
            let mut buf = [0u8; 256];
            self.seq = self.seq.wrapping_add(1);
            write_header(
                &mut buf,
                0,
                false,
                self.seq,
                u32::from(self.seq) * 160,
                0xabcd,
            );
            let len = self.srtp.protect_rtp(&mut buf, 12 + 160).unwrap();
            self.sock.send_to(&buf[..len], to).unwrap();
            sleep(Duration::from_millis(2));
        }
    }
}

fn expect_event(c: &mut CtlClient, name: &str, limit: Duration) -> Value {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(e) = c.next_event(Duration::from_millis(100)).unwrap()
            && e.event.name() == name
        {
            return serde_json::to_value(e).unwrap();
        }
    }
    panic!("no {name} event within {limit:?}");
}

#[test]
fn events_reach_subscribers() {
    let n = node("events", (30_500, 30_599), |o, _| {
        o.media.watch.auth_failure_threshold = 10;
    });
    let mut all = n.client();
    let mut only_auth = n.client();
    let subscribed = all.request_json("subscribe", Value::Null).unwrap();
    assert_eq!(
        subscribed["events"].as_array().unwrap().len(),
        Event::NAMES.len()
    );
    only_auth
        .request_json("subscribe", json!({"events": ["auth_failures"]}))
        .unwrap();
    let mut c = n.client();
    let rx = c
        .request_json(
            "create",
            json!({"mode": "recv", "silence_ms": 300, "rtcp_interval_ms": 0,
                   "legs": [{"rtcp_mux": true, "crypto": sdes(1, 1)}]}),
        )
        .unwrap();
    let id = rx["id"].as_u64().unwrap();
    let to = local_of(&rx);
    let e = expect_event(&mut all, "media_silent", Duration::from_secs(3));
    assert_eq!(e["stream"], id);
    assert!(e["silent_ms"].as_u64().unwrap() >= 300);
    assert!(e["time_ms"].as_u64().unwrap() > 0);

    let mut good = Peer::new(1, 1000);
    good.send(to, 20);
    let e = expect_event(&mut all, "media_resumed", Duration::from_secs(3));
    assert_eq!(e["stream"], id);

    // Packets under another key fail authentication: 12 of them cross the threshold of 10
    // (new sequence numbers, so that the replay check does not catch them first).
    let mut wrong = Peer::new(77, 5000);
    // From the same address: the stream's socket is now connected to that peer, and the
    // kernel drops datagrams from any other.
    wrong.sock = good.sock.try_clone().unwrap();
    wrong.send(to, 12);
    let e = expect_event(&mut all, "auth_failures", Duration::from_secs(3));
    assert_eq!(e["stream"], id);
    assert!(e["total"].as_u64().unwrap() >= 10);
    assert_eq!(e["threshold"], 10);
    let e = expect_event(&mut only_auth, "auth_failures", Duration::from_secs(3));
    assert_eq!(e["stream"], id);

    // A receive key with a lifetime of 5 packets: the sixth is refused and reported.
    let limited = c
        .request_json(
            "create",
            json!({"mode": "recv", "rtcp_interval_ms": 0, "legs": [{"rtcp_mux": true, "crypto": {
                "type": "sdes",
                "tx": {"suite": SUITE, "keys": [{"key": b64(&key(4))}]},
                "rx": {"suite": SUITE, "keys": [{"key": b64(&key(4)), "lifetime": 5}]}}}]}),
        )
        .unwrap();
    let mut p = Peer::new(4, 1000);
    p.send(local_of(&limited), 8);
    let e = expect_event(&mut all, "key_lifetime_reached", Duration::from_secs(3));
    assert_eq!(e["stream"], limited["id"]);
    assert_eq!(e["direction"], "rx");
    let st = c
        .request_json("stats", json!({"stream": limited["id"]}))
        .unwrap();
    assert_eq!(st["legs"][0]["packets_in"], 5);

    // The auth-only subscriber saw nothing else.
    while let Some(e) = only_auth.next_event(Duration::from_millis(300)).unwrap() {
        assert_eq!(e.event.name(), "auth_failures", "{e:?}");
    }
    // Stopping is announced.
    let ctl = n.ctl.as_ref().unwrap();
    ctl.announce_stopping();
    expect_event(&mut all, "engine_stopping", Duration::from_secs(2));
}

/// A tiny xorshift generator: the storm is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn a_storm_of_hostile_lines_leaves_the_engine_answering_and_media_flowing() {
    let a = node("storm-a", (30_600, 30_699), |_, c| {
        c.max_line_bytes = 64 * 1024
    });
    let b = node("storm-b", (30_700, 30_799), |_, _| {});
    let (mut ca, mut cb) = (a.client(), b.client());
    let (_echo, end) = echo_pair(&mut ca, &mut cb);
    let media_started = Instant::now();

    let templates = [
        r#"{"id":1,"cmd":"hello"}"#.to_string(),
        r#"{"id":"x","cmd":"streams","limit":2}"#.to_string(),
        r#"{"id":3,"cmd":"stats","stream":1}"#.to_string(),
        format!(
            r#"{{"id":4,"cmd":"create","mode":"recv","legs":[{{"rtcp_mux":true,"crypto":{}}}]}}"#,
            sdes(5, 5)
        ),
        r#"{"id":5,"cmd":"engine_stats"}"#.to_string(),
    ];
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for i in 0..4000 {
        let mut line = if i % 2 == 0 {
            // Random bytes.
            let n = rng.below(300) + 1;
            (0..n).map(|_| rng.next() as u8).collect::<Vec<u8>>()
        } else {
            // A request with a few bytes flipped, cut, or duplicated.
            let mut l = templates[rng.below(templates.len())].as_bytes().to_vec();
            for _ in 0..rng.below(4) + 1 {
                let p = rng.below(l.len());
                match rng.below(3) {
                    0 => l[p] = rng.next() as u8,
                    1 => l.truncate(p.max(1)),
                    _ => {
                        let b = l[p];
                        l.insert(p, b);
                    }
                }
            }
            l
        };
        for b in &mut line {
            if *b == b'\n' {
                *b = b' ';
            }
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            line = b"?".to_vec();
        }
        lines.push(line);
    }
    // Raw bytes with newlines on a connection of their own, closed mid-line.
    {
        let mut raw = UnixStream::connect(&a.path).unwrap();
        let junk: Vec<u8> = (0..200_000).map(|_| rng.next() as u8).collect();
        let _ = raw.write_all(&junk);
    }
    // Each line on the storm connection gets exactly one reply, in order.
    let storm = UnixStream::connect(&a.path).unwrap();
    storm
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = storm.try_clone().unwrap();
    let sent = lines.len();
    let feeder = std::thread::spawn(move || {
        for l in &lines {
            writer.write_all(l).unwrap();
            writer.write_all(b"\n").unwrap();
        }
    });
    let mut reader = std::io::BufReader::new(storm);
    let mut replies = 0;
    let mut ok = 0;
    let mut line = String::new();
    while replies < sent {
        line.clear();
        let n = std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        assert!(
            n > 0,
            "the engine closed the storm connection after {replies} replies"
        );
        let v: Value = serde_json::from_str(&line).expect("every reply is JSON");
        match v["ok"] {
            Value::Bool(true) => ok += 1,
            Value::Bool(false) => {
                let code = v["error"]["code"].as_str().unwrap();
                assert!(
                    ErrorCode::ALL.iter().any(|c| c.as_str() == code),
                    "undocumented code {code}"
                );
            }
            _ => panic!("not a reply: {line}"),
        }
        replies += 1;
    }
    feeder.join().unwrap();
    assert!(
        ok < sent / 2,
        "most of the storm must be refused ({ok} accepted)"
    );
    // The engine still answers and the media never stopped.
    assert_eq!(
        ca.request_json("hello", Value::Null).unwrap()["protocol"],
        1
    );
    sleep(Duration::from_millis(1000).saturating_sub(media_started.elapsed()));
    assert_all_echoed(&mut cb, end);
}

#[test]
fn a_batch_of_10000_streams() {
    let n = node("batch", (40_000, 59_999), |_, _| {});
    let mut c = n.client();
    let streams: Vec<Value> = (0..10_000)
        .map(|i| {
            json!({"mode": "echo", "rtcp_interval_ms": 0, "silence_ms": 0,
                   "legs": [{"rtcp_mux": true, "crypto": sdes((i % 200) as u8, 3)}]})
        })
        .collect();
    let r = c
        .request_json("create_batch", json!({"streams": streams}))
        .unwrap();
    assert_eq!(r["failed"], 0, "{}", r["streams"][0]);
    assert_eq!(r["created"], 10_000);
    let ports: std::collections::HashSet<SocketAddr> = r["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(local_of)
        .collect();
    assert_eq!(ports.len(), 10_000, "every stream has its own port");
    let ids: Vec<u64> = r["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect();
    let page = c
        .request_json("streams", json!({"offset": 9_990, "limit": 50}))
        .unwrap();
    assert_eq!(page["total"], 10_000);
    assert_eq!(page["streams"].as_array().unwrap().len(), 10);
    let d = c
        .request_json("delete_batch", json!({"streams": ids}))
        .unwrap();
    assert_eq!(d["deleted"], 10_000);
    assert_eq!(c.request_json("streams", json!({})).unwrap()["total"], 0);
}

fn http_get(addr: SocketAddr, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

fn scrape(addr: SocketAddr) -> String {
    let (head, body) = http_get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"));
    body
}

/// Prometheus's own parser and linter.
fn promtool_check(text: &str) {
    if let Err(said) = srtp_engine_tests::promtool_check_metrics(text) {
        panic!("promtool: {said}");
    }
}

/// A sample's value by its exact name and labels as written.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_follow_the_traffic_and_pass_promtool() {
    let a = node("metrics-a", (30_800, 30_899), |_, _| {});
    let b = node("metrics-b", (30_900, 30_999), |_, _| {});
    let m = MetricsServer::start(
        "127.0.0.1:0".parse().unwrap(),
        a.engine.clone(),
        a.ctl.as_ref().map(CtlServer::counters),
    )
    .unwrap();
    let before = scrape(m.local_addr());
    promtool_check(&before);
    let series = format!("srtp_engine_packets_total{{direction=\"in\",suite=\"{SUITE}\"}}");
    assert_eq!(sample(&before, &series), 0.0);
    for metric in METRICS {
        assert!(before.contains(&format!("# TYPE {} ", metric.name)));
    }
    let (mut ca, mut cb) = (a.client(), b.client());
    let (_echo, end) = echo_pair(&mut ca, &mut cb);
    sleep(Duration::from_millis(1000));
    let sent = assert_all_echoed(&mut cb, end) as f64;
    let mut after = String::new();
    assert!(wait_until(Duration::from_secs(2), || {
        after = scrape(m.local_addr());
        sample(&after, &series) >= sent
    }));
    promtool_check(&after);
    let out = format!("srtp_engine_packets_total{{direction=\"out\",suite=\"{SUITE}\"}}");
    assert!(sample(&after, &out) >= sent);
    assert_eq!(sample(&after, "srtp_engine_streams{mode=\"echo\"}"), 1.0);
    assert!(sample(&after, "srtp_engine_control_requests_total") >= 1.0);
    assert_eq!(sample(&after, "srtp_engine_auth_failures_total"), 0.0);
    assert!(sample(&after, "srtp_engine_io_syscalls_total{worker=\"0\"}") > 0.0);
    // Other paths and methods.
    let (head, _) = http_get(m.local_addr(), "GET /other HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, _) = http_get(m.local_addr(), "POST /metrics HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    let (head, _) = http_get(m.local_addr(), "garbage\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    m.stop();
}

#[test]
fn the_docs_list_every_command_code_event_and_metric() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let proto = std::fs::read_to_string(root.join("docs/control-protocol.md")).unwrap();
    for cmd in COMMANDS {
        assert!(
            proto.contains(&format!("### `{cmd}`")),
            "docs/control-protocol.md has no section for {cmd}"
        );
    }
    for code in ErrorCode::ALL {
        assert!(
            proto.contains(&format!("`{}`", code.as_str())),
            "docs/control-protocol.md does not list error code {}",
            code.as_str()
        );
    }
    for ev in Event::NAMES.iter().chain(&["engine_stopping"]) {
        assert!(
            proto.contains(&format!("### `{ev}`")),
            "docs/control-protocol.md has no section for event {ev}"
        );
    }
    let metrics = std::fs::read_to_string(root.join("docs/metrics.md")).unwrap();
    for m in METRICS {
        assert!(
            metrics.contains(&format!("`{}`", m.name)),
            "docs/metrics.md does not list {}",
            m.name
        );
    }
}

/// The Grafana dashboard uses only metrics the engine exports, and each of its queries is
/// valid PromQL (`promtool check rules` parses them as recording rules).
/// Every `srtp_engine_*` name in a PromQL expression is a metric the engine exports.
fn assert_exported(expr: &str) {
    let names: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
    let mut rest = expr;
    while let Some(at) = rest.find("srtp_engine_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // A histogram is exported as its _bucket, _sum and _count series.
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| names.contains(f)))
            .unwrap_or(name);
        assert!(names.contains(&family), "{name} is not exported");
        rest = &tail[end..];
    }
}

/// The alerting rules pass `promtool check rules`, use only exported metrics, and each alert
/// has a case that fires and one that stays quiet in `promtool test rules`.
#[test]
fn the_alert_rules_pass_promtool_and_each_has_a_firing_and_a_quiet_test() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/prometheus");
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("alerts_test.yml")).unwrap();
    let mut alerts = 0;
    for line in rules.lines().map(str::trim) {
        if let Some(e) = line.strip_prefix("expr:") {
            assert_exported(e);
        }
        if let Some(name) = line.strip_prefix("- alert:").map(str::trim) {
            alerts += 1;
            let cases: Vec<&str> = tests
                .lines()
                .filter(|l| l.contains(&format!("alertname: {name}")))
                .collect();
            assert!(
                cases.iter().any(|l| l.contains("exp_alerts: []"))
                    && cases.iter().any(|l| !l.contains("exp_alerts: []")),
                "{name} needs a firing and a quiet case in alerts_test.yml"
            );
        }
    }
    assert!(alerts >= 7, "{alerts} alerts");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        if let Err(said) = srtp_engine_tests::promtool_in(&dir, &args) {
            panic!("{said}");
        }
    }
}

#[test]
fn the_dashboard_queries_are_valid_and_use_exported_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("configs/grafana-dashboard.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().replace("$instance", ".*"));
        }
    }
    assert!(exprs.len() >= 10);
    for e in &exprs {
        assert_exported(e);
    }
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    let file = std::env::temp_dir().join(format!("srtp-dashboard-{}.yml", std::process::id()));
    std::fs::write(&file, rules).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool (run scripts/setup-debian to install it)");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Connections that open and say nothing are closed after `first_request_timeout`: 32 of them
/// locked every other client out with `too_many_connections` (issue 26), for good.
#[test]
fn silent_connections_do_not_lock_others_out() {
    let n = node("idle", (30_420, 30_423), |o, c| {
        o.workers = 1;
        c.max_connections = 4;
        c.first_request_timeout = Duration::from_millis(300);
    });
    let idle: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(&n.path).unwrap())
        .collect();
    sleep(Duration::from_millis(100));
    // All places are taken now: the next one is refused.
    let mut refused = UnixStream::connect(&n.path).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut text = String::new();
    let _ = refused.read_to_string(&mut text);
    assert!(text.contains("too_many_connections"), "{text}");
    // Once the silent ones are closed, a client is served.
    sleep(Duration::from_millis(600));
    let mut c = n.client();
    assert_eq!(c.request_json("hello", Value::Null).unwrap()["protocol"], 1);
    // The silent ones were closed by the engine.
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut b = [0u8; 16];
        assert_eq!(s.read(&mut b).unwrap_or(0), 0, "closed");
    }
    // A client that spoke stays, silent or not.
    sleep(Duration::from_millis(600));
    assert_eq!(c.request_json("hello", Value::Null).unwrap()["protocol"], 1);
}
