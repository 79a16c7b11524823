//! Registration in simulated time: a fleet of sans-IO endpoints and sans-IO registrars joined
//! by a simulated network (latency, loss, a registrar that dies and comes back). Every message
//! crosses the network as bytes and is parsed again, as on a wire.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use srtp_control::register::endpoint::Payload;
use srtp_control::register::{
    Detection, Fleet, Identity, Policy, Registrar, RegistrarConfig, RegistrarSpec,
};
use srtp_control::sip::Message;
use srtp_control::sip::transport::Protocol;

enum Hop {
    ToRegistrar(usize, Vec<u8>),
    ToFleet(Vec<u8>),
}

struct Net {
    now: Instant,
    fleet: Fleet,
    registrars: Vec<Registrar>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    hops: std::collections::HashMap<u64, Hop>,
    seq: u64,
    latency: Duration,
    /// Drop one datagram in `loss_one_in` (0: none), decided by a fixed pseudo-random stream.
    loss_one_in: u64,
    rng: u64,
    dropped: u64,
}

impl Net {
    fn new(fleet: Fleet, registrars: Vec<Registrar>, t0: Instant, latency: Duration) -> Net {
        Net {
            now: t0,
            fleet,
            registrars,
            queue: BinaryHeap::new(),
            hops: Default::default(),
            seq: 0,
            latency,
            loss_one_in: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            dropped: 0,
        }
    }

    fn lost(&mut self) -> bool {
        if self.loss_one_in == 0 {
            return false;
        }
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        x.is_multiple_of(self.loss_one_in)
    }

    fn send(&mut self, hop: Hop) {
        if self.lost() {
            self.dropped += 1;
            return;
        }
        self.seq += 1;
        self.queue
            .push(Reverse((self.now + self.latency, self.seq)));
        self.hops.insert(self.seq, hop);
    }

    fn flush_fleet(&mut self) {
        while let Some((_, t)) = self.fleet.poll_transmit() {
            match t.payload {
                Payload::Sip(m) => self.send(Hop::ToRegistrar(t.registrar, m.to_bytes())),
                Payload::Ping | Payload::Stun(_) => {
                    unreachable!("these endpoints keep alive with OPTIONS only")
                }
            }
        }
    }

    fn run_until(&mut self, until: Instant) {
        loop {
            let next_net = self.queue.peek().map(|Reverse((t, _))| *t);
            let next_fleet = self.fleet.poll_timeout();
            let Some(next) = [next_net, next_fleet].into_iter().flatten().min() else {
                break;
            };
            if next > until {
                break;
            }
            self.now = next;
            if next_net == Some(next) {
                let Reverse((_, seq)) = self.queue.pop().unwrap();
                match self.hops.remove(&seq).unwrap() {
                    Hop::ToRegistrar(r, bytes) => {
                        let req = Message::parse(&bytes).expect("requests parse");
                        if let Some(resp) = self.registrars[r].handle_request(self.now, &req) {
                            self.send(Hop::ToFleet(resp.to_bytes()));
                        }
                    }
                    Hop::ToFleet(bytes) => {
                        let resp = Message::parse(&bytes).expect("responses parse");
                        self.fleet.handle_message(self.now, resp);
                    }
                }
            } else {
                self.fleet.handle_timeout(self.now);
            }
            self.flush_fleet();
        }
        self.now = until;
    }
}

fn specs(n: usize) -> Vec<RegistrarSpec> {
    (0..n)
        .map(|i| {
            let mut r = RegistrarSpec::at(
                ["primary", "backup", "third"][i],
                "127.0.0.1",
                SocketAddr::from(([127, 0, 0, 1], 5060 + i as u16)),
                Protocol::Udp,
            );
            r.domain = srtp_control::sip::uri::Uri::new(None, "lab.test", None);
            r
        })
        .collect()
}

fn ids(n: usize, auth: bool) -> Vec<Identity> {
    (0..n)
        .map(|i| Identity {
            user: format!("phone{i:05}"),
            auth: auth.then(|| (format!("phone{i:05}"), format!("pw{i}").into())),
        })
        .collect()
}

fn registrar(t0: Instant, max_expires: u32, auth: bool) -> Registrar {
    Registrar::new(
        RegistrarConfig {
            max_expires,
            realm: auth.then(|| "lab.test".into()),
            passwords: Box::new(|u: &str| {
                u.strip_prefix("phone")
                    .and_then(|n| n.parse::<u32>().ok())
                    .map(|n| format!("pw{n}"))
            }),
            ..RegistrarConfig::default()
        },
        t0,
    )
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The bar: 5,000 endpoints keep their registrations for 10 simulated minutes with
/// refreshes spread evenly; killing the primary moves every endpoint to the backup within the
/// detection budget plus one registration round trip; bringing it back returns them all.
#[test]
fn five_thousand_endpoints_refresh_evenly_fail_over_and_fall_back() {
    const N: usize = 5_000;
    let t0 = Instant::now();
    let mut policy = Policy::new(
        specs(2),
        Protocol::Udp,
        SocketAddr::from(([127, 0, 0, 1], 5070)),
    );
    policy.options_keepalive = Some(secs(20));
    policy.keepalive_timeout = secs(4);
    policy.detection = Detection::Fast;
    policy.failures = 2;
    policy.probe_interval = secs(30);
    let budget = policy.detection_budget().unwrap();
    assert_eq!(budget, secs(28));
    let latency = Duration::from_millis(10);
    let fleet = Fleet::new(policy, ids(N, true), t0, 100.0);
    let regs = vec![registrar(t0, 120, true), registrar(t0, 120, true)];
    let mut net = Net::new(fleet, regs, t0, latency);

    // Ten minutes, sampled every second once the 50 s ramp is done.
    let mut worst_registered = N;
    for s in 1..=600 {
        net.run_until(t0 + secs(s));
        if s > 55 {
            let snap = net.fleet.snapshot(net.now);
            worst_registered = worst_registered.min(snap.registered[0]);
        }
    }
    let st = net.fleet.stats().clone();
    assert_eq!(
        worst_registered, N,
        "every endpoint registered every second"
    );
    assert_eq!(st.registrations, N as u64);
    assert_eq!(
        (st.expirations, st.refresh_failures, st.failovers),
        (0, 0, 0)
    );
    assert_eq!(net.registrars[0].bindings(net.now), N);
    // A 120 s grant refreshes every 115 s; the first refresh of each endpoint may come early
    // to land on its phase, and every later one is exactly 115 s after the previous.
    let exact = st.refresh_intervals.get(&115_000).copied().unwrap_or(0);
    assert!(
        exact * 10 >= st.refreshes * 7,
        "{exact} of {} refreshes 115 s apart",
        st.refreshes
    );
    assert!(st.refresh_intervals.keys().all(|&ms| ms <= 115_000));
    // Evenly spread: from the second interval on, every second carries 5,000/115 = 43.5
    // refreshes, give or take one.
    let window = &st.refreshes_per_second[240..600];
    let (lo, hi) = (*window.iter().min().unwrap(), *window.iter().max().unwrap());
    assert!(lo >= 42 && hi <= 45, "refreshes per second {lo}..{hi}");
    println!(
        "10 min: {} refreshes, {}..{} per second, {exact} exactly 115 s apart",
        st.refreshes, lo, hi
    );

    // Kill the primary.
    let kill = t0 + secs(600);
    net.registrars[0].set_up(false);
    // One registration is two round trips here: REGISTER, 401, REGISTER with credentials, 200.
    let rtt = latency * 2;
    let registration = rtt * 2;
    net.run_until(kill + budget + registration + secs(1));
    let snap = net.fleet.snapshot(net.now);
    assert_eq!(snap.registered, vec![0, N], "everyone on the backup");
    let st = net.fleet.stats().clone();
    assert_eq!(st.failovers, N as u64);
    let deadline_ms = (secs(600) + budget + registration).as_millis() as u64;
    let failovers: Vec<_> = st
        .transitions
        .iter()
        .filter(|t| t.kind == "failover")
        .collect();
    assert_eq!(failovers.len(), N);
    let latest = failovers.iter().map(|t| t.at_ms).max().unwrap();
    assert!(
        latest <= deadline_ms,
        "last endpoint re-registered at {latest} ms, budget ends at {deadline_ms} ms"
    );
    let worst_detect = st.detect_ms.iter().max().unwrap();
    assert_eq!(
        *worst_detect, 8_000,
        "two 4 s keepalive timeouts back to back"
    );
    println!(
        "failover: detection {}..{} ms, re-registration {}..{} ms, last at +{} ms of {} ms allowed",
        st.detect_ms.iter().min().unwrap(),
        worst_detect,
        st.failover_ms.iter().min().unwrap(),
        st.failover_ms.iter().max().unwrap(),
        latest - 600_000,
        deadline_ms - 600_000
    );

    // Bring it back a minute later: every endpoint probes it within 30 s and moves back,
    // unregistering from the backup.
    let revive = t0 + secs(660);
    net.run_until(revive);
    assert_eq!(net.fleet.snapshot(net.now).registered, vec![0, N]);
    net.registrars[0].set_up(true);
    net.run_until(revive + secs(30) + secs(1));
    let snap = net.fleet.snapshot(net.now);
    assert_eq!(snap.registered, vec![N, 0], "everyone back on the primary");
    let st = net.fleet.stats().clone();
    assert_eq!(st.fallbacks, N as u64);
    assert_eq!(st.unregistrations, N as u64, "Expires: 0 to the backup");
    assert_eq!(net.registrars[1].bindings(net.now), 0);
    assert_eq!(net.registrars[1].counts().removals, N as u64);
    let back: Vec<_> = st
        .transitions
        .iter()
        .filter(|t| t.kind == "fallback")
        .map(|t| t.at_ms)
        .collect();
    assert!(back.iter().all(|&t| t <= 691_000));
    // Bindings at the dead primary whose refresh fell within the detection window lapsed
    // there (that is what happened); none lapses once everyone is settled again.
    let lapsed_while_detecting = st.expirations;
    println!(
        "{lapsed_while_detecting} bindings lapsed at the dead primary while it was being detected"
    );
    net.run_until(t0 + secs(900));
    let st = net.fleet.stats();
    assert_eq!(net.fleet.snapshot(net.now).registered, vec![N, 0]);
    assert_eq!((st.expirations, st.exhausted), (lapsed_while_detecting, 0));
    assert_eq!(net.fleet.garbage(), 0);
}

fn lossy_run(detection: Detection, failures: u32) -> (Fleet, u64, Instant) {
    const N: usize = 300;
    let t0 = Instant::now();
    let mut policy = Policy::new(
        specs(2),
        Protocol::Udp,
        SocketAddr::from(([127, 0, 0, 1], 5070)),
    );
    policy.options_keepalive = Some(secs(15));
    policy.keepalive_timeout = secs(8);
    policy.detection = detection;
    policy.failures = failures;
    let fleet = Fleet::new(policy, ids(N, false), t0, 50.0);
    let regs = vec![registrar(t0, 60, false), registrar(t0, 60, false)];
    let mut net = Net::new(fleet, regs, t0, Duration::from_millis(5));
    net.loss_one_in = 4; // 25% of datagrams each way
    net.run_until(t0 + secs(600));
    (net.fleet, net.dropped, net.now)
}

/// Over a lossy network the RFC 3261 backoff shows (0.5 s, 1 s, 2 s, then T2 = 4 s),
/// tolerant detection rides the losses out without a failover where fast detection with a
/// hair trigger does not.
#[test]
fn retransmissions_back_off_under_loss_and_tolerant_detection_holds() {
    let (fleet, dropped, end) = lossy_run(Detection::Tolerant, 3);
    let st = fleet.stats();
    assert!(dropped > 1000);
    for ms in [500, 1000, 2000, 4000] {
        assert!(
            st.register_retransmits.get(&ms).copied().unwrap_or(0) > 0,
            "REGISTER retransmitted after {ms} ms: {:?}",
            st.register_retransmits
        );
    }
    assert!(
        st.register_retransmits.keys().all(|&ms| ms <= 4000),
        "capped at T2"
    );
    assert!(st.keepalive_failures > 0);
    assert_eq!(st.failovers, 0, "tolerant: no failover for losses");
    assert_eq!(st.registrations, 300, "never had to register anew");
    // A refresh sent 5 s before expiry over a 25% lossy path sometimes arrives after it:
    // those lapses are counted, and healed by the same refresh.
    let snap = fleet.snapshot(end);
    assert!(snap.registered[0] >= 294, "{snap:?}");
    println!(
        "tolerant, 25% loss: {dropped} datagrams dropped, REGISTER retransmits {:?}, {} keepalives failed, {} bindings lapsed, 0 failovers",
        st.register_retransmits, st.keepalive_failures, st.expirations
    );
    let (fleet, _, _) = lossy_run(Detection::Fast, 1);
    assert!(
        fleet.stats().failovers > 0,
        "fast with one failure allowed fails over on loss alone"
    );
}
