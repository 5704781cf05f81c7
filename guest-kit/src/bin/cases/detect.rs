//! The detection surface: what public VM detectors check (pafish, al-khaser, VMAware), and what
//! each exiting instruction costs, measured the same way bare and under Vigil. A timing case
//! reports numbers (and a detector's own verdict where it has a threshold); whether Vigil can
//! be told from bare metal is decided by comparing those numbers with the bare run's
//! (xtask/src/scenarios_detect.rs, docs/transparency.md). A behaviour case (an unknown MSR, the
//! EIP wrap) fails where the architecture's answer is not what the case got.

use super::*;
use core::arch::global_asm;
use guest_kit::{clocks, interrupts};

/// The smallest of `n` samples: the run without interference.
fn min_of(n: u32, mut sample: impl FnMut() -> u64) -> u64 {
    (0..n).map(|_| sample()).min().unwrap_or(0)
}

/// TSC ticks of `rdtsc; mov r8d, eax; <body>; rdtsc` (32 bits), the smallest of 16 runs. The
/// body may use RAX-RDX (RBX is saved), RSI and RDI; R9 holds `$arg` and R11 points at a
/// 64-byte scratch buffer.
macro_rules! timed {
    ($arg:expr; $($body:literal),*) => {{
        let arg: u64 = $arg;
        let mut buf = [0u8; 64];
        let p = buf.as_mut_ptr();
        min_of(16, || {
            let (start, end): (u32, u32);
            // SAFETY: each use below says why its instruction changes nothing.
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
                    in("r11") p,
                );
            }
            end.wrapping_sub(start) as u64
        })
    }};
}

/// `rdtsc; mov; <CPUID of leaf>; rdtsc` for leaves that exit under any hypervisor (CPUID always
/// does, SDM Vol. 3C 26.1.2), each kind of leaf Vigil's calibration tells apart.
pub(super) fn exit_costs_cpuid() -> Outcome {
    // SAFETY (timed!): CPUID only reads.
    let t = |leaf: u32| timed!(leaf as u64; "mov eax, r9d", "xor ecx, ecx", "cpuid");
    pass!(
        "c0={} c1={} c4={} c7={} cb={} cd={} c80000000={} c80000001={} c80000008={} c40000000={}",
        t(0),
        t(1),
        t(4),
        t(7),
        t(0xB),
        t(0xD),
        t(0x8000_0000),
        t(0x8000_0001),
        t(0x8000_0008),
        t(0x4000_0000)
    )
}

/// Port 0x80 (the POST code port: reads and byte writes change nothing) by width, and string
/// I/O of 8 bytes and 4 words or doublewords. They exit only when the port is trapped
/// (`trap=io:0x80`).
pub(super) fn exit_costs_io() -> Outcome {
    pass!(
        "in8={} in16={} in32={} out8={} ins8={} insw4={} insd4={} outs8={}",
        timed!(0; "in al, 0x80"),
        timed!(0; "in ax, 0x80"),
        timed!(0; "in eax, 0x80"),
        timed!(0; "out 0x80, al"),
        timed!(8; "mov edx, 0x80", "mov rdi, r11", "mov rcx, r9", "rep insb"),
        timed!(4; "mov edx, 0x80", "mov rdi, r11", "mov rcx, r9", "rep insw"),
        timed!(4; "mov edx, 0x80", "mov rdi, r11", "mov rcx, r9", "rep insd"),
        timed!(8; "mov edx, 0x80", "mov rsi, r11", "mov rcx, r9", "rep outsb")
    )
}

// A #UD handler whose first instruction reads the TSC (into CASES_UD_TSC), then skips the
// faulting instruction (CASES_UD_SKIP bytes) and returns.
global_asm!(
    r#"
    .global cases_ud_timer
cases_ud_timer:
    rdtsc
    mov [rip + CASES_UD_TSC], eax
    mov rax, [rip + CASES_UD_SKIP]
    add [rsp], rax
    iretq
"#
);

unsafe extern "C" {
    fn cases_ud_timer();
}

#[unsafe(no_mangle)]
static mut CASES_UD_TSC: u32 = 0;
#[unsafe(no_mangle)]
static mut CASES_UD_SKIP: u64 = 0;

/// Ticks from before UD2 (or VMCALL, which raises #UD outside VMX operation) to the first
/// instruction of the #UD handler, the smallest of 16.
fn ud_ticks(vmcall: bool) -> u64 {
    let previous = interrupts::handler(fault::UD);
    interrupts::set_handler(fault::UD, cases_ud_timer as *const () as u64);
    let t = min_of(16, || {
        let start: u32;
        // SAFETY: the instruction raises #UD (EAX is a TSC value, not Vigil's hypercall magic
        // with any useful probability; without `hypercall=on` no VMCALL is one); the handler
        // skips it. The statics are only written by the handler, synchronously.
        unsafe {
            CASES_UD_SKIP = if vmcall { 3 } else { 2 };
            if vmcall {
                asm!("rdtsc", "mov r8d, eax", "vmcall", out("eax") _, out("edx") _, out("r8") start);
            } else {
                asm!("rdtsc", "mov r8d, eax", "ud2", out("eax") _, out("edx") _, out("r8") start);
            }
            CASES_UD_TSC.wrapping_sub(start) as u64
        }
    });
    interrupts::set_handler(fault::UD, previous);
    t
}

/// IA32_TSC read, IA32_TSC_ADJUST written with its own value (both exit whenever the guest's
/// time is virtual), XSETBV of XCR0's own value (always exits), VMCALL and UD2 to their #UD
/// handler (VMCALL always exits; UD2 when #UD is trapped).
pub(super) fn exit_costs_other() -> Outcome {
    // SAFETY (timed!): RDMSR of IA32_TSC only reads.
    let rdmsr = timed!(0; "mov ecx, 0x10", "rdmsr");
    let wrmsr = if cpu::cpuid(7, 0).ebx & (1 << 1) != 0 {
        let adjust = fault::try_rdmsr(0x3B).unwrap_or(0);
        // SAFETY (timed!): writing TSC_ADJUST's own value moves nothing.
        timed!(adjust; "mov ecx, 0x3b", "mov eax, r9d", "mov rdx, r9", "shr rdx, 32", "wrmsr")
    } else {
        0
    };
    let xsetbv = if cpu::cpuid(1, 0).ecx & (1 << 26) != 0 {
        // CR4.OSXSAVE enables XSETBV (SDM Vol. 2D XSETBV); the kit does not use extended state.
        let cr4: u64;
        // SAFETY: setting OSXSAVE only enables XGETBV/XSETBV; it is put back below.
        unsafe {
            asm!("mov {0}, cr4", "or {0}, 0x40000", "mov cr4, {0}", out(reg) cr4, options(nostack));
        }
        let (lo, hi): (u32, u32);
        // SAFETY: CR4.OSXSAVE is set.
        unsafe { asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nostack)) };
        let value = u64::from(hi) << 32 | u64::from(lo);
        // SAFETY (timed!): XSETBV of the value XCR0 holds changes nothing.
        let t =
            timed!(value; "xor ecx, ecx", "mov eax, r9d", "mov rdx, r9", "shr rdx, 32", "xsetbv");
        // SAFETY: back to the kit's CR4.
        unsafe { asm!("mov cr4, {0}", in(reg) cr4 & !0x40000, options(nostack)) };
        t
    } else {
        0
    };
    pass!(
        "rdmsr_tsc={} wrmsr_adjust={} xsetbv={} vmcall_ud={} ud2={}",
        rdmsr,
        wrmsr,
        xsetbv,
        ud_ticks(true),
        ud_ticks(false)
    )
}

/// al-khaser's timing checks (TimingAttacks): `rdtsc_diff_vmexit`, the average of 10
/// `rdtsc; cpuid; rdtsc` (a VM at 1000 or more), and `rdtsc_diff_locky`, Locky's ratio of a
/// long API call to a short one timed with RDTSC (a VM when, in all of 10 tries, the long one
/// took less than 10 times the short one: RDTSC itself slow, as when it is trapped). The two
/// workloads here: a dependent load pair (GetProcessHeap reads the PEB) and 40 rounds of a
/// short arithmetic chain (CloseHandle's path into the kernel and back).
pub(super) fn al_khaser() -> Outcome {
    // Locky's ratio first, then the forced exits (al-khaser runs each check on its own).
    let (mut min, mut max) = (u64::MAX, 0);
    for _ in 0..10 {
        let (t1, t2, t3): (u64, u64, u64);
        let cell = 0u64;
        let p = &cell as *const u64 as u64;
        let slot = &p as *const u64 as u64;
        // SAFETY: two loads of this function's locals and register arithmetic.
        unsafe {
            asm!(
                "rdtsc",
                "shl rdx, 32",
                "or rax, rdx",
                "mov {t1}, rax",
                "mov {tmp}, [{slot}]",
                "mov {tmp}, [{tmp}]",
                "rdtsc",
                "shl rdx, 32",
                "or rax, rdx",
                "mov {t2}, rax",
                "mov ecx, 40",
                "2:",
                "imul {tmp}, {tmp}, 3",
                "add {tmp}, rcx",
                "xor {tmp}, rax",
                "dec ecx",
                "jnz 2b",
                "rdtsc",
                "shl rdx, 32",
                "or rax, rdx",
                slot = in(reg) slot,
                tmp = out(reg) _,
                t1 = out(reg) t1,
                t2 = out(reg) t2,
                out("rax") t3,
                out("rcx") _,
                out("rdx") _,
                options(nostack, readonly)
            );
        }
        let ratio = (t3 - t2) / (t2 - t1).max(1);
        min = min.min(ratio);
        max = max.max(ratio);
    }
    let mut samples = [0u64; 10];
    for s in samples.iter_mut() {
        *s = rdtsc_cpuid_rdtsc();
    }
    let vmexit = samples.iter().sum::<u64>() / 10;
    pass!(
        "vmexit_avg={} vmexit_first={} vmexit_verdict={} locky_ratio_min={} locky_ratio_max={} locky_verdict={}",
        vmexit,
        samples[0],
        if vmexit >= 1000 { "vm" } else { "bare" },
        min,
        max,
        if max < 10 { "vm" } else { "bare" }
    )
}

/// Ticks of the platform's wall clock now: the ACPI PM timer, or PIT channel 2 (running, see
/// [`clocks::pit2_start`]) when the firmware has none. (count, ticks per second)
fn wall(pm: Option<u16>) -> u64 {
    match pm {
        Some(port) => clocks::pm_timer(port) as u64,
        None => clocks::pit2_count() as u64,
    }
}

/// Elapsed wall-clock ticks between two [`wall`] readings.
fn wall_delta(pm: Option<u16>, from: u64, to: u64) -> u64 {
    match pm {
        Some(_) => to.wrapping_sub(from) & 0xFF_FFFF,
        // The PIT counts down.
        None => from.wrapping_sub(to) & 0xFFFF,
    }
}

/// A VMAware-style ratio: 2,000 CPUIDs with rotating leaves against 2,000 rounds of a fixed
/// loop of non-exiting instructions, both timed by the TSC and by the platform's wall clock (the
/// ACPI PM timer, else PIT channel 2). The wall clock is the guest's own device: no hypervisor
/// that passes it through can make CPUID look fast against it.
pub(super) fn vmaware_timing() -> Outcome {
    const ROUNDS: u32 = 2000;
    const LEAVES: [u32; 8] = [0, 1, 4, 7, 0xB, 0xD, 0x8000_0000, 0x8000_0001];
    let pm = clocks::pm_timer_port();
    let saved = clocks::pit2_start();
    let measure = |f: &dyn Fn()| {
        let (w0, t0) = (wall(pm), cpu::rdtsc());
        f();
        let (t1, w1) = (cpu::rdtsc(), wall(pm));
        (t1 - t0, wall_delta(pm, w0, w1))
    };
    let (cpuid_tsc, cpuid_wall) = measure(&|| {
        for i in 0..ROUNDS {
            let _ = cpu::cpuid(LEAVES[i as usize % LEAVES.len()], 0);
        }
    });
    let (loop_tsc, loop_wall) = measure(&|| {
        for i in 0..ROUNDS {
            // SAFETY: register arithmetic only; the `black_box` keeps the loop.
            unsafe {
                asm!(
                    "imul {x:e}, {x:e}, 7",
                    "add {x:e}, 3",
                    "xor {x:e}, 0x55",
                    "rol {x:e}, 3",
                    x = inout(reg) core::hint::black_box(i) => _,
                    options(nomem, nostack)
                )
            };
        }
    });
    clocks::pit2_stop(saved);
    pass!(
        "ratio_tsc_x1000={} ratio_wall_x1000={} cpuid_tsc={} loop_tsc={} cpuid_wall={} loop_wall={} clock={}",
        cpuid_tsc * 1000 / loop_tsc.max(1),
        cpuid_wall * 1000 / loop_wall.max(1),
        cpuid_tsc,
        loop_tsc,
        cpuid_wall,
        loop_wall,
        if pm.is_some() { "pm" } else { "pit" }
    )
}

/// MSRs no processor defines, inside and outside the ranges VMX's MSR bitmap covers: the
/// architecture raises #GP for each (SDM Vol. 2B RDMSR), which detectors check; a value means
/// something answered. (Bochs answers 0 bare: its `ignore_bad_msrs`, docs/platform.md.)
pub(super) fn msr_unknown() -> Outcome {
    let probe = |msr: u32| match fault::try_rdmsr(msr) {
        Ok(v) => v as i64,
        Err(c) if c.vector == fault::GP => -1,
        Err(c) => -(c.vector as i64) - 100,
    };
    let show = |v: i64| -> (&'static str, u64) {
        match v {
            -1 => ("gp", 0),
            v if v < 0 => ("fault", (-v - 100) as u64),
            v => ("value", v as u64),
        }
    };
    let msrs = [0x0000_1FFF_u32, 0xC000_1FFF, 0x4000_0000, 0x1234_5678];
    let r = msrs.map(|m| show(probe(m)));
    pass!(
        "m1fff={}:{:#x} mc0001fff={}:{:#x} m40000000={}:{:#x} m12345678={}:{:#x}",
        r[0].0,
        r[0].1,
        r[1].0,
        r[1].1,
        r[2].0,
        r[2].1,
        r[3].0,
        r[3].1
    )
}

// CPUID at EIP 0xFFFFFFFE in compatibility mode: the instruction's last byte is the last of
// the 4 GiB, so the next EIP is 0 (32-bit code: EIP wraps, SDM Vol. 1 3.6.1 and 3.3.7).
// `cases_eip_wrap` (RDI = where to store EAX-EDX) far-returns to the 32-bit code segment at
// 0xFFFFFFFE, where the case put CPUID; at linear 0 it put a far jump back to
// `cases_eip_wrap_back` in the 64-bit segment.
global_asm!(
    r#"
    .global cases_eip_wrap
cases_eip_wrap:
    push rbx
    push rbp
    mov [rip + CASES_WRAP_RSP], rsp
    mov [rip + CASES_WRAP_OUT], rdi
    xor eax, eax
    xor ecx, ecx
    push 0x18
    mov r8d, 0xFFFFFFFE
    push r8
    retfq
    .global cases_eip_wrap_back
cases_eip_wrap_back:
    mov rsp, [rip + CASES_WRAP_RSP]
    mov rdi, [rip + CASES_WRAP_OUT]
    mov [rdi], eax
    mov [rdi + 4], ebx
    mov [rdi + 8], ecx
    mov [rdi + 12], edx
    pop rbp
    pop rbx
    ret
"#
);

unsafe extern "C" {
    fn cases_eip_wrap(out: *mut [u32; 4]);
    fn cases_eip_wrap_back();
}

#[unsafe(no_mangle)]
static mut CASES_WRAP_RSP: u64 = 0;
#[unsafe(no_mangle)]
static mut CASES_WRAP_OUT: u64 = 0;

#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut TOP_PAGE: Page = Page([0; 4096]);

/// VMAware's EIP-wrap check: CPUID at 0xFFFFFFFE in compatibility mode must continue at EIP 0.
/// A hypervisor that moves RIP past the emulated CPUID without wrapping would leave RIP at
/// 0x100000000, which 32-bit code cannot have (a failed VM entry or a fault).
pub(super) fn eip_wrap() -> Outcome {
    let back = cases_eip_wrap_back as *const () as u64;
    if back >= 1 << 32 {
        return skip!("kit-above-4gib");
    }
    // At linear 0: `jmp far 0x08:back` (EA ptr16:32).
    let mut jump = [0u8; 8];
    jump[0] = 0xEA;
    jump[1..5].copy_from_slice(&(back as u32).to_le_bytes());
    jump[5..7].copy_from_slice(&0x08u16.to_le_bytes());
    let expected = cpu::cpuid(0, 0);
    let mut got = [0u32; 4];
    // SAFETY: the kit runs alone with interrupts off; linear 0 is the start of RAM (the
    // real-mode vectors, unused in long mode), saved and restored around the call; the top page
    // is the kit's own page, mapped only meanwhile.
    unsafe {
        let page = core::ptr::addr_of_mut!(TOP_PAGE);
        (*page).0[0xFFE] = 0x0F;
        (*page).0[0xFFF] = 0xA2;
        guest_kit::boot::map_top_page(Some(page as u64));
        let saved: u64;
        asm!("mov {s}, [{z}]", "mov [{z}], {j}", s = out(reg) saved, z = in(reg) 0u64,
             j = in(reg) u64::from_le_bytes(jump), options(nostack));
        cases_eip_wrap(&mut got);
        asm!("mov [{z}], {s}", s = in(reg) saved, z = in(reg) 0u64, options(nostack));
        guest_kit::boot::map_top_page(None);
    }
    let want = [expected.eax, expected.ebx, expected.ecx, expected.edx];
    if got != want {
        return fail!("cpuid-result got={:x?} expected={:x?}", got, want);
    }
    pass!("eip=0xfffffffe next=0 max_leaf={:#x}", got[0])
}

/// Every CPUID leaf and subleaf a detector reads, one line each (`cpuid-leaf LEAF.SUB eax=..
/// ebx=.. ecx=.. edx=..`) for the scenario to compare with bare metal's, and the hypervisor
/// bit (CPUID.01H:ECX[31]) and leaves 0x40000000-0x40000001 in the PASS line.
pub(super) fn cpuid_leaves() -> Outcome {
    let mut n = 0;
    let mut show = |leaf: u32, sub: u32| {
        let r = cpu::cpuid(leaf, sub);
        guest_kit::println!(
            "cpuid-leaf {:#010x}.{} eax={:#010x} ebx={:#010x} ecx={:#010x} edx={:#010x}",
            leaf,
            sub,
            r.eax,
            r.ebx,
            r.ecx,
            r.edx
        );
        n += 1;
        r
    };
    let max = show(0, 0).eax.min(0x20);
    for leaf in 1..=max {
        let first = show(leaf, 0);
        let subleaves = match leaf {
            4 => 8,
            7 => first.eax.min(3) + 1,
            0xB | 0x1F => 4,
            0xD => 10,
            0xF | 0x10 | 0x12 | 0x14 | 0x17 | 0x18 => 4,
            _ => 1,
        };
        for sub in 1..subleaves {
            show(leaf, sub);
        }
    }
    let max_ext = show(0x8000_0000, 0).eax.clamp(0x8000_0000, 0x8000_0020);
    for leaf in 0x8000_0001..=max_ext {
        show(leaf, 0);
    }
    let hv = show(0x4000_0000, 0);
    show(0x4000_0001, 0);
    pass!(
        "leaves={} hv_bit={} hv_max={:#x} hv_vendor={:08x}{:08x}{:08x}",
        n,
        cpu::cpuid(1, 0).ecx >> 31,
        hv.eax,
        hv.ebx,
        hv.ecx,
        hv.edx
    )
}

/// One window of the long-run comparison: the TSC against PIT channel 2, the ACPI PM timer and
/// the RTC between two RTC second edges `seconds` apart; with `busy`, a CPUID (an exit under
/// any hypervisor) at every poll.
struct Window {
    tsc: u64,
    pit: u64,
    pm: u64,
    exits: u64,
}

fn window(seconds: u32, busy: bool, pm: Option<u16>) -> Option<Window> {
    // Generous: Bochs polls a few million times a second.
    const MAX_POLLS: u64 = 1 << 32;
    let saved = clocks::pit2_start();
    let first = clocks::rtc_seconds();
    let mut polls = 0u64;
    while clocks::rtc_seconds() == first {
        polls += 1;
        if polls > MAX_POLLS {
            clocks::pit2_stop(saved);
            return None;
        }
    }
    let mut last_s = clocks::rtc_seconds();
    let (mut pm_last, mut pit_last) = (pm.map_or(0, clocks::pm_timer), clocks::pit2_count());
    let t0 = cpu::rdtsc();
    let (mut pm_total, mut pit_total, mut edges, mut exits) = (0u64, 0u64, 0u32, 0u64);
    while edges < seconds && polls < MAX_POLLS {
        polls += 1;
        if busy {
            let _ = cpu::cpuid(0, 0);
            exits += 1;
        }
        if let Some(port) = pm {
            let p = clocks::pm_timer(port);
            pm_total += u64::from(p.wrapping_sub(pm_last) & 0xFF_FFFF);
            pm_last = p;
        }
        let c = clocks::pit2_count();
        pit_total += u64::from(pit_last.wrapping_sub(c));
        pit_last = c;
        let s = clocks::rtc_seconds();
        if s != last_s {
            edges += 1;
            last_s = s;
        }
    }
    let t1 = cpu::rdtsc();
    clocks::pit2_stop(saved);
    (edges == seconds).then_some(Window {
        tsc: t1 - t0,
        pit: pit_total,
        pm: pm_total,
        exits,
    })
}

/// The TSC's rate against the PIT, the ACPI PM timer and the RTC over two RTC seconds, once
/// quietly and once with a CPUID at every poll (hundreds of thousands of exits under a
/// hypervisor): a detector's long-run comparison, and what Linux's clocksource watchdog checks.
/// Reported as TSC ticks per PIT input clock and per PM timer tick (x1000) and per RTC second.
pub(super) fn tsc_clocks() -> Outcome {
    const SECONDS: u32 = 2;
    let pm = clocks::pm_timer_port();
    let (Some(q), Some(b)) = (window(SECONDS, false, pm), window(SECONDS, true, pm)) else {
        return fail!("rtc-not-ticking");
    };
    let per = |tsc: u64, ticks: u64| tsc * 1000 / ticks.max(1);
    pass!(
        "quiet_pit_x1000={} quiet_pm_x1000={} quiet_rtc={} busy_pit_x1000={} busy_pm_x1000={} busy_rtc={} busy_exits={}",
        per(q.tsc, q.pit),
        per(q.tsc, q.pm),
        q.tsc / u64::from(SECONDS),
        per(b.tsc, b.pit),
        per(b.tsc, b.pm),
        b.tsc / u64::from(SECONDS),
        b.exits
    )
}
