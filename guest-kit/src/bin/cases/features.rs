//! Every instruction whose feature CPUID shows must execute: no #UD that CPUID does not explain.
//! Under VMX some instructions raise #UD unless the hypervisor enables them (SDM Vol. 3C 26.3),
//! so a hypervisor must enable them or hide the feature; others always exit and must be hidden
//! if the hypervisor refuses them (GETSEC). The case runs each shown feature's instruction once,
//! bare and under Vigil alike.

use core::arch::asm;
use guest_kit::cpu::{self, Cpuid};
use guest_kit::fault::{self, Caught, GP, UD};
use guest_kit::{fail, pass, Outcome};

const RDTSCP: &[u8] = &[0x0F, 0x01, 0xF9];
/// RDPID RAX (F3 0F C7 /7).
const RDPID_RAX: &[u8] = &[0xF3, 0x0F, 0xC7, 0xF8];
/// INVPCID RAX, [RDI] (66 0F 38 82 /r).
const INVPCID_RAX_RDI: &[u8] = &[0x66, 0x0F, 0x38, 0x82, 0x07];
/// XSAVES [RDI] (0F C7 /5) and XRSTORS [RDI] (0F C7 /3).
const XSAVES_RDI: &[u8] = &[0x0F, 0xC7, 0x2F];
const XRSTORS_RDI: &[u8] = &[0x0F, 0xC7, 0x1F];
/// UMONITOR RAX (F3 0F AE /6), UMWAIT ECX (F2 0F AE /6), TPAUSE ECX (66 0F AE /6).
const UMONITOR_RAX: &[u8] = &[0xF3, 0x0F, 0xAE, 0xF0];
const UMWAIT_ECX: &[u8] = &[0xF2, 0x0F, 0xAE, 0xF1];
const TPAUSE_ECX: &[u8] = &[0x66, 0x0F, 0xAE, 0xF1];
/// RDRAND RAX and RDSEED RAX (REX.W 0F C7 /6 and /7).
const RDRAND_RAX: &[u8] = &[0x48, 0x0F, 0xC7, 0xF0];
const RDSEED_RAX: &[u8] = &[0x48, 0x0F, 0xC7, 0xF8];
const PCONFIG: &[u8] = &[0x0F, 0x01, 0xC5];
const GETSEC: &[u8] = &[0x0F, 0x37];
/// RDMSRLIST (F2 0F 01 C6).
const RDMSRLIST: &[u8] = &[0xF2, 0x0F, 0x01, 0xC6];

const CR4_OSXSAVE: u64 = 1 << 18;
const CR4_SMXE: u64 = 1 << 14;

fn bit(r: u32, n: u32) -> bool {
    r & (1 << n) != 0
}

/// The XSAVES area: 64-byte aligned (SDM Vol. 1 13.4), large enough for every component Bochs
/// models.
#[repr(C, align(64))]
struct Area([u8; 12288]);
static mut AREA: Area = Area([0; 12288]);
static mut MONITORED: u64 = 0;

/// Runs `insn` through `f`; `allowed` is the mask of exceptions that still show the
/// instruction exists (such as #GP for an invalid operand).
fn runs(insn: &'static [u8], allowed: u32, f: impl FnOnce()) -> Result<(), Caught> {
    let ((), caught) = fault::expect_any((1 << UD) | allowed, insn, f);
    match caught {
        Some(c) if c.vector == UD || allowed & (1 << c.vector) == 0 => Err(c),
        _ => Ok(()),
    }
}

pub fn cpuid_features() -> Outcome {
    let leaf0 = cpu::cpuid(0, 0);
    let ext_max = cpu::cpuid(0x8000_0000, 0).eax;
    let none = Cpuid {
        eax: 0,
        ebx: 0,
        ecx: 0,
        edx: 0,
    };
    let leaf = |l: u32, s: u32| {
        let max = if l >= 0x8000_0000 { ext_max } else { leaf0.eax };
        if l <= max {
            cpu::cpuid(l, s)
        } else {
            none
        }
    };
    let (l1, l7, l7_1, ld1, le1) = (
        leaf(1, 0),
        leaf(7, 0),
        leaf(7, 1),
        leaf(0xD, 1),
        leaf(0x8000_0001, 0),
    );
    let mut shown = guest_kit::harness::Text::new();
    let mut count = 0;
    let mut note = |name: &str| {
        use core::fmt::Write;
        let _ = write!(shown, "{}{}", if count == 0 { "" } else { "," }, name);
        count += 1;
    };
    // SAFETY (for every block below): each instruction is run only when CPUID reports it, at
    // CPL 0 in 64-bit mode, with valid operands; the registers it writes are declared.
    type Check = (&'static str, bool, &'static [u8], u32, fn());
    let checks: [Check; 10] = [
        ("rdtscp", bit(le1.edx, 27), RDTSCP, 0, || unsafe {
            asm!(".byte 0x0f, 0x01, 0xf9", out("eax") _, out("edx") _, out("ecx") _, options(nostack));
        }),
        ("rdpid", bit(l7.ecx, 22), RDPID_RAX, 0, || unsafe {
            asm!(".byte 0xf3, 0x0f, 0xc7, 0xf8", out("rax") _, options(nostack));
        }),
        ("invpcid", bit(l7.ebx, 10), INVPCID_RAX_RDI, 0, || unsafe {
            // Type 2: every context, globals included; the descriptor is ignored but read.
            let descriptor = [0u64; 2];
            asm!(".byte 0x66, 0x0f, 0x38, 0x82, 0x07", in("rax") 2u64, in("rdi") descriptor.as_ptr(), options(nostack));
        }),
        ("rdrand", bit(l1.ecx, 30), RDRAND_RAX, 0, || unsafe {
            asm!(".byte 0x48, 0x0f, 0xc7, 0xf0", out("rax") _, options(nostack));
        }),
        ("rdseed", bit(l7.ebx, 18), RDSEED_RAX, 0, || unsafe {
            asm!(".byte 0x48, 0x0f, 0xc7, 0xf8", out("rax") _, options(nostack));
        }),
        ("umonitor", bit(l7.ecx, 5), UMONITOR_RAX, 0, || unsafe {
            asm!(".byte 0xf3, 0x0f, 0xae, 0xf0", in("rax") core::ptr::addr_of!(MONITORED), options(nostack));
        }),
        ("umwait", bit(l7.ecx, 5), UMWAIT_ECX, 0, || unsafe {
            let deadline = cpu::rdtsc() + 2000;
            asm!(".byte 0xf2, 0x0f, 0xae, 0xf1", in("ecx") 1u32, in("eax") deadline as u32, in("edx") (deadline >> 32) as u32, options(nostack));
        }),
        ("tpause", bit(l7.ecx, 5), TPAUSE_ECX, 0, || unsafe {
            let deadline = cpu::rdtsc() + 2000;
            asm!(".byte 0x66, 0x0f, 0xae, 0xf1", in("ecx") 1u32, in("eax") deadline as u32, in("edx") (deadline >> 32) as u32, options(nostack));
        }),
        // An invalid leaf: #GP(0) shows the instruction exists.
        ("pconfig", bit(l7.edx, 18), PCONFIG, 1 << GP, || unsafe {
            asm!("mov {save}, rbx", ".byte 0x0f, 0x01, 0xc5", "mov rbx, {save}", save = out(reg) _, inout("eax") u32::MAX => _, out("rcx") _, out("rdx") _, options(nostack));
        }),
        // With no MSRs in the list (RCX = 0) it does nothing.
        ("msrlist", bit(l7_1.eax, 27), RDMSRLIST, 0, || unsafe {
            asm!(".byte 0xf2, 0x0f, 0x01, 0xc6", in("rcx") 0u64, in("rsi") 0u64, in("rdi") 0u64, options(nostack));
        }),
    ];
    for (name, show, insn, allowed, f) in checks {
        if !show {
            continue;
        }
        note(name);
        if let Err(c) = runs(insn, allowed, f) {
            return fail!(
                "shown-but-faults feature={} vector={} rip={:#x}",
                name,
                c.vector,
                c.rip
            );
        }
    }
    // XSAVES and XRSTORS need CR4.OSXSAVE (SDM Vol. 1 13.3): on for the check, then as before.
    if bit(ld1.eax, 3) && bit(l1.ecx, 26) {
        note("xsaves");
        let cr4 = read_cr4();
        // SAFETY: the processor has XSAVE; XCR0 keeps its value (x87 at least, as after reset).
        unsafe { write_cr4(cr4 | CR4_OSXSAVE) };
        let xcr0 = xgetbv0();
        let area = core::ptr::addr_of_mut!(AREA) as *mut u8;
        let saved = runs(XSAVES_RDI, 0, || unsafe {
            asm!(".byte 0x0f, 0xc7, 0x2f", in("rdi") area, in("eax") xcr0 as u32, in("edx") (xcr0 >> 32) as u32, options(nostack));
        });
        let restored = saved.and_then(|()| {
            runs(XRSTORS_RDI, 0, || unsafe {
                asm!(".byte 0x0f, 0xc7, 0x1f", in("rdi") area, in("eax") xcr0 as u32, in("edx") (xcr0 >> 32) as u32, options(nostack));
            })
        });
        unsafe { write_cr4(cr4) };
        if let Err(c) = restored {
            return fail!(
                "shown-but-faults feature=xsaves vector={} rip={:#x}",
                c.vector,
                c.rip
            );
        }
    }
    // GETSEC needs CR4.SMXE (SDM Vol. 2D, GETSEC); CAPABILITIES (EAX = 0) only reports.
    if bit(l1.ecx, 6) {
        note("getsec");
        let cr4 = read_cr4();
        unsafe { write_cr4(cr4 | CR4_SMXE) };
        let r = runs(GETSEC, 0, || unsafe {
            asm!("mov {save}, rbx", "xor ebx, ebx", ".byte 0x0f, 0x37", "mov rbx, {save}", save = out(reg) _, inout("eax") 0u32 => _, out("ecx") _, out("edx") _, options(nostack));
        });
        unsafe { write_cr4(cr4) };
        if let Err(c) = r {
            return fail!(
                "shown-but-faults feature=getsec vector={} rip={:#x}",
                c.vector,
                c.rip
            );
        }
    }
    pass!("shown={} executed={}", shown, count)
}

fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// # Safety
/// Only bits the processor supports, for the duration of one check.
unsafe fn write_cr4(v: u64) {
    unsafe { asm!("mov cr4, {}", in(reg) v, options(nostack, preserves_flags)) };
}

fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: CR4.OSXSAVE is set by the caller.
    unsafe {
        asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack))
    };
    (hi as u64) << 32 | lo as u64
}
