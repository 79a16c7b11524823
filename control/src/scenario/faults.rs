//! The answerer's deliberate faults (`[answerer.faults]`): a wrong fingerprint in its SDP, or
//! wrong SDES keys on its streams, applied around its media engine so a lab can see what each
//! failure looks like in the report.

use srtp_engine::model::StreamStats;
use srtp_engine::proto::dtls::Fingerprint;

use crate::media::{Allocation, MediaEngine, MediaError, StreamRef};
use crate::sdp::{MediaCrypto, Negotiated};

/// The answerer's deliberate faults, applied around its media engine.
pub(super) struct Faulty {
    pub(super) inner: Box<dyn MediaEngine>,
    pub(super) fingerprint: Option<Fingerprint>,
    pub(super) wrong_keys: bool,
}

impl Faulty {
    /// A wrong fingerprint in our SDP, when asked for.
    fn fake(&self, mut a: Allocation) -> Allocation {
        if let Some(f) = &self.fingerprint {
            a.fingerprint = Some(f.clone());
        }
        a
    }
}

impl MediaEngine for Faulty {
    fn prepare(&mut self) -> Result<Allocation, MediaError> {
        self.inner.prepare().map(|a| self.fake(a))
    }
    fn apply(
        &mut self,
        stream: StreamRef,
        n: &Negotiated,
        prev: Option<&Negotiated>,
    ) -> Result<(), MediaError> {
        self.inner.apply(stream, n, prev)
    }
    fn open(&mut self, n: &Negotiated, held: bool) -> Result<Allocation, MediaError> {
        let mut n = n.clone();
        if self.wrong_keys
            && let MediaCrypto::Sdes { local, .. } = &mut n.crypto
        {
            for k in &mut local.keys {
                if let Some(b) = k.key_salt.first_mut() {
                    *b ^= 0x5a;
                }
            }
        }
        self.inner.open(&n, held).map(|a| self.fake(a))
    }
    fn stats(&mut self, stream: StreamRef) -> Result<Option<StreamStats>, MediaError> {
        self.inner.stats(stream)
    }
    fn sending(&mut self, stream: StreamRef, on: bool) -> Result<(), MediaError> {
        self.inner.sending(stream, on)
    }
    fn close(&mut self, stream: StreamRef) -> Result<Option<StreamStats>, MediaError> {
        self.inner.close(stream)
    }
}

pub(super) fn random_fingerprint() -> Fingerprint {
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("system random number generator");
    let hex: Vec<String> = b.iter().map(|x| format!("{x:02X}")).collect();
    Fingerprint::parse(&format!("sha-256 {}", hex.join(":")))
        .expect("a well-formed sha-256 fingerprint")
}
