//! A guest made to be debugged: `cargo xtask test gdb` drives it with a real gdb through
//! Vigil's stub. Each case calls a function gdb stops in (the asm functions below have exact,
//! known bytes and addresses) and reports what the guest itself observed, so the test can
//! compare gdb's view with the guest's. Every case passes bare and under Vigil without gdb too.
//!
//! | case | what the guest does | what gdb does there (tests) |
//! |---|---|---|
//! | `checkpoint` | calls `debuggee_checkpoint(1)` | breaks at this guest-kit function |
//! | `registers` | loads RBX, R12, R13 with known values, stops at `debuggee_regs_here` | `info registers`, `x/4gx`, `set var` on `DEBUGGEE_VARS` |
//! | `variable` | reads `DEBUGGEE_VARS` (`vars1=` is what gdb wrote, if it did) | – |
//! | `code-bytes` | reads the 8 code bytes of `debuggee_marker` (which has a breakpoint), then calls it; FAIL `int3-visible` if they differ from the assembled ones | breaks at the marker |
//! | `watch` | stores 0x1234 to `DEBUGGEE_WATCHED` (alone on its page) | `watch` stops at `debuggee_after_store` |
//! | `rwatch` | loads and stores a neighbour on `DEBUGGEE_READ`'s page, loads `DEBUGGEE_READ` (`value=`), stores it back, adds 1 to it in memory (`after=`) | `rwatch` stops at `debuggee_after_load` and `debuggee_after_add` only |
//! | `awatch` | loads `DEBUGGEE_ACCESSED`, stores it plus 0x11 (`old=`, `new=`) | `awatch` stops at `debuggee_after_access_load`, then at `debuggee_after_access_store` |
//! | `stepi` | calls `debuggee_step_here` (`mov eax, 1` is 5 bytes) | `stepi` from its first instruction |
//! | `tsc-stop` | RDTSC, call `debuggee_tsc_stop`, RDTSC: `delta=` | holds the guest there ≥ 2 s |
//! | `attach` (only when named) | spins until `DEBUGGEE_RELEASE` is set, at most ~2^31 ticks; SKIP if no one did | attaches while the guest runs (break-in), sets the variable, detaches |
//! | `step` (only when named) | runs `debuggee_step_seq` (below): a self-IPI left pending behind `sti`, another behind `sti; mov ss`, then `pushfq`, `popfq` and CPUID; reports where each interrupt landed and what the shadowed instruction had done by then (`irq0=`, `mark0=`, `irq1=`, `mark1=`), the flags it pushed and loaded (`pushed=`, `popped=`) and CPUID leaf 0 (`cpuid=`); FAIL if an interrupt landed inside a shadow | `stepi` over `sti`, `mov ss`, `pushfq`, `popfq` and `cpuid`; compared with the same case run bare |

#![no_std]
#![no_main]

use core::arch::global_asm;
use guest_kit::{cpu, fail, harness, pass, BootInfo, Case, Outcome};

guest_kit::entry!(main);

static CASES: &[Case] = &[
    Case::new("checkpoint", checkpoint),
    Case::new("registers", registers),
    Case::new("variable", variable),
    Case::new("code-bytes", code_bytes),
    Case::new("watch", watch),
    Case::new("rwatch", rwatch),
    Case::new("awatch", awatch),
    Case::new("stepi", stepi),
    Case::new("tsc-stop", tsc_stop),
    Case::explicit("attach", attach),
    Case::explicit("step", step),
];

/// Set by a debugger that attached while the guest ran (the `attach` case waits for it).
#[unsafe(no_mangle)]
pub static mut DEBUGGEE_RELEASE: u64 = 0;

fn main(boot: &'static BootInfo) -> ! {
    harness::run(CASES, boot)
}

/// Distinct values gdb reads with `x/4gx` and changes with `set var`.
#[unsafe(no_mangle)]
pub static mut DEBUGGEE_VARS: [u64; 4] = [
    0x0dec_0de0_0000_0001,
    0x0dec_0de0_0000_0002,
    0x0dec_0de0_0000_0003,
    0x0dec_0de0_0000_0004,
];

/// The watched variable, alone on its page so the watchpoint's page sees no other traffic.
#[repr(C, align(4096))]
pub struct WatchPage {
    pub value: u64,
    rest: [u64; 511],
}

#[unsafe(no_mangle)]
pub static mut DEBUGGEE_WATCHED: WatchPage = WatchPage {
    value: 0,
    rest: [0; 511],
};

/// What the `rwatch` case reads; its page holds nothing else the guest touches but the
/// neighbour word the case reads first (a read the watchpoint's range must filter out).
#[unsafe(no_mangle)]
pub static mut DEBUGGEE_READ: WatchPage = WatchPage {
    value: READ_VALUE,
    rest: [0x0dec_0de0_0000_0099; 511],
};
const READ_VALUE: u64 = 0x5eed_0001;

/// What the `awatch` case reads and then writes, alone on its page.
#[unsafe(no_mangle)]
pub static mut DEBUGGEE_ACCESSED: WatchPage = WatchPage {
    value: ACCESSED_INITIAL,
    rest: [0; 511],
};
const ACCESSED_INITIAL: u64 = 0x7700;
const ACCESSED_ADDEND: u64 = 0x11;

/// The assembled bytes of `debuggee_marker`: nop; nop; mov eax, 0x1234; ret.
const MARKER_BYTES: [u8; 8] = [0x90, 0x90, 0xB8, 0x34, 0x12, 0x00, 0x00, 0xC3];

global_asm!(
    r#"
    .section .text.debuggee, "ax"
    .global debuggee_set_regs
debuggee_set_regs:
    push rbx
    push r12
    push r13
    movabs rbx, 0x1111222233334444
    movabs r12, 0x5555666677778888
    movabs r13, 0x0123456789abcdef
    .global debuggee_regs_here
debuggee_regs_here:
    nop
    pop r13
    pop r12
    pop rbx
    ret

    .global debuggee_marker
debuggee_marker:
    nop
    nop
    mov eax, 0x1234
    ret

    .global debuggee_write_watched
debuggee_write_watched:
    mov qword ptr [rip + DEBUGGEE_WATCHED], rdi
    .global debuggee_after_store
debuggee_after_store:
    ret

    # rwatch: a load and a store next to DEBUGGEE_READ (same page, outside the watched range),
    # the watched load, a plain store of the value back (a write, not a read), and an ADD to
    # memory, which reads the value before it writes. A read watchpoint stops after the load and
    # after the ADD, nowhere else. Returns the value loaded.
    .global debuggee_read_watched
debuggee_read_watched:
    mov rdx, qword ptr [rip + DEBUGGEE_READ + 8]
    mov qword ptr [rip + DEBUGGEE_READ + 16], rdx
    mov rax, qword ptr [rip + DEBUGGEE_READ]
    .global debuggee_after_load
debuggee_after_load:
    mov qword ptr [rip + DEBUGGEE_READ], rax
    add qword ptr [rip + DEBUGGEE_READ], 1
    .global debuggee_after_add
debuggee_after_add:
    ret

    # awatch: a load and a store as two instructions, so an access watchpoint stops twice.
    .global debuggee_update_accessed
debuggee_update_accessed:
    mov rax, qword ptr [rip + DEBUGGEE_ACCESSED]
    .global debuggee_after_access_load
debuggee_after_access_load:
    lea rdx, [rax + rdi]
    mov qword ptr [rip + DEBUGGEE_ACCESSED], rdx
    .global debuggee_after_access_store
debuggee_after_access_store:
    ret

    .global debuggee_step_here
debuggee_step_here:
    mov eax, 1
    add eax, 2
    ret

    .global debuggee_tsc_stop
debuggee_tsc_stop:
    nop
    ret

    # step: instructions whose single-stepping a debugger can get wrong, each at a label gdb
    # steps from, and each followed by a label gdb must land on. rdi = the local APIC's ICR,
    # esi = a fixed self-IPI, rdx = flags for POPFQ; interrupts are off on entry and on return.
    # An interrupt left pending behind STI is taken only after the next instruction (the STI
    # shadow), one behind STI; MOV SS only after the instruction after MOV SS (SDM Vol. 3A
    # 6.8.3): the handler records where it landed and the mark the shadowed store had written.
    .global debuggee_step_seq
debuggee_step_seq:
    push rbx
    mov dword ptr [rdi], esi
    .global debuggee_step_sti
debuggee_step_sti:
    sti
    .global debuggee_step_sti_shadow
debuggee_step_sti_shadow:
    mov byte ptr [rip + DEBUGGEE_STEP_MARK], 1
    .global debuggee_step_after_sti
debuggee_step_after_sti:
    nop
    cli
    mov dword ptr [rdi], esi
    mov ax, ss
    .global debuggee_step_sti2
debuggee_step_sti2:
    sti
    .global debuggee_step_movss
debuggee_step_movss:
    mov ss, ax
    .global debuggee_step_movss_shadow
debuggee_step_movss_shadow:
    mov byte ptr [rip + DEBUGGEE_STEP_MARK], 2
    .global debuggee_step_after_movss
debuggee_step_after_movss:
    nop
    cli
    .global debuggee_step_pushf
debuggee_step_pushf:
    pushfq
    .global debuggee_step_after_pushf
debuggee_step_after_pushf:
    pop qword ptr [rip + DEBUGGEE_STEP_PUSHED]
    push rdx
    .global debuggee_step_popf
debuggee_step_popf:
    popfq
    .global debuggee_step_after_popf
debuggee_step_after_popf:
    pushfq
    pop qword ptr [rip + DEBUGGEE_STEP_POPPED]
    # Back to plain flags (interrupts off, AC and DF clear) before returning to Rust.
    push 2
    popfq
    xor eax, eax
    xor ecx, ecx
    .global debuggee_step_cpuid
debuggee_step_cpuid:
    cpuid
    .global debuggee_step_after_cpuid
debuggee_step_after_cpuid:
    mov dword ptr [rip + DEBUGGEE_STEP_CPUID], eax
    mov dword ptr [rip + DEBUGGEE_STEP_CPUID + 4], ebx
    mov dword ptr [rip + DEBUGGEE_STEP_CPUID + 8], ecx
    mov dword ptr [rip + DEBUGGEE_STEP_CPUID + 12], edx
    pop rbx
    ret

    # The self-IPI's handler: records the interrupted RIP and the mark, then EOI.
    .global debuggee_step_isr
debuggee_step_isr:
    push rax
    push rdx
    mov rdx, qword ptr [rip + DEBUGGEE_STEP_IRQS]
    and rdx, 1
    shl rdx, 3
    mov rax, qword ptr [rsp + 16]
    push rcx
    lea rcx, [rip + DEBUGGEE_STEP_IRQ_RIP]
    mov qword ptr [rcx + rdx], rax
    movzx eax, byte ptr [rip + DEBUGGEE_STEP_MARK]
    lea rcx, [rip + DEBUGGEE_STEP_IRQ_MARK]
    mov qword ptr [rcx + rdx], rax
    pop rcx
    add qword ptr [rip + DEBUGGEE_STEP_IRQS], 1
    mov rax, qword ptr [rip + DEBUGGEE_STEP_EOI]
    mov dword ptr [rax], 0
    pop rdx
    pop rax
    iretq
"#
);

/// What `debuggee_step_seq` and its interrupt handler record.
#[unsafe(no_mangle)]
static mut DEBUGGEE_STEP_MARK: u8 = 0;
#[unsafe(no_mangle)]
static mut DEBUGGEE_STEP_IRQS: u64 = 0;
#[unsafe(no_mangle)]
static mut DEBUGGEE_STEP_IRQ_RIP: [u64; 2] = [0; 2];
#[unsafe(no_mangle)]
static mut DEBUGGEE_STEP_IRQ_MARK: [u64; 2] = [0; 2];
#[unsafe(no_mangle)]
static mut DEBUGGEE_STEP_PUSHED: u64 = 0;
#[unsafe(no_mangle)]
static mut DEBUGGEE_STEP_POPPED: u64 = 0;
#[unsafe(no_mangle)]
static mut DEBUGGEE_STEP_CPUID: [u32; 4] = [0; 4];
#[unsafe(no_mangle)]
static mut DEBUGGEE_STEP_EOI: u64 = 0;

/// The self-IPI's vector (unused by the kit's PIC range and its APIC timer).
const STEP_VECTOR: u8 = 0xD0;
/// What POPFQ loads: CF, ZF, SF, AC and the reserved bit 1; IF and TF clear.
const STEP_POPF: u64 = 0x4_00C3;
const APIC_EOI: u64 = 0xB0;
const APIC_SVR: u64 = 0xF0;
const APIC_ICR_LOW: u64 = 0x300;
/// ICR: fixed delivery, destination shorthand "self" (bits 19:18 = 01).
const ICR_SELF_FIXED: u32 = 1 << 18;
const TF: u64 = 1 << 8;

unsafe extern "C" {
    fn debuggee_set_regs();
    fn debuggee_marker() -> u32;
    fn debuggee_write_watched(value: u64);
    fn debuggee_read_watched() -> u64;
    /// Adds `addend` to `DEBUGGEE_ACCESSED`; returns the value before.
    fn debuggee_update_accessed(addend: u64) -> u64;
    fn debuggee_step_here() -> u32;
    fn debuggee_tsc_stop();
    fn debuggee_step_seq(icr: u64, command: u32, flags: u64);
    fn debuggee_step_isr();
    static debuggee_step_after_sti: u8;
    static debuggee_step_after_movss: u8;
}

/// A guest-kit function for `break debuggee_checkpoint`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn debuggee_checkpoint(n: u64) -> u64 {
    core::hint::black_box(n).wrapping_add(1)
}

fn checkpoint() -> Outcome {
    let r = debuggee_checkpoint(1);
    pass!("returned={r}")
}

fn registers() -> Outcome {
    unsafe { debuggee_set_regs() };
    pass!("rbx=0x1111222233334444 r12=0x5555666677778888 r13=0x0123456789abcdef")
}

fn variable() -> Outcome {
    let p = core::ptr::addr_of!(DEBUGGEE_VARS) as *const u64;
    let v: [u64; 4] = core::array::from_fn(|i| unsafe { p.add(i).read_volatile() });
    pass!(
        "vars0={:#x} vars1={:#x} vars2={:#x} vars3={:#x}",
        v[0],
        v[1],
        v[2],
        v[3]
    )
}

fn code_bytes() -> Outcome {
    let p = debuggee_marker as *const u8;
    let seen: [u8; 8] = core::array::from_fn(|i| unsafe { p.add(i).read_volatile() });
    let ret = unsafe { debuggee_marker() };
    let hex = u64::from_le_bytes(seen);
    if seen != MARKER_BYTES {
        return fail!("int3-visible bytes={hex:#018x}");
    }
    pass!("bytes={hex:#018x} returned={ret:#x}")
}

fn watch() -> Outcome {
    unsafe { debuggee_write_watched(0x1234) };
    let v = unsafe { core::ptr::addr_of!(DEBUGGEE_WATCHED.value).read_volatile() };
    if v != 0x1234 {
        return fail!("store-lost value={v:#x}");
    }
    pass!("value={v:#x}")
}

fn rwatch() -> Outcome {
    let v = unsafe { debuggee_read_watched() };
    let after = unsafe { core::ptr::addr_of!(DEBUGGEE_READ.value).read_volatile() };
    if v != READ_VALUE || after != READ_VALUE + 1 {
        return fail!("wrong-value value={v:#x} after={after:#x}");
    }
    pass!("value={v:#x} after={after:#x}")
}

fn awatch() -> Outcome {
    let old = unsafe { debuggee_update_accessed(ACCESSED_ADDEND) };
    let new = unsafe { core::ptr::addr_of!(DEBUGGEE_ACCESSED.value).read_volatile() };
    if old != ACCESSED_INITIAL || new != ACCESSED_INITIAL + ACCESSED_ADDEND {
        return fail!("wrong-value old={old:#x} new={new:#x}");
    }
    pass!("old={old:#x} new={new:#x}")
}

fn stepi() -> Outcome {
    let r = unsafe { debuggee_step_here() };
    if r != 3 {
        return fail!("wrong-result eax={r}");
    }
    pass!("eax={r}")
}

/// Spins until a debugger that broke in sets `DEBUGGEE_RELEASE`. Without a debugger the bound
/// runs out and the case skips, so it passes bare and under Vigil alone too.
fn attach() -> Outcome {
    let start = cpu::rdtsc();
    let mut spins = 0u64;
    loop {
        let released = unsafe { core::ptr::addr_of!(DEBUGGEE_RELEASE).read_volatile() };
        if released != 0 {
            return pass!("released={released:#x} spins={spins}");
        }
        if cpu::rdtsc().wrapping_sub(start) > 1 << 31 {
            return guest_kit::skip!("no-debugger spins={spins}");
        }
        spins += 1;
        core::hint::spin_loop();
    }
}

/// Single-stepped by gdb in the `gdb-step-mtf` scenario; the same run bare is the reference
/// (`gdb-step-bare`). Interrupts must land after the shadowed instructions, and the flags the
/// guest pushes must not show a debugger's TF.
fn step() -> Outcome {
    // SAFETY: the kit identity-maps the local APIC's page; interrupts are off in the kit.
    let apic = unsafe { cpu::rdmsr(cpu::IA32_APIC_BASE) } & 0xF_FFFF_F000;
    let reg = |r: u64| (apic + r) as *mut u32;
    unsafe {
        core::ptr::addr_of_mut!(DEBUGGEE_STEP_EOI).write_volatile(apic + APIC_EOI);
        // Software-enable the APIC (spurious vector 0xFF).
        reg(APIC_SVR).write_volatile(reg(APIC_SVR).read_volatile() | 0x100 | 0xFF);
    }
    guest_kit::interrupts::set_handler(STEP_VECTOR, debuggee_step_isr as *const () as u64);
    unsafe {
        debuggee_step_seq(
            apic + APIC_ICR_LOW,
            ICR_SELF_FIXED | STEP_VECTOR as u32,
            STEP_POPF,
        )
    };
    let read = |p: *const u64| unsafe { p.read_volatile() };
    let irqs = read(core::ptr::addr_of!(DEBUGGEE_STEP_IRQS));
    let rips = unsafe { core::ptr::addr_of!(DEBUGGEE_STEP_IRQ_RIP).read_volatile() };
    let marks = unsafe { core::ptr::addr_of!(DEBUGGEE_STEP_IRQ_MARK).read_volatile() };
    let pushed = read(core::ptr::addr_of!(DEBUGGEE_STEP_PUSHED));
    let popped = read(core::ptr::addr_of!(DEBUGGEE_STEP_POPPED));
    let id = unsafe { core::ptr::addr_of!(DEBUGGEE_STEP_CPUID).read_volatile() };
    let after_sti = core::ptr::addr_of!(debuggee_step_after_sti) as u64;
    let after_movss = core::ptr::addr_of!(debuggee_step_after_movss) as u64;
    let fields = guest_kit::harness::text(format_args!(
        "irqs={irqs} irq0={:#x} mark0={} irq1={:#x} mark1={} pushed={pushed:#x} \
         popped={popped:#x} cpuid={:#x}:{:#x}:{:#x}:{:#x}",
        rips[0], marks[0], rips[1], marks[1], id[0], id[1], id[2], id[3]
    ));
    if irqs != 2 {
        return fail!("interrupts-lost {fields}");
    }
    if rips != [after_sti, after_movss] || marks != [1, 2] {
        return fail!(
            "shadow-broken after_sti={after_sti:#x} after_movss={after_movss:#x} {fields}"
        );
    }
    if pushed & TF != 0 || popped & TF != 0 {
        return fail!("tf-visible {fields}");
    }
    if popped & 0xFFFF_FFFF != STEP_POPF {
        return fail!("popf-wrong want={STEP_POPF:#x} {fields}");
    }
    pass!("{fields}")
}

fn tsc_stop() -> Outcome {
    let t0 = cpu::rdtsc();
    unsafe { debuggee_tsc_stop() };
    let t1 = cpu::rdtsc();
    pass!("delta={}", t1.wrapping_sub(t0))
}
