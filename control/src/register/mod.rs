//! Registration that behaves like a phone fleet: REGISTER with refresh, digest
//! authentication, RFC 3261 retransmission backoff, RFC 5626 CRLF and OPTIONS keepalives, and
//! failover across an ordered list of registrars with fallback to the primary.
//!
//! - [`address`]: a registrar's address, domain, Request-URI and TLS name from configuration;
//! - [`endpoint`]: one endpoint's registration, a sans-IO state machine (time is an input);
//! - [`fleet`]: thousands of endpoints on one timer heap, with their counters and timings;
//! - [`registrar`]: a small sans-IO registrar for tests and labs, and [`server`] to put it on
//!   a real transport;
//! - [`config`]: the fleet file; [`report`]: the summary, `report.json` and metrics;
//!   [`html`]: `report.html`;
//! - [`run`]: `srtp-control register`: a fleet over real sockets.

pub mod address;
pub mod config;
pub mod endpoint;
pub mod fleet;
pub mod html;
pub mod registrar;
pub mod report;
pub mod run;
pub mod server;

pub use endpoint::{Detection, Endpoint, Event, Identity, Policy, RegistrarSpec};
pub use fleet::{Fleet, FleetSnapshot, FleetStats};
pub use registrar::{Registrar, RegistrarConfig};
