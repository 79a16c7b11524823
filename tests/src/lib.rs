//! Scenarios live in the test files beside this crate's Cargo.toml.
