//! The SIP message log of one endpoint: every message sent and received, timestamped, with
//! transport and addresses, in a text file people can read, or kept in memory per call so
//! that a load run can hand over the messages of the calls that failed. SDES keys are
//! redacted.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Which way a message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// We sent it.
    Sent,
    /// We received it.
    Received,
}

/// A shared, cheap-to-clone message log; `MessageLog::off()` writes nothing.
#[derive(Clone, Default)]
pub struct MessageLog {
    out: Option<Arc<Mutex<BufWriter<File>>>>,
    calls: Option<Arc<Mutex<PerCall>>>,
}

/// Messages kept in memory by Call-ID, for at most `limit` calls at a time (a run forgets the
/// calls that succeeded; past the limit, new calls are not kept, and that is counted).
#[derive(Default)]
struct PerCall {
    by_call: HashMap<String, Vec<String>>,
    limit: usize,
    not_kept: u64,
}

impl std::fmt::Debug for MessageLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MessageLog(file: {}, per call: {})",
            self.out.is_some(),
            self.calls.is_some()
        )
    }
}

/// The Call-ID header's value in a raw message (`Call-ID` or compact `i`, any case).
fn raw_call_id(text: &str) -> Option<&str> {
    text.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("call-id") || name.eq_ignore_ascii_case("i"))
            .then(|| value.trim())
    })
}

impl MessageLog {
    /// A log that writes nothing.
    pub fn off() -> MessageLog {
        MessageLog {
            out: None,
            calls: None,
        }
    }

    /// A log written to `path` (created or truncated).
    pub fn create(path: &Path) -> std::io::Result<MessageLog> {
        Ok(MessageLog {
            out: Some(Arc::new(Mutex::new(BufWriter::new(File::create(path)?)))),
            calls: None,
        })
    }

    /// Also keeps each call's messages in memory (for up to `limit` calls at a time), to be
    /// taken with [`MessageLog::take_call`] or dropped with [`MessageLog::forget_call`].
    pub fn per_call(mut self, limit: usize) -> MessageLog {
        self.calls = Some(Arc::new(Mutex::new(PerCall {
            limit,
            ..PerCall::default()
        })));
        self
    }

    /// The messages kept for a call, oldest first; the call is forgotten.
    pub fn take_call(&self, call_id: &str) -> Vec<String> {
        self.calls
            .as_ref()
            .and_then(|c| {
                c.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .by_call
                    .remove(call_id)
            })
            .unwrap_or_default()
    }

    /// Drops what was kept for a call.
    pub fn forget_call(&self, call_id: &str) {
        if let Some(c) = &self.calls {
            c.lock()
                .unwrap_or_else(|p| p.into_inner())
                .by_call
                .remove(call_id);
        }
    }

    /// Calls whose messages were not kept because `limit` calls were already held.
    pub fn calls_not_kept(&self) -> u64 {
        self.calls
            .as_ref()
            .map_or(0, |c| c.lock().unwrap_or_else(|p| p.into_inner()).not_kept)
    }

    /// Records one message.
    pub fn record(
        &self,
        dir: Direction,
        transport: &str,
        local: SocketAddr,
        peer: SocketAddr,
        bytes: &[u8],
    ) {
        if self.out.is_none() && self.calls.is_none() {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let (arrow, a, b) = match dir {
            Direction::Sent => ("SENT", local, peer),
            Direction::Received => ("RECEIVED", peer, local),
        };
        let text = redact(&String::from_utf8_lossy(bytes));
        let entry = format!(
            "{}.{:03}Z {arrow} {transport} {a} -> {b} ({} bytes)\n{}\n\n",
            utc(now.as_secs()),
            now.subsec_millis(),
            bytes.len(),
            text.trim_end()
        );
        if let Some(calls) = &self.calls
            && let Some(id) = raw_call_id(&text)
        {
            let mut c = calls.lock().unwrap_or_else(|p| p.into_inner());
            let limit = c.limit;
            let held = c.by_call.len();
            match c.by_call.get_mut(id) {
                Some(v) => v.push(entry.clone()),
                None if held < limit => {
                    c.by_call.insert(id.to_owned(), vec![entry.clone()]);
                }
                None => c.not_kept += 1,
            }
        }
        if let Some(out) = &self.out {
            let mut w = out.lock().unwrap_or_else(|p| p.into_inner());
            let _ = w.write_all(entry.as_bytes());
            let _ = w.flush();
        }
    }
}

/// Replaces SDES key material (`inline:<base64>`) with `inline:<redacted>`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("inline:") {
        out.push_str(&rest[..i + 7]);
        out.push_str("<redacted>");
        rest = &rest[i + 7..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '='))
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SS` (UTC), without a date crate.
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (proleptic Gregorian), after H. Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_call_capture_keeps_each_call_apart_and_respects_its_limit() {
        let log = MessageLog::off().per_call(2);
        let a: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let msg = |cid: &str| {
            format!("BYE sip:x@h SIP/2.0\r\ni: {cid}\r\nCSeq: 2 BYE\r\n\r\n").into_bytes()
        };
        log.record(Direction::Sent, "UDP", a, a, &msg("one"));
        log.record(Direction::Received, "UDP", a, a, &msg("one"));
        log.record(Direction::Sent, "UDP", a, a, &msg("two"));
        log.record(Direction::Sent, "UDP", a, a, &msg("three"));
        assert_eq!(log.calls_not_kept(), 1);
        let one = log.take_call("one");
        assert_eq!(one.len(), 2);
        assert!(one[0].contains(" SENT UDP ") && one[1].contains(" RECEIVED UDP "));
        assert!(log.take_call("one").is_empty());
        log.forget_call("two");
        assert!(log.take_call("two").is_empty());
        assert!(log.take_call("three").is_empty());
    }

    #[test]
    fn dates_and_redaction() {
        assert_eq!(utc(0), "1970-01-01T00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(utc(1_795_252_671), "2026-11-21T09:17:51");
        let t = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4\r\n";
        assert_eq!(
            redact(t),
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:<redacted>|2^20|1:4\r\n"
        );
    }

    #[test]
    fn writes_a_readable_file() {
        let dir = std::env::temp_dir().join(format!("siplog-{}", std::process::id()));
        let log = MessageLog::create(&dir).unwrap();
        let a: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        log.record(
            Direction::Sent,
            "UDP",
            a,
            b,
            b"OPTIONS sip:x@y SIP/2.0\r\n\r\n",
        );
        let text = std::fs::read_to_string(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert!(
            text.contains(
                "SENT UDP 127.0.0.1:5060 -> 127.0.0.1:5070 (27 bytes)\nOPTIONS sip:x@y SIP/2.0"
            ),
            "{text}"
        );
    }
}
