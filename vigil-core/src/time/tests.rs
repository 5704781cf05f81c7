//! The time logic against a model of the machine: a guest whose instructions take one host tick
//! each (as in Bochs), exits that take a VMX round trip plus the handler's time, and the world
//! switch's arithmetic ([`EntryTime::apply`]). Each test compares what the guest reads under
//! Vigil with what the same instructions read on bare metal.

use super::cost::BareCosts;
use super::*;
use crate::exit::IoAccess;
use crate::testing::FakeVcpu;
use crate::vcpu::Seg;
use x86_arch::event::Event;

const HZ: u64 = 50_000_000;
/// The round trip no timestamp covers, and the part of it before the exit's stamp.
const ROUND_TRIP: u64 = 55;
const EXIT_LAG: u64 = 20;

fn costs() -> BareCosts {
    BareCosts::all(1)
}

/// One vCPU of the model.
struct Sim {
    time: Time,
    vcpu: FakeVcpu,
    /// Host time: the next guest instruction executes at this tick.
    host: u64,
    exit_tsc: u64,
    entry: EntryTime,
    /// Guest run time left before the backend's timer exits (`None`: not armed).
    timer: Option<u64>,
    timer_exits: u32,
}

impl Sim {
    fn new(mode: &str, scaling: bool) -> Sim {
        let config = crate::config::Config::parse(mode).unwrap();
        let host = 1 << 32;
        let mut v = VirtualTsc::new(config.tsc, host, 0);
        v.calibration = tsc::Calibration {
            round_trip: [ROUND_TRIP; 4],
            exit_lag: EXIT_LAG,
            costs: costs(),
            tsc_hz: HZ,
        };
        let mut time = Time::new(v);
        time.calibrated(scaling);
        let mut vcpu = FakeVcpu::new();
        vcpu.host.tsc_step = 0;
        Sim {
            time,
            vcpu,
            host,
            exit_tsc: 0,
            entry: EntryTime::default(),
            timer: None,
            timer_exits: 0,
        }
    }

    /// The guest's TSC now.
    fn guest(&self) -> u64 {
        self.time.v.guest_at(self.host)
    }

    /// The guest runs `n` instructions that do not exit (the backend's timer may interrupt).
    fn run(&mut self, mut n: u64) {
        while n > 0 {
            match self.timer {
                Some(t) if t <= n => {
                    self.host += t;
                    n -= t;
                    self.timer_exits += 1;
                    self.exit_at(Exit::Timer, Action::Resume, 0, 150);
                }
                _ => {
                    self.host += n;
                    if let Some(t) = self.timer.as_mut() {
                        *t -= n;
                    }
                    n = 0;
                }
            }
        }
    }

    /// RDTSC: what it reads; it takes one tick.
    fn rdtsc(&mut self) -> u64 {
        let g = self.guest();
        self.run(1);
        g
    }

    /// The instruction at `self.host` exits; Vigil spends `handling` ticks on it.
    fn exit_at(&mut self, exit: Exit, action: Action, detail: u32, handling: u64) {
        let instruction = self.host;
        self.exit_tsc = instruction + EXIT_LAG;
        self.time.detail = detail;
        // The handler runs (an IA32_TSC write, a hold...), then the loop records the exit.
        self.vcpu.host.tsc = self.exit_tsc + handling;
        self.time.exited(&exit, &action);
        self.entry = self.time.plan(&mut self.vcpu, self.exit_tsc);
        // The switch reads its timestamp a few ticks after the plan's.
        let now = self.vcpu.host.tsc + 7;
        if self.entry.hide {
            let (offset, _) = self.entry.apply(self.exit_tsc, now);
            let hidden = HiddenTime {
                offset,
                ..HiddenTime::default()
            };
            // (The switch reports it at the next exit; the model takes it at once.)
            self.time.after_exit(&hidden, now);
        }
        self.timer = self.vcpu.poll;
        self.host = now + (ROUND_TRIP - EXIT_LAG);
    }

    fn cpuid(&mut self, leaf: u32, handling: u64) {
        self.exit_at(Exit::Cpuid, Action::Advance, leaf, handling);
    }
}

/// `rdtsc; cpuid; rdtsc` as the model's bare metal measures it: the read, then CPUID (1 tick),
/// then the read.
const BARE_PAFISH: u64 = 2;

#[test]
fn hide_shows_the_bare_cost_of_each_exit_whatever_the_handler_took() {
    let mut s = Sim::new("tsc=hide:unbounded", true);
    for handling in [180, 250, 199, 4000, 30_000, 199, 30, 100, 100] {
        let rate = s.time.v.multiplier;
        let a = s.rdtsc();
        s.cpuid(0, handling);
        let b = s.rdtsc();
        // Exactly bare at the host rate. While the clock runs fast (repaying) the scaled
        // values' rounding may add a tick or two (rate changes happen at the timer's exits,
        // never at the instruction's): never less than bare.
        let slack = if rate == tsc::UNITY && s.time.v.multiplier == tsc::UNITY {
            0
        } else {
            2
        };
        assert!(
            (BARE_PAFISH..=BARE_PAFISH + slack).contains(&(b - a)),
            "handling {handling}: {} (slack {slack})",
            b - a
        );
    }
    // Under the bound, an exit longer than the whole budget shows what it cannot hide.
    let mut b = Sim::new("tsc=hide", true);
    let a = b.rdtsc();
    b.cpuid(0, 400_000);
    let shown = b.rdtsc() - a;
    assert!(shown > 400_000 - 12_500, "{shown}");
    let mut u = Sim::new("tsc=hide:unbounded", true);
    let a = u.rdtsc();
    u.cpuid(0, 400_000);
    assert!((BARE_PAFISH..=BARE_PAFISH + 4).contains(&(u.rdtsc() - a)));
    // Frozen gives nothing back: the CPUID takes no guest time at all.
    let mut f = Sim::new("tsc=frozen", false);
    let a = f.rdtsc();
    f.cpuid(0, 500);
    assert_eq!(f.rdtsc() - a, 1);
}

#[test]
fn each_kind_of_exit_keeps_its_own_bare_cost() {
    let mut s = Sim::new("tsc=hide", true);
    s.time.v.calibration.costs.cpuid_basic[0xB] = 90;
    s.time.v.calibration.costs.fault = 40;
    s.time.v.calibration.costs.ins = [(300, 20), (300, 20), (300, 20)];
    s.calibrated_again();
    let a = s.rdtsc();
    s.cpuid(0xB, 300);
    assert_eq!(s.rdtsc() - a, 1 + 90);
    // A VMCALL answered with #UD costs what the exception costs bare.
    let a = s.rdtsc();
    s.exit_at(Exit::Hypercall, Action::Inject(Event::UD), 0, 200);
    assert_eq!(s.rdtsc() - a, 1 + 40);
    // REP INSB of 10 elements: the first and nine more.
    let io = Exit::Io(IoAccess {
        port: 0x80,
        size: 1,
        input: true,
        string: true,
        rep: true,
        addr_size: 8,
        segment: Seg::Es,
    });
    let a = s.rdtsc();
    s.exit_at(io, Action::Advance, 10, 2000);
    // (By now the debt is large enough for repayment: the clock may run fast, a tick or two
    // more.)
    assert!((1 + 300 + 9 * 20..=1 + 300 + 9 * 20 + 2).contains(&(s.rdtsc() - a)));
}

impl Sim {
    fn calibrated_again(&mut self) {
        self.time.calibrated(true);
    }
}

#[test]
fn the_tsc_never_goes_backwards_across_exits_and_repayment() {
    let mut s = Sim::new("tsc=hide", true);
    let mut last = s.rdtsc();
    for i in 0..5_000u64 {
        s.cpuid(i as u32 % 3, 100 + (i * 37) % 900);
        s.run(i % 50);
        let now = s.rdtsc();
        assert!(now > last, "round {i}: {now} after {last}");
        last = now;
    }
}

#[test]
fn a_burst_of_exits_is_repaid_while_the_guest_runs() {
    let mut s = Sim::new("tsc=hide:unbounded", true);
    for _ in 0..100 {
        s.cpuid(0, 250);
    }
    let owed = s.time.v.lag(s.host);
    assert!(owed > 25_000, "100 exits of about 300 ticks: {owed}");
    // The guest runs on without exits: the debt is paid while it runs — fast just after the
    // burst, then at 1/2048 of its run time once the burst is a window behind —, the timer ends
    // the repayment, and the guest is never ahead of true time.
    let (h0, g0) = (s.host, s.guest());
    s.run(owed as u64 * 2048 * 5 / 4);
    let lag = s.time.v.lag(s.host);
    assert!(
        (0..=s.time.debt.unwrap().start as i64 / 2).contains(&lag),
        "lag {lag}"
    );
    assert!(s.timer_exits >= 1);
    assert!(!s.time.debt.unwrap().repaying);
    let (dh, dg) = (s.host - h0, s.guest() - g0);
    assert!(
        dg <= dh + owed as u64,
        "{dg} guest ticks in {dh}, {owed} owed"
    );
    // A short probe while repaying reads the bare cost (the extra 1/32 at most rounds away).
    let mut r = Sim::new("tsc=hide:unbounded", true);
    for _ in 0..100 {
        r.cpuid(0, 250);
    }
    r.run(1000);
    assert!(r.time.debt.unwrap().repaying);
    let a = r.rdtsc();
    r.run(10);
    assert!((11..=12).contains(&(r.rdtsc() - a)));
}

#[test]
fn bounded_hiding_keeps_a_second_true_within_a_tenth_of_a_percent() {
    for (mode, bounded) in [("tsc=hide", true), ("tsc=hide:unbounded", false)] {
        let mut s = Sim::new(mode, true);
        // A second of true time spent in a CPUID storm: 20 instructions between exits.
        let (h0, g0) = (s.host, s.guest());
        while s.host - h0 < HZ {
            s.run(20);
            s.cpuid(1, 250);
        }
        let (dh, dg) = ((s.host - h0) as f64, (s.guest() - g0) as f64);
        let error = (dh - dg) / dh;
        if bounded {
            assert!(error.abs() < 0.001, "{mode}: {error}");
            assert!(s.time.v.lag(s.host) <= 12_500 + 1);
        } else {
            assert!(
                error > 0.5,
                "{mode}: every exit hidden, the TSC falls far behind"
            );
        }
    }
}

#[test]
fn without_scaling_the_debt_is_repaid_in_steps_at_the_timer() {
    let mut s = Sim::new("tsc=hide:unbounded", false);
    for _ in 0..100 {
        s.cpuid(0, 250);
    }
    let owed = s.time.v.lag(s.host);
    let step = s.time.debt.unwrap().step as i64;
    let period = s.time.debt.unwrap().period;
    s.run(period * 3 + 10);
    assert!(s.timer_exits >= 3);
    // Each timer exit gave back a step and cost its own overhead (hidden).
    let lag = s.time.v.lag(s.host);
    assert!(lag < owed - 2 * step, "{lag} of {owed}");
}

#[test]
fn scaled_in_software_without_a_timer_repays_and_is_never_ahead() {
    // SVM: no timer, the TSC scaled in software; every read is an exit (an RDTSC emulated at
    // the exit's instruction time), so a clock that ran fast past true time since the last
    // exit is set back before any handler reads it.
    let mut s = Sim::new("tsc=hide", true);
    s.vcpu.no_timer = true;
    s.time.scaled_in_software();
    let mut last = 0;
    for round in 0..200u64 {
        // A burst of exits, then a long stretch without any (no timer ends repayment).
        for i in 0..60 {
            s.cpuid(i % 3, 250);
        }
        s.run(1_000_000 + round * 10_000);
        // The loop's order at the RDTSC's exit: the switch's report (the offset it wrote
        // before this run), then the handler's read, then the next entry's plan.
        let at = s.host;
        let exit_tsc = at + EXIT_LAG;
        let report = HiddenTime {
            offset: s.time.v.offset,
            ..HiddenTime::default()
        };
        s.time.after_exit(&report, exit_tsc);
        let read = s.time.v.guest_at_exit(exit_tsc);
        s.exit_at(Exit::Rdtsc, Action::Advance, 0, 300);
        assert!(read > last, "round {round}: {read} after {last}");
        last = read;
        let lag = s.time.v.lag(at);
        assert!(lag >= 0, "round {round}: ahead of true time by {}", -lag);
        assert!(
            lag <= 12_500 + 1,
            "round {round}: lag {lag} beyond the bound"
        );
    }
    assert_eq!(s.timer_exits, 0);
    // Over the whole run the TSC kept true time within the bound.
    assert!(s.time.v.lag(s.host) <= 12_500 + 1);
}

#[test]
fn a_written_tsc_reads_on_from_the_value_written() {
    for mode in ["tsc=hide", "tsc=offset:0x1000", "tsc=frozen"] {
        let mut s = Sim::new(mode, true);
        s.cpuid(0, 400);
        // wrmsr(IA32_TSC, 0): the handler writes it, 300 ticks into the exit.
        s.exit_tsc = s.host + EXIT_LAG;
        let mut vcpu = FakeVcpu::new();
        vcpu.host.tsc = s.exit_tsc + 300;
        assert!(s.time.write_msr(&mut vcpu, IA32_TSC, 0, s.exit_tsc));
        s.vcpu.host.tsc = s.exit_tsc + 300;
        s.time.exited(&Exit::Wrmsr, &Action::Advance);
        s.entry = s.time.plan(&mut s.vcpu, s.exit_tsc);
        let now = s.vcpu.host.tsc + 7;
        if s.entry.hide {
            s.time.v.offset = s.entry.apply(s.exit_tsc, now).0;
        }
        s.host = now + ROUND_TRIP - EXIT_LAG;
        let read = s.rdtsc();
        match mode {
            // The next RDTSC reads WRMSR's bare cost, as bare metal would.
            "tsc=hide" => assert_eq!(read, 1),
            "tsc=frozen" => assert_eq!(read, 0),
            // Without hiding, the exit shows, but the clock went on from 0.
            _ => assert!((300..400).contains(&read), "{mode}: {read}"),
        }
    }
}

#[test]
fn a_hold_is_hidden_and_forgiven_even_when_bounded() {
    let mut s = Sim::new("tsc=hide", true);
    let a = s.rdtsc();
    s.vcpu.host.tsc = 0;
    // The hold hypercall spins 2^24 ticks inside the handler.
    s.exit_tsc = s.host + EXIT_LAG;
    s.time.held(&mut FakeVcpu::new(), 1 << 24);
    s.vcpu.host.tsc = s.exit_tsc + (1 << 24) + 100;
    s.time.exited(&Exit::Hypercall, &Action::Advance);
    s.entry = s.time.plan(&mut s.vcpu, s.exit_tsc);
    let now = s.vcpu.host.tsc + 7;
    s.time.v.offset = s.entry.apply(s.exit_tsc, now).0;
    s.host = now + ROUND_TRIP - EXIT_LAG;
    assert_eq!(
        s.rdtsc() - a,
        2,
        "the VMCALL's one tick, as a simple instruction"
    );
    assert!(s.time.v.lag(s.host) < 200, "the hold is not owed");
}

#[test]
fn the_deadline_follows_a_scaled_offset_and_never_fires_early() {
    let e = EntryTime {
        hide: true,
        credit: 40,
        limit: i64::MAX as u64,
        offset: 0u64.wrapping_sub(1_000_000),
        multiplier: debt::FAST,
        deadline: 5_000_000_000,
    };
    let (offset, host) = e.apply(4_000_000_000, 4_000_000_300);
    let host = host.unwrap();
    let g = |h: u64| tsc::scale_by(debt::FAST, h).wrapping_add(offset);
    assert!(g(host) >= 5_000_000_000 && g(host - 1) < 5_000_000_000);
    // And the handling time was taken at the fast rate: 300 ticks are 300.15.
    assert_eq!(0u64.wrapping_sub(1_000_000).wrapping_sub(offset), 300 + 40);
    // A limit caps what is taken.
    let capped = EntryTime { limit: 100, ..e };
    assert_eq!(
        0u64.wrapping_sub(1_000_000)
            .wrapping_sub(capped.apply(4_000_000_000, 4_000_000_300).0),
        100
    );
}

#[test]
fn mperf_loses_the_time_hidden_after_the_first_read() {
    let mut s = Sim::new("tsc=hide", true);
    s.vcpu.host.cpuid.insert((0, 0), [0x16, 0, 0, 0]);
    s.vcpu.host.cpuid.insert((6, 0), [0, 0, 1, 0]);
    s.vcpu.host.msrs.insert(IA32_MPERF, 1_000_000);
    s.cpuid(0, 500);
    // The first read is the host's value.
    let first = s
        .time
        .read_msr(&mut s.vcpu.host, IA32_MPERF, s.host + EXIT_LAG);
    assert_eq!(first, Some(1_000_000));
    let before = s.time.v.hidden(s.host);
    // An exit later, the counter ran (as hardware's does, at the TSC's rate, through the exit);
    // the guest's lost what that exit hid (about 945 + 55 - 1 + 7 ticks).
    s.cpuid(0, 945);
    s.vcpu.host.msrs.insert(IA32_MPERF, 1_005_000);
    let hidden = s.time.v.hidden(s.host) - before;
    assert!((1000..=1006).contains(&hidden), "{hidden}");
    let exit_tsc = s.host + EXIT_LAG;
    let read = s.time.read_msr(&mut s.vcpu.host, IA32_MPERF, exit_tsc);
    assert_eq!(read, Some(1_005_000 - hidden));
    // A write sets what the guest reads from then on.
    s.vcpu.host.msrs.insert(IA32_MPERF, 1_005_500);
    assert!(s.time.write_msr(&mut s.vcpu, IA32_MPERF, 5, exit_tsc));
    s.vcpu.host.msrs.insert(IA32_MPERF, 1_006_000);
    assert_eq!(
        s.time.read_msr(&mut s.vcpu.host, IA32_MPERF, exit_tsc),
        Some(505)
    );
    // A counter that stands still (Bochs reports the counters and never runs them) reads as it
    // is, as bare metal would read it.
    let mut f = Sim::new("tsc=hide", true);
    f.vcpu.host.cpuid = s.vcpu.host.cpuid.clone();
    f.vcpu.host.msrs.insert(IA32_APERF, 0);
    for _ in 0..3 {
        f.cpuid(0, 500);
        assert_eq!(
            f.time
                .read_msr(&mut f.vcpu.host, IA32_APERF, f.host + EXIT_LAG),
            Some(0)
        );
    }
    // Without the counters (CPUID.06H:ECX[0] clear) the access is the processor's: #GP on
    // hardware, whatever an emulator answers.
    let mut n = Sim::new("tsc=hide", true);
    assert_eq!(n.time.read_msr(&mut n.vcpu.host, IA32_APERF, 0), None);
    n.vcpu.host.msrs.insert(IA32_APERF, 0);
    n.cpuid(0, 500);
    assert_eq!(n.time.read_msr(&mut n.vcpu.host, IA32_APERF, 0), Some(0));
}

#[test]
fn a_steady_trickle_of_exits_keeps_the_tsc_true_over_a_second() {
    // Linux reading APERF and MPERF at every tick: in Bochs about 0.7 % of the time in exits.
    let mut s = Sim::new("tsc=hide", true);
    let trickle = |s: &mut Sim, host_ticks: u64| {
        let end = s.host + host_ticks;
        while s.host < end {
            s.run(100_000);
            s.exit_at(Exit::Rdmsr, Action::Advance, 0, 600);
        }
    };
    // A second to settle, then a second measured against true time.
    trickle(&mut s, HZ);
    let (h0, g0) = (s.host, s.guest());
    trickle(&mut s, HZ);
    let (dh, dg) = ((s.host - h0) as f64, (s.guest() - g0) as f64);
    assert!(((dh - dg) / dh).abs() < 0.001, "{}", (dh - dg) / dh);
    assert!(s.time.debt.unwrap().shift() <= 7);
    // Once the exits stop, repayment slows down: the next exit after two quiet windows finds
    // nothing hidden lately but itself.
    s.run(HZ / 8);
    s.cpuid(0, 100);
    assert!(s.time.debt.unwrap().shift() >= debt::REPAY_SHIFT - 1);
}

#[test]
fn a_quiet_second_after_a_storm_repays_slowly() {
    let mut s = Sim::new("tsc=hide:unbounded", true);
    for _ in 0..2000 {
        s.run(5);
        s.cpuid(1, 250);
    }
    s.run(HZ / 2);
    let (h0, g0) = (s.host, s.guest());
    s.run(HZ);
    let (dh, dg) = ((s.host - h0) as f64, (s.guest() - g0) as f64);
    let fast = (dg - dh) / dh;
    assert!(
        fast > 0.0 && fast < 0.0006,
        "{fast} with {} timer exits",
        s.timer_exits
    );
}
