//! What a load run records each second: its calls, media rates and this machine's load.

use serde::Serialize;

/// One second of the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    /// Seconds from the start.
    pub t_s: f64,
    /// Calls attempted so far.
    pub attempted: u64,
    /// Calls set up so far.
    pub setup_ok: u64,
    /// Calls failed so far.
    pub failed: u64,
    /// Calls in progress.
    pub active: u64,
    /// Engine packets received per second (RTP and RTCP, both sides on this machine).
    pub rx_pps: f64,
    /// Engine packets sent per second.
    pub tx_pps: f64,
    /// Calls that ended in this second.
    pub ended: u64,
    /// Their loss, %.
    pub loss_percent: f64,
    /// Their mean jitter, ms.
    pub jitter_ms: f64,
    /// Their lowest MOS.
    pub mos_min: Option<f64>,
    /// This machine's CPU share in use (all cores, steal excluded), %; `None` without
    /// `/proc/stat`.
    pub cpu_percent: Option<f64>,
    /// The hypervisor's share (steal), %.
    pub steal_percent: Option<f64>,
    /// The busiest engine worker's share of the second spent working (0-1), when known.
    pub worker_busy: Option<f64>,
    /// Datagrams the kernel dropped at the engine's sockets so far (receive buffers full).
    pub local_drops: u64,
}
