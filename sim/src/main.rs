//! `vmig-sim`: runs a whole precopy live migration in this process and
//! prints an `info migrate`-style report. `vmig-sim --help` lists the knobs;
//! docs/sim.md explains the scenario.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use vmig_sim::config::{ContentMix, DirtyTracking, GuestKind, ReaperPolicyKind, SimConfig, Stack};
use vmig_sim::content::Corpus;
use vmig_sim::report::{compare_table, rounds_table, Report};
use vmig_sim::source::Progress;

/// Sizes: a number with an optional K/M/G/T suffix (powers of 1024; "iB" or
/// "B" may follow), e.g. 64M, 1GiB, 4096.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("iB").or_else(|| t.strip_suffix('B')).unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
        Some('t' | 'T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| format!("'{s}' is not a size like 64M or 1G"))?;
    n.checked_mul(mult).ok_or_else(|| format!("'{s}' is too large"))
}

/// Rates: bits per second with an optional k/M/G suffix (powers of 1000),
/// e.g. 1G = 1 Gbit/s, 500M.
fn parse_bits(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("bit/s").or_else(|| t.strip_suffix("bps")).unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1_000u64),
        Some('m' | 'M') => (&t[..t.len() - 1], 1_000_000),
        Some('g' | 'G') => (&t[..t.len() - 1], 1_000_000_000),
        _ => (t, 1),
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("'{s}' is not a rate like 1G or 500M (bits/s)"))?;
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("'{s}' must be a positive rate"));
    }
    Ok((n * mult as f64) as u64)
}

fn parse_mix(s: &str) -> Result<ContentMix, String> {
    let v: Vec<u32> = s
        .split(',')
        .map(|x| x.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("'{s}' is not four percentages like 20,35,30,15"))?;
    match v[..] {
        [zero, code, text, random] => Ok(ContentMix { zero, code, text, random }),
        _ => Err(format!("'{s}' needs four percentages: zero,code,text,random")),
    }
}

fn parse_onoff(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("'{s}' is not on or off")),
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum StackArg {
    /// vmig's engines.
    Vmig,
    /// QEMU 7.2's designs (legacy compression threads, fixed 1 s reaper, VM-wide throttle timer).
    Legacy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum GuestArg {
    /// A KVM virtual machine when the KVM device is usable, else the simulated guest.
    Auto,
    /// A real KVM virtual machine running vmig-sim's guest program (needs a usable KVM device).
    Kvm,
    /// vCPU threads writing an anonymous mapping (runs anywhere).
    Sim,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PostcopyArg {
    /// Requested pages go into the one stream, behind what is queued.
    Vanilla,
    /// A second connection for requested pages, sent by the migration thread.
    Preempt,
    /// The return-path thread sends requested pages on the second connection.
    PreemptFull,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum AccessArg {
    /// Random pages of the working set.
    Random,
    /// Each vCPU walks its part of the working set in order.
    Sequential,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DirtyTrackingArg {
    /// QEMU's model: harvested pages set a dirty bitmap, the migration thread syncs and walks it.
    Bitmap,
    /// Harvested pages go straight into vmig's dirty-page scheduler; the migration thread takes pages from it.
    Ring,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ReaperArg {
    /// vmig's measured-best policy.
    Default,
    /// A fixed 1 s interval (QEMU today).
    Fixed,
    /// The 6-level table of the adaptive-reaper RFC.
    Levels,
    /// Halve above 80% fill, +20 ms below 20%.
    Aimd,
    /// Predict the fill rate, aim at a target fill.
    Predictive,
}

/// Runs a precopy live migration of a guest (a real KVM virtual machine where
/// the KVM device works, else a simulated one; see --guest) in this process, over
/// a rate-limited loopback TCP connection, on vmig's engines (or QEMU 7.2's
/// legacy designs), verifies the destination byte for byte and prints an
/// `info migrate`-style report.
///
/// Exit status: 0 when the migration completed and the destination's RAM
/// equals the source's (with --compare: when the vmig run did, and no run
/// produced a mismatch); 1 when it failed, did not converge within
/// --max-time, or the destination differs (or the KVM guest's self-check
/// failed on the destination); 2 for invalid arguments.
#[derive(Parser, Debug)]
#[command(name = "vmig-sim", version, about, long_about)]
struct Cli {
    /// Guest RAM size (K/M/G suffix, powers of 1024).
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    mem: u64,
    /// Number of vCPU threads writing guest memory.
    #[arg(long, value_name = "N", default_value_t = 2)]
    vcpus: u32,
    /// Page writes per second per vCPU, while running (each write dirties one page of the working set).
    #[arg(long, value_name = "PAGES", default_value_t = 20_000)]
    dirty_rate: u64,
    /// Size of the guest's hot set the vCPUs write into.
    #[arg(long, value_name = "SIZE", default_value = "192M", value_parser = parse_size)]
    working_set: u64,
    /// Migration bandwidth limit in bits/s (k/M/G suffix, powers of 1000; QEMU max-bandwidth).
    #[arg(long, value_name = "RATE", default_value = "1G", value_parser = parse_bits)]
    bandwidth: u64,
    /// Compression threads; 0 turns compression off (QEMU compress-threads) [default: 2; 0 with --postcopy].
    #[arg(long, value_name = "N")]
    compress_threads: Option<u32>,
    /// zlib level 0..=9 (QEMU compress-level).
    #[arg(long, value_name = "L", default_value_t = 1)]
    compress_level: u32,
    /// Destination decompression threads (QEMU decompress-threads).
    #[arg(long, value_name = "N", default_value_t = 2)]
    decompress_threads: u32,
    /// Deflate backend of vmig's compression pool (the destination inflates with its default, zlib-rs).
    #[arg(long, value_name = "NAME", default_value = "default", value_parser = ["default", "zlib-rs", "libdeflate", "zlib"])]
    comp_backend: String,
    /// on: wait for a free compression thread; off: send the page raw when all are busy (QEMU compress-wait-thread).
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_onoff, action = clap::ArgAction::Set)]
    compress_wait_thread: bool,
    /// Maximum downtime in milliseconds (QEMU downtime-limit).
    #[arg(long, value_name = "MS", default_value_t = 300)]
    downtime_limit: u64,
    /// Dirty-ring reaper interval policy [default: the stack's: vmig's default, or fixed for legacy].
    #[arg(long, value_enum, value_name = "POLICY")]
    reaper: Option<ReaperArg>,
    /// Entries per vCPU dirty ring (QEMU -accel kvm,dirty-ring-size).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    dirty_ring_size: u32,
    /// Turn auto-converge off (QEMU capability auto-converge).
    #[arg(long)]
    no_auto_converge: bool,
    /// First auto-converge throttle step, % (QEMU cpu-throttle-initial).
    #[arg(long, value_name = "PCT", default_value_t = 20)]
    throttle_initial: u32,
    /// Throttle increment, % (QEMU cpu-throttle-increment).
    #[arg(long, value_name = "PCT", default_value_t = 10)]
    throttle_increment: u32,
    /// Throttle ceiling, % (QEMU max-cpu-throttle).
    #[arg(long, value_name = "PCT", default_value_t = 99)]
    throttle_max: u32,
    /// Initial guest contents, percent of pages: zero,code,text,random (code from /usr/bin ELF files, text from /usr/share/doc and /usr/include).
    #[arg(long, value_name = "Z,C,T,R", default_value = "20,35,30,15", value_parser = parse_mix)]
    mix: ContentMix,
    /// Seed for guest contents and the vCPUs' write pattern.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Cancel a run that has not converged after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 50.0)]
    max_time: f64,
    /// Which engines carry the migration.
    #[arg(long, value_enum, default_value = "vmig")]
    stack: StackArg,
    /// Run the same scenario with the legacy stack, then with vmig's, and print them side by side.
    #[arg(long)]
    compare: bool,
    /// With --compare: this many rounds, alternating which stack runs first (legacy first in odd rounds), then
    /// each round's ratios and their medians; the machine's load drifts, and a fixed order is a bias.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Print the report(s) as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
    /// Postcopy: after --postcopy-after precopy rounds, start the guest on the destination and fetch the rest on
    /// demand; MODE says how requested pages travel (docs/postcopy.md).
    #[arg(long, value_enum, value_name = "MODE")]
    postcopy: Option<PostcopyArg>,
    /// With --postcopy: precopy rounds over guest RAM before the switch.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "postcopy")]
    postcopy_after: u32,
    /// With --postcopy: what the destination's vCPUs touch.
    #[arg(long, value_enum, value_name = "PATTERN", default_value = "random", requires = "postcopy")]
    access: AccessArg,
    /// With --postcopy: the bulk connection's send queue [default: net.ipv4.tcp_wmem max].
    #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "postcopy")]
    sndbuf: Option<u64>,
    /// With --postcopy: microseconds of bulk data the NIC holds ahead of an urgent packet.
    #[arg(long, value_name = "US", default_value_t = 50, requires = "postcopy")]
    nic_queue_us: u64,
    /// With --postcopy: run the latency-path threads (NIC, fault service, return path, preempt receiver) SCHED_FIFO,
    /// so a loaded host's run queue does not dominate the measured latency (needs CAP_SYS_NICE).
    #[arg(long, requires = "postcopy")]
    rt_threads: bool,
    /// Test only: break the connections after this many postcopy pages.
    #[arg(long, value_name = "PAGES", hide = true, requires = "postcopy")]
    fault_break_postcopy: Option<u64>,
    /// How the migration thread finds dirty pages (docs/dirty.md).
    #[arg(long, value_enum, value_name = "MODE", default_value = "bitmap")]
    dirty_tracking: DirtyTrackingArg,
    /// Only the first SIZE of guest RAM holds content; the rest stays untouched zero pages (never backed by
    /// memory), like an idle large guest [default: all of --mem].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    populated: Option<u64>,
    /// Entries in the ring mode's queue, a power of two [default: one whole harvest, vcpus x dirty-ring-size,
    /// rounded up].
    #[arg(long, value_name = "N")]
    dirty_queue: Option<u32>,
    /// Ring mode: while the first pass has pages left it gets at least one pick in every K; 1 (vmig's
    /// derived default) sends queued pages only after it (docs/dirty.md).
    #[arg(long, value_name = "K", default_value_t = vmig::dirty::DEFAULT_FIRST_PASS_STRETCH)]
    first_pass_stretch: u32,
    /// Test only: corrupt this page on the wire every time it is sent.
    #[arg(long, value_name = "PAGE", hide = true)]
    fault_corrupt_page: Option<u64>,
    /// Which guest migrates; the report says which ran.
    #[arg(long, value_enum, default_value = "auto")]
    guest: GuestArg,
    /// The KVM device the KVM guest opens.
    #[arg(long, value_name = "PATH", default_value = "/dev/kvm")]
    kvm_device: String,
    /// KVM guest: how long the destination guest runs after the switch-over, ms.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    dest_run: u64,
    /// Test only (KVM guest): never hand this page's dirty-ring entries to the migration.
    #[arg(long, value_name = "PAGE", hide = true)]
    fault_unharvested_page: Option<u64>,
}

impl Cli {
    fn config(&self) -> SimConfig {
        SimConfig {
            stack: match self.stack {
                StackArg::Vmig => Stack::Vmig,
                StackArg::Legacy => Stack::Legacy,
            },
            mem_bytes: self.mem,
            vcpus: self.vcpus,
            dirty_rate: self.dirty_rate,
            working_set_bytes: self.working_set,
            bandwidth: self.bandwidth / 8,
            compress_threads: self.compress_threads.unwrap_or(if self.postcopy.is_some() { 0 } else { 2 }),
            compress_level: self.compress_level,
            decompress_threads: self.decompress_threads,
            comp_backend: self.comp_backend.clone(),
            compress_wait: self.compress_wait_thread,
            downtime_ms: self.downtime_limit,
            reaper: self.reaper.map(|r| match r {
                ReaperArg::Default => ReaperPolicyKind::Default,
                ReaperArg::Fixed => ReaperPolicyKind::Fixed,
                ReaperArg::Levels => ReaperPolicyKind::Levels,
                ReaperArg::Aimd => ReaperPolicyKind::Aimd,
                ReaperArg::Predictive => ReaperPolicyKind::Predictive,
            }),
            dirty_ring_size: self.dirty_ring_size,
            auto_converge: !self.no_auto_converge,
            throttle_initial: self.throttle_initial,
            throttle_increment: self.throttle_increment,
            throttle_max: self.throttle_max,
            seed: self.seed,
            max_time_s: self.max_time,
            mix: self.mix,
            fault_corrupt_page: self.fault_corrupt_page,
            postcopy: self.postcopy.map(|m| {
                use vmig_sim::postcopy::{Access, PostcopyConfig, PostcopyMode};
                let mut pc = PostcopyConfig::new(match m {
                    PostcopyArg::Vanilla => PostcopyMode::Vanilla,
                    PostcopyArg::Preempt => PostcopyMode::Preempt,
                    PostcopyArg::PreemptFull => PostcopyMode::PreemptFull,
                });
                pc.after = self.postcopy_after;
                pc.access = match self.access {
                    AccessArg::Random => Access::Random,
                    AccessArg::Sequential => Access::Sequential,
                };
                pc.sndbuf = self.sndbuf;
                pc.nic_queue_us = self.nic_queue_us;
                pc.fault_break_after = self.fault_break_postcopy;
                pc.rt_threads = self.rt_threads;
                pc
            }),
            dirty_tracking: match self.dirty_tracking {
                DirtyTrackingArg::Bitmap => DirtyTracking::Bitmap,
                DirtyTrackingArg::Ring => DirtyTracking::Ring,
            },
            populated_bytes: self.populated,
            dirty_queue: self.dirty_queue,
            first_pass_stretch: self.first_pass_stretch,
            guest: if self.guest == GuestArg::Sim { GuestKind::Sim } else { GuestKind::Kvm },
            kvm_device: self.kvm_device.clone(),
            dest_run_ms: self.dest_run,
            fault_unharvested_page: self.fault_unharvested_page,
        }
    }
}

/// Shows progress: a bar on a terminal, a plain line per second otherwise.
struct Display {
    bar: Option<ProgressBar>,
    plain: bool,
    last: Instant,
    label: &'static str,
}

impl Display {
    fn new(quiet: bool, label: &'static str, total: u64) -> Display {
        let tty = std::io::stderr().is_terminal();
        let bar = (!quiet && tty).then(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template("{prefix:>6} [{elapsed_precise}] {bar:30.cyan/blue} {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.set_prefix(label);
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Display { bar, plain: !quiet && !tty, last: Instant::now() - Duration::from_secs(1), label }
    }

    fn update(&mut self, p: &Progress, total: u64) {
        let msg = format!(
            "{:<9} remaining {:>7.1} MiB  sent {:>7.1} MiB  sync {:>3}  throttle {:>2}%  {:>5.0} Mbit/s",
            p.phase,
            p.remaining as f64 / 1048576.0,
            p.transferred as f64 / 1048576.0,
            p.dirty_sync_count,
            p.throttle_pct,
            p.mbps
        );
        if let Some(b) = &self.bar {
            b.set_position(total.saturating_sub(p.remaining));
            b.set_message(msg);
        } else if self.plain && (self.last.elapsed() >= Duration::from_secs(1) || p.phase != "active") {
            self.last = Instant::now();
            eprintln!("{:>6} {:>6.1}s {msg}", self.label, p.elapsed_s);
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn run_one(cfg: &SimConfig, corpus: &Corpus, quiet: bool, label: &'static str) -> Result<Report, String> {
    let total = cfg.mem_bytes;
    let mut d = Display::new(quiet, label, total);
    let r = vmig_sim::run(cfg, corpus, &mut |p| d.update(p, total));
    d.finish();
    r
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut cfg = cli.config();
    if cli.compare && cli.postcopy.is_some() {
        eprintln!("error: --compare runs the precopy stacks side by side and does not combine with --postcopy\n\nFor more information, try '--help'.");
        return ExitCode::from(2);
    }
    if let Err(e) = cfg.validate() {
        eprintln!("error: {e}\n\nFor more information, try '--help'.");
        return ExitCode::from(2);
    }
    if let Err(e) = resolve_guest(&cli, &mut cfg) {
        eprintln!("error: {e}\n\nFor more information, try '--help'.");
        return ExitCode::from(2);
    }
    let corpus = Corpus::load();
    if cli.compare {
        let legacy_cfg = SimConfig { stack: Stack::Legacy, ..cfg.clone() };
        let vmig_cfg = SimConfig { stack: Stack::Vmig, ..cfg };
        let mut rounds = Vec::new();
        for round in 1..=cli.rounds {
            let legacy_first = round % 2 == 1;
            let mut pair = [None, None];
            for first in [true, false] {
                let legacy_now = first == legacy_first;
                let (c, label, slot) =
                    if legacy_now { (&legacy_cfg, "legacy", 0) } else { (&vmig_cfg, "vmig", 1) };
                match run_one(c, &corpus, cli.quiet, label) {
                    Ok(r) => pair[slot] = Some(r),
                    Err(e) => return fail(&e),
                }
            }
            let [Some(legacy), Some(vmig)] = pair else { unreachable!("both stacks ran") };
            rounds.push((legacy_first, legacy, vmig));
        }
        if cli.json {
            let v: Vec<_> = rounds
                .iter()
                .map(|(lf, l, v)| serde_json::json!({ "legacy_first": lf, "legacy": l, "vmig": v }))
                .collect();
            let v = if v.len() == 1 { v[0].clone() } else { serde_json::Value::Array(v) };
            println!("{}", serde_json::to_string_pretty(&v).expect("serialisable"));
        } else if let [(_, legacy, vmig)] = &rounds[..] {
            println!("{}", legacy.info_migrate());
            println!("{}", vmig.info_migrate());
            println!("{}", compare_table(legacy, vmig));
        } else {
            let pairs: Vec<_> = rounds.iter().map(|(lf, l, v)| (*lf, l, v)).collect();
            println!("{}", rounds_table(&pairs));
        }
        let mismatch = rounds.iter().any(|(_, l, v)| l.verification_failed() || v.verification_failed());
        let vmig_ok = rounds.iter().all(|(_, _, v)| v.ok());
        return if vmig_ok && !mismatch { ExitCode::SUCCESS } else { ExitCode::from(1) };
    }
    let label = if cfg.stack == Stack::Vmig { "vmig" } else { "legacy" };
    let r = match run_one(&cfg, &corpus, cli.quiet, label) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&r).expect("serialisable"));
    } else {
        print!("{}", r.info_migrate());
    }
    if r.ok() {
        ExitCode::SUCCESS
    } else {
        if let Some(d) = &r.status_detail {
            eprintln!("vmig-sim: migration {}: {d}", r.status);
        }
        ExitCode::from(1)
    }
}

/// `--guest`: checks that the KVM device works for `kvm` (and that the
/// ring size fits the kernel's maximum); `auto` falls back to the simulated
/// guest, saying why.
fn resolve_guest(cli: &Cli, cfg: &mut SimConfig) -> Result<(), String> {
    if cli.guest == GuestArg::Sim {
        return Ok(());
    }
    // What the KVM guest's VMM (sim/src/kvm/) does not drive yet.
    let sim_only = if cfg.postcopy.is_some() {
        Some("--postcopy")
    } else if cfg.populated_bytes.is_some() {
        Some("--populated")
    } else {
        None
    };
    if let Some(flag) = sim_only {
        if cli.guest == GuestArg::Kvm {
            return Err(format!("--guest kvm does not support {flag} yet: use --guest sim"));
        }
        if !cli.quiet {
            eprintln!("vmig-sim: {flag} runs on the simulated guest (the KVM guest does not support it yet)");
        }
        cfg.guest = GuestKind::Sim;
        return Ok(());
    }
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    let probe = vmig_sim::kvm::probe(&cli.kvm_device);
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    let probe: Result<u32, String> = Err("the KVM guest needs Linux on x86-64".into());
    match probe {
        Ok(max) if cfg.dirty_ring_size > max => Err(format!(
            "--dirty-ring-size {} is above this kernel's maximum of {max} entries",
            cfg.dirty_ring_size
        )),
        Ok(_) => Ok(()),
        Err(e) if cli.guest == GuestArg::Kvm => Err(format!("--guest kvm: the KVM device is not usable: {e}")),
        Err(e) => {
            if !cli.quiet {
                eprintln!("vmig-sim: KVM device not usable ({e}); migrating the simulated guest");
            }
            cfg.guest = GuestKind::Sim;
            Ok(())
        }
    }
}

fn fail(e: &str) -> ExitCode {
    eprintln!("vmig-sim: {e}");
    ExitCode::from(1)
}
