//! Thin wrappers over the instructions the guests observe. Each one is a single instruction, so a
//! hypervisor that traps it is exercised exactly once per call.

use core::arch::asm;

/// IA32_TIME_STAMP_COUNTER (SDM Vol. 4, table 2-2).
pub const IA32_TSC: u32 = 0x10;
/// IA32_APIC_BASE (SDM Vol. 4, table 2-2).
pub const IA32_APIC_BASE: u32 = 0x1B;
/// IA32_TSC_AUX, the value RDTSCP returns in ECX (SDM Vol. 4, table 2-2).
pub const IA32_TSC_AUX: u32 = 0xC000_0103;

/// The four registers CPUID returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpuid {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// CPUID with EAX = `leaf`, ECX = `subleaf`.
pub fn cpuid(leaf: u32, subleaf: u32) -> Cpuid {
    let (eax, ebx, ecx, edx): (u32, u32, u32, u32);
    // LLVM reserves RBX, so it is swapped through a scratch register around CPUID.
    unsafe {
        asm!(
            "mov {scratch:r}, rbx",
            "cpuid",
            "xchg {scratch:r}, rbx",
            scratch = out(reg) ebx,
            inout("eax") leaf => eax,
            inout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nostack, preserves_flags),
        );
    }
    Cpuid { eax, ebx, ecx, edx }
}

/// The 12-byte vendor identification string of CPUID leaf 0 (EBX, EDX, ECX in that order).
pub fn vendor(leaf0: &Cpuid) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[0..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    v[8..12].copy_from_slice(&leaf0.ecx.to_le_bytes());
    v
}

/// Whether RDTSCP exists: CPUID.80000001H:EDX.RDTSCP[bit 27] (SDM Vol. 2B, RDTSCP).
pub fn has_rdtscp() -> bool {
    cpuid(0x8000_0000, 0).eax >= 0x8000_0001 && cpuid(0x8000_0001, 0).edx & (1 << 27) != 0
}

/// RDTSC.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// RDTSCP: the TSC and IA32_TSC_AUX (ECX).
pub fn rdtscp() -> (u64, u32) {
    let (lo, hi, aux): (u32, u32, u32);
    unsafe {
        asm!("rdtscp", out("eax") lo, out("edx") hi, out("ecx") aux,
            options(nomem, nostack, preserves_flags))
    };
    ((u64::from(hi) << 32) | u64::from(lo), aux)
}

/// RDMSR. Faults with #GP for an MSR the processor does not have; see
/// [`crate::fault::try_rdmsr`] for a variant that survives that.
///
/// # Safety
/// `msr` must exist on this processor.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi,
            options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// WRMSR.
///
/// # Safety
/// `msr` must exist and `value` must be valid for it; the write may change machine behaviour.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags))
    };
}

/// OUT imm8/DX, AL.
///
/// # Safety
/// Port I/O can reprogram devices.
pub unsafe fn outb(port: u16, value: u8) {
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// IN AL, DX.
///
/// # Safety
/// Reading some device registers has side effects.
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// `sti; hlt; cli`: STI's interrupt shadow (SDM Vol. 2B, STI) holds off interrupts until HLT has
/// started, so a wake-up interrupt cannot slip in between and leave the CPU halted for good.
pub fn sti_hlt_cli() {
    unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) };
}

/// Disable interrupts and halt for good.
pub fn halt_forever() -> ! {
    loop {
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
