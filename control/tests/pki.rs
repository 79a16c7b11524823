//! `srtp-control pki` writes private keys only where nobody else can reach them (issue 26,
//! finding 4): a directory others can write is refused; a symlink planted where a key goes is
//! replaced, never written through; a key file left readable by others comes back 0600.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn pki(dir: &Path) -> (bool, String) {
    let o = Command::new(common::BIN)
        .args(["pki", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn a_directory_others_can_write_is_refused() {
    let dir = std::env::temp_dir().join(format!("srtp-pki-open-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (ok, text) = pki(&dir);
    assert!(!ok, "{text}");
    assert!(text.contains("is writable by others (mode 777)"), "{text}");
    assert!(!dir.join("server.key").exists(), "no key written");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn planted_symlinks_and_loose_modes_do_not_leak_keys() {
    let base = std::env::temp_dir().join(format!("srtp-pki-private-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let dir = base.join("lab");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    // Someone planted a symlink where the server key goes, pointing at a file of theirs.
    let victim = base.join("victim");
    std::fs::write(&victim, "keep").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("server.key")).unwrap();
    // A client key left from before, readable by everyone.
    std::fs::write(dir.join("client.key"), "old").unwrap();
    std::fs::set_permissions(
        dir.join("client.key"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let (ok, text) = pki(&dir);
    assert!(ok, "{text}");
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "keep",
        "not written through"
    );
    for key in ["server.key", "client.key", "expired.key"] {
        let p = dir.join(key);
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert!(m.file_type().is_file(), "{key} is a regular file");
        assert_eq!(mode(&p), 0o600, "{key}");
        assert!(
            std::fs::read_to_string(&p).unwrap().contains("PRIVATE KEY"),
            "{key}"
        );
    }
    assert_eq!(mode(&dir.join("ca.crt")), 0o644);
    // No temporary file is left behind.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let _ = std::fs::remove_dir_all(&base);
}
