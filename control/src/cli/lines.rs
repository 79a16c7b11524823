//! What the command line prints about a call, a registration and a stop: one line each, and
//! whether it went well.

use std::time::Duration;

use srtp_control::register::endpoint::Event as RegEvent;
use srtp_control::ua::{EndedBy, ShutdownSummary, UasEvent};
use srtp_engine::model::{LegStats, StreamStats};
use srtp_engine::proto::srtp::Suite;

/// SIGINT or SIGTERM. After the first, a second one exits at once.
pub(crate) async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("srtp-control: second signal, exiting now");
        std::process::exit(130);
    });
}

/// Waits for the registration's outcome (with `--register`); false when it failed.
pub(crate) async fn await_registration(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<UasEvent>,
    within: Duration,
) -> bool {
    let deadline = tokio::time::sleep(within);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => {
                println!("registration: no answer from the registrar within {within:?}");
                return false;
            }
            ev = events.recv() => match ev {
                Some(UasEvent::Registration(e)) => {
                    if let Some(ok) = registration_line(&e) {
                        return ok;
                    }
                }
                Some(_) => {}
                None => return false,
            }
        }
    }
}

/// Prints a registration event worth a line; `Some(true)` registered, `Some(false)` refused.
pub(crate) fn registration_line(e: &RegEvent) -> Option<bool> {
    match e {
        RegEvent::Registered { granted, took, .. } => {
            println!(
                "registered (granted {granted} s) in {:.1} ms",
                took.as_secs_f64() * 1e3
            );
            Some(true)
        }
        RegEvent::Rejected { code, reason, .. } => {
            println!("registration refused: {code} {reason}");
            Some(false)
        }
        RegEvent::Exhausted => {
            println!("registration failed: the registrar did not answer");
            Some(false)
        }
        RegEvent::Unregistered { .. } => {
            println!("unregistered");
            None
        }
        RegEvent::Lost { .. } | RegEvent::Expired { .. } => {
            println!("registration lost: {e:?}");
            None
        }
        _ => None,
    }
}

/// How long a call waits for the engine's DTLS outcome after it connected.
pub(crate) const DTLS_WAIT: Duration = Duration::from_secs(12);

/// A graceful stop's summary line; false when it left something behind.
pub(crate) fn stopped_line(s: &ShutdownSummary, reconnects: u64) -> bool {
    let c = &s.counters;
    let mut line = format!(
        "stopped: {} BYE and {} CANCEL sent, {} INVITE refused while stopping",
        c.byes_sent, c.cancels_sent, c.refused_stopping
    );
    if reconnects > 0 {
        line.push_str(&format!("; reconnected to the engine {reconnects} time(s)"));
    }
    let clean = s.calls_left == 0;
    if !clean {
        line.push_str("; gave up waiting for the last calls to end");
    }
    println!("{line}");
    clean
}

/// A line for a call's end and whether it ended cleanly (the BYE answered 2xx, no
/// authentication failures).
pub(crate) fn end_line(
    by: &EndedBy,
    stats: &Option<StreamStats>,
    bye: Option<&Result<(), srtp_control::ua::CallError>>,
) -> (String, bool) {
    let mut good = true;
    let who = match by {
        EndedBy::Peer => "by the peer".to_owned(),
        EndedBy::Hangup => "by our hangup".to_owned(),
        EndedBy::Shutdown => "by our stop".to_owned(),
        EndedBy::NoAck => {
            good = false;
            "no ACK for our 200 OK".to_owned()
        }
        EndedBy::Failure(w) => {
            good = false;
            format!("after a failure: {w}")
        }
    };
    let bye = match bye {
        None => String::new(),
        Some(Ok(())) => ", BYE answered 200".to_owned(),
        Some(Err(e)) => {
            good = false;
            format!(", BYE FAILED: {e}")
        }
    };
    let auth = leg0(stats).map_or(0, |l| l.auth_failures);
    if auth > 0 {
        good = false;
    }
    (format!("{who}{bye}; {}", media_line(stats)), good)
}

/// The first leg of a stream's statistics.
pub(crate) fn leg0(stats: &Option<StreamStats>) -> Option<&LegStats> {
    stats.as_ref().and_then(|s| s.legs.first())
}

/// One line of media figures from the engine's stream statistics.
pub(crate) fn media_line(stats: &Option<StreamStats>) -> String {
    let Some(l) = leg0(stats) else {
        return "no media (signaling only)".into();
    };
    let suite = |s: Option<Suite>| s.map_or("none", Suite::sdp_name);
    let mut s = format!(
        "media packets in {} out {}, RTCP in {} out {}, lost {}, auth failures {}, rx {} tx {}",
        l.packets_in,
        l.packets_out,
        l.rtcp_in,
        l.rtcp_out,
        l.lost,
        l.auth_failures,
        suite(l.rx_suite),
        suite(l.tx_suite)
    );
    if l.rtcp_unprotected > 0 {
        s.push_str(&format!(
            ", {} RTCP packet(s) from the peer in the clear (not SRTCP: the peer breaks RFC 3711)",
            l.rtcp_unprotected
        ));
    }
    if let Some(d) = &l.dtls {
        s.push_str(&format!(", DTLS {}", d.rtp.state.name()));
        if let Some(suite) = d.rtp.suite {
            s.push_str(&format!(" ({})", suite.sdp_name()));
        }
        if let Some(i) = d.rtp.implementation {
            s.push_str(&format!(" on {}", i.as_str()));
        }
    }
    s
}
