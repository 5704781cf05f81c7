//! Building the VMCB for one vCPU: the intercepts (those Vigil always needs, and the ones the
//! configuration asks for), the permission maps from the ownership table, nested paging and
//! the ASID, and the guest's initial state as its boot protocol defines it.

use super::switch::SvmRegs;
use super::vcpu::SvmVcpu;
use super::ExitState;
use crate::arch::regs;
use crate::mem::alloc_frames;
use alloc::format;
use alloc::string::String;
use core::cell::Cell;
use svm::caps::{Features, SvmCaps};
use svm::intercept::{self, msr as svm_msr, nested_control, tlb, Misc1, Misc2, EFER_SVME};
use svm::vmcb::{seg_fields, Attrib, Field, VmcbAccess, VmcbPtr};
use vigil::loader::EntryState;
use vigil_core::config::{Config, TscMode};
use vigil_core::cpu::Vm;
use vigil_core::owners::{MsrHandler, MsrRule, Owner, Owners, IA32_TSC_ADJUST};
use vigil_core::time::tsc::VirtualTsc;
use vigil_core::vcpu::{msr as m, Vcpu};
use x86_arch::regs::*;

const PAT_POWER_ON: u64 = 0x0007_0406_0007_0406;

/// The MSRs that belong to SVM, which is Vigil's: their entries in the ownership table.
pub static SVM_MSRS: [MsrRule; 2] = [
    MsrRule {
        msrs: m::IA32_EFER..=m::IA32_EFER,
        owner: Owner::Vigil,
        read: Some(MsrHandler::Vcpu),
        write: Some(MsrHandler::Vcpu),
        why: "EFER.SVME is Vigil's (VMRUN needs it in the guest): the guest reads it clear, \
              and setting it raises #GP as on a processor without SVM",
    },
    MsrRule {
        msrs: svm_msr::VM_CR..=svm_msr::SVM_KEY,
        owner: Owner::Vigil,
        read: Some(MsrHandler::Absent),
        write: Some(MsrHandler::Absent),
        why: "VM_CR, IGNNE, SMM_CTL, VM_HSAVE_PA and the SVM key: SVM is hidden, and SMM_CTL \
              would enter SMM, so they raise #GP as on a processor without SVM",
    },
];

/// Fills the MSR permission map (APM Vol. 2 15.11) from the ownership table: two pages, a read
/// and a write bit per MSR of the three ranges the map covers. Any other MSR always exits, and
/// the table serves it too.
fn msr_permission_map(owners: &Owners) -> Result<u64, String> {
    let pages = alloc_frames(2).ok_or("out of memory for the MSR permission map")?;
    // SAFETY: two fresh zeroed frames from Vigil's pool.
    let bits = unsafe { &mut *(pages as *mut [u8; intercept::msrpm::SIZE]) };
    for (first, _) in intercept::msrpm::RANGES {
        for msr in first..first + 0x2000 {
            for write in [false, true] {
                if owners.msrs.exits(msr, write) {
                    if let Some((byte, bit)) = intercept::msrpm::bit(msr, write) {
                        bits[byte] |= 1 << bit;
                    }
                }
            }
        }
    }
    crate::mem::protect(pages, pages + 2 * 4096);
    Ok(pages)
}

/// Fills the I/O permission map (15.10.1): three pages, a bit per port. The platform layer
/// moves a followed decoder's traps later (`SvmVcpu::refresh_io_traps`).
fn io_permission_map(owners: &Owners) -> Result<u64, String> {
    let pages = alloc_frames(3).ok_or("out of memory for the I/O permission map")?;
    // SAFETY: three fresh zeroed frames from Vigil's pool.
    let bits = unsafe { &mut *(pages as *mut [u8; intercept::iopm::SIZE]) };
    for port in owners.ports.trapped() {
        bits[port as usize / 8] |= 1 << (port % 8);
    }
    crate::mem::protect(pages, pages + 3 * 4096);
    Ok(pages)
}

/// The CR4 bits this processor implements, from CPUID (APM Vol. 2 3.1.3; each bit exists with
/// the feature it controls).
pub fn cr4_supported() -> u64 {
    let l1 = regs::cpuid(1, 0);
    let l7 = if regs::cpuid(0, 0)[0] >= 7 {
        regs::cpuid(7, 0)
    } else {
        [0; 4]
    };
    let mut cr4 = CR4_TSD | CR4_DE | CR4_PSE | CR4_PAE | CR4_MCE | CR4_PGE | CR4_PCE;
    for (present, bit) in [
        (l1[3] & (1 << 1) != 0, CR4_VME | CR4_PVI),
        (l1[3] & (1 << 24) != 0, CR4_OSFXSR),
        (l1[3] & (1 << 25) != 0, CR4_OSXMMEXCPT),
        (l1[2] & (1 << 17) != 0, CR4_PCIDE),
        (l1[2] & (1 << 26) != 0, CR4_OSXSAVE),
        (l7[1] & 1 != 0, CR4_FSGSBASE),
        (l7[1] & (1 << 7) != 0, CR4_SMEP),
        (l7[1] & (1 << 20) != 0, CR4_SMAP),
        (l7[2] & (1 << 2) != 0, CR4_UMIP),
        (l7[2] & (1 << 3) != 0, CR4_PKE),
        (l7[2] & (1 << 7) != 0, CR4_CET),
        (l7[2] & (1 << 16) != 0, CR4_LA57),
    ] {
        if present {
            cr4 |= bit;
        }
    }
    cr4
}

/// The intercepts every guest gets, and those the configuration adds (15.9-15.14).
fn intercepts(config: &Config) -> (Misc1, Misc2) {
    // CPUID (SVM hidden, CR4-dependent bits), the permission maps, shutdown (a triple fault is
    // reported, not a reset), INIT (a reset is Vigil's to see), INVD (it would drop the dirty
    // lines of Vigil's memory too: it runs as WBINVD).
    // INVLPGA is an SVM instruction too, with its intercept in this vector.
    let mut misc1 = Misc1::CPUID
        | Misc1::IOIO_PROT
        | Misc1::MSR_PROT
        | Misc1::SHUTDOWN
        | Misc1::INIT
        | Misc1::INVD
        | Misc1::INVLPGA;
    // The SVM instructions (#UD: SVM is hidden) and VMMCALL (hypercalls, else #UD).
    let mut misc2 = intercept::SVM_INSTRUCTIONS | Misc2::VMMCALL;
    let t = &config.trap;
    // Without a TSC ratio MSR in use, a scaled TSC is emulated: every read must exit. `hide`
    // repays what it hides by running the TSC fast (`vigil_core::time::debt`), and SVM has
    // neither the ratio MSR in use nor a timer to end repayment: its TSC is scaled in software
    // too (`Time::scaled_in_software`).
    let rdtsc = t.rdtsc || matches!(config.tsc, TscMode::Scale(..) | TscMode::Hide(_));
    for (on, bit) in [
        (rdtsc, Misc1::RDTSC),
        (t.hlt, Misc1::HLT),
        (t.invlpg, Misc1::INVLPG),
        (t.rdpmc, Misc1::RDPMC),
    ] {
        if on {
            misc1 |= bit;
        }
    }
    if rdtsc {
        misc2 |= Misc2::RDTSCP;
    }
    (misc1, misc2)
}

/// Creates the vCPU's VMCB and fills it in. Returns the vCPU and the guest's virtual TSC.
pub fn create_vcpu(
    caps: SvmCaps,
    vm: &'static Vm,
    entry: &EntryState,
    gdt: u64,
    ncr3: (u64, u64),
    cpu: &crate::percpu::PerCpu,
    host_vmcb: u64,
) -> Result<(SvmVcpu, VirtualTsc), String> {
    let config = &vm.config;
    let page = alloc_frames(1).ok_or("out of memory for the VMCB")?;
    // SAFETY: a fresh frame from Vigil's pool, identity-mapped, used only as this VMCB.
    let mut v = unsafe { VmcbPtr::new(page as *mut u8) };

    // Intercepts.
    let (misc1, misc2) = intercepts(config);
    v.write(Field::InterceptMisc1, misc1.bits() as u64);
    v.write(Field::InterceptMisc2, misc2.bits() as u64);
    v.write(Field::InterceptExceptions, config.trap.exceptions as u64);
    // CR intercepts exist per register and direction only: a trapped CR0 or CR4 bit makes every
    // write of that register exit (emulated as written, 15.9.1); CR3 loads and stores as asked.
    let mut cr_write = 0u64;
    let mut cr_read = 0u64;
    if config.trap.cr0_mask != 0 {
        cr_write |= 1 << 0;
    }
    if config.trap.cr4_mask != 0 {
        cr_write |= 1 << 4;
    }
    if config.trap.cr3_load {
        cr_write |= 1 << 3;
    }
    if config.trap.cr3_store {
        cr_read |= 1 << 3;
    }
    v.write(Field::InterceptCrRead, cr_read);
    v.write(Field::InterceptCrWrite, cr_write);
    if config.trap.mov_dr {
        v.write(Field::InterceptDrRead, 0xFF);
        v.write(Field::InterceptDrWrite, 0xFF);
    }
    v.write(Field::MsrpmBase, msr_permission_map(&vm.owners)?);
    v.write(Field::IopmBase, io_permission_map(&vm.owners)?);

    // Nested paging and the ASID: one per vCPU, never 0 (the host's, 15.16).
    let asid = 1 + cpu.id;
    if asid >= caps.asids {
        return Err(format!(
            "this processor has {} ASIDs, too few for vCPU {}",
            caps.asids, cpu.id
        ));
    }
    v.write(Field::GuestAsid, asid as u64);
    v.write(Field::TlbControl, tlb::ALL);
    v.write(Field::NestedControl, nested_control::NP_ENABLE);
    v.write(Field::NestedCr3, ncr3.0);

    // Time.
    let tsc_adjust_supported = regs::cpuid(0, 0)[0] >= 7 && regs::cpuid(7, 0)[1] & (1 << 1) != 0;
    let adjust = if tsc_adjust_supported {
        regs::rdmsr(IA32_TSC_ADJUST)
    } else {
        0
    };
    let vtsc = VirtualTsc::new(config.tsc, regs::rdtsc(), adjust);
    v.write(Field::TscOffset, vtsc.offset);

    // Guest state: 32-bit protected mode, flat segments, paging off (multiboot spec 3.2; the
    // Linux 32-bit boot protocol asks for the same).
    let code = Attrib::new(0xB, true, 0, true, false, false, true, true);
    let data = Attrib::new(0x3, true, 0, true, false, false, true, true);
    for n in 0..6u8 {
        let (sel, attrib) = if n == 1 { (0x10, code) } else { (0x18, data) };
        let f = seg_fields(n);
        v.write(f.selector, sel);
        v.write(f.attrib, attrib.0 as u64);
        v.write(f.limit, 0xFFFF_FFFF);
        v.write(f.base, 0);
    }
    // A busy 32-bit TSS and a null LDTR, as after a protected-mode start (SVM checks neither).
    let tr = seg_fields(7);
    v.write(
        tr.attrib,
        Attrib::new(0xB, false, 0, true, false, false, false, false).0 as u64,
    );
    v.write(tr.limit, 0xFFFF);
    v.write(Field::GdtrBase, gdt);
    v.write(Field::GdtrLimit, 0x1F);
    v.write(Field::IdtrLimit, 0x3FF);
    v.write(Field::Efer, EFER_SVME);
    v.write(Field::Cr0, CR0_PE | CR0_ET);
    v.write(Field::Dr6, DR6_FIXED1);
    v.write(Field::Dr7, DR7_FIXED1);
    v.write(Field::Rflags, RFLAGS_FIXED1);
    v.write(Field::Rip, entry.rip);
    v.write(Field::Rax, entry.rax);
    v.write(Field::GPat, PAT_POWER_ON);
    v.write(Field::Cpl, 0);

    let use_nrips = caps.has(Features::NRIPS) && !config.test_no_nrips;
    let mut regs = SvmRegs {
        vmcb: page,
        host_vmcb,
        ..Default::default()
    };
    regs.rbx = entry.rbx;
    regs.rsi = entry.rsi;
    let vcpu = SvmVcpu {
        regs,
        vmcb: v,
        caps,
        asid,
        ncr3: ncr3.0,
        ncr3_a20: ncr3.1,
        a20_open: true,
        npt_largest: super::npt::largest_page(),
        host: crate::host::HostCpu,
        exit: ExitState::default(),
        user_exceptions: config.trap.exceptions,
        phys_bits: (regs::cpuid(0x8000_0008, 0)[0] & 0xFF) as u8,
        cr4_supported: cr4_supported(),
        use_nrips,
        len: Cell::new(None),
        halt_at: None,
        halting: false,
        tlb_control: tlb::ALL,
        step_trap: false,
        deferred: None,
        round_trip: [0; 4],
        trap_hlt: config.trap.hlt,
        checked_state: None,
        // The first VMRUN runs a VMCB Vigil wrote entirely.
        checked_dirty: true,
        entered_with_tf: false,
        fetch_cache: Cell::new(Default::default()),
    };
    debug_assert!(vcpu.efer() == 0);
    Ok((vcpu, vtsc))
}
