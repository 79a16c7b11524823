//! `docs/control-protocol.md` and the protocol's types cannot drift: every example in it is
//! read with the types the engine and its clients use (requests through the server's own
//! parser, replies and events into their reply types), and every field an example shows must
//! exist in the type it is read into.

use std::collections::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use srtp_engine::ctl::protocol::{
    BatchCreated, BatchDeleted, EngineStats, ErrorCode, Hello, Request, StreamPage, StreamRequest,
    Subscribed, Updated, parse_request, read_reply,
};
use srtp_engine::model::{StreamInfo, StreamStats, TimedEvent};

fn doc() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join("docs/control-protocol.md")).unwrap()
}

/// The fenced code blocks of a markdown text, with their info string.
fn blocks(md: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in md.lines() {
        match (&mut cur, line.strip_prefix("```")) {
            (None, Some(info)) => cur = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some(_)) => out.extend(cur.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// The `> request` and `< reply or event` messages of a block; a line that starts with a
/// space continues the message before it.
fn messages(body: &str) -> Vec<(char, String)> {
    let mut out: Vec<(char, String)> = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("> ").or_else(|| line.strip_prefix("< ")) {
            out.push((line.chars().next().unwrap_or(' '), rest.to_owned()));
        } else if line.starts_with(' ')
            && let Some((_, m)) = out.last_mut()
        {
            m.push_str(line.trim());
        }
    }
    out
}

/// Every key of `shown` (an example) is in `typed` (the example read into its type and
/// written back): a field the types do not have would have been dropped silently.
fn keys_exist(shown: &Value, typed: &Value, at: &str, missing: &mut Vec<String>) {
    match (shown, typed) {
        (Value::Object(s), Value::Object(t)) => {
            for (k, v) in s {
                match t.get(k) {
                    Some(tv) => keys_exist(v, tv, &format!("{at}.{k}"), missing),
                    None => missing.push(format!("{at}.{k}")),
                }
            }
        }
        (Value::Array(s), Value::Array(t)) => {
            for (i, (sv, tv)) in s.iter().zip(t).enumerate() {
                keys_exist(sv, tv, &format!("{at}[{i}]"), missing);
            }
        }
        _ => {}
    }
}

fn typed<T: DeserializeOwned + Serialize>(v: &Value, what: &str, missing: &mut Vec<String>) {
    let t: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{what}: {e}\n{v}"));
    keys_exist(v, &serde_json::to_value(&t).unwrap(), what, missing);
}

/// The name of a request's command, as its `cmd` says.
fn cmd(r: &Request) -> &'static str {
    match r {
        Request::Hello {} => "hello",
        Request::Create(_) => "create",
        Request::CreateBatch { .. } => "create_batch",
        Request::Update(_) => "update",
        Request::Delete { .. } => "delete",
        Request::DeleteBatch { .. } => "delete_batch",
        Request::Stats { .. } => "stats",
        Request::Streams { .. } => "streams",
        Request::EngineStats {} => "engine_stats",
        Request::Subscribe { .. } => "subscribe",
        Request::Unsubscribe {} => "unsubscribe",
    }
}

#[test]
fn every_example_in_the_protocol_doc_reads_with_the_protocol_types() {
    let md = doc();
    let mut missing = Vec::new();
    let mut checked = HashMap::<&str, usize>::new();
    let mut sent: HashMap<String, &'static str> = HashMap::new();
    for (info, body) in blocks(&md) {
        if info == "json" {
            let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
            if v.get("mode").is_some() {
                typed::<StreamRequest>(&v, "stream request", &mut missing);
                *checked.entry("stream request").or_default() += 1;
            } else if v.get("worker").is_some() {
                typed::<StreamInfo>(&v, "created stream", &mut missing);
            } else {
                panic!(
                    "a JSON example that is neither a stream request nor a created stream:\n{body}"
                );
            }
            continue;
        }
        for (dir, m) in messages(&body) {
            let v: Value = serde_json::from_str(&m).unwrap_or_else(|e| panic!("{e}: {m}"));
            if dir == '>' {
                let (id, r) = parse_request(m.as_bytes());
                let r = r.unwrap_or_else(|e| panic!("{e}: {m}"));
                sent.insert(id.to_string(), cmd(&r));
                *checked.entry("request").or_default() += 1;
                continue;
            }
            if v.get("event").is_some() {
                typed::<TimedEvent>(&v, "event", &mut missing);
                *checked.entry("event").or_default() += 1;
                continue;
            }
            let (id, result) = read_reply(m.as_bytes()).unwrap_or_else(|e| panic!("{e}: {m}"));
            let what = *sent
                .get(&id.to_string())
                .unwrap_or_else(|| panic!("a reply to no request shown: {m}"));
            match result {
                Err(e) => {
                    assert_ne!(e.code, ErrorCode::Other, "an unknown error code: {m}");
                    *checked.entry("error reply").or_default() += 1;
                }
                Ok(r) => {
                    match what {
                        "hello" => typed::<Hello>(&r, what, &mut missing),
                        "create" => typed::<StreamInfo>(&r, what, &mut missing),
                        "create_batch" => typed::<BatchCreated>(&r, what, &mut missing),
                        "update" => typed::<Updated>(&r, what, &mut missing),
                        "delete" | "stats" => typed::<StreamStats>(&r, what, &mut missing),
                        "delete_batch" => typed::<BatchDeleted>(&r, what, &mut missing),
                        "streams" => typed::<StreamPage>(&r, what, &mut missing),
                        "engine_stats" => typed::<EngineStats>(&r, what, &mut missing),
                        "subscribe" => typed::<Subscribed>(&r, what, &mut missing),
                        _ => assert_eq!(r, serde_json::json!({}), "{m}"),
                    }
                    *checked.entry("reply").or_default() += 1;
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "fields the doc shows that the types do not have:\n{}",
        missing.join("\n")
    );
    // Every command's example, both ways, and the events.
    let shown: std::collections::BTreeSet<&str> = sent.values().copied().collect();
    assert_eq!(shown.len(), 11, "commands with an example: {shown:?}");
    assert!(checked["reply"] >= 11, "{checked:?}");
    assert!(checked["event"] >= 7, "{checked:?}");
    assert!(checked["error reply"] >= 2, "{checked:?}");
    assert!(checked["stream request"] >= 1, "{checked:?}");
}

#[test]
fn the_doc_reader_finds_messages_and_fields() {
    let b = blocks("text\n```\n> {\"id\":1,\n    \"cmd\":\"hello\"}\n< {\"id\":1}\n```\n");
    assert_eq!(b.len(), 1);
    let m = messages(&b[0].1);
    assert_eq!(m[0], ('>', "{\"id\":1,\"cmd\":\"hello\"}".to_owned()));
    assert_eq!(m[1].0, '<');
    let mut missing = Vec::new();
    keys_exist(
        &serde_json::json!({"a": 1, "b": {"c": 2, "typo": 3}}),
        &serde_json::json!({"a": 1, "b": {"c": 2}}),
        "x",
        &mut missing,
    );
    assert_eq!(missing, ["x.b.typo"]);
}
