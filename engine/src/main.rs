//! The `srtp-engine` daemon. The worker side (sockets, io_uring, streams) is still to come; for
//! now the binary reports what it can do.

use srtp_engine::proto::srtp::Suite;

fn main() {
    println!("srtp-engine {}", env!("CARGO_PKG_VERSION"));
    println!("SRTP suites:");
    for suite in Suite::ALL {
        let p = suite.params();
        let profile = p
            .dtls_profile
            .map_or_else(|| "-".to_string(), |id| format!("{id:#06x}"));
        println!(
            "  {:<26} dtls-profile {:<7} key||salt {} bytes, tag {}/{} bytes (rtp/rtcp)",
            p.sdp_name,
            profile,
            suite.master_len(),
            p.rtp_tag_len,
            p.rtcp_tag_len
        );
    }
    eprintln!("the data plane (workers, I/O, control socket) is not built yet");
}
