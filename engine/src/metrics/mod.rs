//! Prometheus metrics: every metric declared once ([`declare_metrics!`](crate::declare_metrics): name, type, help,
//! labels), rendered in the text exposition format (version 0.0.4) and served on `/metrics`
//! by hyper's HTTP/1 server on a thread of its own ([`MetricsServer`]), each connection under
//! a deadline.
//!
//! The engine's own families are in `engine.rs` (with the data plane): a scrape reads the
//! snapshots the workers publish every 100 ms (one short lock each) and never asks a worker
//! anything, so its cost does not grow with the number of streams and it cannot stall a
//! worker. There are no per-stream labels: per-stream detail is on the control socket.
//! `docs/metrics.md` lists every metric; a test keeps the two in step.

#[cfg(feature = "dataplane")]
mod engine;
mod exposition;
mod server;

#[cfg(feature = "dataplane")]
pub use engine::{METRICS, Scrape, render};
pub use exposition::{Exposition, Kind, Metric};
pub use server::MetricsServer;

/// Declares metric families once: a `Metric` constant each and the list `$list` of them in
/// exposition order. The engine's metrics and `srtp-control`'s are declared with it.
///
/// ```
/// srtp_engine::declare_metrics! {
///     /// The example's metrics.
///     pub EXAMPLE_METRICS;
///     EXAMPLE_TOTAL: Counter "example_things_total" ["kind"] "Things, by kind.";
/// }
/// assert_eq!(EXAMPLE_METRICS[0].name, "example_things_total");
/// ```
#[macro_export]
macro_rules! declare_metrics {
    ($(#[$doc:meta])* $vis:vis $list:ident;
     $($id:ident: $kind:ident $name:literal [$($l:literal),*] $help:literal;)*) => {
        $(
            #[allow(missing_docs, unreachable_pub)]
            $vis const $id: $crate::metrics::Metric = $crate::metrics::Metric {
                name: $name,
                kind: $crate::metrics::Kind::$kind,
                help: $help,
                labels: &[$($l),*],
            };
        )*
        $(#[$doc])*
        #[allow(unreachable_pub)]
        $vis const $list: &[&$crate::metrics::Metric] = &[$(&$id),*];
    };
}
