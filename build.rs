//! Release builds lay out the server's machine code by a recorded execution order
//! (`linker/symbol-order.txt`, written by `scripts/symbol-order`): the functions a
//! start, the demo seed, sign-ins and requests run come first, next to each other,
//! hottest first. Without it they are spread over the 32 MB of `.text`, and the
//! kernel maps the 64 KiB around every page the server executes (fault-around), so an
//! idle server kept ~20 MiB of code resident of which it runs ~9 MiB.
//!
//! The file is passed to the linker as lld's `--symbol-ordering-file` when the
//! `sequestra` binary is linked in the release profile, and only where lld links
//! (x86_64 Linux with glibc, rustc 1.90 or later, no other linker chosen). The names
//! are those of `cargo build --release`: a bench build enables the dev-dependencies'
//! features too, which renames most symbols, so `benches/footprint.rs` measures the
//! release binary (`scripts/bench` builds it).
//! A name the code no longer has is skipped without a word; a function not named
//! keeps its place after the named ones. So a stale file costs footprint, never
//! correctness; `scripts/symbol-order` brings it up to date.

use std::{env, path::Path, process::Command};

const ORDER: &str = "linker/symbol-order.txt";

fn main() {
    println!("cargo::rerun-if-changed={ORDER}");
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    if env::var("PROFILE").as_deref() != Ok("release") || !lld_links() {
        return;
    }
    let manifest = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let order = Path::new(&manifest).join(ORDER);
    if !order.is_file() {
        return;
    }
    // The linker is handed a copy in OUT_DIR, not the checkout's file: cargo keeps this
    // script's output for any checkout of the package sharing the target directory
    // (its paths are hashed relative to the workspace), so a path into one checkout
    // would outlive it, and a later release build elsewhere would fail to link
    // ("cannot open …/symbol-order.txt") once it was gone.
    let out = Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("symbol-order.txt");
    if std::fs::copy(&order, &out).is_err() {
        return;
    }
    println!(
        "cargo::rustc-link-arg-bin=sequestra=-Wl,--symbol-ordering-file={}",
        out.display()
    );
    println!("cargo::rustc-link-arg-bin=sequestra=-Wl,--no-warn-symbol-ordering");
}

/// rustc links x86_64-unknown-linux-gnu with its own lld since 1.90, unless a linker
/// or linker flags of one's own are configured.
fn lld_links() -> bool {
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu")
        || env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
    {
        return false;
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if [
        "linker",
        "fuse-ld",
        "link-self-contained",
        "linker-features",
    ]
    .iter()
    .any(|f| flags.contains(f))
    {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let version = String::from_utf8_lossy(&out.stdout);
    let mut parts = version
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
