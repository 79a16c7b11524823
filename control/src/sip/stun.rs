//! The little of STUN (RFC 8489) that RFC 5626 4.4.2 keepalives need over UDP: a Binding
//! request with a transaction id, and recognising the answer on the SIP socket (a STUN
//! message starts with two zero bits and carries the magic cookie, RFC 7983).

/// The magic cookie (RFC 8489 5).
pub const MAGIC_COOKIE: u32 = 0x2112_a442;
/// Binding request.
pub const BINDING_REQUEST: u16 = 0x0001;
/// Binding success response.
pub const BINDING_SUCCESS: u16 = 0x0101;

/// A STUN transaction id.
pub type TransactionId = [u8; 12];

/// A Binding request (no attributes).
pub fn binding_request(id: &TransactionId) -> [u8; 20] {
    let mut m = [0u8; 20];
    m[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    m[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    m[8..20].copy_from_slice(id);
    m
}

/// The message type and transaction id of a STUN message; `None` for anything else.
pub fn parse(bytes: &[u8]) -> Option<(u16, TransactionId)> {
    if bytes.len() < 20 || bytes[0] & 0xc0 != 0 {
        return None;
    }
    if u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) != MAGIC_COOKIE {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    if len % 4 != 0 || 20 + len != bytes.len() {
        return None;
    }
    let mut id = [0u8; 12];
    id.copy_from_slice(&bytes[8..20]);
    Some((u16::from_be_bytes([bytes[0], bytes[1]]), id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_round_trips_and_sip_is_not_stun() {
        let id = *b"0123456789ab";
        let req = binding_request(&id);
        assert_eq!(parse(&req), Some((BINDING_REQUEST, id)));
        // A success response with an XOR-MAPPED-ADDRESS (12 bytes of attribute).
        let mut resp = req.to_vec();
        resp[0..2].copy_from_slice(&BINDING_SUCCESS.to_be_bytes());
        resp[2..4].copy_from_slice(&12u16.to_be_bytes());
        resp.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse(&resp), Some((BINDING_SUCCESS, id)));
        assert_eq!(parse(b"SIP/2.0 200 OK\r\n\r\n"), None);
        assert_eq!(parse(&resp[..25]), None, "a length that does not fit");
    }
}
