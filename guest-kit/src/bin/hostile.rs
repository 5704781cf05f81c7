//! Hostile guest: operations aimed at the hypervisor's exit handlers. Each case prints
//! `hostile: about to <what>` first, so a run that dies shows what killed it.
//!
//! Most cases execute instructions that cause VM exits unconditionally (SDM Vol. 3C,
//! "Instructions That Cause VM Exits Unconditionally") and check that the guest sees exactly what
//! it would see bare; they pass bare too. `triple-fault` ends the machine and runs only when
//! named: `case=triple-fault`.

#![no_std]
#![no_main]

use core::arch::asm;
use guest_kit::fault::{self, Caught};
use guest_kit::{cpu, fail, harness, interrupts, pass, println, skip, BootInfo, Case, Outcome};

guest_kit::entry!(main);

#[path = "hostile/a20.rs"]
mod a20;
#[path = "hostile/apic.rs"]
mod apic;
#[path = "hostile/dma.rs"]
mod dma;
#[path = "hostile/io.rs"]
mod io;
#[path = "hostile/msr.rs"]
mod msr;
#[path = "hostile/nmi.rs"]
mod nmi;
#[path = "hostile/pci.rs"]
mod pci;
#[path = "hostile/ports.rs"]
mod ports;
#[path = "hostile/reset.rs"]
mod reset;
#[path = "hostile/smm.rs"]
mod smm;

static CASES: &[Case] = &[
    Case::new("vmx-insn", vmx_insn),
    Case::new("svm-insn", svm_insn),
    Case::new("xsetbv-invalid", xsetbv_invalid),
    Case::new("msr-absent", msr_absent),
    Case::new("invd", invd),
    Case::new("ud2", ud2),
    Case::explicit("triple-fault", triple_fault),
    // Platform attacks (issue classes; docs/security.md). Each finds Vigil's ranges itself, from
    // the holes of its memory map confirmed by a probe; hypercalls stay off.
    Case::new("a20-port92-read", || a20::attack(a20::Gate::Port92, false)),
    Case::new("a20-port92-write", || a20::attack(a20::Gate::Port92, true)),
    Case::new("a20-kbc-d1-read", || {
        a20::attack(a20::Gate::KbcOutputPort, false)
    }),
    Case::new("a20-kbc-d1-write", || {
        a20::attack(a20::Gate::KbcOutputPort, true)
    }),
    Case::new("a20-kbc-dd-read", || a20::attack(a20::Gate::KbcDdDf, false)),
    Case::new("a20-kbc-dd-write", || a20::attack(a20::Gate::KbcDdDf, true)),
    Case::new("port-2f7-word", ports::word_2f7),
    Case::new("port-2f5-dword", ports::dword_2f5),
    Case::new("port-88ff-word", || ports::shutdown_word(0x88FF)),
    Case::new("port-8fff-word", || ports::shutdown_word(0x8FFF)),
    Case::new("msr-ds-area", || msr::points_at(0x600, 0)),
    Case::new("msr-rtit-output-base", || msr::points_at(0x560, 0)),
    Case::new("msr-mtrr-physbase0", || msr::points_at(0x200, 0)),
    Case::new("msr-smrr-physbase", || msr::points_at(0x1F2, 6)),
    Case::new("msr-sysenter-esp", || msr::non_canonical(0x175)),
    Case::new("msr-sysenter-eip", || msr::non_canonical(0x176)),
    Case::new("msr-fs-base", || msr::non_canonical(0xC000_0100)),
    Case::new("msr-gs-base", || msr::non_canonical(0xC000_0101)),
    Case::new("msr-kernel-gs-base", || msr::non_canonical(0xC000_0102)),
    Case::new("msr-feature-control", msr::feature_control),
    Case::new("msr-vmx-capabilities", msr::vmx_capabilities),
    Case::new("pci-smram-open-byte", || pci::smram_open(pci::Width::Byte)),
    Case::new("pci-smram-open-word", || pci::smram_open(pci::Width::Word)),
    Case::new("pci-smram-open-dword", || {
        pci::smram_open(pci::Width::Dword)
    }),
    Case::new("pci-ide-bm-bar", || {
        pci::move_decoder(io::IDE, 0x20, 16, "ide-bar4")
    }),
    Case::new("pci-pm-base", || {
        pci::move_decoder(io::PM, 0x40, 64, "pm-base")
    }),
    Case::new("pci-smbus-base", || {
        pci::move_decoder(io::PM, 0x90, 16, "smbus-base")
    }),
    Case::new("apic-over-vigil", || apic::relocate(1, false)),
    Case::new("smi-apm", || smm::attack(smm::Trigger::Apm)),
    Case::new("smi-ipi", || smm::attack(smm::Trigger::Ipi)),
    Case::new("dma-prd-into-vigil", dma::prd_into_vigil),
    Case::new("dma-prd-changed-after-start", dma::prd_changed_after_start),
    Case::new("dma-prd-table-in-vigil", dma::prd_table_in_vigil),
    Case::new("dma-bus-master-enable", dma::bus_master_enable),
    Case::new("dma-uhci-schedule", dma::uhci_schedule),
    // These two leave the APIC in x2APIC mode (Bochs cannot enable it again after the
    // disable that leaving x2APIC needs): last.
    Case::new("x2apic-over-vigil", || apic::relocate(1, true)),
    Case::new("smi-ipi-x2apic", || smm::attack(smm::Trigger::X2apicIpi)),
    // Attacks that may end the machine or take Vigil down: one scenario each.
    Case::explicit("apic-over-vigil-pages", || apic::relocate(8, false)),
    Case::explicit("msr-misc-enable-xd", msr::misc_enable_xd),
    Case::explicit("msr-efer-reserved", || {
        msr::reserved_value(0xC000_0080, 1 << 1)
    }),
    Case::explicit("msr-pat-reserved", || msr::reserved_value(0x277, 2)),
    Case::explicit("nmi-around-exits", nmi::self_ipi_loop),
    Case::explicit("reset-cf9-soft", || reset::reset(reset::Method::Cf9Soft)),
    Case::explicit("reset-cf9-hard", || reset::reset(reset::Method::Cf9Hard)),
    Case::explicit("reset-port92", || reset::reset(reset::Method::Port92)),
    Case::explicit("reset-kbc-pulse", || reset::reset(reset::Method::KbcPulse)),
    Case::explicit("reset-kbc-output-port", || {
        reset::reset(reset::Method::KbcOutputPort)
    }),
    Case::explicit("sleep-s3", || reset::reset(reset::Method::SleepS3)),
    Case::explicit("sleep-moved-pm-s5", || {
        reset::reset(reset::Method::MovedPmS5)
    }),
];

/// Print `hostile: about to <what>` and wait until it has left the UART: the next instruction
/// may end the machine, and Bochs models the baud rate.
macro_rules! about {
    ($($arg:tt)*) => {{
        println!("hostile: about to {}", format_args!($($arg)*));
        guest_kit::serial::flush();
    }};
}

fn main(boot: &'static BootInfo) -> ! {
    // A reset case whose BIOS booted the whole machine again instead of taking the warm-boot
    // vector: report that and stop, rather than resetting forever.
    if reset::booted_again() {
        harness::finish()
    }
    // The memory map this guest was given: the emulator-side oracle checks that Vigil's image,
    // which it finds through the emulator, lies outside every usable region.
    if let Some(map) = boot.memory_map() {
        for r in map.filter(|r| r.available()) {
            println!("hostile: memory map: usable [{:#x}-{:#x})", r.base, r.end());
        }
    }
    harness::run(CASES, boot)
}

/// An instruction given by its exact bytes, run with RAX and RCX set.
struct Probe {
    name: &'static str,
    bytes: &'static [u8],
    run: fn(u64, u64),
}

/// A probe whose bytes are emitted verbatim, so the fault handler can match them exactly.
macro_rules! probe {
    ($name:literal, [$($b:literal),+]) => {{
        fn run(rax: u64, rcx: u64) {
            unsafe {
                asm!(
                    $(concat!(".byte ", stringify!($b))),+,
                    inout("rax") rax => _,
                    inout("rcx") rcx => _,
                    options(nostack)
                )
            }
        }
        Probe { name: $name, bytes: &[$($b),+], run }
    }};
}

/// VMX instructions with RAX = a 4 KiB-aligned zeroed page and RCX = a zeroed 16-byte
/// descriptor as memory operands; ModRM 0x30/0x38 = [rax], 0xC8 = rax,rcx, 0x01 = rax,[rcx].
static VMX_PROBES: &[Probe] = &[
    probe!("vmxon", [0xF3, 0x0F, 0xC7, 0x30]),
    probe!("vmclear", [0x66, 0x0F, 0xC7, 0x30]),
    probe!("vmptrld", [0x0F, 0xC7, 0x30]),
    probe!("vmptrst", [0x0F, 0xC7, 0x38]),
    probe!("vmread", [0x0F, 0x78, 0xC8]),
    probe!("vmwrite", [0x0F, 0x79, 0xC8]),
    probe!("vmlaunch", [0x0F, 0x01, 0xC2]),
    probe!("vmresume", [0x0F, 0x01, 0xC3]),
    probe!("vmxoff", [0x0F, 0x01, 0xC4]),
    probe!("invept", [0x66, 0x0F, 0x38, 0x80, 0x01]),
    probe!("invvpid", [0x66, 0x0F, 0x38, 0x81, 0x01]),
    probe!("vmfunc", [0x0F, 0x01, 0xD4]),
];

/// The SVM instructions (APM Vol. 3), with RAX = a 4 KiB-aligned zeroed page (VMRUN, VMLOAD,
/// VMSAVE take it as a VMCB address, INVLPGA as a linear address, VMMCALL as a function number
/// that is not one of Vigil's) and ECX = 0 (INVLPGA's ASID).
static SVM_PROBES: &[Probe] = &[
    probe!("vmrun", [0x0F, 0x01, 0xD8]),
    probe!("vmmcall", [0x0F, 0x01, 0xD9]),
    probe!("vmload", [0x0F, 0x01, 0xDA]),
    probe!("vmsave", [0x0F, 0x01, 0xDB]),
    probe!("stgi", [0x0F, 0x01, 0xDC]),
    probe!("clgi", [0x0F, 0x01, 0xDD]),
    probe!("skinit", [0x0F, 0x01, 0xDE]),
    probe!("invlpga", [0x0F, 0x01, 0xDF]),
];

#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut SCRATCH_PAGE: Page = Page([0; 4096]);

/// Every VMX instruction raises #UD: bare because CR4.VMXE is clear / the processor is not in
/// VMX operation (SDM Vol. 3C, "VMX Instruction Reference", each instruction's "IF (not in VMX operation) ... #UD"),
/// under Vigil because it must not let the guest see VMX (each of these exits unconditionally;
/// VMFUNC exits for a function that is not enabled, SDM Vol. 3C, "VM Functions").
fn vmx_insn() -> Outcome {
    about!(
        "execute {} VMX instructions, each expecting #UD",
        VMX_PROBES.len()
    );
    let page = core::ptr::addr_of_mut!(SCRATCH_PAGE) as u64;
    // The descriptor for INVEPT/INVVPID sits in the same zeroed page.
    let descriptor = page + 2048;
    for probe in VMX_PROBES {
        let ((), caught) = fault::expect(fault::UD, probe.bytes, || (probe.run)(page, descriptor));
        match caught {
            Some(Caught {
                vector: fault::UD, ..
            }) => {}
            Some(c) => return fail!("wrong-exception insn={} vector={}", probe.name, c.vector),
            None => return fail!("no-ud insn={}", probe.name),
        }
    }
    pass!("ud={}", VMX_PROBES.len())
}

/// Every SVM instruction raises #UD: bare because EFER.SVME is clear (APM Vol. 3, each
/// instruction's exceptions; an Intel processor has none of them), under Vigil because SVM is
/// hidden from the guest (its VMCB has EFER.SVME set, so Vigil must intercept every one).
fn svm_insn() -> Outcome {
    about!(
        "execute {} SVM instructions, each expecting #UD",
        SVM_PROBES.len()
    );
    let page = core::ptr::addr_of_mut!(SCRATCH_PAGE) as u64;
    for probe in SVM_PROBES {
        let ((), caught) = fault::expect(fault::UD, probe.bytes, || (probe.run)(page, 0));
        match caught {
            Some(Caught {
                vector: fault::UD, ..
            }) => {}
            Some(c) => return fail!("wrong-exception insn={} vector={}", probe.name, c.vector),
            None => return fail!("no-ud insn={}", probe.name),
        }
    }
    pass!("ud={}", SVM_PROBES.len())
}

/// XSETBV exits unconditionally, so the hypervisor sees every value the guest tries. Invalid
/// ones must come back as #GP in the guest (SDM Vol. 2C, XSETBV: clearing XCR0 bit 0, or
/// ECX naming an unsupported XCR, is #GP(0)) and not be attempted by the hypervisor itself.
fn xsetbv_invalid() -> Outcome {
    // CPUID.1:ECX.XSAVE[bit 26].
    if cpu::cpuid(1, 0).ecx & (1 << 26) == 0 {
        return skip!("no-xsave");
    }
    about!("set CR4.OSXSAVE and write invalid values with xsetbv, expecting #GP");
    const CR4_OSXSAVE: u64 = 1 << 18;
    let cr4: u64;
    unsafe {
        asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags));
        asm!("mov cr4, {}", in(reg) cr4 | CR4_OSXSAVE, options(nostack, preserves_flags));
    }
    let xcr0 = xgetbv(0);
    let attempts: [(u32, u64); 3] = [(0, 0), (0, xcr0 & !1), (0x1234, xcr0)];
    let mut outcome = None;
    for (xcr, value) in attempts {
        if let Some(bad) = xsetbv(xcr, value) {
            outcome = Some(fail!(
                "no-gp xcr={:#x} value={:#x} vector={:?}",
                xcr,
                value,
                bad
            ));
            break;
        }
    }
    // Writing back the value it already has must work and leave it unchanged.
    let ((), rewrite) = fault::expect(fault::GP, XSETBV, || unsafe { raw_xsetbv(0, xcr0) });
    let after = xgetbv(0);
    unsafe { asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags)) };
    if let Some(outcome) = outcome {
        return outcome;
    }
    if let Some(c) = rewrite {
        return fail!("valid-write-faulted xcr0={:#x} vector={}", xcr0, c.vector);
    }
    if after != xcr0 {
        return fail!("xcr0-changed before={:#x} after={:#x}", xcr0, after);
    }
    pass!("xcr0={:#x} rejected={}", xcr0, attempts.len())
}

/// XSETBV = 0F 01 D1.
const XSETBV: &[u8] = &[0x0F, 0x01, 0xD1];

fn xgetbv(xcr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    unsafe {
        asm!("xgetbv", in("ecx") xcr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

unsafe fn raw_xsetbv(xcr: u32, value: u64) {
    unsafe {
        asm!(".byte 0x0F, 0x01, 0xD1", in("ecx") xcr, in("eax") value as u32, in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags))
    };
}

/// `None` if XSETBV raised #GP as it must; otherwise what happened instead (`Some(None)` = no
/// fault at all).
fn xsetbv(xcr: u32, value: u64) -> Option<Option<u8>> {
    let ((), caught) = fault::expect(fault::GP, XSETBV, || unsafe { raw_xsetbv(xcr, value) });
    match caught {
        Some(Caught {
            vector: fault::GP, ..
        }) => None,
        other => Some(other.map(|c| c.vector)),
    }
}

/// MSRs the processor does not implement raise #GP on RDMSR and WRMSR (SDM Vol. 2B, RDMSR:
/// "#GP(0) if the value in ECX specifies a reserved or unimplemented MSR address"). MSRs outside
/// the MSR-bitmap ranges always exit (SDM Vol. 3C, "Instructions That Cause VM Exits Conditionally", RDMSR/WRMSR), so the hypervisor must answer these
/// itself rather than execute them in the host.
///
/// Bochs by default (`cpu: ignore_bad_msrs=1`) reads unknown MSRs as 0 and drops writes instead
/// of raising #GP, so both answers are accepted; any other exception, or a read that is not 0
/// after a write was dropped, fails. The counts show which behaviour was seen.
fn msr_absent() -> Outcome {
    const ABSENT: [u32; 3] = [0x4000_0000, 0x8000_0000, 0xC001_1029];
    about!(
        "read and write {} unimplemented MSRs, expecting #GP",
        ABSENT.len()
    );
    let (mut gp, mut ignored) = (0u32, 0u32);
    for msr in ABSENT {
        match fault::try_rdmsr(msr) {
            Err(Caught {
                vector: fault::GP, ..
            }) => gp += 1,
            Err(c) => return fail!("rdmsr-wrong-exception msr={:#x} vector={}", msr, c.vector),
            Ok(0) => ignored += 1,
            Ok(v) => return fail!("rdmsr-returned msr={:#x} value={:#x}", msr, v),
        }
        match unsafe { fault::try_wrmsr(msr, 0x5A) } {
            Err(Caught {
                vector: fault::GP, ..
            }) => gp += 1,
            Err(c) => return fail!("wrmsr-wrong-exception msr={:#x} vector={}", msr, c.vector),
            Ok(()) => match fault::try_rdmsr(msr) {
                Ok(0)
                | Err(Caught {
                    vector: fault::GP, ..
                }) => ignored += 1,
                Ok(v) => return fail!("wrmsr-stored msr={:#x} value={:#x}", msr, v),
                Err(c) => return fail!("rdmsr-wrong-exception msr={:#x} vector={}", msr, c.vector),
            },
        }
    }
    pass!("msrs={} gp={} ignored={}", ABSENT.len(), gp, ignored)
}

/// INVD exits unconditionally (SDM Vol. 3C, "Instructions That Cause VM Exits
/// Unconditionally"); the guest expects it to simply complete.
/// WBINVD first, so that on hardware with write-back caches nothing dirty is thrown away.
fn invd() -> Outcome {
    about!("execute wbinvd; invd");
    unsafe { asm!("wbinvd", "invd", options(nostack, preserves_flags)) };
    pass!()
}

/// UD2 raises #UD (SDM Vol. 2B, UD). A hypervisor that intercepts #UD for its own purposes
/// (exception bitmap bit 6, SDM Vol. 3C, "Exception Bitmap") must reflect it to the guest's own handler.
fn ud2() -> Outcome {
    about!("execute ud2, expecting #UD in the guest's handler");
    let ((), caught) = fault::expect(fault::UD, &[0x0F, 0x0B], || unsafe {
        asm!("ud2", options(nomem, nostack))
    });
    match caught {
        Some(Caught {
            vector: fault::UD,
            rip,
            ..
        }) => pass!("rip={:#x}", rip),
        Some(c) => fail!("wrong-exception vector={}", c.vector),
        None => fail!("no-ud"),
    }
}

/// Load an empty IDT and raise #BP: delivering it faults (#GP, limit), delivering that #GP
/// faults, which is a #DF; delivering the #DF faults too, and that is a triple fault and a
/// shutdown (SDM Vol. 3A, "Interrupt 8 — Double Fault Exception"). Under Vigil this is a
/// VM exit with basic reason 2 (SDM Vol. 3C, "Other Causes of VM Exits" and appendix "VMX Basic Exit Reasons"), which it must report and end
/// cleanly on. Bare, Bochs resets the machine.
fn triple_fault() -> Outcome {
    about!("load an empty IDT and execute int3 (triple fault)");
    unsafe {
        interrupts::load(0, 0);
        asm!("int3", options(nomem, nostack));
    }
    fail!("survived-triple-fault")
}
