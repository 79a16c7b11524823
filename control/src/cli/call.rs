//! `srtp-control call`: place calls one after another and hang each up.

use std::time::Duration;

use super::endpoint::{Endpoint, Setup, config};
use super::lines::{
    DTLS_WAIT, await_registration, end_line, leg0, registration_line, stop_signal, stopped_line,
};
use srtp_control::media::DtlsOutcome;
use srtp_control::sdp::DtlsPath;
use srtp_control::ua::{CallOptions, UasEvent, UserAgent};
use srtp_engine::proto::dtls::Fingerprint;

pub(crate) async fn place_calls(
    ep: &Endpoint,
    opts: CallOptions,
    calls: u32,
    hold: Duration,
    far_end: &[Fingerprint],
) -> Result<bool, String> {
    let Setup { cfg, media, dtls } = config(ep)?;
    let registering = cfg.register.is_some();
    let with_engine = ep.engine.is_some();
    let (ua, mut events) = UserAgent::start_with_events(cfg, media, dtls)
        .await
        .map_err(|e| e.to_string())?;
    let mut ok = true;
    if registering && !await_registration(&mut events, Duration::from_secs(35)).await {
        let s = ua.shutdown(Duration::from_secs(5)).await;
        stopped_line(&s, 0);
        return Ok(false);
    }
    // Events nobody waits for here (a re-INVITE from the peer) are printed as they come.
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                UasEvent::Updated { call_id, change } => {
                    println!("updated {call_id}: {change}")
                }
                UasEvent::Registration(e) => {
                    registration_line(&e);
                }
                _ => {}
            }
        }
    });
    let signal = stop_signal();
    tokio::pin!(signal);
    let mut done = 0;
    'calls: for n in 1..=calls {
        let r = tokio::select! {
            r = ua.call_with(opts.clone()) => r,
            () = &mut signal => break 'calls,
        };
        let info = match r {
            Ok(info) => info,
            Err(e) => {
                ok = false;
                println!("call {n} failed ({}): {e}", e.cause());
                continue;
            }
        };
        println!(
            "call {n} connected in {:.1} ms: {}",
            info.setup.as_secs_f64() * 1e3,
            info.verdict
        );
        if with_engine
            && matches!(
                info.verdict.media,
                srtp_control::sdp::MediaSecurity::Dtls { .. }
            )
        {
            let outcome = tokio::select! {
                o = tokio::time::timeout(DTLS_WAIT, ua.dtls_outcome(&info.call_id)) => o,
                () = &mut signal => break 'calls,
            };
            match outcome {
                Ok(Ok((DtlsOutcome::Established { .. }, v))) => {
                    println!("call {n} DTLS-SRTP established: {v}");
                }
                Ok(Ok((o, v))) => {
                    ok = false;
                    println!(
                        "call {n} DTLS-SRTP FAILED: {} (engine); {v}",
                        o.reason().unwrap_or_default()
                    );
                }
                Ok(Err(e)) => {
                    ok = false;
                    println!("call {n}: {e}");
                }
                Err(_) => {
                    ok = false;
                    println!("call {n} DTLS-SRTP FAILED: no handshake result within {DTLS_WAIT:?}");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(hold) => {}
            _ = ua.ended(&info.call_id) => {}
            () = &mut signal => {
                println!("signal: ending the call");
                let _ = ua.hangup(&info.call_id).await;
                break 'calls;
            }
        }
        match ua.hangup(&info.call_id).await {
            Ok(end) => {
                let (line, good) = end_line(&end.by, &end.stats, end.bye.as_ref());
                let silent = with_engine
                    && leg0(&end.stats).is_some_and(|l| l.packets_in == 0)
                    && hold >= Duration::from_millis(500);
                if good && !silent {
                    done += 1;
                } else {
                    ok = false;
                }
                println!("call {n} ended {line}");
                let peer = leg0(&end.stats)
                    .and_then(|l| l.dtls.as_ref())
                    .and_then(|d| d.rtp.peer_fingerprint.as_deref());
                if let Some(peer) = peer {
                    match DtlsPath::judge(peer, far_end) {
                        Some(p) => println!("call {n} DTLS path: {p}"),
                        None => println!("call {n} DTLS peer certificate {peer}"),
                    }
                }
                if silent {
                    println!(
                        "call {n} FAILED: no media received in {} ms",
                        hold.as_millis()
                    );
                }
            }
            Err(e) => {
                ok = false;
                println!("call {n} hangup failed: {e}");
            }
        }
    }
    let s = ua.shutdown(Duration::from_secs(10)).await;
    let clean = stopped_line(&s, ua.engine_reconnects());
    println!("{done} of {calls} call(s) completed");
    Ok(ok && clean && done == calls)
}
