//! The `srtp-control` command line's own parts (this binary's modules, not the library's):
//! one file per command, the endpoint options they share, and the lines they print.

pub(crate) mod answer;
pub(crate) mod call;
pub(crate) mod endpoint;
pub(crate) mod lines;
pub(crate) mod register;
