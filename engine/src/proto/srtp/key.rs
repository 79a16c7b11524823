//! Master keys: key || salt material, an optional MKI and lifetime.
//!
//! The material is zeroized on drop and never printed: `Debug` shows the suite, the MKI and the
//! lifetime only.

use core::fmt;

use zeroize::Zeroizing;

use super::error::SrtpConfigError;
use super::suite::Suite;

/// Longest key || salt material of any suite (AES-256 key and 112-bit salt).
const MAX_MATERIAL: usize = 46;
/// Longest MKI accepted, in bytes.
pub const MAX_MKI_LEN: usize = 4;

/// One SRTP master key with its salt, for one suite.
pub struct MasterKey {
    suite: Suite,
    material: Zeroizing<[u8; MAX_MATERIAL]>,
    mki: [u8; MAX_MKI_LEN],
    mki_len: u8,
    lifetime: Option<u64>,
}

impl MasterKey {
    /// A master key from `key || salt` as SDES `inline:` and DTLS-SRTP carry it (30, 46, 28 or
    /// 44 bytes, by suite).
    pub fn new(suite: Suite, key_and_salt: &[u8]) -> Result<MasterKey, SrtpConfigError> {
        if key_and_salt.len() != suite.master_len() {
            return Err(SrtpConfigError::KeyLength {
                suite,
                expected: suite.master_len(),
                actual: key_and_salt.len(),
            });
        }
        let mut material = Zeroizing::new([0u8; MAX_MATERIAL]);
        material[..key_and_salt.len()].copy_from_slice(key_and_salt);
        Ok(MasterKey {
            suite,
            material,
            mki: [0; MAX_MKI_LEN],
            mki_len: 0,
            lifetime: None,
        })
    }

    /// Whether this key is exactly `key || salt` (constant time): lets a test compare a key
    /// with what a peer exported without the key ever leaving this type.
    pub fn equals_material(&self, key_and_salt: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        key_and_salt.len() == self.suite.master_len()
            && bool::from(self.material[..key_and_salt.len()].ct_eq(key_and_salt))
    }

    /// Whether two keys hold the same material (tests compare the two ends of a handshake).
    #[cfg(test)]
    pub(crate) fn same_material(&self, other: &MasterKey) -> bool {
        self.suite == other.suite && self.material[..] == other.material[..]
    }

    /// A master key from the key and the salt given apart.
    pub fn from_parts(suite: Suite, key: &[u8], salt: &[u8]) -> Result<MasterKey, SrtpConfigError> {
        let mut joined = Zeroizing::new([0u8; MAX_MATERIAL]);
        let len = key.len() + salt.len();
        if len > MAX_MATERIAL || key.len() != suite.params().master_key_len {
            return Err(SrtpConfigError::KeyLength {
                suite,
                expected: suite.master_len(),
                actual: len,
            });
        }
        joined[..key.len()].copy_from_slice(key);
        joined[key.len()..len].copy_from_slice(salt);
        MasterKey::new(suite, &joined[..len])
    }

    /// Gives the key a master key identifier (RFC 3711 3.1), 1 to 4 bytes, carried in every
    /// packet so the receiver can pick the key.
    pub fn with_mki(mut self, mki: &[u8]) -> Result<MasterKey, SrtpConfigError> {
        if mki.is_empty() || mki.len() > MAX_MKI_LEN {
            return Err(SrtpConfigError::MkiLength(mki.len()));
        }
        self.mki[..mki.len()].copy_from_slice(mki);
        self.mki_len = mki.len() as u8;
        Ok(self)
    }

    /// Limits the key to `packets` SRTP packets (and as many SRTCP packets), as the SDES
    /// lifetime parameter does. Without it the RFC 3711 limits apply: 2^48 SRTP and 2^31 SRTCP
    /// packets.
    pub fn with_lifetime(mut self, packets: u64) -> Result<MasterKey, SrtpConfigError> {
        if packets == 0 {
            return Err(SrtpConfigError::Lifetime);
        }
        self.lifetime = Some(packets);
        Ok(self)
    }

    /// The suite this key is for.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The MKI, empty if the key has none.
    pub fn mki(&self) -> &[u8] {
        &self.mki[..usize::from(self.mki_len)]
    }

    /// The lifetime in packets, if one was set.
    pub fn lifetime(&self) -> Option<u64> {
        self.lifetime
    }

    pub(crate) fn key(&self) -> &[u8] {
        &self.material[..self.suite.params().master_key_len]
    }

    pub(crate) fn salt(&self) -> &[u8] {
        let p = self.suite.params();
        &self.material[p.master_key_len..p.master_key_len + p.master_salt_len]
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("suite", &self.suite)
            .field("mki", &self.mki())
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_checked() {
        let err = MasterKey::new(Suite::AeadAes128Gcm, &[1u8; 30]).unwrap_err();
        assert_eq!(
            err,
            SrtpConfigError::KeyLength {
                suite: Suite::AeadAes128Gcm,
                expected: 28,
                actual: 30
            }
        );
        let k = MasterKey::new(Suite::AeadAes128Gcm, &[1u8; 28]).unwrap();
        assert_eq!(
            k.with_mki(&[1, 2, 3, 4, 5]).unwrap_err(),
            SrtpConfigError::MkiLength(5)
        );
        let k = MasterKey::from_parts(Suite::AesCm256HmacSha1_80, &[2u8; 32], &[3u8; 14]).unwrap();
        assert_eq!(k.key(), &[2u8; 32]);
        assert_eq!(k.salt(), &[3u8; 14]);
    }

    #[test]
    fn debug_never_shows_key_material() {
        let k = MasterKey::new(Suite::AesCm128HmacSha1_80, &[0xab; 30])
            .unwrap()
            .with_mki(&[7])
            .unwrap();
        let shown = format!("{k:?}");
        assert!(shown.contains("AesCm128HmacSha1_80"), "{shown}");
        assert!(
            !shown.contains("171") && !shown.to_lowercase().contains("ab, "),
            "{shown}"
        );
    }
}
