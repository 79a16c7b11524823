//! What the run's tasks share while it goes: call counts, every call's record, the DTLS
//! outcomes the engine reported, and the answerer's side of each call. One short lock each
//! time; nothing here waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::oneshot;

use super::media::LegEnd;
use super::report::CallRecord;

/// The outcome of a DTLS-SRTP handshake as the engine reported it.
#[derive(Clone, Debug)]
pub(super) enum Dtls {
    Established(f64),
    Failed { cause: String, detail: String },
}

/// Per-second figures of calls that ended in that second.
#[derive(Default)]
pub(super) struct Window {
    pub(super) expected: u64,
    pub(super) lost: u64,
    pub(super) jitter_sum: f64,
    pub(super) mos_min: Option<f64>,
    pub(super) ended: u64,
}

/// The run's tallies.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) attempted: u64,
    pub(super) setup_ok: u64,
    pub(super) failed: u64,
    pub(super) active: u64,
    pub(super) peak_active: u64,
    pub(super) max_lag_ms: f64,
    pub(super) first_start: Option<Instant>,
    pub(super) last_start: Option<Instant>,
    pub(super) records: Vec<CallRecord>,
    pub(super) failed_logs: usize,
    pub(super) dtls_waiters: HashMap<u64, oneshot::Sender<Dtls>>,
    pub(super) dtls_seen: HashMap<u64, Dtls>,
    pub(super) answerer_dtls_ms: Vec<f64>,
    pub(super) answered: u64,
    pub(super) refused: HashMap<String, u64>,
    /// Calls our answerer saw end.
    pub(super) answerer_ended: u64,
    /// The answerers' side of each call they answered, by Call-ID (several for a call a
    /// proxy forked).
    pub(super) answerer_media: HashMap<String, Vec<LegEnd>>,
    /// Answerer agents registered (with `answerer.register`), by index.
    pub(super) registered: std::collections::HashSet<usize>,
    /// The last reason an answerer could not register, in words.
    pub(super) registration_problem: Option<String>,
    pub(super) window: Window,
}

impl Tally {
    /// A call is over.
    pub(super) fn finish(&mut self, rec: CallRecord) {
        self.active -= 1;
        if rec.cause.is_some() {
            self.failed += 1;
        }
        if let Some(m) = &rec.media {
            let w = &mut self.window;
            w.expected += m.expected;
            w.lost += m.lost;
            w.jitter_sum += m.jitter_ms;
            w.mos_min = Some(w.mos_min.map_or(m.mos, |x: f64| x.min(m.mos)));
            w.ended += 1;
        }
        self.records.push(rec);
    }

    /// A DTLS outcome for a stream: to the call waiting for it, or kept until it asks.
    pub(super) fn dtls_event(&mut self, stream: u64, d: Dtls) {
        match self.dtls_waiters.remove(&stream) {
            Some(w) => {
                let _ = w.send(d);
            }
            None => {
                self.dtls_seen.insert(stream, d);
            }
        }
    }
}

/// The tallies, shared by the run's tasks.
pub(super) type Shared = Arc<Mutex<Tally>>;

/// The tallies, locked (a task that panicked while holding them left them usable).
pub(super) fn lock(s: &Shared) -> MutexGuard<'_, Tally> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}
