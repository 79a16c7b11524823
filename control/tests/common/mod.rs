//! What the end-to-end tests of `srtp-control` share: an engine in this process on its
//! control socket, the `srtp-control` binary as answerer and caller, reading their output.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use srtp_engine::ctl::{CtlOptions, CtlServer};
use srtp_engine::model::StreamStats;
use srtp_engine::runtime::MediaOptions;
use srtp_engine::runtime::{Engine, EngineOptions};

pub const BIN: &str = env!("CARGO_BIN_EXE_srtp-control");

/// An engine in this process, on a control socket of its own.
pub struct Node {
    pub engine: Arc<Engine>,
    ctl: Option<CtlServer>,
    pub path: PathBuf,
}

impl Node {
    /// An engine with one worker on ports `ports`, its socket named after `name`.
    pub fn start(name: &str, ports: (u16, u16)) -> Node {
        let path = std::env::temp_dir().join(format!(
            "srtp-control-test-{}-{name}.sock",
            std::process::id()
        ));
        Node::at(&path, ports)
    }

    /// An engine whose control socket is `path`.
    pub fn at(path: &Path, ports: (u16, u16)) -> Node {
        let opts = EngineOptions {
            workers: 1,
            pin: false,
            media: MediaOptions {
                port_min: ports.0,
                port_max: ports.1,
                ..MediaOptions::default()
            },
            ..EngineOptions::default()
        };
        let engine = Arc::new(Engine::start(opts).expect("engine starts"));
        let ctl = CtlServer::start(
            engine.clone(),
            CtlOptions {
                path: path.to_owned(),
                ..CtlOptions::default()
            },
        )
        .expect("control socket");
        Node {
            engine,
            ctl: Some(ctl),
            path: path.to_owned(),
        }
    }

    /// The socket path as an argument.
    pub fn sock(&self) -> &str {
        self.path.to_str().expect("a UTF-8 path")
    }

    /// A client on the control socket.
    pub fn client(&self) -> srtp_engine::ctl::client::CtlClient {
        srtp_engine::ctl::client::CtlClient::connect(&self.path).expect("connect")
    }

    /// Streams alive in the engine.
    pub fn streams(&self) -> usize {
        self.client().streams(0, Some(0)).expect("streams").total
    }

    /// Statistics of every stream alive, in id order.
    pub fn stream_stats(&self) -> Vec<StreamStats> {
        self.client().all_streams().expect("streams")
    }

    /// Waits until the engine holds `n` streams; returns whether it did.
    pub fn wait_streams(&self, n: usize, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.streams() == n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.streams() == n
    }

    /// Stops the engine and its control socket (a crash or a restart, as its clients see it).
    pub fn stop(mut self) -> PathBuf {
        if let Some(c) = self.ctl.take() {
            c.stop();
        }
        self.engine.shutdown();
        self.path.clone()
    }
}

/// A running `srtp-control answer` and its output, line by line.
pub struct Answerer {
    pub child: Child,
    pub port: u16,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Answerer {
    /// Starts `srtp-control answer` and waits for its "listening on" line.
    pub fn start(args: &[&str]) -> Answerer {
        let mut child = Command::new(BIN)
            .arg("answer")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn srtp-control answer");
        let out = child.stdout.take().expect("piped stdout");
        let lines = reader(out);
        let mut a = Answerer {
            child,
            port: 0,
            lines,
            seen: Vec::new(),
        };
        let line = a
            .wait_line(|l| l.starts_with("listening on"), Duration::from_secs(10))
            .expect("the answerer says where it listens");
        a.port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        a
    }

    /// `srtp-control answer` over UDP on loopback (any port), with `node` as its engine, for
    /// `seconds`, and `extra` arguments.
    pub fn on(node: &Node, seconds: &str, extra: &[&str]) -> Answerer {
        let mut args = vec!["--listen", "udp:127.0.0.1:0", "--engine", node.sock()];
        args.extend(["--seconds", seconds]);
        args.extend(extra);
        Answerer::start(&args)
    }

    /// Waits for a line matching `f`; returns it.
    pub fn wait_line(&mut self, f: impl Fn(&str) -> bool, within: Duration) -> Option<String> {
        let end = Instant::now() + within;
        let mut from = 0;
        loop {
            while from < self.seen.len() {
                if f(&self.seen[from]) {
                    return Some(self.seen[from].clone());
                }
                from += 1;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => return None,
            }
        }
    }

    /// Waits until `n` lines match `f`; returns whether they did.
    pub fn wait_count(&mut self, f: impl Fn(&str) -> bool, n: usize, within: Duration) -> bool {
        let end = Instant::now() + within;
        loop {
            if self.seen.iter().filter(|l| f(l)).count() >= n {
                return true;
            }
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => return false,
            }
        }
    }

    /// Everything it printed so far.
    pub fn output(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }

    /// Sends SIGTERM and waits for its exit; returns the exit code and all it printed.
    pub fn terminate(mut self) -> (Option<i32>, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().expect("wait for the answerer");
        std::thread::sleep(Duration::from_millis(50));
        (status.code(), self.output())
    }
}

impl Drop for Answerer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn reader(out: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(l) = line else { return };
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

/// Runs `srtp-control call` to its end.
pub fn call(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("call")
        .args(args)
        .output()
        .expect("run srtp-control call")
}

/// Starts `srtp-control call` in the background.
pub fn call_spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .arg("call")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn srtp-control call")
}

/// Stdout and stderr of a finished command.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The number after `key` in a media line such as "media packets in 40 out 41, ...".
pub fn figure(out: &str, key: &str) -> u64 {
    let i = out
        .find(key)
        .unwrap_or_else(|| panic!("no '{key}' in {out}"))
        + key.len();
    out[i..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Writes a lab CA and certificates with `srtp-control pki`.
pub fn pki(dir: &Path) {
    let o = Command::new(BIN)
        .args(["pki", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}
