//! Multiprocessor start-up as an operating system does it: the processors from the ACPI MADT
//! (found through the RSDP in the BIOS area, ACPI 6.5 5.2.5.1), INIT and start-up IPIs through
//! the local APIC's ICR (SDM Vol. 3A 11.6.1), and a real-mode start-up page that takes each
//! application processor to the kit's long mode, where it runs [`ap_loop`].
//!
//! Everything an application processor reports goes through atomics in this module: it never
//! prints (COM1 has no lock), so the boot processor reads what happened and reports it.
//!
//! The xAPIC registers are used through the page IA32_APIC_BASE names (identity-mapped by the
//! kit); the kit never turns on x2APIC mode.

use crate::cpu::{self, rdmsr, rdtsc};
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// The most processors the kit handles.
pub const MAX_CPUS: usize = 8;
/// The vector of the kit's IPIs (fixed delivery).
pub const IPI_VECTOR: u8 = 0xF0;

const ICR_LOW: u64 = 0x300;
const ICR_HIGH: u64 = 0x310;
const REG_ID: u64 = 0x20;
const REG_TPR: u64 = 0x80;
const REG_LDR: u64 = 0xD0;
const REG_DFR: u64 = 0xE0;
const REG_SVR: u64 = 0xF0;

/// ICR delivery modes and flags (SDM Vol. 3A 11.6.1).
pub const DM_FIXED: u32 = 0 << 8;
pub const DM_INIT: u32 = 5 << 8;
pub const DM_STARTUP: u32 = 6 << 8;
pub const LOGICAL: u32 = 1 << 11;
pub const ASSERT: u32 = 1 << 14;
pub const LEVEL: u32 = 1 << 15;
pub const ALL_BUT_SELF: u32 = 3 << 18;

/// The local APIC's register page (IA32_APIC_BASE), for the IPI handler too.
#[unsafe(no_mangle)]
static GUEST_KIT_MP_APIC: AtomicU64 = AtomicU64::new(0xFEE0_0000);
/// IPIs received, by APIC ID (the IPI handler counts them).
#[unsafe(no_mangle)]
static GUEST_KIT_MP_IPIS: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];

fn apic_base() -> u64 {
    GUEST_KIT_MP_APIC.load(Ordering::Relaxed)
}

fn apic_read(reg: u64) -> u32 {
    // SAFETY: the APIC page, identity-mapped.
    unsafe { ((apic_base() + reg) as *const u32).read_volatile() }
}

fn apic_write(reg: u64, value: u32) {
    // SAFETY: as for `apic_read`.
    unsafe { ((apic_base() + reg) as *mut u32).write_volatile(value) }
}

/// This processor's APIC ID.
pub fn apic_id() -> u32 {
    apic_read(REG_ID) >> 24
}

/// Software-enables this processor's local APIC (spurious vector 0xFF), accepts every priority
/// and, when `logical` is given, takes that flat-model logical ID.
pub fn enable_apic(logical: Option<u8>) {
    apic_write(REG_TPR, 0);
    if let Some(bit) = logical {
        apic_write(REG_DFR, 0xFFFF_FFFF);
        apic_write(REG_LDR, (bit as u32) << 24);
    }
    apic_write(REG_SVR, apic_read(REG_SVR) | 0x100 | 0xFF);
}

/// Writes the ICR (destination first, then the command that sends) and waits until the local
/// APIC has sent it (delivery status, bit 12).
pub fn send_ipi(command: u32, dest: u32) {
    apic_write(ICR_HIGH, dest << 24);
    apic_write(ICR_LOW, command);
    while apic_read(ICR_LOW) & (1 << 12) != 0 {
        core::hint::spin_loop();
    }
}

/// IPIs this APIC ID has received.
pub fn ipis(apic: u32) -> u64 {
    GUEST_KIT_MP_IPIS[apic as usize & 0xFF].load(Ordering::SeqCst)
}

global_asm!(
    ".section .text.guest_kit_mp, \"ax\"",
    ".global guest_kit_mp_ipi",
    "guest_kit_mp_ipi:",
    "    push rax",
    "    push rdx",
    "    mov rax, [rip + GUEST_KIT_MP_APIC]",
    "    mov edx, dword ptr [rax + 0x20]",
    "    shr edx, 24",
    "    lea rax, [rip + GUEST_KIT_MP_IPIS]",
    "    lock inc qword ptr [rax + rdx * 8]",
    "    mov rax, [rip + GUEST_KIT_MP_APIC]",
    "    mov dword ptr [rax + 0xB0], 0",
    "    pop rdx",
    "    pop rax",
    "    iretq",
    ".text",
);

unsafe extern "C" {
    fn guest_kit_mp_ipi();
}

/// Busy-waits `ticks` of TSC.
pub fn delay(ticks: u64) {
    let start = rdtsc();
    while rdtsc().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}

// ---- ACPI: the processors of the MADT ----

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)) == 0
}

/// The RSDP: in the first KiB of the EBDA, or in 0xE0000-0xFFFFF, on 16-byte boundaries.
fn rsdp() -> Option<u64> {
    // SAFETY: the BIOS data area's EBDA segment word (physical 0x40E), identity-mapped.
    let ebda = unsafe { ((0x40E as *const u16).read_unaligned() as u64) << 4 };
    let areas = [(ebda, ebda + 1024), (0xE_0000, 0x10_0000)];
    for (start, end) in areas {
        if start == 0 {
            continue;
        }
        let mut at = start;
        while at + 20 <= end {
            // SAFETY: BIOS memory below 1 MiB, identity-mapped, read only.
            let b = unsafe { core::slice::from_raw_parts(at as *const u8, 20) };
            if &b[..8] == b"RSD PTR " && checksum_ok(b) {
                return Some(at);
            }
            at += 16;
        }
    }
    None
}

fn table(addr: u64) -> Option<&'static [u8]> {
    if addr == 0 || addr >= 1 << 32 {
        return None;
    }
    // SAFETY: firmware tables below 4 GiB, identity-mapped; the header is 36 bytes.
    let header = unsafe { core::slice::from_raw_parts(addr as *const u8, 36) };
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
    if !(36..=1 << 20).contains(&len) {
        return None;
    }
    // SAFETY: as above, with the table's own bounded length.
    let t = unsafe { core::slice::from_raw_parts(addr as *const u8, len) };
    checksum_ok(t).then_some(t)
}

/// The enabled processors' APIC IDs, in MADT order, and how many there are.
pub fn processors() -> Option<([u32; MAX_CPUS], usize)> {
    let rsdp = rsdp()?;
    // SAFETY: the RSDP just found; the RSDT address is at offset 16.
    let rsdt = unsafe { ((rsdp + 16) as *const u32).read_unaligned() } as u64;
    let rsdt = table(rsdt)?;
    let madt = rsdt[36..].chunks_exact(4).find_map(|e| {
        let t = table(u32::from_le_bytes(e.try_into().ok()?) as u64)?;
        (&t[..4] == b"APIC").then_some(t)
    })?;
    let mut ids = [0u32; MAX_CPUS];
    let mut n = 0;
    let mut at = 44;
    while at + 2 <= madt.len() {
        let (kind, len) = (madt[at], madt[at + 1] as usize);
        if len < 2 || at + len > madt.len() {
            break;
        }
        // Processor Local APIC: APIC ID at 3, flags at 4 (bit 0: enabled).
        if kind == 0 && len >= 8 && madt[at + 4] & 1 != 0 && n < MAX_CPUS {
            ids[n] = madt[at + 3] as u32;
            n += 1;
        }
        at += len;
    }
    Some((ids, n))
}

// ---- The start-up page ----

const GDT: usize = 0x10;
const GDTR: usize = 0x28;
const CR3: usize = 0x30;
const FAR_JUMP: usize = 0x38;
const ENTRY: usize = 0x40;
const COUNT: usize = 0x48;
const EFER: usize = 0x4C;
const TABLE: usize = 0x50;
const ROW: usize = 16;
const REAL_MODE: usize = 0xD0;
const LONG_MODE: usize = 0x120;

global_asm!(
    r#"
    .section .rodata.guest_kit_mp_start, "a"
    .global guest_kit_mp_start
    .global guest_kit_mp_start_end
    .code16
guest_kit_mp_start:
    cli
    cld
    jmp mp_real_mode
    .org {gdt}
    .quad 0
    .quad 0x00AF9B000000FFFF
    .quad 0x00CF93000000FFFF
    .org {gdtr}
    .word 0x17
    .long 0
    .org {cr3}
    .long 0
    .org {far_jump}
    .long 0
    .word 0x08
    .org {entry}
mp_entry:
    .quad 0
    .org {count}
mp_count:
    .long 0
    .org {efer}
    .long 0
    .org {table}
mp_table:
    .skip {table_size}
    .org {real_mode}
mp_real_mode:
    movw %cs, %ax
    movw %ax, %ds
    lgdtl {gdtr}
    movl %cr4, %eax
    orl $(1 << 5), %eax
    movl %eax, %cr4
    movl {cr3}, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl {efer}, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80010021, %eax
    movl %eax, %cr0
    ljmpl *{far_jump}
    .org {long_mode}
    .code64
mp_long_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    movl $1, %eax
    cpuid
    shrl $24, %ebx
    leaq mp_table(%rip), %rsi
    movl mp_count(%rip), %ecx
mp_next_row:
    testl %ecx, %ecx
    jz mp_no_row
    cmpl (%rsi), %ebx
    je mp_found
    addq ${row}, %rsi
    decl %ecx
    jmp mp_next_row
mp_found:
    movq 8(%rsi), %rsp
    movl 4(%rsi), %edi
    xorl %ebp, %ebp
    movq mp_entry(%rip), %rax
    callq *%rax
mp_no_row:
    cli
    hlt
    jmp mp_no_row
guest_kit_mp_start_end:
    .text
"#,
    gdt = const GDT,
    gdtr = const GDTR,
    cr3 = const CR3,
    far_jump = const FAR_JUMP,
    entry = const ENTRY,
    count = const COUNT,
    efer = const EFER,
    table = const TABLE,
    table_size = const ROW * MAX_CPUS,
    row = const ROW,
    real_mode = const REAL_MODE,
    long_mode = const LONG_MODE,
    options(att_syntax)
);

unsafe extern "C" {
    static guest_kit_mp_start: u8;
    static guest_kit_mp_start_end: u8;
}

const STACK: usize = 16 * 1024;

#[repr(C, align(16))]
struct Stacks([[u8; STACK]; MAX_CPUS]);

static mut STACKS: Stacks = Stacks([[0; STACK]; MAX_CPUS]);

/// What each application processor has reported, by vCPU number (its row in the start-up page).
pub struct ApReport {
    /// Times it came through the start-up code.
    pub starts: AtomicU32,
    /// The APIC ID its own APIC reports.
    pub apic_id: AtomicU32,
    /// Goes up while it runs its loop.
    pub heartbeat: AtomicU64,
    /// What the boot processor asks of it ([`Command`]).
    pub command: AtomicU32,
    /// Pings it answered.
    pub pongs: AtomicU64,
}

impl ApReport {
    const fn new() -> ApReport {
        ApReport {
            starts: AtomicU32::new(0),
            apic_id: AtomicU32::new(u32::MAX),
            heartbeat: AtomicU64::new(0),
            command: AtomicU32::new(0),
            pongs: AtomicU64::new(0),
        }
    }
}

pub static AP: [ApReport; MAX_CPUS] = [const { ApReport::new() }; MAX_CPUS];
/// The boot processor's APIC ID (pongs go there).
static BSP_APIC: AtomicU32 = AtomicU32::new(0);
/// The kit's IDT, for the application processors.
static IDTR: AtomicU64 = AtomicU64::new(0);
static IDT_LIMIT: AtomicU32 = AtomicU32::new(0);

/// What the boot processor asks an application processor to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Command {
    Idle = 0,
    /// Answer each IPI with one to the boot processor.
    Pong = 1,
    /// Take part in the TSC check ([`tsc_check`]).
    TscCheck = 2,
    /// Run the debugger case's part (the binary's own routine, [`set_debug_routine`]).
    Debug = 3,
}

/// The routine an application processor runs for [`Command::Debug`] (0: none).
static DEBUG_ROUTINE: AtomicU64 = AtomicU64::new(0);

/// Sets what an application processor runs for [`Command::Debug`].
pub fn set_debug_routine(f: extern "C" fn()) {
    DEBUG_ROUTINE.store(f as *const () as u64, Ordering::SeqCst);
}

/// Installs the start-up code at `page` (below 1 MiB) for the processors `apic_ids[1..]`
/// (rows 1 and up) and prepares the IPI handler. Returns the start-up vector.
///
/// # Safety
/// `page` is conventional memory nothing else uses while the kit runs.
pub unsafe fn prepare(page: u64, apic_ids: &[u32]) -> u8 {
    GUEST_KIT_MP_APIC.store(
        unsafe { rdmsr(cpu::IA32_APIC_BASE) } & 0xF_FFFF_F000,
        Ordering::SeqCst,
    );
    BSP_APIC.store(apic_id(), Ordering::SeqCst);
    crate::interrupts::set_handler(IPI_VECTOR, guest_kit_mp_ipi as *const () as u64);
    let mut idtr = [0u8; 10];
    // SAFETY: SIDT writes 10 bytes.
    unsafe { asm!("sidt [{}]", in(reg) idtr.as_mut_ptr(), options(nostack, preserves_flags)) };
    IDT_LIMIT.store(
        u16::from_le_bytes([idtr[0], idtr[1]]) as u32,
        Ordering::SeqCst,
    );
    IDTR.store(
        u64::from_le_bytes(idtr[2..10].try_into().unwrap()),
        Ordering::SeqCst,
    );
    let (start, end) = (
        core::ptr::addr_of!(guest_kit_mp_start) as usize,
        core::ptr::addr_of!(guest_kit_mp_start_end) as usize,
    );
    let at = page as *mut u8;
    let cr3: u64;
    // SAFETY: reading CR3.
    unsafe { asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack)) };
    let efer = unsafe { rdmsr(0xC000_0080) } & ((1 << 8) | (1 << 11));
    unsafe {
        core::ptr::copy_nonoverlapping(start as *const u8, at, end - start);
        let put32 = |off: usize, v: u32| (at.add(off) as *mut u32).write_unaligned(v);
        let put64 = |off: usize, v: u64| (at.add(off) as *mut u64).write_unaligned(v);
        put32(GDTR + 2, (page + GDT as u64) as u32);
        put32(CR3, cr3 as u32);
        put32(FAR_JUMP, (page + LONG_MODE as u64) as u32);
        put64(ENTRY, ap_entry as *const () as u64);
        put32(EFER, efer as u32);
        let rows = apic_ids.len().min(MAX_CPUS);
        put32(COUNT, rows as u32);
        let stacks = core::ptr::addr_of_mut!(STACKS) as *mut [u8; STACK];
        for (i, &id) in apic_ids.iter().enumerate().take(rows) {
            let row = TABLE + i * ROW;
            put32(row, id);
            put32(row + 4, i as u32);
            put64(row + 8, stacks.add(i) as u64 + STACK as u64);
        }
    }
    (page >> 12) as u8
}

/// An application processor's first Rust code.
extern "C" fn ap_entry(index: u32) -> ! {
    let i = index as usize;
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let p = Pointer {
        limit: IDT_LIMIT.load(Ordering::SeqCst) as u16,
        base: IDTR.load(Ordering::SeqCst),
    };
    // SAFETY: the kit's IDT, shared by every processor.
    unsafe { asm!("lidt [{}]", in(reg) &p, options(readonly, nostack, preserves_flags)) };
    enable_apic(Some(1 << (i % 8)));
    AP[i].apic_id.store(apic_id(), Ordering::SeqCst);
    AP[i].starts.fetch_add(1, Ordering::SeqCst);
    ap_loop(i)
}

/// What an application processor does between the boot processor's commands: count its
/// heartbeat, answer pings, take part in the TSC check.
fn ap_loop(i: usize) -> ! {
    let me = &AP[i];
    let mut answered = ipis(apic_id());
    // SAFETY: the IDT holds a handler for the kit's IPI vector.
    unsafe { asm!("sti", options(nomem, nostack)) };
    loop {
        me.heartbeat.fetch_add(1, Ordering::SeqCst);
        match me.command.load(Ordering::SeqCst) {
            c if c == Command::Pong as u32 => {
                let got = ipis(apic_id());
                if got > answered {
                    answered = got;
                    me.pongs.fetch_add(1, Ordering::SeqCst);
                    send_ipi(
                        DM_FIXED | IPI_VECTOR as u32,
                        BSP_APIC.load(Ordering::SeqCst),
                    );
                }
            }
            c if c == Command::TscCheck as u32 => {
                tsc_check(TSC_ROUNDS.load(Ordering::SeqCst));
                me.command.store(Command::Idle as u32, Ordering::SeqCst);
            }
            c if c == Command::Debug as u32 => {
                let f = DEBUG_ROUTINE.load(Ordering::SeqCst);
                if f != 0 {
                    // SAFETY: set by `set_debug_routine` from an `extern "C" fn()`.
                    let f: extern "C" fn() = unsafe { core::mem::transmute(f as usize) };
                    f();
                }
                me.command.store(Command::Idle as u32, Ordering::SeqCst);
            }
            _ => {
                answered = ipis(apic_id());
                core::hint::spin_loop();
            }
        }
    }
}

// ---- The TSC across processors (arch/x86/kernel/tsc_sync.c's check_tsc_warp, in kind) ----

static TSC_LOCK: AtomicBool = AtomicBool::new(false);
static TSC_LAST: AtomicU64 = AtomicU64::new(0);
pub static TSC_READS: AtomicU64 = AtomicU64::new(0);
pub static TSC_WARPS: AtomicU64 = AtomicU64::new(0);
pub static TSC_MAX_WARP: AtomicU64 = AtomicU64::new(0);
pub static TSC_ROUNDS: AtomicU64 = AtomicU64::new(0);
/// Processors that finished their rounds.
pub static TSC_DONE: AtomicU32 = AtomicU32::new(0);

/// RDTSC after every earlier load and store has completed (LFENCE; SDM Vol. 2B RDTSC).
fn rdtsc_ordered() -> u64 {
    // SAFETY: LFENCE only orders.
    unsafe { asm!("lfence", options(nomem, nostack, preserves_flags)) };
    rdtsc()
}

/// `rounds` times: under a lock, read the last TSC value any processor stored, read the TSC,
/// store it. A value smaller than one another processor read before is a warp.
pub fn tsc_check(rounds: u64) {
    for _ in 0..rounds {
        while TSC_LOCK
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        let prev = TSC_LAST.load(Ordering::Relaxed);
        let now = rdtsc_ordered();
        TSC_LAST.store(now, Ordering::Relaxed);
        TSC_LOCK.store(false, Ordering::Release);
        TSC_READS.fetch_add(1, Ordering::Relaxed);
        if now < prev {
            TSC_WARPS.fetch_add(1, Ordering::Relaxed);
            TSC_MAX_WARP.fetch_max(prev - now, Ordering::Relaxed);
        }
    }
    TSC_DONE.fetch_add(1, Ordering::SeqCst);
}
