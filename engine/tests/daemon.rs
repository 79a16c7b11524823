//! The daemon binary: config errors name the key and exit 2; SIGTERM stops it cleanly (exit 0).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_srtp-engine");

fn config_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

#[test]
fn bad_config_names_the_key_and_exits_2() {
    let dir = std::env::temp_dir().join(format!("srtp-engine-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (text, key) in [
        ("[io]\nbakend = \"epoll\"\n", "bakend"),
        (
            "[sockets]\nlocal_ips = [\"not-an-ip\"]\n",
            "sockets.local_ips",
        ),
        (
            "[sockets]\nport_min = 5000\nport_max = 5001\n[engine]\nworkers = 4\n",
            "sockets.port_max",
        ),
    ] {
        let path = dir.join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{key} not in {err}");
    }
    let out = Command::new(BIN)
        .arg("--config")
        .arg(config_dir().join("engine.toml"))
        .args(["--check-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn sigterm_stops_it_cleanly() {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config_dir().join("engine.toml"))
        .args([
            "--workers",
            "1",
            "--port-min",
            "46000",
            "--port-max",
            "46099",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc_kill(child.id() as i32, 15) };
    assert_eq!(rc, 0);
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(Instant::now() < end, "daemon did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("stopped"), "{err}");
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
