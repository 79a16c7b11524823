//! Why a run could not start (a run that starts always ends in a report).

use thiserror::Error;

use super::config::ScenarioError;

/// Why a run could not start.
#[derive(Debug, Error)]
pub enum RunError {
    /// The scenario is wrong.
    #[error("{0}")]
    Scenario(#[from] ScenarioError),
    /// The engine could not be started or reached.
    #[error("media engine: {0}")]
    Engine(String),
    /// A user agent could not bind its transport.
    #[error("signaling: {0}")]
    Signaling(String),
    /// Files (lab certificates, reports).
    #[error("{0}")]
    Io(String),
}
