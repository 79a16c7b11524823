//! The `result` of each command's reply. `create`, `stats` and `delete` answer with the model's
//! [`StreamInfo`] and [`StreamStats`]; the rest are here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::{CtlError, ErrorCode};
use crate::model::{DropCounts, IoStats, StreamInfo, StreamStats};

/// `hello`: who the engine is and what it can do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// [`super::PROTOCOL_VERSION`].
    pub protocol: u32,
    /// `srtp-engine <version>`.
    pub engine: String,
    /// What it supports.
    pub capabilities: Capabilities,
}

/// One SRTP suite as `hello` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuiteInfo {
    /// SDES name.
    pub name: String,
    /// DTLS-SRTP protection profile id, if the suite has one.
    pub dtls_profile: Option<u16>,
    /// Bytes of `key || salt`.
    pub key_salt_bytes: usize,
}

/// What an engine supports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    /// SRTP suites.
    pub suites: Vec<SuiteInfo>,
    /// DTLS-SRTP available.
    pub dtls: bool,
    /// The engine's certificate fingerprint (`sha-256 AB:...`).
    pub dtls_fingerprint: String,
    /// Suites a handshake can negotiate, in the order a server picks them.
    pub dtls_profiles: Vec<String>,
    /// Hashes accepted in a peer's fingerprint.
    pub fingerprint_hashes: Vec<String>,
    /// I/O backend.
    pub backend: String,
    /// Why io_uring is not used, when it is not.
    pub fallback_reason: Option<String>,
    /// Worker threads.
    pub workers: usize,
    /// Stream modes.
    pub modes: Vec<String>,
    /// Socket models.
    pub socket_models: Vec<String>,
    /// Codecs a stream can send.
    pub codecs: Vec<String>,
    /// Events a client can subscribe to.
    pub events: Vec<String>,
    /// Commands.
    pub commands: Vec<String>,
    /// Longest request line, bytes.
    pub max_line_bytes: usize,
    /// Most streams in one batch.
    pub max_batch: usize,
}

/// `update`: the stream changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Updated {
    /// The stream.
    pub stream: u64,
}

/// `subscribe`: the events this connection now receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribed {
    /// Their names.
    pub events: Vec<String>,
}

/// `streams`: a page of every stream's statistics, by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamPage {
    /// Streams in the engine.
    pub total: usize,
    /// Streams skipped.
    pub offset: usize,
    /// This page.
    pub streams: Vec<StreamStats>,
}

/// `create_batch`: what became of each stream, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchCreated {
    /// Streams created.
    pub created: usize,
    /// Streams refused.
    pub failed: usize,
    /// Per stream: its [`StreamInfo`] with `"ok": true`, or `{"ok": false, "error": ...}`.
    #[serde(with = "created_items")]
    pub streams: Vec<Result<StreamInfo, CtlError>>,
}

/// `delete_batch`: what became of each stream, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchDeleted {
    /// Streams deleted.
    pub deleted: usize,
    /// Streams not deleted.
    pub failed: usize,
    /// Per stream: `{"ok": true, "stats": ...}` or `{"ok": false, "error": ...}`.
    #[serde(with = "deleted_items")]
    pub results: Vec<Result<StreamStats, CtlError>>,
}

/// One item of a batch on the wire.
#[derive(Serialize, Deserialize)]
struct Item<T> {
    ok: bool,
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    stats: Option<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<CtlError>,
}

fn none<T>() -> Option<T> {
    None
}

fn item<T>(i: Item<T>) -> Result<T, CtlError> {
    match (i.ok, i.stats, i.error) {
        (true, Some(v), _) => Ok(v),
        (_, _, Some(e)) => Err(e),
        _ => Err(CtlError::new(
            ErrorCode::Other,
            "a batch item without its result",
        )),
    }
}

mod created_items {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    use super::{CtlError, Item, StreamInfo};

    pub(super) fn serialize<S: Serializer>(
        v: &[Result<StreamInfo, CtlError>],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        // A created stream is its info with `"ok": true` beside its fields.
        #[derive(Serialize)]
        struct Created<'a> {
            ok: bool,
            #[serde(flatten)]
            info: &'a StreamInfo,
        }
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Wire<'a> {
            Created(Created<'a>),
            Failed(Item<()>),
        }
        s.collect_seq(v.iter().map(|r| match r {
            Ok(info) => Wire::Created(Created { ok: true, info }),
            Err(e) => Wire::Failed(Item {
                ok: false,
                stats: None,
                error: Some(e.clone()),
            }),
        }))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<Result<StreamInfo, CtlError>>, D::Error> {
        Vec::<Value>::deserialize(d)?
            .into_iter()
            .map(|v| {
                if v.get("ok") == Some(&Value::Bool(true)) {
                    StreamInfo::deserialize(v).map(Ok)
                } else {
                    Item::<()>::deserialize(v).map(|i| {
                        Err(super::item(i).err().unwrap_or_else(|| {
                            CtlError::new(
                                super::super::ErrorCode::Other,
                                "a failed item without its error",
                            )
                        }))
                    })
                }
                .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

mod deleted_items {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{CtlError, Item, StreamStats};

    pub(super) fn serialize<S: Serializer>(
        v: &[Result<StreamStats, CtlError>],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|r| match r {
            Ok(stats) => Item {
                ok: true,
                stats: Some(stats),
                error: None,
            },
            Err(e) => Item {
                ok: false,
                stats: None,
                error: Some(e.clone()),
            },
        }))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<Result<StreamStats, CtlError>>, D::Error> {
        Ok(Vec::<Item<StreamStats>>::deserialize(d)?
            .into_iter()
            .map(super::item)
            .collect())
    }
}

/// `engine_stats`: the DTLS handshake figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DtlsStats {
    /// Handshakes started.
    pub started: u64,
    /// Handshakes established.
    pub established: u64,
    /// Handshakes failed, by reason.
    pub failed: BTreeMap<String, u64>,
    /// Sessions held now.
    pub sessions: u64,
    /// Sum of handshake durations, seconds.
    pub handshake_seconds_sum: f64,
}

/// `engine_stats`: one worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Worker index.
    pub index: usize,
    /// The core it is pinned to.
    pub core: Option<usize>,
    /// Its backend.
    pub backend: String,
    /// Streams it holds.
    pub streams: u64,
    /// Share of the last interval spent outside its wait (0-1).
    pub busy_ratio: f64,
    /// CPU time in user space, µs.
    pub cpu_user_us: u64,
    /// CPU time in the kernel, µs.
    pub cpu_sys_us: u64,
    /// Timers in its wheel.
    pub timers: usize,
    /// Its backend's counters.
    pub io: IoStats,
}

/// `engine_stats`: the control socket's own figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlStats {
    /// Connections open now.
    pub connections: usize,
    /// Requests answered.
    pub requests: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Events delivered to subscribers.
    pub events_sent: u64,
}

/// `engine_stats`: engine-wide figures since the engine started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineStats {
    /// I/O backend.
    pub backend: String,
    /// Why io_uring is not used, when it is not.
    pub fallback_reason: Option<String>,
    /// Seconds since the control socket opened.
    pub uptime_s: f64,
    /// Active streams by mode.
    pub streams: BTreeMap<String, u64>,
    /// RTP+RTCP packets unprotected (or received plain), by suite (`plain` for RTP).
    pub packets_in: BTreeMap<String, u64>,
    /// Their bytes.
    pub bytes_in: BTreeMap<String, u64>,
    /// RTP+RTCP packets protected (or sent plain), by suite.
    pub packets_out: BTreeMap<String, u64>,
    /// Their bytes.
    pub bytes_out: BTreeMap<String, u64>,
    /// Datagrams received and not used, by reason.
    pub drops: DropCounts,
    /// `drops.auth_failed`.
    pub auth_failures: u64,
    /// `drops.replayed`.
    pub replay_drops: u64,
    /// `drops.malformed`.
    pub malformed: u64,
    /// `drops.wrong_source + no_stream`.
    pub source_drops: u64,
    /// Every other drop reason.
    pub other_drops: u64,
    /// Packets that could not be sent.
    pub tx_drops: u64,
    /// Streams created.
    pub streams_created: u64,
    /// Streams deleted.
    pub streams_deleted: u64,
    /// Events dropped (a full channel, or a subscriber that did not read).
    pub events_dropped: u64,
    /// DTLS handshakes.
    pub dtls: DtlsStats,
    /// Per worker.
    pub workers: Vec<WorkerStats>,
    /// The control socket.
    pub control: ControlStats,
}

impl EngineStats {
    /// Packets over every suite, in (`false`) or out (`true`).
    pub fn packets(&self, out: bool) -> u64 {
        let m = if out {
            &self.packets_out
        } else {
            &self.packets_in
        };
        m.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Mode;

    #[test]
    fn batch_items_keep_their_wire_shape_and_read_back() {
        let info = StreamInfo {
            id: 3,
            worker: 1,
            legs: vec![],
            ssrc: Some(7),
            fingerprint: None,
        };
        let b = BatchCreated {
            created: 1,
            failed: 1,
            streams: vec![
                Ok(info.clone()),
                Err(CtlError::new(
                    super::super::ErrorCode::PortsExhausted,
                    "none",
                )),
            ],
        };
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v["streams"][0]["ok"], true);
        assert_eq!(v["streams"][0]["id"], 3);
        assert_eq!(v["streams"][1]["ok"], false);
        assert_eq!(v["streams"][1]["error"]["code"], "ports_exhausted");
        let back: BatchCreated = serde_json::from_value(v).unwrap();
        assert_eq!(back, b);
        let stats = StreamStats {
            id: 3,
            mode: Mode::Echo,
            paused: false,
            generated: 0,
            pacing_skips: 0,
            legs: vec![],
        };
        let d = BatchDeleted {
            deleted: 1,
            failed: 0,
            results: vec![Ok(stats)],
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["results"][0]["stats"]["id"], 3);
        assert_eq!(serde_json::from_value::<BatchDeleted>(v).unwrap(), d);
    }
}
