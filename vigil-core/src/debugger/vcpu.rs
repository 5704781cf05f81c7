//! The debugger's view of a vCPU: registers through the [`Vcpu`] trait, memory through the
//! guest's page tables and only ever guest RAM, breakpoints and watchpoints as nested-paging
//! permissions and debug registers. The same code serves every backend.

use super::{AccessError, CpuRegs, GuestCpu, HwSlot, Info};
use crate::cpu::Cpu;
use crate::nested::Perms;
use crate::owners::IA32_TSC;
use crate::vcpu::{Host, Mode, Seg, Vcpu};
use core::fmt::{self, Write};
use x86_arch::paging::Access;
use x86_arch::regs::DR7_FIXED1;

/// gdb's register order (RAX, RBX, RCX, RDX, RSI, RDI, RBP, RSP, R8-R15) as architectural
/// numbers.
const GDB_ORDER: [u8; 16] = [0, 3, 1, 2, 6, 7, 5, 4, 8, 9, 10, 11, 12, 13, 14, 15];
/// gdb's segment order: CS, SS, DS, ES, FS, GS.
const SEGMENTS: [Seg; 6] = [Seg::Cs, Seg::Ss, Seg::Ds, Seg::Es, Seg::Fs, Seg::Gs];

impl<V: Vcpu> GuestCpu for Cpu<V> {
    fn regs(&self) -> CpuRegs {
        let v = &self.vcpu;
        let mut r = CpuRegs::default();
        for (slot, &i) in r.gpr.iter_mut().zip(GDB_ORDER.iter()) {
            *slot = v.gpr(i);
        }
        r.rip = v.rip();
        r.rflags = v.rflags();
        for (s, seg) in r.seg.iter_mut().zip(SEGMENTS) {
            *s = v.segment(seg).selector;
        }
        r.fs_base = v.segment(Seg::Fs).base;
        r.gs_base = v.segment(Seg::Gs).base;
        r.cs_base = v.segment(Seg::Cs).base;
        r
    }

    fn set_regs(&mut self, r: &CpuRegs) {
        let v = &mut self.vcpu;
        for (&value, &i) in r.gpr.iter().zip(GDB_ORDER.iter()) {
            v.set_gpr(i, value);
        }
        v.set_rip(r.rip);
        // Bit 1 is always 1, bits 3, 5, 15 and 22-63 always 0 (SDM Vol. 1 3.4.3); VM entry
        // checks them (SDM Vol. 3C 27.3.1.4).
        v.set_rflags((r.rflags & 0x3F_7FD5) | 2);
    }

    fn long_mode(&self) -> bool {
        self.vcpu.long_mode_64()
    }

    fn translate(&self, gva: u64) -> Result<u64, AccessError> {
        let gpa = self
            .vcpu
            .translate(gva, Access::READ)
            .map_err(|_| AccessError::Unmapped)?
            .gpa;
        if self.vcpu.read_phys(gpa, &mut [0u8]) {
            Ok(gpa)
        } else {
            Err(AccessError::NotRam)
        }
    }

    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool {
        self.vcpu.read_phys(gpa, buf)
    }

    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> bool {
        self.vcpu.write_phys(gpa, data)
    }

    /// The nested tables are shared: every other vCPU drops what it cached from them before
    /// it next enters the guest (this one's backend already did).
    fn set_page_perms(&mut self, page: u64, perms: Perms) -> bool {
        let changed = self.vcpu.set_page_perms(page, perms);
        if changed {
            self.nested_seen = self.vm.smp.nested_changed();
        }
        changed
    }

    fn exec_only(&self) -> bool {
        self.vcpu.exec_only_pages()
    }

    fn set_hw_slot(&mut self, slot: usize, use_: Option<HwSlot>) {
        let v = &mut self.vcpu;
        let mut dr7 = v.dr(7);
        let shift = 16 + 4 * slot;
        dr7 &= !(0b11 << (2 * slot)) & !(0xF << shift);
        if let Some(h) = use_ {
            v.set_dr(slot as u8, h.addr);
            // Ln (local enable) and the slot's R/W and LEN fields (SDM Vol. 3B 18.2.4).
            dr7 |= (1 << (2 * slot))
                | ((h.rw as u64 & 3) << shift)
                | ((h.len as u64 & 3) << (shift + 2));
        }
        v.set_dr(7, dr7 | DR7_FIXED1);
    }

    fn info(&mut self, what: Info, out: &mut dyn Write) -> fmt::Result {
        match what {
            Info::ControlRegs => {
                let v = &self.vcpu;
                writeln!(out, "cr0  {:#018x}", v.cr0())?;
                writeln!(out, "cr2  {:#018x}", v.cr2())?;
                writeln!(out, "cr3  {:#018x}", v.cr3())?;
                writeln!(out, "cr4  {:#018x}", v.cr4())?;
                writeln!(out, "efer {:#018x}", v.efer())?;
                writeln!(out, "dr7  {:#018x}", v.dr(7))?;
                let mode = match v.mode() {
                    Mode::Long64 => "64-bit",
                    Mode::Real => "real",
                    Mode::Virtual8086 => "virtual-8086",
                    Mode::Protected16 | Mode::Protected32 => "protected",
                };
                writeln!(out, "mode {mode} cpl {}", v.cpl())
            }
            Info::Msr(msr) => match self.guest_msr(msr) {
                Some(value) => writeln!(out, "msr {msr:#x} = {value:#018x}"),
                None => writeln!(out, "msr {msr:#x}: reading it raises #GP"),
            },
            Info::Vmcs => self.vcpu.dump(out),
            Info::Stats => self.stats.write_table(out, &crate::exit::kind_name),
            Info::Translate(gva) => self.describe_translation(gva, out),
            Info::Panic => panic!("monitor vigil-panic: a panic on request"),
        }
    }
}

impl<V: Vcpu> Cpu<V> {
    /// An MSR as the guest reads it: the switched ones from the vCPU, the TSC in guest units,
    /// the rest from the processor (shared with the guest).
    fn guest_msr(&mut self, msr: u32) -> Option<u64> {
        if msr == IA32_TSC {
            let now = self.vcpu.host().rdtsc();
            return Some(self.time.v.guest_at(now));
        }
        match self.vcpu.msr(msr) {
            Some(v) => Some(v),
            None => self.vcpu.host().rdmsr(msr),
        }
    }

    fn describe_translation(&self, gva: u64, out: &mut dyn Write) -> fmt::Result {
        let v = &self.vcpu;
        let regs = v.paging_regs();
        writeln!(
            out,
            "gva {gva:#x} ({:?} paging, cr3 {:#x})",
            regs.mode(),
            regs.cr3
        )?;
        match v.translate(gva, Access::READ) {
            Ok(t) => {
                writeln!(out, "  guest page tables: {t}")?;
                v.describe_gpa(t.gpa, out)
            }
            Err(fault) => writeln!(out, "  guest page tables: {fault}"),
        }
    }
}
