//! Several vCPUs hiding their exits under one rule (`super::smp`), against a model of the
//! machine: each vCPU's exit loop as the real one runs it (the switch's report and the stopped
//! clock at the exit, the handler, the plan under the machine's lock, the switch's arithmetic
//! at a later timestamp, the guest again after the rest of the round trip), all of them
//! interleaved in host time with random handling times, runs in the guest, INITs and start-up
//! IPIs. Every TSC read is checked against every read made before it on any vCPU, at the same
//! host tick included (in Bochs a lock handed over within a round is seen at the same tick).

use super::cost::BareCosts;
use super::smp::{Clock, Clocks};
use super::*;
use crate::testing::FakeVcpu;
use alloc::boxed::Box;
use alloc::vec::Vec;

const HZ: u64 = 50_000_000;
const ROUND_TRIP: u64 = 55;
const EXIT_LAG: u64 = 20;

fn costs() -> BareCosts {
    BareCosts {
        cpuid_basic: [3; 32],
        cpuid_extended: [3; 32],
        cpuid_other: 3,
        rdmsr: 5,
        wrmsr: 5,
        ..BareCosts::all(1)
    }
}

/// A tiny deterministic generator.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// In guest code since this host time (its first instruction after the entry).
    Guest,
    /// Exited at `next - EXIT_LAG`: the stub's timestamp is `next`.
    Exited,
    /// Handling; plans its entry at `next`.
    Handling,
    /// Waiting for a start-up IPI (which comes at `next`).
    Waiting,
}

struct V {
    time: Time,
    vcpu: FakeVcpu,
    phase: Phase,
    next: u64,
    exit_tsc: u64,
    /// The entry's plan and the switch's timestamp, reported at the next exit.
    entry: (EntryTime, u64),
    /// The exit being handled is an INIT.
    init: bool,
    /// The exit being handled.
    exit: (Exit, Action, u32),
}

struct Machine {
    vcpus: Vec<V>,
    clocks: &'static Clocks,
    rng: Lcg,
    /// The largest TSC value read so far, on any vCPU.
    highest: u64,
    reads: u64,
    starts: u32,
    inits: u32,
    /// Entries that gave time back (a repayment step, or catching up with another clock).
    gave_back: u32,
    /// Entries that gave time back with a repayment step of their own.
    repaid: u32,
}

impl Machine {
    fn new(n: usize, mode: &str, seed: u64) -> Machine {
        let config = crate::config::Config::parse(mode).unwrap();
        let host = 1u64 << 32;
        let mut v0 = VirtualTsc::new(config.tsc, host, 0);
        v0.calibration = tsc::Calibration {
            round_trip: [ROUND_TRIP; 4],
            exit_lag: EXIT_LAG,
            costs: costs(),
            tsc_hz: HZ,
        };
        let clocks: &'static Clocks = Box::leak(Box::new(Clocks::new()));
        let vcpus = (0..n)
            .map(|i| {
                let mut time = Time::new(if i == 0 { v0.clone() } else { v0.sibling(0) });
                time.calibrated(true);
                time.waiting(i != 0);
                time.share(clocks, i, i == 0, host);
                // Short repayment periods, so the model sees many steps.
                if let Some(d) = time.debt.as_mut() {
                    d.period = 40_000;
                    d.step = 700;
                }
                let mut vcpu = FakeVcpu::new();
                vcpu.host.tsc_step = 0;
                V {
                    time,
                    vcpu,
                    phase: if i == 0 { Phase::Guest } else { Phase::Waiting },
                    next: host
                        + if i == 0 {
                            1
                        } else {
                            50_000 + 10_000 * i as u64
                        },
                    exit_tsc: 0,
                    entry: (EntryTime::default(), 0),
                    init: false,
                    exit: (Exit::Timer, Action::Resume, 0),
                }
            })
            .collect();
        Machine {
            vcpus,
            clocks,
            rng: Lcg(seed),
            highest: 0,
            reads: 0,
            starts: 0,
            inits: 0,
            gave_back: 0,
            repaid: 0,
        }
    }

    /// Every vCPU published as running has the same clock lag.
    fn running_agree(&self) {
        let lags: Vec<i64> = (0..self.vcpus.len())
            .filter_map(|i| match self.clocks.get(i) {
                Clock::Running(l) => Some(l),
                _ => None,
            })
            .collect();
        assert!(
            lags.windows(2).all(|w| w[0] == w[1]),
            "running lags {lags:?}"
        );
    }

    fn step(&mut self) {
        let i = (0..self.vcpus.len())
            .min_by_key(|&i| self.vcpus[i].next)
            .unwrap();
        let now = self.vcpus[i].next;
        let many = self.vcpus.len();
        let r = self.rng.below(100);
        let len = self.rng.below(3_000);
        let v = &mut self.vcpus[i];
        match v.phase {
            Phase::Guest if r < 60 => {
                // RDTSC: never behind anything read before, on this vCPU or another.
                let value = v.time.v.guest_at(now);
                assert!(
                    value >= self.highest,
                    "vCPU {i} read {value} at host {now}, {} behind an earlier read",
                    self.highest - value
                );
                self.highest = value;
                self.reads += 1;
                v.next = now + 1 + len % 200;
            }
            Phase::Guest => {
                // An exit: CPUID, the machine's poll timer, or (an application processor,
                // rarely) an INIT from the guest's boot processor.
                v.init = i != 0 && r >= 97;
                v.exit = match r % 3 {
                    _ if v.init => (Exit::Init, Action::Resume, 0),
                    0 => (Exit::Timer, Action::Resume, 0),
                    _ => (Exit::Cpuid, Action::Advance, 0),
                };
                v.exit_tsc = now + EXIT_LAG;
                v.phase = Phase::Exited;
                v.next = v.exit_tsc;
            }
            Phase::Exited => {
                // The switch reports the offset it wrote; the clock is stopped from here on,
                // and it ran with exactly the lag it published.
                let published = self.clocks.get(i);
                let clock = v.time.v.hidden(now) as i64;
                assert_eq!(
                    published,
                    Clock::Running(clock),
                    "vCPU {i} ran as published"
                );
                // (The loop reports only after a hiding entry: not after the boot vCPU's first.)
                if v.entry.0.hide {
                    v.time.after_exit(
                        &HiddenTime {
                            offset: v.time.v.offset,
                            ..HiddenTime::default()
                        },
                        v.exit_tsc,
                    );
                    assert!(matches!(self.clocks.get(i), Clock::Stopped(_)));
                }
                v.phase = Phase::Handling;
                v.next = now + 30 + len;
            }
            Phase::Handling | Phase::Waiting => {
                if v.phase == Phase::Waiting {
                    // The start-up IPI's exit; the entry that waited hid nothing.
                    assert!(!v.entry.0.hide);
                    v.exit = (Exit::Sipi { vector: 0x10 }, Action::Resume, 0);
                    v.time.waiting(false);
                    v.exit_tsc = now;
                    self.starts += 1;
                }
                let (exit, action, detail) = v.exit;
                v.time.detail = detail;
                v.time.exited(&exit, &action);
                v.vcpu.host.tsc = now;
                if v.init {
                    // Into the INIT state: the next entry waits for a start-up IPI.
                    v.init = false;
                    self.inits += 1;
                    v.time.waiting(true);
                    v.entry = (v.time.plan(&mut v.vcpu, v.exit_tsc), now);
                    v.phase = Phase::Waiting;
                    v.next = now + 2_000 + len * 10;
                    return;
                }
                let stepped = v.time.debt.map(|d| d.last_step());
                let entry = v.time.plan(&mut v.vcpu, v.exit_tsc);
                assert!(entry.hide);
                if (entry.limit as i64) < 0 {
                    self.gave_back += 1;
                    // A repayment step this vCPU took (not only a clock it caught up with).
                    if v.time.debt.map(|d| d.last_step()) != stepped {
                        self.repaid += 1;
                    }
                }
                // The switch's timestamp comes a little later (the lock released, the
                // registers loaded); it takes exactly the planned amount.
                let switch = now + 5 + self.rng.below(if many > 1 { 300 } else { 1 });
                let (offset, _) = entry.apply(v.exit_tsc, switch);
                assert_eq!(
                    v.time.v.offset.wrapping_sub(offset),
                    entry.limit,
                    "the switch takes the plan"
                );
                // The model keeps the offset at once: the guest runs with it from its first
                // instruction, and the report at the next exit carries the same value.
                v.time.v.offset = offset;
                v.entry = (entry, switch);
                v.phase = Phase::Guest;
                v.next = switch + (ROUND_TRIP - EXIT_LAG);
                self.running_agree();
            }
        }
    }
}

fn run_machine(n: usize, mode: &str, seed: u64, steps: u32) -> Machine {
    let mut m = Machine::new(n, mode, seed);
    for _ in 0..steps {
        m.step();
    }
    m
}

#[test]
fn no_read_on_any_vcpu_is_behind_an_earlier_read_on_another() {
    for (n, mode, seed) in [
        (2, "tsc=hide", 1),
        (2, "tsc=hide:unbounded", 2),
        (3, "tsc=hide", 3),
        (4, "tsc=hide", 4),
        (4, "tsc=hide:unbounded", 5),
    ] {
        let m = run_machine(n, mode, seed, 200_000);
        let shown = m.clocks.shown();
        // Not vacuous: the guest read a lot, processors stopped and started again, exits were
        // hidden in full (while the others were stopped too) and shown (while one ran), and
        // clocks were moved forward (repayment steps and catching up).
        assert!(m.reads > 50_000, "{n} {mode}: {} reads", m.reads);
        assert!(m.starts as usize >= n - 1 && m.inits > 0, "{n} {mode}");
        assert!(
            shown.whole > 100 && shown.bounded + shown.whole > 1_000 && shown.others > 1_000,
            "{n} {mode}: {shown:?}"
        );
        // Repayment steps lowered lags, and the other clocks followed (they caught up).
        assert!(
            m.repaid > 0 && m.gave_back > m.repaid,
            "{n} {mode}: {} {}",
            m.repaid,
            m.gave_back
        );
        // The clocks really lag: hiding happened and stayed coherent.
        let lag = m.vcpus[0].time.v.hidden(m.vcpus[0].next) as i64;
        assert!(lag > 0, "{n} {mode}: {lag}");
    }
}

#[test]
fn one_vcpu_running_alone_on_a_machine_of_several_hides_every_exit() {
    // The application processors never start: vCPU 0's every exit is hidden in full (but the
    // first), as on a one-processor machine.
    let mut m = Machine::new(2, "tsc=hide:unbounded", 9);
    m.vcpus[1].next = u64::MAX;
    for _ in 0..20_000 {
        m.step();
    }
    let shown = m.clocks.shown();
    assert_eq!(shown.others, 0, "{shown:?}");
    assert!(shown.whole > 1_000);
}
