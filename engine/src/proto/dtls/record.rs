//! Pure helpers the DTLS sessions share: a peek at a datagram's first record, and the split of
//! RFC 5764 keying material into our two master keys.

use super::fingerprint::{DtlsRole, Fingerprint};

/// Whether a datagram is the start of a ClientHello (what a DTLS server may learn its peer
/// from): a handshake record of epoch 0 holding the first fragment of a ClientHello at least
/// as long as the smallest one.
pub fn opens_client_hello(datagram: &[u8]) -> bool {
    opens_first_flight(datagram, DtlsRole::Server)
}
use super::types::DtlsKeys;
use crate::proto::srtp::{MasterKey, Suite};

/// Whether a datagram opens the peer's first flight: a handshake record of epoch 0 whose
/// message is a ClientHello (to a server) or a ServerHello or HelloVerifyRequest (to a
/// client). RFC 6347 4.1 record header (13 bytes), then the handshake header (12).
pub(super) fn opens_first_flight(datagram: &[u8], role: DtlsRole) -> bool {
    const HANDSHAKE: u8 = 22;
    if datagram.len() < 13 + 12 || datagram[0] != HANDSHAKE || datagram[3..5] != [0, 0] {
        return false;
    }
    let record_len = usize::from(u16::from_be_bytes([datagram[11], datagram[12]]));
    let h = &datagram[13..];
    let msg = h[0];
    let len = u32::from_be_bytes([0, h[1], h[2], h[3]]);
    let offset = u32::from_be_bytes([0, h[6], h[7], h[8]]);
    // The smallest body: version, random and empty lengths (RFC 6347 4.2.1, 4.3.2).
    let least = match (role, msg) {
        (DtlsRole::Server, 1) | (DtlsRole::Client, 2) => 38,
        (DtlsRole::Client, 3) => 3,
        _ => return false,
    };
    record_len >= 12 && 13 + record_len <= datagram.len() && offset == 0 && len >= least
}

/// Splits RFC 5764 4.2 keying material
/// `client_key | server_key | client_salt | server_salt` into our two master keys.
pub(super) fn split_keys(
    role: DtlsRole,
    suite: Suite,
    km: &[u8],
    peer: Fingerprint,
) -> Option<DtlsKeys> {
    let p = suite.params();
    let (k, s) = (p.master_key_len, p.master_salt_len);
    if km.len() != 2 * (k + s) {
        return None;
    }
    let client = MasterKey::from_parts(suite, &km[..k], &km[2 * k..2 * k + s]).ok()?;
    let server = MasterKey::from_parts(suite, &km[k..2 * k], &km[2 * k + s..]).ok()?;
    let (local, remote) = match role {
        DtlsRole::Client => (client, server),
        DtlsRole::Server => (server, client),
    };
    Some(DtlsKeys {
        suite,
        local,
        remote,
        peer,
    })
}
