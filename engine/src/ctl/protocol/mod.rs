//! The control protocol's messages, one set of types for the engine and its clients.
//!
//! Every request is one JSON object on one line: `{"id": 7, "cmd": "create", ...}` (a
//! [`Request`] with an id). Replies carry the same `id` and either `"ok": true, "result": ...`
//! (the command's reply type in [`reply`]) or `"ok": false, "error": {"code": ..., "message":
//! ...}` ([`CtlError`]). Events are lines with an `"event"` field and no `id`
//! ([`crate::model::TimedEvent`]). `docs/control-protocol.md` is the reference, and a test
//! parses every example in it with these types; [`PROTOCOL_VERSION`] changes when a change
//! would break a client.
//!
//! The server reads a line with [`parse_request`]; a client writes one with
//! [`write_request`]. Both go through the same types, so the two sides cannot drift.

pub mod error;
pub mod reply;
pub mod request;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use error::{CtlError, ErrorCode, shown};
pub use reply::{
    BatchCreated, BatchDeleted, Capabilities, EngineStats, Hello, StreamPage, Subscribed,
    SuiteInfo, Updated,
};
pub use request::{
    CodecRequest, CryptoRequest, KeyRequest, LegRequest, SdesRequest, Secret, StreamRequest,
    UpdateRequest,
};

/// The protocol version `hello` reports. Additions (new commands, fields, events) keep it;
/// changes that break a client bump it.
pub const PROTOCOL_VERSION: u32 = 1;

/// A request, by its `cmd`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The engine's version and capabilities ([`Hello`]).
    Hello {},
    /// Creates a stream ([`crate::model::StreamInfo`]).
    Create(StreamRequest),
    /// Creates many streams in parallel ([`BatchCreated`]).
    CreateBatch {
        /// The streams.
        streams: Vec<StreamRequest>,
    },
    /// Changes a stream ([`Updated`]).
    Update(UpdateRequest),
    /// Deletes a stream and returns its final statistics ([`crate::model::StreamStats`]).
    Delete {
        /// The stream.
        stream: u64,
    },
    /// Deletes many streams ([`BatchDeleted`]).
    DeleteBatch {
        /// The streams.
        streams: Vec<u64>,
    },
    /// A stream's statistics ([`crate::model::StreamStats`]).
    Stats {
        /// The stream.
        stream: u64,
    },
    /// Every stream's statistics, a page at a time, by id ([`StreamPage`]).
    Streams {
        /// Streams to skip.
        #[serde(default)]
        offset: usize,
        /// Most streams in the page (default: all).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Engine-wide figures ([`EngineStats`]).
    EngineStats {},
    /// Events on this connection from now on ([`Subscribed`]).
    Subscribe {
        /// Event names (default: all).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        events: Option<Vec<String>>,
    },
    /// No more events on this connection (an empty object).
    Unsubscribe {},
}

/// The commands, in documentation order.
pub const COMMANDS: [&str; 11] = [
    "hello",
    "create",
    "create_batch",
    "update",
    "delete",
    "delete_batch",
    "stats",
    "streams",
    "engine_stats",
    "subscribe",
    "unsubscribe",
];

/// Reads one request line: its `id` (null when it has none usable) and the request, or the
/// error to answer with. The strings of the line (keys among them) move into the request,
/// whose secrets are zeroized when it is dropped.
pub fn parse_request(line: &[u8]) -> (Value, Result<Request, CtlError>) {
    let mut obj = match serde_json::from_slice::<Value>(line) {
        Err(e) => {
            return (
                Value::Null,
                Err(CtlError::new(
                    ErrorCode::ParseError,
                    format!("not JSON: {}", error::redact_quoted(&e.to_string())),
                )),
            );
        }
        Ok(Value::Object(o)) => o,
        Ok(_) => {
            return (
                Value::Null,
                Err(CtlError::new(
                    ErrorCode::BadRequest,
                    "a request is a JSON object",
                )),
            );
        }
    };
    let id = obj.remove("id").unwrap_or(Value::Null);
    let bad = |m: &str| Err(CtlError::new(ErrorCode::BadRequest, m));
    let r = match (&id, obj.get("cmd")) {
        (Value::Null, _) => bad("every request needs an \"id\" (a number or a string)"),
        (Value::Array(_) | Value::Object(_), _) => {
            bad("\"id\" must be a number, a string or a boolean")
        }
        (_, Some(Value::String(cmd))) if !COMMANDS.contains(&cmd.as_str()) => Err(CtlError::new(
            ErrorCode::UnknownCommand,
            format!("{} is not a command ({})", shown(cmd), COMMANDS.join(", ")),
        )),
        (_, Some(Value::String(_))) => {
            Request::deserialize(Value::Object(obj)).map_err(|e| CtlError::shape(&e))
        }
        (_, _) => bad("every request needs a \"cmd\" string"),
    };
    (id, r)
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: u64,
    #[serde(flatten)]
    request: &'a Request,
}

/// Writes a request line (with its newline) into `out`: the caller zeroizes `out` once it is
/// sent, since it may hold keys.
pub fn write_request(id: u64, request: &Request, out: &mut Vec<u8>) -> Result<(), CtlError> {
    serde_json::to_writer(&mut *out, &Envelope { id, request })
        .map_err(|e| CtlError::new(ErrorCode::BadRequest, e.to_string()))?;
    out.push(b'\n');
    Ok(())
}

/// A reply line for `id`: the result, or the error.
pub fn reply_line<T: Serialize>(id: &Value, result: Result<T, CtlError>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Ok<'a, T> {
        id: &'a Value,
        ok: bool,
        result: T,
    }
    #[derive(Serialize)]
    struct Err<'a> {
        id: &'a Value,
        ok: bool,
        error: CtlError,
    }
    let mut v = match result {
        Result::Ok(result) => serde_json::to_vec(&Ok {
            id,
            ok: true,
            result,
        }),
        Result::Err(error) => serde_json::to_vec(&Err {
            id,
            ok: false,
            error,
        }),
    }
    .unwrap_or_default();
    v.push(b'\n');
    v
}

/// What a reply line says: its id, and its result or the engine's error.
pub fn read_reply(line: &[u8]) -> Result<(Value, Result<Value, CtlError>), serde_json::Error> {
    #[derive(Deserialize)]
    struct Line {
        #[serde(default)]
        id: Value,
        ok: bool,
        #[serde(default)]
        result: Value,
        error: Option<CtlError>,
    }
    let l: Line = serde_json::from_slice(line)?;
    let r = match (l.ok, l.error) {
        (true, _) => Ok(l.result),
        (false, Some(e)) => Err(e),
        (false, None) => Err(CtlError::new(
            ErrorCode::Other,
            "an error reply without its error",
        )),
    };
    Ok((l.id, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_the_wire_shape() {
        let req = Request::Stats { stream: 9 };
        let mut line = Vec::new();
        write_request(4, &req, &mut line).unwrap();
        assert_eq!(line, b"{\"id\":4,\"cmd\":\"stats\",\"stream\":9}\n");
        let (id, back) = parse_request(&line[..line.len() - 1]);
        assert_eq!(id, 4);
        assert!(matches!(back, Ok(Request::Stats { stream: 9 })));
        let create: StreamRequest =
            serde_json::from_str(r#"{"mode":"echo","legs":[{"rtcp_mux":true}]}"#).unwrap();
        let mut line = Vec::new();
        write_request(5, &Request::Create(create), &mut line).unwrap();
        let (_, back) = parse_request(&line);
        assert!(matches!(back, Ok(Request::Create(_))), "{back:?}");
    }

    #[test]
    fn malformed_requests_get_their_codes() {
        let code = |l: &str| parse_request(l.as_bytes()).1.unwrap_err().code;
        assert_eq!(code("{"), ErrorCode::ParseError);
        assert_eq!(code("[1]"), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"cmd":"hello"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"id":[1],"cmd":"hello"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"id":1}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"id":1,"cmd":"fly"}"#), ErrorCode::UnknownCommand);
        assert_eq!(
            code(r#"{"id":1,"cmd":"hello","x":1}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(code(r#"{"id":1,"cmd":"delete"}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"id":1,"cmd":"create","mode":"echo","legs":[],"colour":2}"#),
            ErrorCode::BadRequest
        );
        // A key (30 bytes, base64: 40 characters) in the wrong place never comes back in the
        // message: not in a number, a mode (serde's backticks), an address, a codec or the
        // command; a short misspelt name does.
        let key = "WVNfX19jb250cm9sX19zZWNyZXRfX19rZXlfXw==";
        for line in [
            format!(r#"{{"id":1,"cmd":"delete","stream":"{key}"}}"#),
            format!(r#"{{"id":1,"cmd":"create","mode":"{key}","legs":[{{}}]}}"#),
            format!(r#"{{"id":1,"cmd":"create","mode":"echo","legs":[{{"remote":"{key}"}}]}}"#),
            format!(r#"{{"id":1,"cmd":"create","mode":"echo","legs":[{{"local_ip":"{key}"}}]}}"#),
            format!(
                r#"{{"id":1,"cmd":"create","mode":"send","codec":{{"name":"{key}"}},"legs":[{{}}]}}"#
            ),
            format!(r#"{{"id":1,"cmd":"{key}"}}"#),
        ] {
            let e = match parse_request(line.as_bytes()).1 {
                Err(e) => e,
                Ok(r) => match r {
                    Request::Create(c) => match c.into_spec() {
                        Err(e) => e,
                        Ok(_) => panic!("{line} was taken"),
                    },
                    _ => panic!("{line} was taken"),
                },
            };
            assert!(!e.message.contains(key), "{line}: {}", e.message);
            assert!(!e.message.contains("WVNfX19"), "{line}: {}", e.message);
        }
        let e = parse_request(br#"{"id":1,"cmd":"create","mode":"echoo","legs":[{}]}"#)
            .1
            .unwrap_err();
        assert!(e.message.contains("echoo"), "{}", e.message);
    }

    #[test]
    fn replies_read_back_with_their_error_codes() {
        let line = reply_line::<()>(
            &Value::from(3),
            Err(CtlError::new(ErrorCode::NoSuchStream, "no stream 3")),
        );
        let (id, r) = read_reply(&line).unwrap();
        assert_eq!(id, 3);
        assert_eq!(r.unwrap_err().code, ErrorCode::NoSuchStream);
        let (_, r) =
            read_reply(br#"{"id":1,"ok":false,"error":{"code":"newer_code","message":"m"}}"#)
                .unwrap();
        assert_eq!(r.unwrap_err().code, ErrorCode::Other);
        let line = reply_line(&Value::from("a"), Ok(Updated { stream: 2 }));
        let (id, r) = read_reply(&line).unwrap();
        assert_eq!(id, "a");
        assert_eq!(r.unwrap()["stream"], 2);
    }
}
