//! Links the system libsrtp2 (install Debian's `libsrtp2-dev`).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-lib=srtp2");
}
