//! Session keys and the per-packet transforms: AES-CM + HMAC-SHA1 (RFC 3711 4.1.1, 4.2.1,
//! RFC 6188) and AES-GCM (RFC 7714). Stateless: the context picks the key and the index, these
//! functions seal or open one packet in place.
//!
//! Packet layouts (the trailer follows the payload):
//! ```text
//! SRTP   AES-CM:  header | encrypted payload | MKI | tag          tag over header..payload || ROC
//! SRTP   GCM:     header | encrypted payload | tag | MKI          AAD = header
//! SRTCP  AES-CM:  header | encrypted payload | E+index | MKI | tag  tag over header..E+index
//! SRTCP  GCM:     header | encrypted payload | tag | E+index | MKI  AAD = header || E+index
//! ```

use core::mem::ManuallyDrop;

use hmac::digest::KeyInit;
use hmac::{Hmac, HmacCore, Mac};
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use sha1::Sha1;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::aes_ctr::{AesKey, InlineAes};
use super::error::SrtpError;
use super::kdf;
use super::key::MasterKey;
use super::suite::{CipherKind, SuiteParams};
use crate::proto::rtcp;

/// The SRTCP E flag: the packet's payload is encrypted (RFC 3711 3.4).
pub(crate) const SRTCP_E_FLAG: u32 = 0x8000_0000;
/// Length of the GCM tag (RFC 7714 uses 16 octets for both suites).
const GCM_TAG_LEN: usize = 16;

/// The keys of one direction of SRTP or SRTCP, for one master key and one `r`.
///
/// Compact, because a stream holds one per flow and direction: AES-128 round keys and the
/// HMAC's two precomputed SHA-1 states inline (about 260 bytes), ring's GCM key (544 bytes)
/// and anything larger boxed. Rekeying for a new `r` (key derivation rate) rewrites the keys in
/// place and does not allocate. Every part wipes its key bytes when dropped (see [`Wiped`]).
// AES-CM, the common SDES case, is the inline variant; the GCM key is the one boxed.
#[allow(clippy::large_enum_variant)]
pub(crate) enum SessionTransform {
    AesCm {
        aes: AesKey,
        salt: [u8; 14],
        mac: HmacCore<Sha1>,
        tag_len: usize,
    },
    Gcm {
        key: Box<Wiped<LessSafeKey>>,
        salt: [u8; 12],
    },
}

/// Which of the two key sets a master key yields.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Flow {
    Rtp,
    Rtcp,
}

/// Session key material of one flow, derived on the stack and wiped after use.
struct SessionKeys {
    key: Zeroizing<[u8; 32]>,
    salt: Zeroizing<[u8; 14]>,
    auth: Zeroizing<[u8; 20]>,
}

impl SessionKeys {
    /// RFC 3711 4.3: the session keys of `flow` from `master` for key derivation index `r`.
    fn derive(params: &SuiteParams, master: &MasterKey, flow: Flow, r: u64) -> SessionKeys {
        let (enc, auth, salt) = match flow {
            Flow::Rtp => (
                kdf::LABEL_RTP_ENCRYPTION,
                kdf::LABEL_RTP_AUTH,
                kdf::LABEL_RTP_SALT,
            ),
            Flow::Rtcp => (
                kdf::LABEL_RTCP_ENCRYPTION,
                kdf::LABEL_RTCP_AUTH,
                kdf::LABEL_RTCP_SALT,
            ),
        };
        let prf = InlineAes::new(master.key());
        let mut keys = SessionKeys {
            key: Zeroizing::new([0u8; 32]),
            salt: Zeroizing::new([0u8; 14]),
            auth: Zeroizing::new([0u8; 20]),
        };
        kdf::derive(
            &prf,
            master.salt(),
            enc,
            r,
            &mut keys.key[..params.master_key_len],
        );
        kdf::derive(
            &prf,
            master.salt(),
            salt,
            r,
            &mut keys.salt[..params.session_salt_len],
        );
        kdf::derive(
            &prf,
            master.salt(),
            auth,
            r,
            &mut keys.auth[..params.auth_key_len],
        );
        keys
    }
}

impl SessionTransform {
    /// Derives the session keys of `flow` from `master` for key derivation index `r`
    /// (RFC 3711 4.3).
    pub(crate) fn derive(
        params: &SuiteParams,
        master: &MasterKey,
        flow: Flow,
        r: u64,
    ) -> SessionTransform {
        let k = SessionKeys::derive(params, master, flow, r);
        SessionTransform::from_session_keys(
            params,
            flow,
            &k.key[..params.master_key_len],
            &k.salt[..params.session_salt_len],
            &k.auth[..params.auth_key_len],
        )
    }

    /// Replaces the keys with those of key derivation index `r`, in place: no allocation,
    /// as the packet path requires when a key derivation rate is set.
    pub(crate) fn rederive(
        &mut self,
        params: &SuiteParams,
        master: &MasterKey,
        flow: Flow,
        r: u64,
    ) {
        let k = SessionKeys::derive(params, master, flow, r);
        let key = &k.key[..params.master_key_len];
        match self {
            SessionTransform::AesCm { aes, salt, mac, .. } => {
                aes.rekey(key);
                salt.copy_from_slice(&k.salt[..params.session_salt_len]);
                *mac = hmac_key(&k.auth[..params.auth_key_len]);
            }
            SessionTransform::Gcm { key: gcm, salt } => {
                **gcm = Wiped::new(gcm_key(key));
                salt.copy_from_slice(&k.salt[..params.session_salt_len]);
            }
        }
    }

    /// Builds the transform from session keys given directly (RFC 7714's vectors do this).
    pub(crate) fn from_session_keys(
        params: &SuiteParams,
        flow: Flow,
        key: &[u8],
        salt: &[u8],
        auth_key: &[u8],
    ) -> SessionTransform {
        match params.cipher {
            CipherKind::AesCmHmacSha1 => {
                let mut s = [0u8; 14];
                s.copy_from_slice(salt);
                SessionTransform::AesCm {
                    aes: AesKey::new(key),
                    salt: s,
                    mac: hmac_key(auth_key),
                    tag_len: match flow {
                        Flow::Rtp => params.rtp_tag_len,
                        Flow::Rtcp => params.rtcp_tag_len,
                    },
                }
            }
            CipherKind::AesGcm => {
                let mut s = [0u8; 12];
                s.copy_from_slice(salt);
                SessionTransform::Gcm {
                    key: Box::new(Wiped::new(gcm_key(key))),
                    salt: s,
                }
            }
        }
    }

    /// Encrypts and authenticates the RTP packet `buf[..len]` (payload from `header_len`) in
    /// place, appending the tag and `mki`. The caller has checked that `buf` has room.
    /// Returns the protected length.
    pub(crate) fn seal_rtp(
        &self,
        buf: &mut [u8],
        header_len: usize,
        len: usize,
        ssrc: u32,
        index: u64,
        mki: &[u8],
    ) -> usize {
        match self {
            SessionTransform::AesCm {
                aes,
                salt,
                mac,
                tag_len,
            } => {
                aes.apply_keystream(aes_cm_iv(salt, ssrc, index), &mut buf[header_len..len]);
                if !mki.is_empty() {
                    buf[len..len + mki.len()].copy_from_slice(mki);
                }
                let roc = ((index >> 16) as u32).to_be_bytes();
                let tag = hmac_sha1(mac, &buf[..len], &roc);
                let at = len + mki.len();
                buf[at..at + tag_len].copy_from_slice(&tag[..*tag_len]);
                at + tag_len
            }
            SessionTransform::Gcm { key, salt } => {
                let nonce = gcm_rtp_iv(salt, ssrc, index);
                let (header, rest) = buf.split_at_mut(header_len);
                let tag = gcm_seal(key, nonce, header, &mut rest[..len - header_len]);
                buf[len..len + GCM_TAG_LEN].copy_from_slice(&tag);
                let at = len + GCM_TAG_LEN;
                if !mki.is_empty() {
                    buf[at..at + mki.len()].copy_from_slice(mki);
                }
                at + mki.len()
            }
        }
    }

    /// Verifies and decrypts the SRTP packet `buf[..len]` in place. `mki_len` bytes of MKI sit
    /// in the trailer. Returns the RTP packet's length. AES-CM leaves the buffer untouched when
    /// authentication fails; AES-GCM may have changed the payload bytes.
    pub(crate) fn open_rtp(
        &self,
        buf: &mut [u8],
        header_len: usize,
        len: usize,
        ssrc: u32,
        index: u64,
        mki_len: usize,
    ) -> Result<usize, SrtpError> {
        match self {
            SessionTransform::AesCm {
                aes,
                salt,
                mac,
                tag_len,
            } => {
                let tag_at = len - tag_len;
                let end = tag_at - mki_len;
                let roc = ((index >> 16) as u32).to_be_bytes();
                let tag = hmac_sha1(mac, &buf[..end], &roc);
                if !bool::from(tag[..*tag_len].ct_eq(&buf[tag_at..len])) {
                    return Err(SrtpError::AuthFailed);
                }
                aes.apply_keystream(aes_cm_iv(salt, ssrc, index), &mut buf[header_len..end]);
                Ok(end)
            }
            SessionTransform::Gcm { key, salt } => {
                let end = len - mki_len;
                let nonce = gcm_rtp_iv(salt, ssrc, index);
                let (header, rest) = buf.split_at_mut(header_len);
                gcm_open(key, nonce, header, &mut rest[..end - header_len])?;
                Ok(end - GCM_TAG_LEN)
            }
        }
    }

    /// Encrypts and authenticates the RTCP packet `buf[..len]` in place with SRTCP index
    /// `index` (E flag set), appending index, `mki` and tag. Returns the protected length.
    pub(crate) fn seal_rtcp(
        &self,
        buf: &mut [u8],
        len: usize,
        ssrc: u32,
        index: u32,
        mki: &[u8],
    ) -> usize {
        let e_index = (SRTCP_E_FLAG | index).to_be_bytes();
        match self {
            SessionTransform::AesCm {
                aes,
                salt,
                mac,
                tag_len,
            } => {
                aes.apply_keystream(
                    aes_cm_iv(salt, ssrc, u64::from(index)),
                    &mut buf[rtcp::HEADER_LEN..len],
                );
                buf[len..len + 4].copy_from_slice(&e_index);
                buf[len + 4..len + 4 + mki.len()].copy_from_slice(mki);
                let tag = hmac_sha1(mac, &buf[..len + 4], &[]);
                let at = len + 4 + mki.len();
                buf[at..at + tag_len].copy_from_slice(&tag[..*tag_len]);
                at + tag_len
            }
            SessionTransform::Gcm { key, salt } => {
                let nonce = gcm_rtcp_iv(salt, ssrc, index);
                let mut aad = [0u8; rtcp::HEADER_LEN + 4];
                aad[..rtcp::HEADER_LEN].copy_from_slice(&buf[..rtcp::HEADER_LEN]);
                aad[rtcp::HEADER_LEN..].copy_from_slice(&e_index);
                let tag = gcm_seal(key, nonce, &aad, &mut buf[rtcp::HEADER_LEN..len]);
                buf[len..len + GCM_TAG_LEN].copy_from_slice(&tag);
                let at = len + GCM_TAG_LEN;
                buf[at..at + 4].copy_from_slice(&e_index);
                buf[at + 4..at + 4 + mki.len()].copy_from_slice(mki);
                at + 4 + mki.len()
            }
        }
    }

    /// Verifies and (if the E flag is set) decrypts the SRTCP packet `buf[..len]` in place.
    /// The caller has read `e_index` from the trailer. Returns the RTCP packet's length.
    pub(crate) fn open_rtcp(
        &self,
        buf: &mut [u8],
        len: usize,
        ssrc: u32,
        e_index: u32,
        mki_len: usize,
    ) -> Result<usize, SrtpError> {
        let encrypted = e_index & SRTCP_E_FLAG != 0;
        let index = e_index & !SRTCP_E_FLAG;
        match self {
            SessionTransform::AesCm {
                aes,
                salt,
                mac,
                tag_len,
            } => {
                let tag_at = len - tag_len;
                let index_at = tag_at - mki_len - 4;
                let tag = hmac_sha1(mac, &buf[..index_at + 4], &[]);
                if !bool::from(tag[..*tag_len].ct_eq(&buf[tag_at..len])) {
                    return Err(SrtpError::AuthFailed);
                }
                if encrypted {
                    aes.apply_keystream(
                        aes_cm_iv(salt, ssrc, u64::from(index)),
                        &mut buf[rtcp::HEADER_LEN..index_at],
                    );
                }
                Ok(index_at)
            }
            SessionTransform::Gcm { key, salt } => {
                let index_at = len - mki_len - 4;
                let tag_at = index_at - GCM_TAG_LEN;
                let nonce = gcm_rtcp_iv(salt, ssrc, index);
                let e_index = e_index.to_be_bytes();
                if encrypted {
                    // RFC 7714 9.2: AAD = first 8 octets || E+index; the ciphertext and tag
                    // are contiguous before the index.
                    let mut aad = [0u8; rtcp::HEADER_LEN + 4];
                    aad[..rtcp::HEADER_LEN].copy_from_slice(&buf[..rtcp::HEADER_LEN]);
                    aad[rtcp::HEADER_LEN..].copy_from_slice(&e_index);
                    gcm_open(key, nonce, &aad, &mut buf[rtcp::HEADER_LEN..index_at])?;
                } else {
                    // RFC 7714 9.3: without encryption the whole packet || E+index is the AAD
                    // and the plaintext is empty. Move the index next to the packet to make the
                    // AAD contiguous; the tag goes to a stack copy.
                    let mut tag = [0u8; GCM_TAG_LEN];
                    tag.copy_from_slice(&buf[tag_at..index_at]);
                    buf[tag_at..tag_at + 4].copy_from_slice(&e_index);
                    gcm_open(key, nonce, &buf[..tag_at + 4], &mut tag)?;
                }
                Ok(tag_at)
            }
        }
    }
}

/// Where the MKI starts in a protected packet of `len` bytes: before the tag for AES-CM, at
/// the very end for AEAD (RFC 7714 8.1, 9.1).
pub(crate) fn mki_offset(kind: CipherKind, len: usize, tag_len: usize, mki_len: usize) -> usize {
    match kind {
        CipherKind::AesCmHmacSha1 => len - tag_len - mki_len,
        CipherKind::AesGcm => len - mki_len,
    }
}

/// Where the SRTCP E+index word starts in a protected packet of `len` bytes.
pub(crate) fn srtcp_index_offset(
    kind: CipherKind,
    len: usize,
    tag_len: usize,
    mki_len: usize,
) -> usize {
    match kind {
        CipherKind::AesCmHmacSha1 => len - tag_len - mki_len - 4,
        CipherKind::AesGcm => len - mki_len - 4,
    }
}

/// RFC 3711 4.1.1: `IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)`.
fn aes_cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *b ^= s;
    }
    for (b, i) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *b ^= i;
    }
    iv
}

/// RFC 7714 8.1: `IV = (0x0000 || SSRC || ROC || SEQ) XOR salt`.
fn gcm_rtp_iv(salt: &[u8; 12], ssrc: u32, index: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
    for (b, s) in iv.iter_mut().zip(salt) {
        *b ^= s;
    }
    iv
}

/// RFC 7714 9.1: `IV = (0x0000 || SSRC || 0x0000 || 0 || SRTCP index) XOR salt`.
fn gcm_rtcp_iv(salt: &[u8; 12], ssrc: u32, index: u32) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[8..12].copy_from_slice(&index.to_be_bytes());
    for (b, s) in iv.iter_mut().zip(salt) {
        *b ^= s;
    }
    iv
}

/// The HMAC-SHA1 state after the key: the inner and outer SHA-1 states (64 bytes; the
/// `Hmac` wrapper adds a 64-byte block buffer that only the computation needs).
fn hmac_key(auth_key: &[u8]) -> HmacCore<Sha1> {
    // HMAC accepts keys of any length; 20 bytes come from the suite table.
    HmacCore::<Sha1>::new_from_slice(auth_key).expect("HMAC takes any key length")
}

/// The GCM key of a 16- or 32-byte session key (the suite table fixes the length).
fn gcm_key(key: &[u8]) -> LessSafeKey {
    let alg = if key.len() == 16 {
        &AES_128_GCM
    } else {
        &AES_256_GCM
    };
    LessSafeKey::new(UnboundKey::new(alg, key).expect("GCM key length"))
}

fn hmac_sha1(mac: &HmacCore<Sha1>, a: &[u8], b: &[u8]) -> [u8; 20] {
    let mut m = Hmac::<Sha1>::from_core(mac.clone());
    m.update(a);
    m.update(b);
    m.finalize().into_bytes().into()
}

fn gcm_seal(key: &LessSafeKey, nonce: [u8; 12], aad: &[u8], in_out: &mut [u8]) -> [u8; 16] {
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
        // ring refuses only inputs over 2^36 bytes; a datagram is far shorter.
        .expect("GCM input within limits");
    let mut out = [0u8; 16];
    out.copy_from_slice(tag.as_ref());
    out
}

fn gcm_open(
    key: &LessSafeKey,
    nonce: [u8; 12],
    aad: &[u8],
    in_out: &mut [u8],
) -> Result<(), SrtpError> {
    key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
        .map(|_| ())
        .map_err(|_| SrtpError::AuthFailed)
}

/// Holds a value whose bytes are wiped when it is dropped.
///
/// The AES round keys zeroize themselves, but HMAC states, salts and ring's GCM key do not.
/// The value's own bytes are overwritten after its destructor has run; what it owns on the
/// heap must wipe itself (a boxed GCM key sits in its own `Wiped`, boxed AES keys zeroize on
/// drop).
pub(crate) struct Wiped<T>(ManuallyDrop<T>);

impl<T> Wiped<T> {
    pub(crate) fn new(value: T) -> Wiped<T> {
        Wiped(ManuallyDrop::new(value))
    }
}

impl<T> core::ops::Deref for Wiped<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> core::ops::DerefMut for Wiped<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T> Drop for Wiped<T> {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: the value is dropped exactly once, here, and never used again; its memory
        // stays allocated (it is inside `self`) while the bytes are overwritten. Any heap
        // memory it owned was freed by its destructor; the pointers left in these bytes are
        // only overwritten, never read.
        unsafe {
            ManuallyDrop::drop(&mut self.0);
            zeroize::zeroize_flat_type(&mut self.0 as *mut ManuallyDrop<T>);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::srtp::kdf::tests::hex;
    use crate::proto::srtp::suite::Suite;

    const KEY_128: &str = "000102030405060708090a0b0c0d0e0f";
    const KEY_256: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    /// RFC 7714 16: the session salt "Quid pro quo".
    const SALT: &str = "517569642070726f2071756f";
    /// RFC 7714 16.1: the RTP packet of all SRTP vectors.
    const RTP: &str = "8040f17b8041f8d35501a0b2 47616c6c696120657374206f6d6e6973
                       20646976697361 20696e2070617274657320747265 73";
    /// RFC 7714 17.1: the RTCP packet of all SRTCP vectors.
    const RTCP: &str = "81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61
                        deadbeefdeadbeefdeadbeefdeadbeefdeadbeef";

    fn gcm(suite: Suite, key: &str, flow: Flow) -> SessionTransform {
        SessionTransform::from_session_keys(suite.params(), flow, &hex(key), &hex(SALT), &[])
    }

    fn seal_rtp(t: &SessionTransform, plain: &[u8]) -> Vec<u8> {
        let mut buf = plain.to_vec();
        buf.resize(plain.len() + 32, 0);
        let n = t.seal_rtp(&mut buf, 12, plain.len(), 0x5501a0b2, 0xf17b, &[]);
        buf.truncate(n);
        buf
    }

    /// RFC 7714 16.1.1 and 16.1.2: AEAD_AES_128_GCM SRTP encryption and decryption.
    #[test]
    fn rfc7714_16_1_aes128_gcm_rtp() {
        let t = gcm(Suite::AeadAes128Gcm, KEY_128, Flow::Rtp);
        let expected = hex(
            "8040f17b8041f8d35501a0b2 f24de3a3fb34de6cacba861c9d7e4bcabe633bd5
             0d294e6f42a5f47a51c7d19b36de3adf8833 899d7f27beb16a9152cf765ee4390cce",
        );
        let mut sealed = seal_rtp(&t, &hex(RTP));
        assert_eq!(sealed, expected);
        let len = sealed.len();
        let n = t
            .open_rtp(&mut sealed, 12, len, 0x5501a0b2, 0xf17b, 0)
            .unwrap();
        assert_eq!(&sealed[..n], &hex(RTP)[..]);
    }

    /// RFC 7714 16.2.1 and 16.2.2: AEAD_AES_256_GCM SRTP.
    #[test]
    fn rfc7714_16_2_aes256_gcm_rtp() {
        let t = gcm(Suite::AeadAes256Gcm, KEY_256, Flow::Rtp);
        let expected = hex(
            "8040f17b8041f8d35501a0b2 32b1de78a822fe12ef9f78fa332e33aab1801238
             9a58e2f3b50b2a0276ffae0f1ba63799b87b7aa3db36dfffd6b0f9bb7878d7a76c13",
        );
        let mut sealed = seal_rtp(&t, &hex(RTP));
        assert_eq!(sealed, expected);
        sealed[20] ^= 1;
        let len = sealed.len();
        assert_eq!(
            t.open_rtp(&mut sealed, 12, len, 0x5501a0b2, 0xf17b, 0),
            Err(SrtpError::AuthFailed)
        );
    }

    fn seal_rtcp(t: &SessionTransform) -> Vec<u8> {
        let plain = hex(RTCP);
        let mut buf = plain.clone();
        buf.resize(plain.len() + 32, 0);
        let n = t.seal_rtcp(&mut buf, plain.len(), 0x4d617273, 0x5d4, &[]);
        buf.truncate(n);
        buf
    }

    fn open_rtcp(t: &SessionTransform, wire: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let mut buf = wire.to_vec();
        let at = buf.len() - 4;
        let e_index = u32::from_be_bytes(buf[at..].try_into().unwrap());
        let n = t.open_rtcp(&mut buf, wire.len(), 0x4d617273, e_index, 0)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// RFC 7714 17.1: AEAD_AES_128_GCM SRTCP encryption, and its decryption.
    #[test]
    fn rfc7714_17_1_aes128_gcm_rtcp() {
        let t = gcm(Suite::AeadAes128Gcm, KEY_128, Flow::Rtcp);
        let expected = hex(
            "81c8000d4d617273 63e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32d
             c676a5f1730d6fda4ce09b4686303ded0bb9275bc84aa45896cf4d2fc5abf87245d9eade 800005d4",
        );
        assert_eq!(seal_rtcp(&t), expected);
        assert_eq!(open_rtcp(&t, &expected).unwrap(), hex(RTCP));
    }

    /// RFC 7714 17.2: AEAD_AES_256_GCM SRTCP verification and decryption.
    #[test]
    fn rfc7714_17_2_aes256_gcm_rtcp() {
        let t = gcm(Suite::AeadAes256Gcm, KEY_256, Flow::Rtcp);
        let wire = hex(
            "81c8000d4d617273 d50ae4d1f5ce5d304ba297e47d470c282c3ece5dbffe0a50
             a2eaa5c1110555be8415f658c61de0476f1b6fad1d1eb30c4446839f57ff6f6cb26ac3be 800005d4",
        );
        assert_eq!(seal_rtcp(&t), wire);
        assert_eq!(open_rtcp(&t, &wire).unwrap(), hex(RTCP));
    }

    /// RFC 7714 17.3 and 17.4: SRTCP authenticated but not encrypted (E flag clear).
    #[test]
    fn rfc7714_17_3_and_17_4_unencrypted_rtcp() {
        let t = gcm(Suite::AeadAes128Gcm, KEY_128, Flow::Rtcp);
        let wire = hex(&format!("{RTCP} 841dd9683dd78ec92ae58790125f62b3 000005d4"));
        assert_eq!(open_rtcp(&t, &wire).unwrap(), hex(RTCP));
        let t = gcm(Suite::AeadAes256Gcm, KEY_256, Flow::Rtcp);
        let mut wire = hex(&format!("{RTCP} 91db4afbfeee5a978fab4393ed2615fe 000005d4"));
        assert_eq!(open_rtcp(&t, &wire).unwrap(), hex(RTCP));
        wire[9] ^= 0x40;
        assert_eq!(open_rtcp(&t, &wire), Err(SrtpError::AuthFailed));
    }

    /// RFC 7714 16.1 lists the IVs: SRTP IV for SSRC 0x5501a0b2, ROC 0, SEQ 0xf17b, and
    /// 17.1 the SRTCP IV for SSRC "Mars", index 0x5d4.
    #[test]
    fn rfc7714_ivs() {
        let salt: [u8; 12] = hex(SALT).try_into().unwrap();
        assert_eq!(
            gcm_rtp_iv(&salt, 0x5501a0b2, 0xf17b).to_vec(),
            hex("51753c6580c2726f20718414")
        );
        assert_eq!(
            gcm_rtcp_iv(&salt, 0x4d617273, 0x5d4).to_vec(),
            hex("517524055203726f207170bb")
        );
    }

    /// RFC 3711 4.1.1: the SSRC lands in octets 4..8 and the index in octets 8..14.
    #[test]
    fn aes_cm_iv_layout() {
        assert_eq!(
            aes_cm_iv(&[0; 14], 0x0102_0304, 0x5566_7788_99aa).to_vec(),
            hex("00000000010203045566778899aa0000")
        );
    }
}
