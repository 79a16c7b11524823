//! A load run's live figures for Prometheus (`run --metrics ADDR`): one agent's calls,
//! setup and DTLS handshake times, media and MOS, as `srtp_control_*` counters, gauges and
//! histograms. Agents that share a scenario are summed with `sum()` (the recording rules in
//! `configs/prometheus/recording.yml`).
//!
//! Everything but the attempted and active calls is counted when a call ends, with the
//! report's own definitions and histogram buckets. So after the run the sums over agents
//! equal the merged report's totals (`srtp-control merge`).

use std::net::SocketAddr;

use srtp_engine::metrics::{Exposition, MetricsServer};

use super::media::LegEnd;
use super::state::{Shared, lock};
use super::totals::{Buckets, MOS_EDGES, MS_EDGES};

srtp_engine::declare_metrics! {
    /// Every load-run metric, in exposition order.
    pub RUN_METRICS;
    RUN_INFO: Gauge "srtp_control_run_info" ["scenario", "shard"]
        "Always 1: the scenario's name and this agent's shard (I/N).";
    ATTEMPTED: Counter "srtp_control_calls_attempted_total" []
        "Calls placed.";
    ACTIVE: Gauge "srtp_control_calls_active" []
        "Calls in progress.";
    ENDED: Counter "srtp_control_calls_ended_total" []
        "Calls ended (set up or failed); the figures below are of ended calls.";
    SET_UP: Counter "srtp_control_calls_set_up_total" ["method"]
        "Ended calls that were set up, by keying method (sdes, dtls, dual).";
    FAILED: Counter "srtp_control_calls_failed_total" ["cause"]
        "Ended calls that failed, by cause (the report's cause names).";
    SETUP_TIME: Histogram "srtp_control_call_setup_seconds" []
        "INVITE to 200 OK of ended calls.";
    DTLS_TIME: Histogram "srtp_control_dtls_handshake_seconds" []
        "The callers' DTLS-SRTP handshakes, of ended calls.";
    PACKETS: Counter "srtp_control_media_packets_total" ["side", "direction"]
        "RTP packets of ended calls at our ends (side caller or answerer; direction sent or received).";
    EXPECTED: Counter "srtp_control_media_expected_packets_total" ["side"]
        "RTP packets each receiving side expected (RFC 3550), of ended calls.";
    LOST: Counter "srtp_control_media_lost_packets_total" ["side"]
        "RTP packets each receiving side lost (RFC 3550), of ended calls.";
    AUTH_FAILURES: Counter "srtp_control_auth_failures_total" ["side"]
        "SRTP/SRTCP packets that failed authentication at our receiving ends.";
    MOS: Histogram "srtp_control_mos" []
        "MOS (ITU-T G.107 E-model) of each ended stream at our receiving ends, both sides.";
}

/// Serves the run's metrics on `addr` while the returned server lives.
pub(super) fn serve(
    addr: SocketAddr,
    shared: Shared,
    scenario: String,
    shard: String,
) -> std::io::Result<MetricsServer> {
    MetricsServer::serve_pages(addr, move |path| {
        (path == "/metrics").then(|| render(&shared, &scenario, &shard))
    })
}

/// The exposition, from what the run has tallied so far.
fn render(shared: &Shared, scenario: &str, shard: &str) -> String {
    let sh = lock(shared);
    let mut o = Exposition::default();
    o.family(&RUN_INFO);
    o.sample(&RUN_INFO, &[scenario, shard], 1.0);
    o.one(&ATTEMPTED, sh.attempted as f64);
    o.one(&ACTIVE, sh.active as f64);
    o.one(&ENDED, sh.records.len() as f64);
    o.family(&SET_UP);
    for (method, (_, ok)) in super::report::by_method(&sh.records) {
        o.sample(&SET_UP, &[&method], ok as f64);
    }
    o.family(&FAILED);
    let mut causes: std::collections::BTreeMap<&str, u64> = Default::default();
    for c in sh.records.iter().filter_map(|r| r.cause.as_deref()) {
        *causes.entry(c).or_default() += 1;
    }
    for (cause, n) in causes {
        o.sample(&FAILED, &[cause], n as f64);
    }
    let seconds = |ms: &mut dyn Iterator<Item = f64>| {
        let b = Buckets::of(ms.map(|v| v / 1e3), &MS_EDGES.map(|e| e / 1e3));
        (b.edges.clone(), b.counts.clone(), b.sum)
    };
    let (edges, counts, sum) = seconds(&mut sh.records.iter().filter_map(|r| r.setup_ms));
    o.histogram(&SETUP_TIME, &edges, &counts, sum);
    let (edges, counts, sum) = seconds(&mut sh.records.iter().filter_map(|r| r.dtls_ms));
    o.histogram(&DTLS_TIME, &edges, &counts, sum);
    let callers: Vec<&LegEnd> = sh.records.iter().filter_map(|r| r.media.as_ref()).collect();
    let answerers: Vec<&LegEnd> = sh
        .answerer_media
        .values()
        .flatten()
        .filter(|e| !e.released)
        .collect();
    let sides = [("caller", &callers), ("answerer", &answerers)];
    let total = |ends: &[&LegEnd], f: fn(&LegEnd) -> u64| ends.iter().map(|e| f(e)).sum::<u64>();
    o.family(&PACKETS);
    for (side, ends) in sides {
        o.sample(
            &PACKETS,
            &[side, "sent"],
            total(ends, |e| e.packets_sent) as f64,
        );
        o.sample(
            &PACKETS,
            &[side, "received"],
            total(ends, |e| e.packets_in) as f64,
        );
    }
    for (m, f) in [
        (&EXPECTED, (|e: &LegEnd| e.expected) as fn(&LegEnd) -> u64),
        (&LOST, |e| e.lost),
        (&AUTH_FAILURES, |e| e.auth_failures),
    ] {
        o.family(m);
        for (side, ends) in sides {
            o.sample(m, &[side], total(ends, f) as f64);
        }
    }
    let mos = Buckets::of(callers.iter().chain(&answerers).map(|e| e.mos), &MOS_EDGES);
    o.histogram(&MOS, &mos.edges, &mos.counts, mos.sum);
    o.finish()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::scenario::report::CallRecord;
    use crate::scenario::state::Tally;

    #[test]
    fn every_metric_is_rendered_documented_and_accepted_by_promtool() {
        let mut t = Tally {
            attempted: 3,
            active: 1,
            ..Tally::default()
        };
        t.records.push(CallRecord {
            method: "sdes",
            setup_ms: Some(3.0),
            media: Some(LegEnd {
                packets_sent: 10,
                packets_in: 9,
                expected: 9,
                mos: 4.4,
                ..LegEnd::default()
            }),
            ..CallRecord::default()
        });
        t.records.push(CallRecord {
            method: "dtls",
            cause: Some("timeout".into()),
            ..CallRecord::default()
        });
        let shared: Shared = Arc::new(Mutex::new(t));
        let text = render(&shared, "a \"quoted\" name", "0/2");
        let docs = include_str!("../../../docs/metrics.md");
        for m in RUN_METRICS {
            assert!(text.contains(&format!("# TYPE {} ", m.name)), "{}", m.name);
            assert!(
                docs.contains(&format!("`{}`", m.name)),
                "docs/metrics.md: {}",
                m.name
            );
        }
        assert!(
            text.contains("srtp_control_calls_set_up_total{method=\"sdes\"} 1"),
            "{text}"
        );
        assert!(text.contains("srtp_control_calls_failed_total{cause=\"timeout\"} 1"));
        assert!(text.contains("srtp_control_call_setup_seconds_count 1"));
        assert!(text.contains("srtp_control_call_setup_seconds_bucket{le=\"0.005\"} 1"));
        assert!(
            text.contains(
                "srtp_control_media_packets_total{side=\"caller\",direction=\"sent\"} 10"
            )
        );
        assert!(text.contains("srtp_control_mos_count 1"));
        if let Err(e) = srtp_engine_tests::promtool_check_metrics(&text) {
            panic!("promtool: {e}\n{text}");
        }
    }

    /// The recording rules sum only metrics a run exports, pass `promtool check rules`, and
    /// their test (two agents, their sums) passes `promtool test rules`.
    #[test]
    fn the_recording_rules_use_run_metrics_and_pass_their_promtool_test() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/prometheus");
        let rules = std::fs::read_to_string(format!("{dir}/recording.yml")).unwrap();
        let names: Vec<&str> = RUN_METRICS.iter().map(|m| m.name).collect();
        let mut used = 0;
        for expr in rules.lines().filter_map(|l| l.trim().strip_prefix("expr:")) {
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
                if word.starts_with("srtp_control_") {
                    let family = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s).filter(|f| names.contains(f)))
                        .unwrap_or(word);
                    assert!(
                        names.contains(&family),
                        "recording.yml: {word} is not exported"
                    );
                    used += 1;
                }
            }
        }
        assert!(used >= 10, "{used}");
        for args in [
            ["check", "rules", "recording.yml"],
            ["test", "rules", "recording_test.yml"],
        ] {
            if let Err(said) = srtp_engine_tests::promtool_in(std::path::Path::new(dir), &args) {
                panic!("{said}");
            }
        }
    }
}
