//! The multiprocessor guest: it starts the machine's other processors itself, as an operating
//! system does, and checks what they do. Run bare and under Vigil with 2 and 4 processors
//! (`cargo xtask test smp`); with one processor every case skips.
//!
//! | case | what the guest does |
//! |---|---|
//! | `start-broadcast` | INIT (assert, then de-assert) and two start-up IPIs to all but itself (shorthand); every processor the MADT lists comes through the start-up code exactly once (`starts=`), with the APIC ID the MADT gave it |
//! | `start-directed` | the same to each processor by its APIC ID (physical destination), as Linux does |
//! | `init-restart` | INIT to each running processor: its heartbeat stops; a start-up IPI starts it again (`starts=2`); a further start-up IPI to the running processor changes nothing |
//! | `ipi-ping-pong` | fixed IPIs to each processor, physical and logical (flat) destinations, each answered by an IPI back (`rounds=`) |
//! | `tsc-sync` | every processor at once reads the TSC under a lock, many times; no value is ever smaller than one read before on another processor (`warps=0`, `max_warp=0`) |
//! | `debug` (only when named) | for a debugger: processor 1 calls `smp_ap_here` with R12 = `AP_R12` (a breakpoint), stores `AP_STORE` to `SMP_WATCHED` (a watchpoint), then spins until `SMP_RELEASE` is set; the boot processor spins in `smp_bsp_spin` with R13 = `BSP_R13` until that store, calls `smp_bsp_mid` (a breakpoint), spins until `SMP_RELEASE`, waits for processor 1 and calls `smp_bsp_done` (a breakpoint). Each spin counts its rounds and keeps the largest TSC gap between two (`bsp_gap=`, `ap_gap=`): a debugger stop that time hides leaves it small. SKIP when no debugger released it |

#![no_std]
#![no_main]

use core::arch::global_asm;
use core::sync::atomic::Ordering;
use guest_kit::mp::{self, Command, AP};
use guest_kit::{fail, harness, pass, skip, BootInfo, Case, Outcome};

guest_kit::entry!(main);

static CASES: &[Case] = &[
    Case::new("start-broadcast", start_broadcast),
    Case::new("start-directed", start_directed),
    Case::new("init-restart", init_restart),
    Case::new("ipi-ping-pong", ipi_ping_pong),
    Case::new("tsc-sync", tsc_sync),
    Case::explicit("debug", debug),
];

/// The processors (APIC IDs, MADT order; the boot processor's first) and how many.
static mut CPUS: ([u32; mp::MAX_CPUS], usize) = ([0; mp::MAX_CPUS], 0);
/// TSC ticks the guest waits for a processor to answer (in Bochs a tick is an instruction).
const ANSWER: u64 = 200_000_000;
/// After an INIT, as the MP start-up protocol asks (10 ms at a few GHz; plenty in Bochs).
const INIT_PAUSE: u64 = 1_000_000;
const SIPI_PAUSE: u64 = 200_000;

fn cpus() -> &'static [u32] {
    // SAFETY: written once by `main` before any case runs.
    let (ids, n) = unsafe { &*core::ptr::addr_of!(CPUS) };
    &ids[..*n]
}

fn main(boot: &'static BootInfo) -> ! {
    let me = mp::apic_id();
    if let Some((ids, n)) = mp::processors() {
        // The boot processor first, the others in MADT order: row i of the start-up page.
        let mut ordered = [0u32; mp::MAX_CPUS];
        ordered[0] = me;
        let mut k = 1;
        for &id in ids[..n].iter().filter(|&&id| id != me) {
            ordered[k] = id;
            k += 1;
        }
        // SAFETY: before any case runs; only this processor.
        unsafe { CPUS = (ordered, k) };
        if let Some(page) = start_page(boot) {
            // SAFETY: a page of conventional memory no one else uses.
            unsafe { mp::prepare(page, &ordered[..k]) };
            START_VECTOR.store(((page >> 12) as u32) + 1, Ordering::SeqCst);
        }
    }
    mp::enable_apic(Some(0x80));
    harness::run(CASES, boot)
}

/// 1 + the start-up vector (0: no page for it).
static START_VECTOR: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// The highest available page below the EBDA, clear of the boot information.
fn start_page(boot: &BootInfo) -> Option<u64> {
    let info = boot.address as u64 & !0xFFF;
    let busy = |p: u64| p + 0x1000 > info && p < info + 0x2000;
    boot.memory_map()?
        .filter(|r| r.available())
        .filter_map(|r| {
            let top = r.end().min(0x9_F000) & !0xFFF;
            let mut p = top.checked_sub(0x1000)?;
            while p >= r.base.max(0x1000) {
                if !busy(p) {
                    return Some(p);
                }
                p = p.checked_sub(0x1000)?;
            }
            None
        })
        .max()
}

/// Why a case cannot run.
enum NotReady {
    OneProcessor,
    NoStartPage,
}

impl NotReady {
    fn outcome(self) -> Outcome {
        match self {
            NotReady::OneProcessor => skip!("one-processor"),
            NotReady::NoStartPage => fail!("no-start-page"),
        }
    }
}

/// The start-up vector and the processors, once there are several.
fn ready() -> Result<(u8, &'static [u32]), NotReady> {
    let ids = cpus();
    if ids.len() < 2 {
        return Err(NotReady::OneProcessor);
    }
    match START_VECTOR.load(Ordering::SeqCst) {
        0 => Err(NotReady::NoStartPage),
        v => Ok(((v - 1) as u8, ids)),
    }
}

fn wait_until(ticks: u64, mut done: impl FnMut() -> bool) -> bool {
    let start = guest_kit::cpu::rdtsc();
    while guest_kit::cpu::rdtsc().wrapping_sub(start) < ticks {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    done()
}

/// How an INIT-SIPI-SIPI sequence is addressed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Addressing {
    /// All but the sender, by shorthand, once for everyone.
    Broadcast,
    /// Each processor by its APIC ID (physical destination mode).
    Directed,
}

/// INIT (assert, de-assert), a pause, and two start-up IPIs: the MP start-up protocol (SDM Vol.
/// 3A 9.4.4.1). Every processor must come through the start-up code exactly once more than
/// before, reporting the APIC ID the MADT gave it; running ones are stopped by the INIT first.
fn start_all(how: Addressing) -> Outcome {
    let (vector, ids) = match ready() {
        Ok(r) => r,
        Err(why) => return why.outcome(),
    };
    let aps = ids.len() - 1;
    let mut before = [0u32; mp::MAX_CPUS];
    for (i, b) in before.iter_mut().enumerate().take(ids.len()).skip(1) {
        *b = AP[i].starts.load(Ordering::SeqCst);
    }
    // (shorthand, destination) of each INIT and SIPI sent.
    let mut targets = [(0u32, 0u32); mp::MAX_CPUS];
    let targets = match how {
        Addressing::Broadcast => {
            targets[0] = (mp::ALL_BUT_SELF, 0);
            &targets[..1]
        }
        Addressing::Directed => {
            for (slot, &id) in targets.iter_mut().zip(&ids[1..]) {
                *slot = (0, id);
            }
            &targets[..aps]
        }
    };
    for &(shorthand, id) in targets {
        mp::send_ipi(mp::DM_INIT | mp::LEVEL | mp::ASSERT | shorthand, id);
        mp::send_ipi(mp::DM_INIT | mp::LEVEL | shorthand, id);
    }
    mp::delay(INIT_PAUSE);
    for _ in 0..2 {
        for &(shorthand, id) in targets {
            mp::send_ipi(mp::DM_STARTUP | shorthand | vector as u32, id);
        }
        mp::delay(SIPI_PAUSE);
    }
    let all_in = wait_until(ANSWER, || {
        (1..ids.len()).all(|i| AP[i].starts.load(Ordering::SeqCst) > before[i])
    });
    // Let a late duplicate start show, if there is one.
    mp::delay(SIPI_PAUSE);
    let mut starts = harness::Text::new();
    let mut bad = None;
    for (i, &id) in ids.iter().enumerate().skip(1) {
        let n = AP[i].starts.load(Ordering::SeqCst) - before[i];
        let seen = AP[i].apic_id.load(Ordering::SeqCst);
        let _ = core::fmt::write(
            &mut starts,
            format_args!("{}{n}", if i > 1 { "," } else { "" }),
        );
        if bad.is_none() && (n != 1 || seen != id) {
            bad = Some((i, n, seen, id));
        }
    }
    if !all_in {
        return fail!("not-every-processor-started aps={aps} starts={starts}");
    }
    if let Some((i, n, seen, id)) = bad {
        return fail!("wrong-start row={i} starts={n} apic_id={seen} madt_apic_id={id}");
    }
    pass!("aps={aps} starts={starts} vector={vector:#x}")
}

fn start_broadcast() -> Outcome {
    start_all(Addressing::Broadcast)
}

fn start_directed() -> Outcome {
    start_all(Addressing::Directed)
}

/// Whether application processor `i` still runs its loop.
fn beating(i: usize) -> bool {
    let before = AP[i].heartbeat.load(Ordering::SeqCst);
    wait_until(5_000_000, || {
        AP[i].heartbeat.load(Ordering::SeqCst) != before
    })
}

/// INIT to each running processor stops it; a start-up IPI starts it again, once.
fn init_restart() -> Outcome {
    let (vector, ids) = match ready() {
        Ok(r) => r,
        Err(why) => return why.outcome(),
    };
    for (i, &id) in ids.iter().enumerate().skip(1) {
        let before = AP[i].starts.load(Ordering::SeqCst);
        if before == 0 || !beating(i) {
            return fail!("not-running row={i} starts={before}");
        }
        mp::send_ipi(mp::DM_INIT | mp::LEVEL | mp::ASSERT, id);
        mp::send_ipi(mp::DM_INIT | mp::LEVEL, id);
        mp::delay(INIT_PAUSE);
        if beating(i) {
            return fail!("still-running-after-init row={i}");
        }
        for _ in 0..2 {
            mp::send_ipi(mp::DM_STARTUP | vector as u32, id);
            mp::delay(SIPI_PAUSE);
        }
        if !wait_until(ANSWER, || AP[i].starts.load(Ordering::SeqCst) > before) {
            return fail!("no-restart row={i}");
        }
        // A start-up IPI to a running processor is ignored.
        mp::send_ipi(mp::DM_STARTUP | vector as u32, id);
        mp::delay(SIPI_PAUSE * 4);
        let after = AP[i].starts.load(Ordering::SeqCst);
        if after != before + 1 || !beating(i) {
            return fail!("restarts row={i} before={before} after={after}");
        }
    }
    let starts: u32 = (1..ids.len())
        .map(|i| AP[i].starts.load(Ordering::SeqCst))
        .sum();
    pass!("aps={} starts={starts}", ids.len() - 1)
}

/// Fixed IPIs to each processor, answered by an IPI back: physical, then logical destinations.
fn ipi_ping_pong() -> Outcome {
    let (_, ids) = match ready() {
        Ok(r) => r,
        Err(why) => return why.outcome(),
    };
    const ROUNDS: u64 = 20;
    let me = mp::apic_id();
    // SAFETY: the IDT has the kit's IPI handler; interrupts go back off below.
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    let mut result = Ok(());
    'all: for (i, &id) in ids.iter().enumerate().skip(1) {
        AP[i].command.store(Command::Pong as u32, Ordering::SeqCst);
        for round in 0..2 * ROUNDS {
            let logical = round >= ROUNDS;
            let got = mp::ipis(me);
            let (mode, dest) = if logical {
                (mp::LOGICAL, 1u32 << (i % 8))
            } else {
                (0, id)
            };
            mp::send_ipi(mp::DM_FIXED | mode | mp::IPI_VECTOR as u32, dest);
            if !wait_until(ANSWER, || mp::ipis(me) > got) {
                result = Err((i, round, logical));
                break 'all;
            }
        }
        AP[i].command.store(Command::Idle as u32, Ordering::SeqCst);
    }
    // SAFETY: back to the kit's normal state.
    unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
    if let Err((i, round, logical)) = result {
        return fail!("no-answer row={i} round={round} logical={logical}");
    }
    let pongs: u64 = (1..ids.len())
        .map(|i| AP[i].pongs.load(Ordering::SeqCst))
        .sum();
    if pongs != 2 * ROUNDS * (ids.len() as u64 - 1) {
        return fail!("pongs={pongs}");
    }
    pass!("aps={} rounds={} pongs={pongs}", ids.len() - 1, 2 * ROUNDS)
}

/// Every processor reads the TSC under one lock; none ever reads less than was read before.
fn tsc_sync() -> Outcome {
    let (_, ids) = match ready() {
        Ok(r) => r,
        Err(why) => return why.outcome(),
    };
    const ROUNDS: u64 = 5_000;
    mp::TSC_ROUNDS.store(ROUNDS, Ordering::SeqCst);
    for ap in &AP[1..ids.len()] {
        ap.command.store(Command::TscCheck as u32, Ordering::SeqCst);
    }
    mp::tsc_check(ROUNDS);
    if !wait_until(ANSWER * 4, || {
        mp::TSC_DONE.load(Ordering::SeqCst) as usize == ids.len()
    }) {
        return fail!("not-finished done={}", mp::TSC_DONE.load(Ordering::SeqCst));
    }
    let reads = mp::TSC_READS.load(Ordering::SeqCst);
    let warps = mp::TSC_WARPS.load(Ordering::SeqCst);
    let max = mp::TSC_MAX_WARP.load(Ordering::SeqCst);
    if reads != ROUNDS * ids.len() as u64 {
        return fail!("reads={reads}");
    }
    if warps != 0 {
        return fail!(
            "tsc-warp cpus={} reads={reads} warps={warps} max_warp={max}",
            ids.len()
        );
    }
    pass!("cpus={} reads={reads} warps=0 max_warp=0", ids.len())
}

// ---- The debugger's case ----

/// R12 of processor 1 at `smp_ap_here`, and R13 of the boot processor in `smp_bsp_spin`.
const AP_R12: u64 = 0xA9A9_0000_0000_0012;
const BSP_R13: u64 = 0xB5B5_0000_0000_0013;
/// What processor 1 stores to `SMP_WATCHED`.
const AP_STORE: u64 = 0x5A5A_1234;
/// Rounds of either spin before it gives up on a debugger (guest time: a stop does not count).
const SPIN_LIMIT: u64 = 3_000_000;

/// A spinning processor's record: rounds, the last TSC, the largest gap between two rounds.
#[repr(C)]
struct Spin {
    rounds: u64,
    last: u64,
    gap: u64,
}

#[unsafe(no_mangle)]
static mut SMP_BSP_SPIN: Spin = Spin {
    rounds: 0,
    last: 0,
    gap: 0,
};
/// The boot processor's second spin (after `smp_bsp_mid`): its own record, so that the first
/// one's gaps are those of processor 1's stops only.
#[unsafe(no_mangle)]
static mut SMP_BSP_SPIN2: Spin = Spin {
    rounds: 0,
    last: 0,
    gap: 0,
};
#[unsafe(no_mangle)]
static mut SMP_AP_SPIN: Spin = Spin {
    rounds: 0,
    last: 0,
    gap: 0,
};
/// Set by the debugger to end both spins.
#[unsafe(no_mangle)]
static mut SMP_RELEASE: u64 = 0;
/// Alone on its page: a watchpoint there stops nothing else.
#[repr(C, align(4096))]
struct Watched {
    value: u64,
}
#[unsafe(no_mangle)]
static mut SMP_WATCHED: Watched = Watched { value: 0 };

// `smp_spin(record, limit, flag)`: rounds until `*flag` or `SMP_RELEASE` is set, or `limit`
// rounds; each round reads the TSC and keeps the largest gap. `smp_bsp_spin` holds R13 =
// BSP_R13 meanwhile (gdb shows it in thread 1). `smp_ap_debug` is processor 1's part. Exact
// labels for gdb.
global_asm!(
    r#"
    .section .text.smp_debug, "ax"
    .global smp_spin
smp_spin:
    push rbx
    push r8
    mov rbx, rsi
    mov r8, rdx
smp_spin_round:
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov rcx, rax
    sub rcx, [rdi + 8]
    cmp qword ptr [rdi], 0
    je smp_spin_first
    cmp rcx, [rdi + 16]
    jbe smp_spin_first
    mov [rdi + 16], rcx
smp_spin_first:
    mov [rdi + 8], rax
    inc qword ptr [rdi]
    cmp qword ptr [rip + SMP_RELEASE], 0
    jne smp_spin_out
    cmp qword ptr [r8], 0
    jne smp_spin_out
    cmp [rdi], rbx
    jb smp_spin_round
smp_spin_out:
    pop r8
    pop rbx
    ret

    .global smp_bsp_spin
smp_bsp_spin:
    push r13
    movabs r13, {bsp_r13}
    call smp_spin
    pop r13
    ret

    .global smp_bsp_mid
smp_bsp_mid:
    nop
    ret

    .global smp_bsp_done
smp_bsp_done:
    nop
    ret

    .global smp_ap_here
smp_ap_here:
    nop
    nop
    ret

    .global smp_ap_debug
smp_ap_debug:
    push r12
    movabs r12, {ap_r12}
    call smp_ap_here
    mov rax, {ap_store}
    mov [rip + SMP_WATCHED], rax
    .global smp_ap_after_store
smp_ap_after_store:
    lea rdi, [rip + SMP_AP_SPIN]
    mov rsi, {limit}
    lea rdx, [rip + SMP_RELEASE]
    call smp_spin
    pop r12
    ret
    .text
"#,
    bsp_r13 = const BSP_R13,
    ap_r12 = const AP_R12,
    ap_store = const AP_STORE,
    limit = const SPIN_LIMIT,
);

unsafe extern "C" {
    fn smp_bsp_spin(record: *mut Spin, limit: u64, flag: *const u64);
    fn smp_bsp_mid();
    fn smp_bsp_done();
    fn smp_ap_debug();
}

/// Processor 1 runs `smp_ap_debug` while the boot processor spins; both stop when a debugger
/// sets `SMP_RELEASE`.
fn debug() -> Outcome {
    let (vector, ids) = match ready() {
        Ok(r) => r,
        Err(why) => return why.outcome(),
    };
    let id = ids[1];
    if AP[1].starts.load(Ordering::SeqCst) == 0 {
        mp::send_ipi(mp::DM_INIT | mp::LEVEL | mp::ASSERT, id);
        mp::send_ipi(mp::DM_INIT | mp::LEVEL, id);
        mp::delay(INIT_PAUSE);
        for _ in 0..2 {
            mp::send_ipi(mp::DM_STARTUP | vector as u32, id);
            mp::delay(SIPI_PAUSE);
        }
        if !wait_until(ANSWER, || AP[1].starts.load(Ordering::SeqCst) > 0) {
            return fail!("no-start");
        }
    }
    mp::set_debug_routine(ap_debug_entry);
    AP[1].command.store(Command::Debug as u32, Ordering::SeqCst);
    // SAFETY: the spin records and flags are this case's; the routines only read and write
    // them, and the labelled functions return at once.
    unsafe {
        let watched = core::ptr::addr_of!(SMP_WATCHED.value);
        smp_bsp_spin(core::ptr::addr_of_mut!(SMP_BSP_SPIN), SPIN_LIMIT, watched);
        smp_bsp_mid();
        let release = core::ptr::addr_of!(SMP_RELEASE);
        smp_bsp_spin(core::ptr::addr_of_mut!(SMP_BSP_SPIN2), SPIN_LIMIT, release);
    }
    // Processor 1 finishes its spin (the release ends it too).
    wait_until(ANSWER, || {
        AP[1].command.load(Ordering::SeqCst) == Command::Idle as u32
    });
    // SAFETY: as above.
    let (released, bsp, ap, watched) = unsafe {
        (
            core::ptr::addr_of!(SMP_RELEASE).read_volatile(),
            core::ptr::addr_of!(SMP_BSP_SPIN).read_volatile(),
            core::ptr::addr_of!(SMP_AP_SPIN).read_volatile(),
            core::ptr::addr_of!(SMP_WATCHED.value).read_volatile(),
        )
    };
    if released == 0 {
        return skip!("no-debugger");
    }
    // SAFETY: a labelled function for the debugger's breakpoint.
    unsafe { smp_bsp_done() };
    if watched != AP_STORE {
        return fail!("store-lost watched={watched:#x}");
    }
    pass!(
        "released={released:#x} bsp_rounds={} bsp_gap={} ap_rounds={} ap_gap={}",
        bsp.rounds,
        bsp.gap,
        ap.rounds,
        ap.gap
    )
}

extern "C" fn ap_debug_entry() {
    // SAFETY: processor 1's part of the case.
    unsafe { smp_ap_debug() }
}
