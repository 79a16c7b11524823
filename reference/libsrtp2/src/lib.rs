//! Thin, safe bindings to the system libsrtp2 (2.x, from Debian's `libsrtp2-dev`), the
//! reference C implementation of SRTP. Used only by srtp-engine's interoperability tests and
//! benchmarks, never by the engine itself.
//!
//! Suites are named by their SDP names so this crate stays independent of the engine.

use std::ffi::{c_int, c_uint, c_ulong, c_void};
use std::ptr;
use std::sync::Once;

/// `srtp_crypto_policy_t` (srtp.h).
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CryptoPolicy {
    cipher_type: u32,
    cipher_key_len: c_int,
    auth_type: u32,
    auth_key_len: c_int,
    auth_tag_len: c_int,
    sec_serv: c_int,
}

/// `srtp_ssrc_t`.
#[repr(C)]
struct Ssrc {
    kind: c_int,
    value: c_uint,
}

/// `srtp_master_key_t`.
#[repr(C)]
struct MasterKeyC {
    key: *mut u8,
    mki_id: *mut u8,
    mki_size: c_uint,
}

/// `srtp_policy_t`.
#[repr(C)]
struct Policy {
    ssrc: Ssrc,
    rtp: CryptoPolicy,
    rtcp: CryptoPolicy,
    key: *mut u8,
    keys: *mut *mut MasterKeyC,
    num_master_keys: c_ulong,
    deprecated_ekt: *mut c_void,
    window_size: c_ulong,
    allow_repeat_tx: c_int,
    enc_xtn_hdr: *mut c_int,
    enc_xtn_hdr_count: c_int,
    next: *mut Policy,
}

const SSRC_ANY_INBOUND: c_int = 2;
const SSRC_ANY_OUTBOUND: c_int = 3;

unsafe extern "C" {
    fn srtp_init() -> c_int;
    fn srtp_create(session: *mut *mut c_void, policy: *const Policy) -> c_int;
    fn srtp_dealloc(session: *mut c_void) -> c_int;
    fn srtp_protect_mki(
        ctx: *mut c_void,
        hdr: *mut c_void,
        len: *mut c_int,
        use_mki: c_uint,
        mki_index: c_uint,
    ) -> c_int;
    fn srtp_unprotect_mki(
        ctx: *mut c_void,
        hdr: *mut c_void,
        len: *mut c_int,
        use_mki: c_uint,
    ) -> c_int;
    fn srtp_protect_rtcp_mki(
        ctx: *mut c_void,
        hdr: *mut c_void,
        len: *mut c_int,
        use_mki: c_uint,
        mki_index: c_uint,
    ) -> c_int;
    fn srtp_unprotect_rtcp_mki(
        ctx: *mut c_void,
        hdr: *mut c_void,
        len: *mut c_int,
        use_mki: c_uint,
    ) -> c_int;
    fn srtp_crypto_policy_set_rtp_default(p: *mut CryptoPolicy);
    fn srtp_crypto_policy_set_rtcp_default(p: *mut CryptoPolicy);
    fn srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(p: *mut CryptoPolicy);
    fn srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(p: *mut CryptoPolicy);
    fn srtp_crypto_policy_set_aes_cm_256_hmac_sha1_32(p: *mut CryptoPolicy);
    fn srtp_crypto_policy_set_aes_gcm_128_16_auth(p: *mut CryptoPolicy);
    fn srtp_crypto_policy_set_aes_gcm_256_16_auth(p: *mut CryptoPolicy);
}

/// libsrtp2's `srtp_err_status_auth_fail`.
pub const ERR_AUTH_FAIL: i32 = 7;
/// libsrtp2's `srtp_err_status_replay_fail`.
pub const ERR_REPLAY_FAIL: i32 = 9;
/// libsrtp2's `srtp_err_status_replay_old`.
pub const ERR_REPLAY_OLD: i32 = 10;

/// Bytes libsrtp2 may append to a packet: `SRTP_MAX_TRAILER_LEN` (tag, MKI, SRTCP index).
pub const MAX_TRAILER: usize = 16 + 128 + 4;

/// Which way a session works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Protects packets (`ssrc_any_outbound`).
    Outbound,
    /// Unprotects packets (`ssrc_any_inbound`).
    Inbound,
}

/// An error status code from libsrtp2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error(pub i32);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "libsrtp2 error status {}", self.0)
    }
}

impl std::error::Error for Error {}

fn check(status: c_int) -> Result<(), Error> {
    if status == 0 {
        Ok(())
    } else {
        Err(Error(status))
    }
}

/// One master key for [`Session::new`]: key || salt and an MKI (empty for none).
#[derive(Clone, Debug)]
pub struct Key {
    /// Master key followed by master salt.
    pub key_and_salt: Vec<u8>,
    /// Master key identifier, empty for none.
    pub mki: Vec<u8>,
}

/// An `srtp_t` session with one policy for any SSRC in one direction.
pub struct Session {
    ctx: *mut c_void,
    use_mki: bool,
}

fn policies(suite: &str) -> Option<(CryptoPolicy, CryptoPolicy)> {
    let mut rtp = CryptoPolicy::default();
    let mut rtcp = CryptoPolicy::default();
    // SAFETY: the setters only write the struct they are given.
    unsafe {
        match suite {
            "AES_CM_128_HMAC_SHA1_80" => {
                srtp_crypto_policy_set_rtp_default(&mut rtp);
                srtp_crypto_policy_set_rtcp_default(&mut rtcp);
            }
            "AES_CM_128_HMAC_SHA1_32" => {
                srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&mut rtp);
                srtp_crypto_policy_set_rtcp_default(&mut rtcp);
            }
            "AES_256_CM_HMAC_SHA1_80" => {
                srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(&mut rtp);
                srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(&mut rtcp);
            }
            "AES_256_CM_HMAC_SHA1_32" => {
                srtp_crypto_policy_set_aes_cm_256_hmac_sha1_32(&mut rtp);
                srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(&mut rtcp);
            }
            "AEAD_AES_128_GCM" => {
                srtp_crypto_policy_set_aes_gcm_128_16_auth(&mut rtp);
                srtp_crypto_policy_set_aes_gcm_128_16_auth(&mut rtcp);
            }
            "AEAD_AES_256_GCM" => {
                srtp_crypto_policy_set_aes_gcm_256_16_auth(&mut rtp);
                srtp_crypto_policy_set_aes_gcm_256_16_auth(&mut rtcp);
            }
            _ => return None,
        }
    }
    Some((rtp, rtcp))
}

impl Session {
    /// A session for `suite` (SDP name) with the given master keys, replay window (0 for
    /// libsrtp2's default of 128).
    ///
    /// # Panics
    /// On an unknown suite name (a test bug).
    pub fn new(
        suite: &str,
        direction: Direction,
        keys: &[Key],
        window: u64,
    ) -> Result<Session, Error> {
        static INIT: Once = Once::new();
        // SAFETY: srtp_init has no preconditions; Once makes it run once.
        INIT.call_once(|| check(unsafe { srtp_init() }).expect("srtp_init"));
        let (rtp, rtcp) = policies(suite).unwrap_or_else(|| panic!("unknown suite {suite}"));
        let mut materials: Vec<Vec<u8>> = keys.iter().map(|k| k.key_and_salt.clone()).collect();
        let mut mkis: Vec<Vec<u8>> = keys.iter().map(|k| k.mki.clone()).collect();
        let use_mki = keys.iter().any(|k| !k.mki.is_empty());
        let mut structs: Vec<MasterKeyC> = materials
            .iter_mut()
            .zip(&mut mkis)
            .map(|(k, m)| MasterKeyC {
                key: k.as_mut_ptr(),
                mki_id: m.as_mut_ptr(),
                mki_size: m.len() as c_uint,
            })
            .collect();
        let mut ptrs: Vec<*mut MasterKeyC> = structs.iter_mut().map(|s| s as *mut _).collect();
        let policy = Policy {
            ssrc: Ssrc {
                kind: match direction {
                    Direction::Outbound => SSRC_ANY_OUTBOUND,
                    Direction::Inbound => SSRC_ANY_INBOUND,
                },
                value: 0,
            },
            rtp,
            rtcp,
            key: if use_mki {
                ptr::null_mut()
            } else {
                materials[0].as_mut_ptr()
            },
            keys: if use_mki {
                ptrs.as_mut_ptr()
            } else {
                ptr::null_mut()
            },
            num_master_keys: if use_mki { ptrs.len() as c_ulong } else { 0 },
            deprecated_ekt: ptr::null_mut(),
            window_size: window as c_ulong,
            allow_repeat_tx: 0,
            enc_xtn_hdr: ptr::null_mut(),
            enc_xtn_hdr_count: 0,
            next: ptr::null_mut(),
        };
        let mut ctx = ptr::null_mut();
        // SAFETY: the policy and everything it points to live until srtp_create returns;
        // libsrtp2 copies the keys into the session.
        check(unsafe { srtp_create(&mut ctx, &policy) })?;
        Ok(Session { ctx, use_mki })
    }

    fn call(
        &mut self,
        packet: &mut Vec<u8>,
        f: impl FnOnce(*mut c_void, *mut c_void, *mut c_int) -> c_int,
    ) -> Result<(), Error> {
        let mut len = packet.len() as c_int;
        packet.resize(packet.len() + MAX_TRAILER, 0);
        let status = f(self.ctx, packet.as_mut_ptr().cast(), &mut len);
        packet.truncate(if status == 0 {
            len as usize
        } else {
            packet.len() - MAX_TRAILER
        });
        check(status)
    }

    /// Protects an RTP packet with master key `mki_index` (ignored without MKIs).
    pub fn protect_rtp(&mut self, packet: &mut Vec<u8>, mki_index: u32) -> Result<(), Error> {
        let use_mki = self.use_mki as c_uint;
        // SAFETY: the buffer has MAX_TRAILER spare bytes after the packet.
        self.call(packet, |c, p, l| unsafe {
            srtp_protect_mki(c, p, l, use_mki, mki_index)
        })
    }

    /// Unprotects an SRTP packet.
    pub fn unprotect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), Error> {
        let use_mki = self.use_mki as c_uint;
        // SAFETY: `len` covers only the packet, inside the buffer.
        self.call(packet, |c, p, l| unsafe {
            srtp_unprotect_mki(c, p, l, use_mki)
        })
    }

    /// Protects an RTCP packet with master key `mki_index`.
    pub fn protect_rtcp(&mut self, packet: &mut Vec<u8>, mki_index: u32) -> Result<(), Error> {
        let use_mki = self.use_mki as c_uint;
        // SAFETY: the buffer has MAX_TRAILER spare bytes after the packet.
        self.call(packet, |c, p, l| unsafe {
            srtp_protect_rtcp_mki(c, p, l, use_mki, mki_index)
        })
    }

    /// Unprotects an SRTCP packet.
    pub fn unprotect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), Error> {
        let use_mki = self.use_mki as c_uint;
        // SAFETY: `len` covers only the packet, inside the buffer.
        self.call(packet, |c, p, l| unsafe {
            srtp_unprotect_rtcp_mki(c, p, l, use_mki)
        })
    }

    /// Protects in place in a caller buffer without reallocating (for benchmarks): `buf` must
    /// have `MAX_TRAILER` bytes after the packet. Returns the new length.
    pub fn protect_rtp_in(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        assert!(buf.len() >= len + MAX_TRAILER);
        let mut l = len as c_int;
        // SAFETY: checked above that the buffer has room for the trailer.
        check(unsafe { srtp_protect_mki(self.ctx, buf.as_mut_ptr().cast(), &mut l, 0, 0) })?;
        Ok(l as usize)
    }

    /// Unprotects in place in a caller buffer (for benchmarks). Returns the new length.
    pub fn unprotect_rtp_in(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        assert!(buf.len() >= len);
        let mut l = len as c_int;
        // SAFETY: `len` lies inside the buffer.
        check(unsafe { srtp_unprotect_mki(self.ctx, buf.as_mut_ptr().cast(), &mut l, 0) })?;
        Ok(l as usize)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: ctx came from srtp_create and is freed once.
        unsafe {
            srtp_dealloc(self.ctx);
        }
    }
}
