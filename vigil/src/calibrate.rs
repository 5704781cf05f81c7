//! What the host measures before any guest runs, for virtual time under either backend: the
//! bare cost of every kind of exiting instruction and the TSC's frequency (the arithmetic lives
//! in `vigil_core::time`; each backend measures its own world switch's round trip).
//!
//! Bare costs are measured on the host, where none of these instructions exits, as the
//! difference of two timed sequences that differ by the instruction alone, so the code around
//! it cancels out (the smallest of 64 runs: on a quiet CPU the minimum is the cost without
//! interference). On Bochs every instruction is one tick; on hardware these are latencies.
//! Where Vigil cannot execute what the guest would (a device's port, a port write that would
//! change the machine), it times a stand-in and says so below.

use crate::arch::{idt, regs};
use core::arch::{asm, global_asm};
use vigil_core::time::cost::BareCosts;

/// The smallest of `n` samples: on a quiet CPU the minimum is the cost without interference.
fn min_of(n: usize, mut sample: impl FnMut() -> u64) -> u64 {
    (0..n).map(|_| sample()).min().unwrap_or(0)
}

/// Ticks of `rdtsc; mov r8d, eax; <body>; rdtsc`, the smallest of 64 runs. The body may use
/// RAX-RDX (RBX is saved), RSI, RDI and R9; R9 holds `$arg` on entry and R11 points at a 64-byte
/// scratch buffer.
macro_rules! timed {
    ($arg:expr; $($body:literal),*) => {{
        let arg: u64 = $arg;
        let mut buf = [0u8; 64];
        let p = buf.as_mut_ptr();
        min_of(64, || {
            let (start, end): (u32, u32);
            // SAFETY: the sequences only read the TSC, move registers, and execute the
            // instructions being measured on operands chosen to change nothing (see each use).
            unsafe {
                asm!(
                    "mov r10, rbx",
                    "rdtsc",
                    "mov r8d, eax",
                    $($body,)*
                    "rdtsc",
                    "mov rbx, r10",
                    out("eax") end, out("r8") start, out("ecx") _, out("edx") _,
                    out("rsi") _, out("rdi") _, inout("r9") arg => _, out("r10") _,
                    in("r11") p, options(nostack)
                );
            }
            end.wrapping_sub(start) as u64
        })
    }};
    ($($body:literal),*) => { timed!(0; $($body),*) };
}

/// The cost of `$insn` after `$setup`: the difference of the two timed sequences.
macro_rules! cost {
    ($arg:expr; [$($setup:literal),*] $($insn:literal),+) => {
        timed!($arg; $($setup,)* $($insn),+).saturating_sub(timed!($arg; $($setup),*)) as u32
    };
}

// The calibration's #UD handler: its first instruction reads the TSC (into R9), then it skips
// the two-byte UD2 and returns.
global_asm!(
    r#"
    .global vigil_calibrate_ud
vigil_calibrate_ud:
    rdtsc
    mov r9d, eax
    add qword ptr [rsp], 2
    iretq
"#
);

extern "C" {
    fn vigil_calibrate_ud();
}

/// Ticks from the start of a faulting instruction to its handler's first instruction: UD2
/// through Vigil's own IDT, with a handler that reads the TSC first thing.
fn fault_cost(plain: u64) -> u32 {
    // SAFETY: boot CPU, before the guest runs; the handler handles #UD from the UD2 below.
    let saved = unsafe { idt::swap_vector(6, vigil_calibrate_ud as *const () as u64) };
    let delivered = min_of(64, || {
        let (start, handler): (u32, u32);
        // SAFETY: UD2 raises #UD, whose handler (above) returns past it; the exception frame
        // goes on this stack (no `nostack`).
        unsafe {
            asm!(
                "rdtsc",
                "mov r8d, eax",
                "ud2",
                out("eax") _, out("r8") start, out("edx") _, out("r9") handler,
            );
        }
        handler.wrapping_sub(start) as u64
    });
    // SAFETY: as above.
    unsafe { idt::restore_vector(6, saved) };
    // `plain` is a read and a move: what the same sequence takes without the fault.
    delivered.saturating_sub(plain) as u32
}

/// Bare-metal costs of every kind of exiting instruction (`vigil_core::time::cost`).
pub fn bare_costs() -> BareCosts {
    let plain = timed!();
    let mov = timed!("mov r9d, eax").saturating_sub(plain) as u32;
    let mut c = BareCosts {
        rdtsc: (plain as u32).saturating_sub(mov),
        simple: mov,
        ..BareCosts::default()
    };
    c.rdtscp = if regs::cpuid(0x8000_0001, 0)[3] & (1 << 27) != 0 {
        cost!(0; [] "rdtscp")
    } else {
        c.rdtsc
    };
    // CPUID leaf by leaf (subleaf 0): the basic and extended ranges, and one hypervisor-range
    // leaf for all the others (beyond the maximum, a processor answers as for its highest
    // basic leaf).
    for (i, slot) in c.cpuid_basic.iter_mut().enumerate() {
        *slot = cost!(i as u64; ["mov eax, r9d", "xor ecx, ecx"] "cpuid");
    }
    for (i, slot) in c.cpuid_extended.iter_mut().enumerate() {
        *slot = cost!(0x8000_0000 + i as u64; ["mov eax, r9d", "xor ecx, ecx"] "cpuid");
    }
    c.cpuid_other = cost!(0x4000_0000; ["mov eax, r9d", "xor ecx, ecx"] "cpuid");
    // MSRs: IA32_SYSENTER_CS, which every 64-bit processor has, read and written back with the
    // value it holds. What a guest's MSR costs depends on the MSR; this is the typical one.
    let sysenter_cs = regs::rdmsr(0x174) & 0xFFFF_FFFF;
    c.rdmsr = cost!(0; ["mov ecx, 0x174"] "rdmsr");
    c.wrmsr = cost!(sysenter_cs; ["mov ecx, 0x174", "mov eax, r9d", "xor edx, edx"] "wrmsr");
    // XSETBV of the XCR0 in force (Vigil set CR4.OSXSAVE when the processor has XSAVE).
    c.xsetbv = c.wrmsr;
    if regs::cr4() & (1 << 18) != 0 {
        let (lo, hi): (u32, u32);
        // SAFETY: XGETBV of XCR0 with CR4.OSXSAVE set.
        unsafe {
            asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack))
        };
        if hi == 0 {
            c.xsetbv = cost!(lo as u64; ["xor ecx, ecx", "mov eax, r9d", "xor edx, edx"] "xsetbv");
        }
    }
    c.wbinvd = cost!(0; [] "wbinvd");
    // Ports: a device's own port cannot be touched for a measurement, so port 0x80, the POST
    // code port that firmware and Linux (its I/O delay) write freely, stands in for them all.
    // Reads of 0x80-0x83 change nothing; writes wider than a byte would reach the DMA page
    // registers at 0x81-0x83, so OUT and OUTS of every width are timed as bytes.
    c.port_in = [
        cost!(0; [] "in al, 0x80"),
        cost!(0; [] "in ax, 0x80"),
        cost!(0; [] "in eax, 0x80"),
    ];
    c.port_out = [cost!(0; [] "out 0x80, al"); 3];
    // INS into Vigil's scratch buffer, and OUTS of zeros: one element, and nine.
    let strings = |one: u32, nine: u32| (one, nine.saturating_sub(one) / 8);
    c.ins = [
        strings(
            cost!(1; ["mov edx, 0x80", "mov rdi, r11", "mov rcx, r9"] "rep insb"),
            cost!(9; ["mov edx, 0x80", "mov rdi, r11", "mov rcx, r9"] "rep insb"),
        ),
        strings(
            cost!(1; ["mov edx, 0x80", "mov rdi, r11", "mov rcx, r9"] "rep insw"),
            cost!(9; ["mov edx, 0x80", "mov rdi, r11", "mov rcx, r9"] "rep insw"),
        ),
        strings(
            cost!(1; ["mov edx, 0x80", "mov rdi, r11", "mov rcx, r9"] "rep insd"),
            cost!(9; ["mov edx, 0x80", "mov rdi, r11", "mov rcx, r9"] "rep insd"),
        ),
    ];
    c.outs = [strings(
        cost!(1; ["mov edx, 0x80", "mov rsi, r11", "mov rcx, r9"] "rep outsb"),
        cost!(9; ["mov edx, 0x80", "mov rsi, r11", "mov rcx, r9"] "rep outsb"),
    ); 3];
    c.fault = fault_cost(plain);
    c
}

/// The ACPI PM timer's frequency (ACPI 6.5 4.8.3.3).
const PM_TIMER_HZ: u64 = 3_579_545;

/// TSC ticks per second: against the ACPI PM timer over 10 ms when the firmware has one (a
/// read-only counter, so reading it changes nothing for the guest), else from CPUID leaf 15H
/// (crystal ratio) or 16H (base MHz); 0 when nothing says.
pub fn tsc_hz(pm_timer: Option<u16>) -> u64 {
    if let Some(port) = pm_timer {
        let read = || crate::arch::port::inl(port) as u64 & 0xFF_FFFF;
        let (p0, t0) = (read(), regs::rdtsc());
        let mut elapsed = 0;
        // 10 ms, counting the 24-bit counter's wraps.
        let (mut last, mut spins) = (p0, 0u64);
        while elapsed < PM_TIMER_HZ / 100 && spins < 1 << 28 {
            let p = read();
            elapsed += p.wrapping_sub(last) & 0xFF_FFFF;
            last = p;
            spins += 1;
        }
        let ticks = regs::rdtsc().wrapping_sub(t0);
        if elapsed >= PM_TIMER_HZ / 100 {
            return (ticks as u128 * PM_TIMER_HZ as u128 / elapsed as u128) as u64;
        }
    }
    let max = regs::cpuid(0, 0)[0];
    if max >= 0x15 {
        let [den, num, crystal, _] = regs::cpuid(0x15, 0);
        if den != 0 && num != 0 && crystal != 0 {
            return crystal as u64 * num as u64 / den as u64;
        }
    }
    if max >= 0x16 {
        let mhz = regs::cpuid(0x16, 0)[0] & 0xFFFF;
        return mhz as u64 * 1_000_000;
    }
    0
}

/// One entry of the calibration guest (`rdtsc; cpuid` at a scratch address) on one path of a
/// backend's world switch.
#[derive(Clone, Copy, Debug)]
pub struct Path {
    /// Whether the switch runs its time bookkeeping (not on the first, warming entry).
    pub hide: bool,
    /// The guest's TSC multiplier for the bookkeeping (0: 1).
    pub multiplier: u64,
    /// A deadline for the switch to re-arm (0: none; else far in the future, so it never fires).
    pub deadline: u64,
}

/// What one entry measured, when it ended at the guest's CPUID: the exit stub's and the switch's
/// timestamps, and the guest's own TSC sample in host time.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub exit_tsc: u64,
    pub entry_tsc: u64,
    pub guest: u64,
}

/// The round trip no timestamp covers for each of a world switch's four paths (index bit 0: the
/// guest's TSC scaled, bit 1: a deadline to re-arm, as `Calibration::round_trip`), and the part
/// of it after the guest's exiting instruction (`Calibration::exit_lag`): the smallest of 32
/// runs of each path, less the cost of the guest's RDTSC. `run` enters the calibration guest
/// once on a path (the bookkeeping of the real exits, so the round trip covers it) and puts the
/// vCPU back as it was.
pub fn round_trips<E>(
    offset: u64,
    rdtsc_cost: u64,
    mut run: impl FnMut(Path) -> Result<Option<Sample>, E>,
) -> Result<([u64; 4], u64), E> {
    let deadline_timer = regs::cpuid(1, 0)[2] & (1 << 24) != 0;
    let mut round_trip = [0; 4];
    let mut exit_side = u64::MAX;
    for variant in 0..round_trip.len() {
        let deadline = variant & 2 != 0;
        if deadline && !deadline_timer {
            round_trip[variant] = round_trip[variant & 1];
            continue;
        }
        let mut trip = u64::MAX;
        for i in 0..33 {
            let path = Path {
                hide: i > 0,
                multiplier: if variant & 1 != 0 {
                    vigil_core::time::debt::FAST
                } else {
                    0
                },
                deadline: if deadline {
                    offset.wrapping_add(1 << 62)
                } else {
                    0
                },
            };
            if let Some(s) = run(path)?.filter(|_| i > 0) {
                trip = trip.min(s.exit_tsc.wrapping_sub(s.entry_tsc));
                exit_side = exit_side.min(s.exit_tsc.wrapping_sub(s.guest));
            }
        }
        round_trip[variant] = if trip == u64::MAX {
            0
        } else {
            trip.saturating_sub(rdtsc_cost)
        };
    }
    let exit_lag = if exit_side == u64::MAX {
        0
    } else {
        exit_side.saturating_sub(rdtsc_cost)
    };
    Ok((round_trip, exit_lag))
}
