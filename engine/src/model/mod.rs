//! The engine's public model: what a client asks of a stream, what it gets back, the events
//! and the counters. Plain data with no sockets or threads, so that a client (the signaling
//! layer, the benches) can depend on it without linking the data plane: build the crate with
//! `default-features = false`.
//!
//! The control protocol ([`crate::ctl::protocol`]) carries these types as they are.

pub mod counters;
pub mod error;
pub mod event;
pub mod stats;
pub mod stream;

pub use counters::{Counters, DropCounts, DropFamily, DropReason, DtlsCounters, IoStats};
pub use error::{SocketError, StreamError};
pub use event::{Component, Direction, Event, TimedEvent};
pub use stats::{
    DtlsComponentStats, DtlsLegStats, DtlsState, LegInfo, LegStats, StreamInfo, StreamStats,
};
pub use stream::{
    Crypto, DtlsSpec, LegSpec, Mode, SocketModel, StreamSpec, StreamUpdate, WatchOptions,
    WatchOverrides,
};
