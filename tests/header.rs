//! The checked-in C header must be exactly what build.rs generates.

#[test]
fn checked_in_header_matches_generated() {
    let generated = std::fs::read_to_string(concat!(env!("OUT_DIR"), "/vmig.h")).expect("generated header");
    let checked_in = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/vmig.h"))
        .expect("include/vmig.h is missing");
    assert!(
        generated == checked_in,
        "include/vmig.h is stale: run `make header` (VMIG_UPDATE_HEADER=1 cargo build) and commit it"
    );
}
