//! Generates the C header with cbindgen, sets the shared library's SONAME
//! and compiles the ring bench's C shim (benches only).
//!
//! The header is always written to `$OUT_DIR/vmig.h`; `tests/header.rs`
//! fails when the checked-in `include/vmig.h` differs from it. Set
//! `VMIG_UPDATE_HEADER=1` (or run `make header`) to refresh the checked-in copy.

use std::env;
use std::path::{Path, PathBuf};

/// Major version of the C ABI; bumped with any incompatible change.
const SONAME_MAJOR: &str = "0";

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let version = env::var("CARGO_PKG_VERSION").unwrap();

    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=VMIG_UPDATE_HEADER");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libvmig.so.{SONAME_MAJOR}");

    let mut config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    config.after_includes = Some(format!(
        "\n/* Version of the header; vmig_version() gives the library's. */\n\
         #define VMIG_VERSION \"{version}\"\n\
         #define VMIG_VERSION_MAJOR {major}\n\
         #define VMIG_VERSION_MINOR {minor}\n\
         #define VMIG_VERSION_PATCH {patch}\n"
    ));
    let bindings = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate include/vmig.h");
    bindings.write_to_file(out_dir.join("vmig.h"));
    if env::var_os("VMIG_UPDATE_HEADER").is_some_and(|v| v == "1") {
        bindings.write_to_file(crate_dir.join("include/vmig.h"));
    }

    bench_shim(&crate_dir, &out_dir);
}

/// Compiles the C side of benches/ring.rs's "C inline SPSC" rows (a C
/// caller of include/vmig_ring_inline.h) and links it into the benches
/// only: `cargo_metadata(false)` keeps cc from adding it to the library's
/// link, and `rustc-link-arg-benches` names it for bench targets alone.
fn bench_shim(crate_dir: &Path, out_dir: &Path) {
    let src = crate_dir.join("benches/support/ring_inline_shim.c");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed=include");
    cc::Build::new()
        .file(&src)
        .include(crate_dir.join("include"))
        .std("c11")
        .opt_level(2)
        .cargo_metadata(false)
        .compile("vmig_ring_inline_shim");
    println!("cargo:rustc-link-arg-benches={}", out_dir.join("libvmig_ring_inline_shim.a").display());
}
