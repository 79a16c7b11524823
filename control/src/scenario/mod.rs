//! Load runs: a scenario (TOML) drives user agents and the media engine at a call rate, and
//! the results come out as a terminal summary, JSON and HTML reports and the SIP messages of
//! failed calls, with failures grouped by cause ([`causes`]) and a pass/fail verdict against
//! the scenario's thresholds.

pub mod causes;
pub mod config;
pub mod host;
pub mod html;
pub mod report;
pub mod run;
pub mod sample;

pub use config::Scenario;
pub use report::Report;
pub use run::{Progress, RunError, run};
