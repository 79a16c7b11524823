//! The `srtp-control` binary (skeleton).

fn main() {
    eprintln!("srtp-control: the signaling layer is not built yet");
    std::process::exit(2);
}
