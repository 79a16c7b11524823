//! Benchmarks live in `srtp.rs` (run `cargo bench -p srtp-engine-benches`).
