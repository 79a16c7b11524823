//! A small blocking client for the control socket: what `srtp-engine ctl`, the tests and the
//! signaling layer use. One request at a time; events that arrive while a reply is awaited are
//! kept for [`CtlClient::next_event`].

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

/// What went wrong on the client side, or the engine's error reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    /// The engine sent something that is not a reply line.
    #[error("control socket: unexpected line from the engine: {0}")]
    Protocol(String),
    /// The engine answered with an error.
    #[error("{code}: {message}")]
    Remote {
        /// The error code (`unknown_suite`, `no_such_stream`, ...).
        code: String,
        /// The engine's message.
        message: String,
    },
    /// No reply or event in time.
    #[error("control socket: no answer within {0:?}")]
    Timeout(Duration),
}

impl ClientError {
    /// The engine's error code, when this is an error reply.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Remote { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A connection to an engine's control socket.
pub struct CtlClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    events: VecDeque<Value>,
    timeout: Duration,
}

impl CtlClient {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> Result<CtlClient, ClientError> {
        let s = UnixStream::connect(path)?;
        let timeout = Duration::from_secs(30);
        s.set_read_timeout(Some(timeout))?;
        Ok(CtlClient {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
            next_id: 1,
            events: VecDeque::new(),
            timeout,
        })
    }

    /// Sets how long a request waits for its reply (default 30 s).
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    fn read_line(&mut self, deadline: Instant) -> Result<Value, ClientError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Timeout(self.timeout));
        }
        self.reader.get_ref().set_read_timeout(Some(left))?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the engine closed the connection",
            ))),
            Ok(_) => serde_json::from_str(&line).map_err(|_| ClientError::Protocol(line)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(ClientError::Timeout(self.timeout))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sends a raw line (tests use it to send malformed input) and returns the next reply.
    pub fn send_raw(&mut self, line: &[u8]) -> Result<Value, ClientError> {
        self.writer.write_all(line)?;
        if line.last() != Some(&b'\n') {
            self.writer.write_all(b"\n")?;
        }
        self.read_reply()
    }

    /// The next line that is not an event (events are kept for [`CtlClient::next_event`]).
    fn read_reply(&mut self) -> Result<Value, ClientError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let v = self.read_line(deadline)?;
            if v.get("event").is_some() {
                self.events.push_back(v);
                continue;
            }
            return Ok(v);
        }
    }

    /// Sends `cmd` with `params` (an object, or null) and returns the `result` of its reply,
    /// or the engine's error.
    pub fn request(&mut self, cmd: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut obj = match params {
            Value::Object(o) => o,
            _ => Map::new(),
        };
        obj.insert("id".into(), json!(id));
        obj.insert("cmd".into(), json!(cmd));
        let mut line = serde_json::to_vec(&Value::Object(obj))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        zeroize::Zeroize::zeroize(&mut line);
        let v = self.read_reply()?;
        if v.get("id") != Some(&json!(id)) {
            return Err(ClientError::Protocol(v.to_string()));
        }
        reply_result(v)
    }

    /// The next event, waiting up to `wait`.
    pub fn next_event(&mut self, wait: Duration) -> Result<Option<Value>, ClientError> {
        if let Some(e) = self.events.pop_front() {
            return Ok(Some(e));
        }
        match self.read_line(Instant::now() + wait) {
            Ok(v) if v.get("event").is_some() => Ok(Some(v)),
            Ok(v) => Err(ClientError::Protocol(v.to_string())),
            Err(ClientError::Timeout(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The `result` of a reply, or its error.
pub fn reply_result(v: Value) -> Result<Value, ClientError> {
    match v.get("ok") {
        Some(Value::Bool(true)) => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
        Some(Value::Bool(false)) => {
            let e = v.get("error");
            let field = |k: &str| {
                e.and_then(|e| e.get(k))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            Err(ClientError::Remote {
                code: field("code"),
                message: field("message"),
            })
        }
        _ => Err(ClientError::Protocol(v.to_string())),
    }
}
