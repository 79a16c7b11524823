//! A small blocking client for the control socket, typed: what `srtp-engine ctl`, the tests,
//! the benches and the signaling layer use. One request at a time; events that arrive while a
//! reply is awaited are kept for [`CtlClient::next_event`].

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;
use zeroize::Zeroize;

pub use super::api::ClientError;
use super::api::StreamApi;
use super::protocol::{
    self, BatchCreated, BatchDeleted, EngineStats, Hello, Request, StreamPage, StreamRequest,
    Subscribed, UpdateRequest, Updated,
};
use crate::model::{StreamInfo, StreamStats, TimedEvent};

/// A connection to an engine's control socket.
pub struct CtlClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    events: VecDeque<TimedEvent>,
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

    fn read_line(&mut self, deadline: Instant) -> Result<Vec<u8>, ClientError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Timeout(self.timeout));
        }
        self.reader.get_ref().set_read_timeout(Some(left))?;
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the engine closed the connection",
            ))),
            Ok(_) => Ok(line),
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

    /// Whether a line is an event (kept) rather than a reply.
    fn keep_if_event(&mut self, line: &[u8]) -> bool {
        #[derive(serde::Deserialize)]
        struct Probe {
            event: Option<serde::de::IgnoredAny>,
        }
        match serde_json::from_slice::<Probe>(line) {
            Ok(Probe { event: Some(_) }) => {
                // An event this build does not know (a newer engine's) is skipped.
                if let Ok(e) = serde_json::from_slice::<TimedEvent>(line) {
                    self.events.push_back(e);
                }
                true
            }
            _ => false,
        }
    }

    /// The next line that is not an event.
    fn read_reply(&mut self) -> Result<Vec<u8>, ClientError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let line = self.read_line(deadline)?;
            if !self.keep_if_event(&line) {
                return Ok(line);
            }
        }
    }

    /// Sends a raw line (tests use it to send malformed input) and returns the next reply as
    /// JSON, whatever it says.
    pub fn send_raw(&mut self, line: &[u8]) -> Result<Value, ClientError> {
        self.writer.write_all(line)?;
        if line.last() != Some(&b'\n') {
            self.writer.write_all(b"\n")?;
        }
        let reply = self.read_reply()?;
        serde_json::from_slice(&reply)
            .map_err(|_| ClientError::Protocol(String::from_utf8_lossy(&reply).into_owned()))
    }

    /// Sends a request and returns its reply's `result` as JSON, or the engine's error.
    pub fn request(&mut self, request: &Request) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line = Vec::with_capacity(256);
        let written = protocol::write_request(id, request, &mut line);
        let sent = written
            .map_err(ClientError::Remote)
            .and_then(|()| self.writer.write_all(&line).map_err(ClientError::Io));
        line.zeroize();
        sent?;
        let reply = self.read_reply()?;
        let bad = || ClientError::Protocol(String::from_utf8_lossy(&reply).into_owned());
        let (rid, result) = protocol::read_reply(&reply).map_err(|_| bad())?;
        if rid != id {
            return Err(bad());
        }
        result.map_err(ClientError::Remote)
    }

    /// Sends `cmd` with `params` (a JSON object, or null) as written, and returns its reply's
    /// `result` as JSON: for tests and tools that speak the wire format itself (malformed and
    /// hostile requests among them). Programs use the typed calls.
    pub fn request_json(&mut self, cmd: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut obj = match params {
            Value::Object(o) => o,
            _ => serde_json::Map::new(),
        };
        obj.insert("id".into(), id.into());
        obj.insert("cmd".into(), cmd.into());
        let mut line =
            serde_json::to_vec(&obj).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        let sent = self.writer.write_all(&line);
        line.zeroize();
        sent?;
        let reply = self.read_reply()?;
        let bad = || ClientError::Protocol(String::from_utf8_lossy(&reply).into_owned());
        let (rid, result) = protocol::read_reply(&reply).map_err(|_| bad())?;
        if rid != id {
            return Err(bad());
        }
        result.map_err(ClientError::Remote)
    }

    /// Sends a request and reads its result as `T`.
    pub fn call<T: DeserializeOwned>(&mut self, request: &Request) -> Result<T, ClientError> {
        let v = self.request(request)?;
        T::deserialize(&v).map_err(|e| ClientError::Protocol(format!("{e}: {v}")))
    }

    /// `hello`.
    pub fn hello(&mut self) -> Result<Hello, ClientError> {
        self.call(&Request::Hello {})
    }

    /// `create_batch`.
    pub fn create_batch(
        &mut self,
        streams: Vec<StreamRequest>,
    ) -> Result<BatchCreated, ClientError> {
        self.call(&Request::CreateBatch { streams })
    }

    /// `delete_batch`.
    pub fn delete_batch(&mut self, streams: Vec<u64>) -> Result<BatchDeleted, ClientError> {
        self.call(&Request::DeleteBatch { streams })
    }

    /// `streams`.
    pub fn streams(
        &mut self,
        offset: usize,
        limit: Option<usize>,
    ) -> Result<StreamPage, ClientError> {
        self.call(&Request::Streams { offset, limit })
    }

    /// Every stream's statistics, page by page (the engine answers at most 1,000 a time).
    pub fn all_streams(&mut self) -> Result<Vec<StreamStats>, ClientError> {
        let mut all = Vec::new();
        loop {
            let page = self.streams(all.len(), None)?;
            let n = page.streams.len();
            all.extend(page.streams);
            if n == 0 || all.len() >= page.total {
                return Ok(all);
            }
        }
    }

    /// `engine_stats`.
    pub fn engine_stats(&mut self) -> Result<EngineStats, ClientError> {
        self.call(&Request::EngineStats {})
    }

    /// `subscribe` (`None`: every event).
    pub fn subscribe(&mut self, events: Option<Vec<String>>) -> Result<Subscribed, ClientError> {
        self.call(&Request::Subscribe { events })
    }

    /// `unsubscribe`.
    pub fn unsubscribe(&mut self) -> Result<(), ClientError> {
        self.request(&Request::Unsubscribe {}).map(|_| ())
    }

    /// The next event, waiting up to `wait`.
    pub fn next_event(&mut self, wait: Duration) -> Result<Option<TimedEvent>, ClientError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(Some(e));
            }
            match self.read_line(deadline) {
                Ok(line) => {
                    if !self.keep_if_event(&line) {
                        return Err(ClientError::Protocol(
                            String::from_utf8_lossy(&line).into_owned(),
                        ));
                    }
                }
                Err(ClientError::Timeout(_)) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}

impl StreamApi for CtlClient {
    fn create(&mut self, req: StreamRequest) -> Result<StreamInfo, ClientError> {
        self.call(&Request::Create(req))
    }

    fn update(&mut self, req: UpdateRequest) -> Result<Updated, ClientError> {
        self.call(&Request::Update(req))
    }

    fn delete(&mut self, stream: u64) -> Result<StreamStats, ClientError> {
        self.call(&Request::Delete { stream })
    }

    fn stats(&mut self, stream: u64) -> Result<StreamStats, ClientError> {
        self.call(&Request::Stats { stream })
    }
}
