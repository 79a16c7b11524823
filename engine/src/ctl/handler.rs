//! What each command does to an engine in this process, and the figures it answers with. The
//! control socket's server runs requests through here, and so does a program that embeds the
//! engine ([`crate::ctl::api::StreamApi`] on [`Engine`]): one path, the same checks.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::api::{ClientError, StreamApi};
use super::protocol::reply::{ControlStats, DtlsStats, WorkerStats};
use super::protocol::{
    BatchCreated, BatchDeleted, Capabilities, CtlError, EngineStats, ErrorCode, Hello,
    PROTOCOL_VERSION, StreamPage, StreamRequest, SuiteInfo, UpdateRequest, Updated,
};
use crate::model::counters::suite_label;
use crate::model::{DropFamily, Event, Mode, StreamInfo, StreamStats};
use crate::proto::dtls::{DtlsFailureReason, HashAlg};
use crate::proto::pacer::Codec;
use crate::proto::srtp::Suite;
use crate::runtime::{Engine, EngineSnapshot};

/// `create`.
pub(crate) fn create(engine: &Engine, req: StreamRequest) -> Result<StreamInfo, CtlError> {
    let spec = req.into_spec()?;
    engine
        .create_stream(spec)
        .map_err(|e| CtlError::from_stream(&e))
}

/// `update`.
pub(crate) fn update(engine: &Engine, req: UpdateRequest) -> Result<Updated, CtlError> {
    let (id, update) = req.into_update()?;
    engine
        .update_stream(id, update)
        .map_err(|e| CtlError::from_stream(&e))?;
    Ok(Updated { stream: id })
}

/// `delete`.
pub(crate) fn delete(engine: &Engine, stream: u64) -> Result<StreamStats, CtlError> {
    engine
        .delete_stream(stream)
        .map_err(|e| CtlError::from_stream(&e))
}

/// `stats`.
pub(crate) fn stats(engine: &Engine, stream: u64) -> Result<StreamStats, CtlError> {
    engine
        .stream_stats(stream)
        .map_err(|e| CtlError::from_stream(&e))
}

/// `create_batch`: every request is checked, then the valid ones go to the workers together.
pub(crate) fn create_batch(engine: &Engine, reqs: Vec<StreamRequest>) -> BatchCreated {
    let n = reqs.len();
    let mut results: Vec<Option<Result<StreamInfo, CtlError>>> = Vec::with_capacity(n);
    let mut specs = Vec::with_capacity(n);
    let mut at = Vec::with_capacity(n);
    for (i, r) in reqs.into_iter().enumerate() {
        match r.into_spec() {
            Ok(spec) => {
                specs.push(spec);
                at.push(i);
                results.push(None);
            }
            Err(e) => {
                let e = CtlError::new(e.code, format!("streams[{i}].{}", e.message));
                results.push(Some(Err(e)));
            }
        }
    }
    for (i, r) in at.into_iter().zip(engine.create_streams(specs)) {
        results[i] = Some(r.map_err(|e| CtlError::from_stream(&e)));
    }
    let streams: Vec<_> = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(CtlError::new(ErrorCode::ShuttingDown, "no reply"))))
        .collect();
    let created = streams.iter().filter(|r| r.is_ok()).count();
    BatchCreated {
        created,
        failed: n - created,
        streams,
    }
}

/// `delete_batch`.
pub(crate) fn delete_batch(engine: &Engine, ids: &[u64]) -> BatchDeleted {
    let results: Vec<_> = engine
        .delete_streams(ids)
        .into_iter()
        .map(|r| r.map_err(|e| CtlError::from_stream(&e)))
        .collect();
    let deleted = results.iter().filter(|r| r.is_ok()).count();
    BatchDeleted {
        deleted,
        failed: results.len() - deleted,
        results,
    }
}

/// The most streams one `streams` reply carries (the default page too): a listing of 100,000
/// streams in one reply is tens of megabytes the engine would build and hold.
pub(crate) const MAX_STREAMS_PAGE: usize = 1000;

/// `streams`: a page of every stream, by id.
pub(crate) fn streams(engine: &Engine, offset: usize, limit: Option<usize>) -> StreamPage {
    // Only the ids of every stream are gathered; statistics only for the page's.
    let mut ids = engine.stream_ids();
    ids.sort_unstable();
    let total = ids.len();
    let take = limit.unwrap_or(MAX_STREAMS_PAGE).min(MAX_STREAMS_PAGE);
    let page = ids.get(offset.min(total)..).unwrap_or_default();
    let streams = engine.streams_stats(&page[..take.min(page.len())]);
    StreamPage {
        total,
        offset,
        streams,
    }
}

fn names<T>(all: &[T], name: impl Fn(&T) -> &str) -> Vec<String> {
    all.iter().map(|t| name(t).to_owned()).collect()
}

/// `hello`.
pub(crate) fn hello(engine: &Engine, max_line_bytes: usize, max_batch: usize) -> Hello {
    let codecs = [
        Codec::Pcmu,
        Codec::Pcma,
        Codec::G722,
        Codec::Opus,
        Codec::Video,
    ];
    Hello {
        protocol: PROTOCOL_VERSION,
        engine: format!("srtp-engine {}", env!("CARGO_PKG_VERSION")),
        capabilities: Capabilities {
            suites: Suite::ALL
                .iter()
                .map(|s| SuiteInfo {
                    name: s.sdp_name().into(),
                    dtls_profile: s.dtls_profile(),
                    key_salt_bytes: s.master_len(),
                })
                .collect(),
            dtls: true,
            dtls_fingerprint: engine.dtls_fingerprint(),
            dtls_profiles: names(engine.dtls().profiles(), |s| s.sdp_name()),
            fingerprint_hashes: names(&HashAlg::ALL, |h| h.name()),
            backend: engine.backend().name().into(),
            fallback_reason: engine.fallback_reason().map(Into::into),
            workers: engine.worker_count(),
            modes: names(&Mode::ALL, |m| m.name()),
            socket_models: vec!["per_stream".into(), "shared".into()],
            codecs: names(&codecs, |c| c.name()),
            events: names(&Event::NAMES, |n| n),
            commands: names(&super::protocol::COMMANDS, |c| c),
            max_line_bytes,
            max_batch,
        },
    }
}

/// Per-suite figures as a map from suite name (`plain` for RTP) to value.
fn by_suite(v: &[u64; 7]) -> BTreeMap<String, u64> {
    v.iter()
        .enumerate()
        .map(|(k, &x)| (suite_label(k).to_owned(), x))
        .collect()
}

/// `engine_stats`, from the workers' last snapshots and the control socket's counters.
pub(crate) fn engine_stats(
    engine: &Engine,
    snap: &EngineSnapshot,
    uptime_s: f64,
    control: ControlStats,
    events_dropped_by_server: u64,
) -> EngineStats {
    let t = &snap.totals;
    let d = &t.dtls;
    EngineStats {
        backend: engine.backend().name().into(),
        fallback_reason: engine.fallback_reason().map(Into::into),
        uptime_s,
        streams: Mode::ALL
            .iter()
            .zip(snap.streams_by_mode())
            .map(|(m, n)| (m.name().to_owned(), n))
            .collect(),
        packets_in: by_suite(&t.rx_packets),
        bytes_in: by_suite(&t.rx_bytes),
        packets_out: by_suite(&t.tx_packets),
        bytes_out: by_suite(&t.tx_bytes),
        drops: t.drops,
        auth_failures: t.drops.family(DropFamily::Auth),
        replay_drops: t.drops.family(DropFamily::Replay),
        malformed: t.drops.family(DropFamily::Malformed),
        source_drops: t.drops.family(DropFamily::Source),
        other_drops: t.drops.family(DropFamily::Other),
        tx_drops: t.tx_drops,
        streams_created: t.streams_created,
        streams_deleted: t.streams_deleted,
        events_dropped: t.events_dropped + events_dropped_by_server,
        dtls: DtlsStats {
            started: d.started,
            established: d.established,
            failed: DtlsFailureReason::ALL
                .iter()
                .zip(d.failed)
                .map(|(r, n)| (r.as_str().to_owned(), n))
                .collect(),
            sessions: d.sessions,
            handshake_seconds_sum: d.duration_sum_ns as f64 / 1e9,
        },
        workers: snap
            .workers
            .iter()
            .map(|w| WorkerStats {
                index: w.index,
                core: w.core,
                backend: w.backend.into(),
                streams: w.streams_by_mode.iter().sum(),
                busy_ratio: w.busy_ratio,
                cpu_user_us: w.cpu_user_us,
                cpu_sys_us: w.cpu_sys_us,
                timers: w.timers,
                io: w.io,
            })
            .collect(),
        control,
    }
}

/// An engine in this process answers stream requests exactly as its control socket would.
impl StreamApi for Arc<Engine> {
    fn create(&mut self, req: StreamRequest) -> Result<StreamInfo, ClientError> {
        create(self, req).map_err(ClientError::Remote)
    }

    fn update(&mut self, req: UpdateRequest) -> Result<Updated, ClientError> {
        update(self, req).map_err(ClientError::Remote)
    }

    fn delete(&mut self, stream: u64) -> Result<StreamStats, ClientError> {
        delete(self, stream).map_err(ClientError::Remote)
    }

    fn stats(&mut self, stream: u64) -> Result<StreamStats, ClientError> {
        stats(self, stream).map_err(ClientError::Remote)
    }
}
