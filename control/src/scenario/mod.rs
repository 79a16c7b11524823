//! Load runs: a scenario (TOML) drives user agents and the media engine at a call rate, and
//! the results come out as a terminal summary, JSON and HTML reports and the SIP messages of
//! failed calls, with failures grouped by cause ([`causes`]) and a pass/fail verdict against
//! the scenario's thresholds.

mod agents;
mod answerer;
mod caller;
pub mod causes;
pub mod config;
mod engine;
pub mod error;
mod faults;
pub mod host;
pub mod html;
pub mod live;
pub mod media;
pub mod merge;
pub mod path;
pub mod progress;
pub mod report;
pub mod run;
pub mod sample;
pub mod shard;
mod state;
mod tls;
pub mod totals;

pub use config::Scenario;
pub use error::RunError;
pub use progress::Progress;
pub use report::Report;
pub use run::run;
