//! Sans-IO protocol code: no sockets, no threads, no clock. Everything here is a pure function
//! or a plain struct changed through `&mut`, tested with RFC vectors.

pub mod rtcp;
pub mod rtp;
pub mod srtp;
