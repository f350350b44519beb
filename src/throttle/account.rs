//! Per-vCPU throttle accounting: pure, with time passed in.
//!
//! A throttled vCPU alternates run and sleep phases. At each sleep the owed
//! sleep is computed from the run time *measured* since the previous sleep,
//! so a timer that fires late simply makes the next sleep longer:
//!
//! ```text
//! owed    = run * pct / (100 - pct) + debt
//! granted = clamp(owed, 0, 2 * nominal)          nominal = timeslice * pct / (100 - pct)
//! debt'   = clamp(owed - slept, -carry, +carry)   carry = max(timeslice + nominal, 100 ms)
//! ```
//!
//! `slept` is measured too (from the start of the sleep to the next
//! [`VcpuAccount::end_sleep`]), so oversleep is paid back by a shorter next
//! sleep and undersleep (a kicked sleep) by a longer one; over many cycles
//! the sleep share converges on `pct`. The clamps keep one pathological
//! period (a VM paused for minutes with the throttle on, a kicked 990 ms
//! sleep) from turning into a long make-up sleep or a long unthrottled run:
//! one sleep is at most two nominal sleeps (a timer late by a whole
//! timeslice is still repaid at once), and the carry is at most `carry =
//! max(cycle, CARRY_FLOOR_NS)` either way, `cycle` being one throttle cycle
//! (`timeslice + nominal`, QEMU's timer period `timeslice / (1 - pct)`).
//! The floor exists because scheduling latency on a busy host is not a
//! pathological period and must be credited in full (measured in
//! docs/controllers.md, "Why the defaults"). Credit not yet paid back when
//! a measurement window closes still shows as extra sleep in that window,
//! which is why the accuracy bench runs whole seconds per target.
//!
//! A change of percentage starts a new regime at the first call that sees
//! it: the debt is dropped (it was owed under the old share), a run in
//! progress restarts there, and a sleep that began under the old share
//! carries nothing forward.

/// Smallest bound on the carried debt or credit: 100 ms, above the latest
/// throttle wake-up measured on a loaded host and far below the pauses the
/// bound is for (seconds); docs/controllers.md, "Why the defaults".
pub const CARRY_FLOOR_NS: u64 = 100_000_000;

/// Where a vCPU is in its cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing measured yet (throttle off, or never called).
    Off,
    /// Running since `since` (ns).
    Running { since: u64 },
    /// Sleeping since `since`; `granted` was returned, `owed` is what was
    /// due (may be negative: credit), `gen` the regime it was computed in.
    Sleeping { since: u64, granted: u64, owed: i128, gen: u64 },
}

/// The throttle setting as one consistent snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// 0 (off) or 1..=99.
    pub pct: u32,
    /// Incremented by every change of `pct`.
    pub gen: u64,
    /// Run time between sleeps, ns (QEMU: 10 ms).
    pub timeslice_ns: u64,
}

impl Setting {
    /// `x * pct / (100 - pct)`, exact in i128 (any u64 `x`, pct <= 99).
    fn scale(&self, x: u64) -> i128 {
        i128::from(x) * i128::from(self.pct) / i128::from(100 - self.pct.min(99))
    }

    /// The sleep that goes with one timeslice of running.
    pub fn nominal_sleep_ns(&self) -> u64 {
        u64::try_from(self.scale(self.timeslice_ns)).unwrap_or(u64::MAX)
    }

    /// One throttle cycle, run plus nominal sleep (QEMU's timer period).
    pub fn cycle_ns(&self) -> i128 {
        i128::from(self.timeslice_ns) + self.scale(self.timeslice_ns)
    }

    /// Most debt or credit carried between sleeps (see the module doc).
    pub fn carry_cap_ns(&self) -> i128 {
        self.cycle_ns().max(i128::from(CARRY_FLOOR_NS))
    }
}

/// One vCPU's closed-loop account.
#[derive(Clone, Copy, Debug)]
pub struct VcpuAccount {
    phase: Phase,
    /// Sleep still owed (> 0) or overslept (< 0), ns.
    debt: i128,
    /// Regime of `debt`.
    gen: u64,
}

impl Default for VcpuAccount {
    fn default() -> Self {
        VcpuAccount { phase: Phase::Off, debt: 0, gen: 0 }
    }
}

impl VcpuAccount {
    /// Applies a setting change seen at `now`: a new regime with no debt,
    /// whose first run starts now (the run before the change, possibly
    /// unthrottled, owes nothing under the new share); off stops measuring.
    pub fn sync(&mut self, s: &Setting, now: u64) {
        if s.gen != self.gen {
            self.gen = s.gen;
            self.debt = 0;
            if let Phase::Running { .. } = self.phase {
                self.phase = Phase::Running { since: now };
            }
        }
        if s.pct == 0 {
            self.phase = Phase::Off;
            self.debt = 0;
        }
    }

    fn close_sleep(&mut self, end: u64, s: &Setting) {
        if let Phase::Sleeping { since, owed, gen, .. } = self.phase {
            if gen == self.gen {
                let slept = i128::from(end.saturating_sub(since));
                let cap = s.carry_cap_ns();
                self.debt = (owed - slept).clamp(-cap, cap);
            }
            self.phase = Phase::Running { since: end };
        }
    }

    /// When this vCPU should next sleep (absolute ns), or `None` when the
    /// throttle is off or the vCPU is asleep.
    pub fn due_ns(&self, s: &Setting) -> Option<u64> {
        match self.phase {
            Phase::Running { since } if s.pct != 0 => Some(since.saturating_add(s.timeslice_ns)),
            _ => None,
        }
    }

    /// When the vCPU should next be brought to a safe point under `s`
    /// (which is on): its due time while running in the current regime;
    /// 0 (now) when it has not seen `s` yet (never measured, or `s` is a
    /// new regime it must start); `None` while it sleeps.
    pub fn kick_due_ns(&self, s: &Setting) -> Option<u64> {
        match self.phase {
            Phase::Sleeping { .. } => None,
            _ if s.gen != self.gen => Some(0),
            Phase::Off => Some(0),
            Phase::Running { .. } => self.due_ns(s),
        }
    }

    /// Ends the run phase at `now` and returns the sleep owed, ns (0 when
    /// off, on the first call, or when earlier oversleep covers it).
    /// Called twice without [`end_sleep`](Self::end_sleep), the previous
    /// sleep is taken as slept exactly as granted.
    pub fn begin_sleep(&mut self, now: u64, s: &Setting) -> u64 {
        self.sync(s, now);
        if let Phase::Sleeping { since, granted, .. } = self.phase {
            self.close_sleep(since.saturating_add(granted).min(now.max(since)), s);
        }
        let since = match self.phase {
            Phase::Off if s.pct == 0 => return 0,
            Phase::Off => {
                self.phase = Phase::Running { since: now };
                return 0;
            }
            Phase::Running { since } => since,
            Phase::Sleeping { .. } => unreachable!("closed above"),
        };
        let run = now.saturating_sub(since);
        let owed = s.scale(run) + self.debt;
        let cap = 2 * i128::from(s.nominal_sleep_ns());
        let granted = u64::try_from(owed.clamp(0, cap)).unwrap_or(u64::MAX);
        self.phase = Phase::Sleeping { since: now, granted, owed, gen: self.gen };
        granted
    }

    /// Ends the sleep phase at `now` (the vCPU runs again) and returns when
    /// it should next sleep (absolute ns); `u64::MAX` when the throttle is
    /// off. Calling it while running changes nothing.
    pub fn end_sleep(&mut self, now: u64, s: &Setting) -> u64 {
        self.sync(s, now);
        match self.phase {
            Phase::Off if s.pct == 0 => return u64::MAX,
            Phase::Off => self.phase = Phase::Running { since: now },
            Phase::Sleeping { .. } => self.close_sleep(now, s),
            Phase::Running { .. } => {}
        }
        self.due_ns(s).unwrap_or(u64::MAX)
    }

    /// Sleep still owed (> 0) or overslept (< 0), ns (for the unit tests).
    #[cfg(test)]
    pub fn debt_ns(&self) -> i128 {
        self.debt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn set(pct: u32, gen: u64) -> Setting {
        Setting { pct, gen, timeslice_ns: 10 * MS }
    }

    #[test]
    fn kick_due_follows_the_phase_and_the_regime() {
        let mut a = VcpuAccount::default();
        let s1 = set(50, 1);
        assert_eq!(a.kick_due_ns(&s1), Some(0), "never measured: kick now");
        assert_eq!(a.begin_sleep(5 * MS, &s1), 0);
        assert_eq!(a.kick_due_ns(&s1), Some(15 * MS), "one timeslice after the run began");
        assert_eq!(a.begin_sleep(15 * MS, &s1), 10 * MS);
        assert_eq!(a.kick_due_ns(&s1), None, "asleep: no kick");
        assert_eq!(a.end_sleep(25 * MS, &s1), 35 * MS);
        assert_eq!(a.kick_due_ns(&s1), Some(35 * MS));
        let s2 = set(20, 2);
        assert_eq!(a.kick_due_ns(&s2), Some(0), "a new regime starts at the next safe point");
        a.sync(&s2, 30 * MS);
        assert_eq!(a.kick_due_ns(&s2), Some(40 * MS), "the run restarted at the change");
    }

    #[test]
    fn nominal_cycle_matches_qemu() {
        // QEMU: sleep = pct/(1-pct) * 10 ms: 50% -> 10 ms, 99% -> 990 ms.
        assert_eq!(set(50, 1).nominal_sleep_ns(), 10 * MS);
        assert_eq!(set(99, 1).nominal_sleep_ns(), 990 * MS);
        assert_eq!(set(10, 1).nominal_sleep_ns(), 10 * MS / 9);
        let s = set(50, 1);
        let mut a = VcpuAccount::default();
        assert_eq!(a.end_sleep(0, &s), 10 * MS);
        assert_eq!(a.begin_sleep(10 * MS, &s), 10 * MS);
        assert_eq!(a.end_sleep(20 * MS, &s), 30 * MS);
    }

    #[test]
    fn late_timer_and_oversleep_carry_forward() {
        let s = set(50, 1);
        let mut a = VcpuAccount::default();
        a.end_sleep(0, &s);
        // Timer 3 ms late: 13 ms run owes 13 ms.
        assert_eq!(a.begin_sleep(13 * MS, &s), 13 * MS);
        // Overslept by 2 ms: 15 ms slept.
        a.end_sleep(28 * MS, &s);
        assert_eq!(a.debt_ns(), -2 * MS as i128);
        // The next 10 ms run owes 10 - 2 = 8 ms.
        assert_eq!(a.begin_sleep(38 * MS, &s), 8 * MS);
        a.end_sleep(46 * MS, &s);
        assert_eq!(a.debt_ns(), 0);
    }

    #[test]
    fn long_run_share_converges_with_jittery_timers() {
        for pct in [10u32, 50, 90, 95, 99] {
            let s = set(pct, 1);
            let mut a = VcpuAccount::default();
            let (mut now, mut run, mut slept) = (0u64, 0u64, 0u64);
            let mut x = 0x2545_f491_4f6c_dd1du64;
            let mut next = a.end_sleep(now, &s);
            for _ in 0..2000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Timer fires up to 2 ms late; sleeps overshoot up to 0.3 ms.
                let fire = next + x % (2 * MS);
                run += fire - now;
                now = fire;
                let g = a.begin_sleep(now, &s);
                let actual = g + (x >> 20) % (300_000);
                slept += actual;
                now += actual;
                next = a.end_sleep(now, &s);
            }
            let share = slept as f64 / (run + slept) as f64 * 100.0;
            assert!((share - f64::from(pct)).abs() < 0.05, "{pct}: {share}");
        }
    }

    #[test]
    fn clamps_bound_pathological_periods() {
        let s = set(50, 1);
        let mut a = VcpuAccount::default();
        a.end_sleep(0, &s);
        // Paused for an hour with the throttle on: at most 2 nominal sleeps.
        assert_eq!(a.begin_sleep(3_600_000 * MS, &s), 20 * MS);
        // Kicked at once: the carry is capped at max(one cycle, 100 ms).
        a.end_sleep(3_600_000 * MS, &s);
        assert_eq!(a.debt_ns(), 100 * MS as i128);
        // Paused for an hour while asleep: the same cap on credit.
        a.begin_sleep(3_600_010 * MS, &s);
        a.end_sleep(7_200_000 * MS, &s);
        assert_eq!(a.debt_ns(), -100 * MS as i128);
        // At 99% one cycle (1 s) is above the floor.
        assert_eq!(set(99, 1).carry_cap_ns(), 1000 * MS as i128);
        // No overflow anywhere near u64::MAX.
        let big = Setting { pct: 99, gen: 1, timeslice_ns: u64::MAX };
        let mut b = VcpuAccount::default();
        b.end_sleep(0, &big);
        assert_eq!(b.begin_sleep(u64::MAX, &big), u64::MAX);
        assert_eq!(b.end_sleep(u64::MAX, &big), u64::MAX);
    }

    #[test]
    fn off_and_regime_changes() {
        let mut a = VcpuAccount::default();
        assert_eq!(a.begin_sleep(5, &set(0, 0)), 0);
        assert_eq!(a.end_sleep(5, &set(0, 0)), u64::MAX);
        let s = set(50, 1);
        assert_eq!(a.begin_sleep(0, &s), 0); // first call: starts measuring
        assert_eq!(a.begin_sleep(10 * MS, &s), 10 * MS);
        // Changed to 90% while asleep: the old sleep carries nothing, the
        // run restarts when it ends.
        let s2 = set(90, 2);
        assert_eq!(a.end_sleep(11 * MS, &s2), 21 * MS);
        assert_eq!(a.debt_ns(), 0);
        assert_eq!(a.begin_sleep(21 * MS, &s2), 90 * MS);
        // Off while asleep: no timer, no debt.
        assert_eq!(a.end_sleep(22 * MS, &set(0, 3)), u64::MAX);
        assert_eq!(a.debt_ns(), 0);
        // On again much later: the unthrottled time owes nothing.
        let s4 = set(50, 4);
        assert_eq!(a.end_sleep(1000 * MS, &s4), 1010 * MS);
        assert_eq!(a.begin_sleep(1010 * MS, &s4), 10 * MS);
    }

    #[test]
    fn change_while_running_restarts_the_run() {
        let s = set(50, 1);
        let mut a = VcpuAccount::default();
        a.end_sleep(0, &s);
        // 90% from 7 ms on: the first call to see it (the timer at 10 ms)
        // starts the new run there, so nothing is owed yet.
        let s2 = set(90, 2);
        assert_eq!(a.begin_sleep(10 * MS, &s2), 0);
        assert_eq!(a.end_sleep(10 * MS, &s2), 20 * MS);
        assert_eq!(a.begin_sleep(20 * MS, &s2), 90 * MS);
    }

    #[test]
    fn begin_twice_assumes_the_sleep_was_taken() {
        let s = set(50, 1);
        let mut a = VcpuAccount::default();
        a.end_sleep(0, &s);
        assert_eq!(a.begin_sleep(10 * MS, &s), 10 * MS);
        // The VMM never called end_sleep: slept 10 ms, then ran 10 ms.
        assert_eq!(a.begin_sleep(30 * MS, &s), 10 * MS);
        assert_eq!(a.debt_ns(), 0);
    }
}
