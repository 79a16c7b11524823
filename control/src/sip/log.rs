//! The SIP message log of one endpoint: every message sent and received, timestamped, with
//! transport and addresses, in a text file people can read. SDES keys are redacted.

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
}

impl std::fmt::Debug for MessageLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.out.is_some() {
            "MessageLog(on)"
        } else {
            "MessageLog(off)"
        })
    }
}

impl MessageLog {
    /// A log that writes nothing.
    pub fn off() -> MessageLog {
        MessageLog { out: None }
    }

    /// A log written to `path` (created or truncated).
    pub fn create(path: &Path) -> std::io::Result<MessageLog> {
        Ok(MessageLog {
            out: Some(Arc::new(Mutex::new(BufWriter::new(File::create(path)?)))),
        })
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
        let Some(out) = &self.out else { return };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let (arrow, a, b) = match dir {
            Direction::Sent => ("SENT", local, peer),
            Direction::Received => ("RECEIVED", peer, local),
        };
        let text = redact(&String::from_utf8_lossy(bytes));
        let mut w = out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = write!(
            w,
            "{}.{:03}Z {arrow} {transport} {a} -> {b} ({} bytes)\n{}\n\n",
            utc(now.as_secs()),
            now.subsec_millis(),
            bytes.len(),
            text.trim_end()
        );
        let _ = w.flush();
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
