//! The command line: bad arguments exit 2 with a clear message; a short run
//! exits 0 with JSON on request; a corrupted run exits 1.

use std::process::Command;

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vmig-sim")).args(args).output().expect("run vmig-sim")
}

#[test]
fn invalid_arguments_exit_2_with_a_message() {
    let cases: &[(&[&str], &str)] = &[
        (&["--vcpus", "0"], "--vcpus"),
        (&["--mem", "lots"], "--mem"),
        (&["--compress-level", "12"], "--compress-level"),
        (&["--working-set", "2G", "--mem", "1G"], "--working-set"),
        (&["--reaper", "sometimes"], "--reaper"),
        (&["--mix", "50,50,50,0"], "--mix"),
        (&["--bandwidth", "0"], "--bandwidth"),
        (&["--compress-wait-thread", "maybe"], "--compress-wait-thread"),
        (&["--dirty-ring-size", "1000"], "--dirty-ring-size"),
        (&["--compare", "--rounds", "0"], "--rounds"),
        (&["--no-such-option"], "--no-such-option"),
        (&["--dirty-tracking", "sometimes"], "--dirty-tracking"),
        (&["--dirty-tracking", "ring", "--stack", "legacy"], "--dirty-tracking"),
        (&["--populated", "2G", "--mem", "1G"], "--populated"),
        (&["--populated", "1M"], "--populated"),
        (&["--dirty-queue", "3"], "--dirty-queue"),
        (&["--first-pass-stretch", "0"], "--first-pass-stretch"),
    ];
    for (args, needle) in cases {
        let out = sim(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("error") && err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn help_documents_every_knob() {
    let out = sim(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for knob in [
        "--mem",
        "--vcpus",
        "--dirty-rate",
        "--working-set",
        "--bandwidth",
        "--compress-threads",
        "--compress-level",
        "--decompress-threads",
        "--compress-wait-thread",
        "--downtime-limit",
        "--reaper",
        "--dirty-ring-size",
        "--no-auto-converge",
        "--throttle-initial",
        "--throttle-increment",
        "--throttle-max",
        "--mix",
        "--seed",
        "--max-time",
        "--stack",
        "--compare",
        "--rounds",
        "--json",
        "--dirty-tracking",
        "--populated",
        "--dirty-queue",
        "--first-pass-stretch",
    ] {
        assert!(help.contains(knob), "--help lacks {knob}");
    }
}

const SHORT: &[&str] = &["--mem", "64M", "--working-set", "8M", "--dirty-rate", "5000", "--quiet"];

#[test]
fn short_run_prints_json_and_exits_0() {
    let mut args = SHORT.to_vec();
    args.extend(["--json", "--compress-wait-thread", "off"]);
    let out = sim(&args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["verification"]["result"], "match");
    assert!(v["source"]["transferred"].as_u64().unwrap() > 0);
    assert_eq!(v["config"]["compress_wait"], false);
}

#[test]
fn corrupted_page_exits_1_and_names_it() {
    let mut args = SHORT.to_vec();
    args.extend(["--compress-threads", "0", "--fault-corrupt-page", "777"]);
    let out = sim(&args);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("first differing page 777"), "{text}");
}

#[test]
fn ring_mode_reports_its_tracking_and_finding_time_in_json() {
    let mut args = SHORT.to_vec();
    args.extend(["--json", "--dirty-tracking", "ring"]);
    let out = sim(&args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["verification"]["result"], "match");
    assert_eq!(v["dirty_tracking"], "ring");
    assert!(v["source"]["find_dirty_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(v["source"]["dirty_scheduler"]["from_background"], 16384);
}
