//! `srtp-control answer`: answer calls until a signal or a time limit.

use std::time::Duration;

use super::endpoint::{Endpoint, Setup, config};
use super::lines::{await_registration, end_line, registration_line, stop_signal, stopped_line};
use srtp_control::ua::{UasEvent, UserAgent};

pub(crate) async fn answer(
    ep: &Endpoint,
    seconds: u64,
    hangup_after: Duration,
) -> Result<bool, String> {
    let Setup { cfg, media, dtls } = config(ep)?;
    let registering = cfg.register.is_some();
    let (ua, mut events) = UserAgent::start_with_events(cfg, media, dtls)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "listening on {} {}",
        ep.listen.split(':').next().unwrap_or(""),
        ua.local_addr()
    );
    let mut ok = true;
    if registering && !await_registration(&mut events, Duration::from_secs(35)).await {
        ok = false;
    }
    let deadline = async {
        if seconds == 0 {
            std::future::pending::<()>().await
        } else {
            tokio::time::sleep(Duration::from_secs(seconds)).await
        }
    };
    tokio::pin!(deadline);
    let signal = stop_signal();
    tokio::pin!(signal);
    let mut reconnects = 0;
    let (mut answered, mut failed) = (0u64, 0u64);
    loop {
        let ev = tokio::select! {
            () = &mut deadline => break,
            () = &mut signal => {
                println!("signal: ending every call");
                break;
            }
            ev = events.recv() => match ev {
                None => break,
                Some(ev) => ev,
            },
        };
        let r = ua.engine_reconnects();
        if r != reconnects {
            reconnects = r;
            println!("engine: reconnected to a restarted engine ({r} time(s))");
        }
        match ev {
            UasEvent::Answered(i) => {
                answered += 1;
                println!("answered {}: {}", i.call_id, i.verdict);
                if !hangup_after.is_zero() {
                    let ua = ua.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(hangup_after).await;
                        ua.hangup(&i.call_id).await
                    });
                }
            }
            UasEvent::Refused {
                call_id,
                code,
                reason,
            } => {
                failed += 1;
                println!("refused {call_id} with {code}: {reason}");
            }
            UasEvent::Failed { call_id, error } => {
                failed += 1;
                println!("call {call_id} failed ({}): {error}", error.cause());
            }
            UasEvent::Updated { call_id, change } => println!("updated {call_id}: {change}"),
            UasEvent::Dtls {
                call_id,
                outcome,
                verdict,
            } => match outcome.reason() {
                None => println!("DTLS-SRTP up on {call_id}: {verdict}"),
                Some(why) => {
                    failed += 1;
                    println!("DTLS-SRTP FAILED on {call_id}: {why}; hanging up");
                    let ua = ua.clone();
                    tokio::spawn(async move { ua.hangup(&call_id).await });
                }
            },
            UasEvent::Ended {
                call_id,
                stats,
                by,
                bye,
            } => {
                if !ended_line(&call_id, &by, &stats, bye.as_ref()) {
                    failed += 1;
                }
            }
            UasEvent::Registration(e) => {
                if registration_line(&e) == Some(false) {
                    ok = false;
                }
            }
            UasEvent::Engine { up: false } => {
                println!("engine: its control socket went away; calls with media are ended")
            }
            UasEvent::Engine { up: true } => println!("engine: answering again"),
            UasEvent::Released { .. } => {}
        }
    }
    let summary = ua.shutdown(Duration::from_secs(10)).await;
    // Events of the stop itself (calls ended by our BYE, the unregistration).
    while let Ok(ev) = events.try_recv() {
        match ev {
            UasEvent::Ended {
                call_id,
                stats,
                by,
                bye,
            } if !ended_line(&call_id, &by, &stats, bye.as_ref()) => failed += 1,
            UasEvent::Registration(e) => {
                registration_line(&e);
            }
            _ => {}
        }
    }
    let clean = stopped_line(&summary, ua.engine_reconnects());
    println!("{answered} call(s) answered, {failed} failure(s)");
    Ok(ok && clean && failed == 0)
}

/// Prints a call's end; whether it ended cleanly.
fn ended_line(
    call_id: &str,
    by: &srtp_control::ua::EndedBy,
    stats: &Option<srtp_engine::model::StreamStats>,
    bye: Option<&Result<(), srtp_control::ua::CallError>>,
) -> bool {
    let (line, good) = end_line(by, stats, bye);
    println!("ended {call_id}: {line}");
    good
}
