//! SDP (RFC 8866) and offer/answer (RFC 3264) with SRTP keying: SDES `a=crypto` (RFC 4568)
//! and DTLS-SRTP `a=fingerprint`/`a=setup`/`a=tls-id` (RFC 5763, RFC 8842), and the security
//! verdict of a call.

pub mod answer;
pub mod crypto;
pub mod negotiate;
pub mod path;
pub mod session;
pub mod verdict;

pub use answer::{AnswerPlan, plan_answer};
pub use crypto::{CryptoAttr, CryptoAttrError};
pub use negotiate::{
    Codec, KeyMethod, LocalMedia, MediaCrypto, Negotiated, NegotiationError, Offer, SecurityConfig,
    SrtpPolicy,
};
pub use path::DtlsPath;
pub use session::{Direction, SdpError, Session};
pub use verdict::{DtlsState, MediaSecurity, SecurityLevel, Signaling, Verdict};
