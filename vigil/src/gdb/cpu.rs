//! The debugger's view of the real vCPU: registers from the saved GPRs and the VMCS, memory
//! through the guest's page tables (`x86_arch::paging`) and the EPT (`vmx::ept::walk`), always
//! checked against the guest's RAM (`vmm/guest_mem.rs`).

use crate::vmm::{guest_mem, Vcpu};
use core::arch::asm;
use core::fmt::{self, Write};
use vigil::loader::GuestMemory;
use vigil_core::debugger::{AccessError, CpuRegs, GuestCpu, HwSlot, Info};
use vigil_core::nested::Perms;
use vmx::ept::EptPerms;
use vmx::vmcs::{Field, VmcsAccess};
use x86_arch::paging::Access;

/// A handle on the vCPU the exit loop is handling. The debugger only runs inside the exit loop,
/// which owns the vCPU for the whole run; the pointer is set at every entry into the debugger.
pub struct VcpuCpu(pub *mut Vcpu);

impl VcpuCpu {
    fn v(&self) -> &Vcpu {
        // SAFETY: see the type: the exit loop's vCPU, alive and not otherwise borrowed while
        // the debugger runs.
        unsafe { &*self.0 }
    }
    fn m(&mut self) -> &mut Vcpu {
        // SAFETY: as above.
        unsafe { &mut *self.0 }
    }
}

/// gdb's register order (RAX, RBX, RCX, RDX, RSI, RDI, RBP, RSP, R8-R15) as VMX indices.
const GDB_ORDER: [u8; 16] = [0, 3, 1, 2, 6, 7, 5, 4, 8, 9, 10, 11, 12, 13, 14, 15];
const SELECTORS: [Field; 6] = [
    Field::GuestCsSelector,
    Field::GuestSsSelector,
    Field::GuestDsSelector,
    Field::GuestEsSelector,
    Field::GuestFsSelector,
    Field::GuestGsSelector,
];

impl GuestCpu for VcpuCpu {
    fn regs(&self) -> CpuRegs {
        let v = self.v();
        let mut r = CpuRegs::default();
        for (slot, &i) in r.gpr.iter_mut().zip(GDB_ORDER.iter()) {
            *slot = v.gpr(i);
        }
        r.rip = v.rip();
        r.rflags = v.rflags();
        for (s, f) in r.seg.iter_mut().zip(SELECTORS) {
            *s = v.vmcs.read(f) as u16;
        }
        r.fs_base = v.vmcs.read(Field::GuestFsBase);
        r.gs_base = v.vmcs.read(Field::GuestGsBase);
        r.cs_base = v.vmcs.read(Field::GuestCsBase);
        r
    }

    fn set_regs(&mut self, r: &CpuRegs) {
        let v = self.m();
        for (&value, &i) in r.gpr.iter().zip(GDB_ORDER.iter()) {
            v.set_gpr(i, value);
        }
        v.set_rip(r.rip);
        // Bit 1 is always 1, bits 3, 5, 15 and 22-63 always 0 (SDM Vol. 1 3.4.3); VM entry
        // checks them (SDM Vol. 3C 27.3.1.4).
        let flags = (r.rflags & 0x3F_7FD5) | 2;
        v.vmcs.write(Field::GuestRflags, flags);
    }

    fn long_mode(&self) -> bool {
        self.v().long_mode_64()
    }

    fn translate(&self, gva: u64) -> Result<u64, AccessError> {
        let gpa = self
            .v()
            .translate(gva, Access::READ)
            .map_err(|_| AccessError::Unmapped)?
            .gpa;
        if guest_mem::map().is_ram(gpa, gpa + 1) {
            Ok(gpa)
        } else {
            Err(AccessError::NotRam)
        }
    }

    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool {
        guest_mem::read(gpa, buf)
    }

    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> bool {
        guest_mem::Loader.write(gpa, data).is_ok()
    }

    fn set_page_perms(&mut self, page: u64, perms: Perms) -> bool {
        let v = self.v();
        let eptp = v.vmcs.read(Field::EptPointer);
        super::ept::set_page_perms(&v.caps, eptp, page, EptPerms::from_bits(perms.bits()))
    }

    fn exec_only(&self) -> bool {
        self.v().caps.ept_execute_only()
    }

    fn set_hw_slot(&mut self, slot: usize, use_: Option<HwSlot>) {
        let v = self.m();
        let mut dr7 = v.vmcs.read(Field::GuestDr7);
        let shift = 16 + 4 * slot;
        dr7 &= !(0b11 << (2 * slot)) & !(0xF << shift);
        if let Some(h) = use_ {
            write_dr(slot, h.addr);
            // Ln (local enable) and the slot's R/W and LEN fields (SDM Vol. 3B 18.2.4).
            dr7 |= (1 << (2 * slot))
                | ((h.rw as u64 & 3) << shift)
                | ((h.len as u64 & 3) << (shift + 2));
        }
        // Bit 10 reads as 1 (SDM Vol. 3B 18.2.4).
        v.vmcs.write(Field::GuestDr7, dr7 | 0x400);
    }

    fn info(&mut self, what: Info, out: &mut dyn Write) -> fmt::Result {
        let v = self.v();
        match what {
            Info::ControlRegs => {
                writeln!(out, "cr0  {:#018x}", v.guest_cr0())?;
                writeln!(out, "cr2  {:#018x}", cr2())?;
                writeln!(out, "cr3  {:#018x}", v.guest_cr3())?;
                writeln!(out, "cr4  {:#018x}", v.guest_cr4())?;
                writeln!(out, "efer {:#018x}", v.efer())?;
                writeln!(out, "dr7  {:#018x}", v.vmcs.read(Field::GuestDr7))?;
                writeln!(
                    out,
                    "mode {} cpl {}",
                    if v.long_mode_64() {
                        "64-bit"
                    } else if v.guest_cr0() & 1 != 0 {
                        "protected"
                    } else {
                        "real"
                    },
                    v.cpl()
                )
            }
            Info::Msr(msr) => match guest_msr(v, msr) {
                Some(value) => writeln!(out, "msr {msr:#x} = {value:#018x}"),
                None => writeln!(out, "msr {msr:#x}: reading it raises #GP"),
            },
            Info::Vmcs => vmx::vmcs::dump(&v.vmcs, out),
            Info::Stats => v.stats.write_table(out, &crate::vmm::reason_name),
            Info::Translate(gva) => describe_translation(v, gva, out),
            Info::Panic => panic!("monitor vigil-panic: a panic on request"),
        }
    }
}

/// An MSR as the guest reads it: the ones VMX switches from the VMCS, the TSC in guest units,
/// the rest from the processor (shared with the guest).
fn guest_msr(v: &Vcpu, msr: u32) -> Option<u64> {
    let field = match msr {
        0xC000_0080 => Field::GuestIa32Efer,
        0x277 => Field::GuestIa32Pat,
        0x174 => Field::GuestIa32SysenterCs,
        0x175 => Field::GuestIa32SysenterEsp,
        0x176 => Field::GuestIa32SysenterEip,
        0xC000_0100 => Field::GuestFsBase,
        0xC000_0101 => Field::GuestGsBase,
        0x1D9 => Field::GuestIa32Debugctl,
        0x10 => return Some(v.tsc.v.guest_at(crate::arch::regs::rdtsc())),
        _ => return crate::arch::safe::rdmsr_safe(msr),
    };
    Some(v.vmcs.read(field))
}

fn describe_translation(v: &Vcpu, gva: u64, out: &mut dyn Write) -> fmt::Result {
    let regs = v.paging_regs();
    writeln!(
        out,
        "gva {gva:#x} ({:?} paging, cr3 {:#x})",
        regs.mode(),
        regs.cr3
    )?;
    let gpa = match v.translate(gva, Access::READ) {
        Ok(t) => {
            writeln!(out, "  guest page tables: {t}")?;
            t.gpa
        }
        Err(fault) => return writeln!(out, "  guest page tables: {fault}"),
    };
    let eptp = v.vmcs.read(Field::EptPointer);
    // The EPT tables are Vigil's own memory, identity-mapped.
    let host_read = |phys: u64| -> Option<u64> {
        // SAFETY: the walker only reads entries of the tables the EPT pointer leads to.
        Some(unsafe { core::ptr::read_volatile(phys as *const u64) })
    };
    match vmx::ept::walk(&host_read, eptp, gpa) {
        Ok(t) => writeln!(out, "  EPT: gpa {gpa:#x} -> {t}"),
        Err(e) => writeln!(out, "  EPT: gpa {gpa:#x} {e}"),
    }
}

fn cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2; VMX does not switch it, so it holds the guest's value.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack)) };
    v
}

fn write_dr(slot: usize, v: u64) {
    // SAFETY: DR0-3 are not switched by VMX; DR7 (which arms them) is the guest's VMCS copy,
    // so an address written here can only fire in the guest.
    unsafe {
        match slot {
            0 => asm!("mov dr0, {}", in(reg) v, options(nomem, nostack)),
            1 => asm!("mov dr1, {}", in(reg) v, options(nomem, nostack)),
            2 => asm!("mov dr2, {}", in(reg) v, options(nomem, nostack)),
            _ => asm!("mov dr3, {}", in(reg) v, options(nomem, nostack)),
        }
    }
}
