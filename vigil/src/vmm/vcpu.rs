//! One virtual CPU: its VMCS, its saved registers and the state Vigil keeps about it. The
//! accessors hide where each piece of guest state lives (VMCS field, saved register, read
//! shadow), so exit handlers never see VMCS encodings.

use super::switch::GuestRegs;
use alloc::boxed::Box;
use vigil_core::config::Config;
use vigil_core::stats::ExitStats;
use vigil_core::time::tsc::VirtualTsc;
use vmx::caps::{EntryControls, VmxCaps};
use vmx::regs::*;
use vmx::vmcs::{Field, RealVmcs, VmcsAccess};

/// The guest's view of its time-stamp counter.
#[derive(Debug)]
pub struct TscState {
    pub v: VirtualTsc,
    /// The last value Vigil's RDTSC/RDTSCP emulation returned (for the confirm-tsc hypercall).
    pub last_emulated: Option<u64>,
    /// The host TSC value the guest's deadline was last programmed for (0: none).
    pub deadline_host: u64,
}

pub struct Vcpu {
    /// Index of the vCPU (also the source of its VPID).
    pub id: u32,
    pub regs: GuestRegs,
    pub vmcs: RealVmcs,
    pub caps: VmxCaps,
    pub vpid: u16,
    pub config: &'static Config,
    pub stats: Box<ExitStats>,
    pub tsc: TscState,
    /// Bytes written so far to the emulator's shutdown port, matched against "Shutdown".
    pub shutdown_progress: usize,
    /// The ACPI PM1a control port, whose SLP_EN write means "power off" (from the FADT).
    pub pm1a_control: Option<u16>,
    /// Basic reason and qualification of the exit being handled, for reports.
    pub exit_reason: u16,
    pub exit_qualification: u64,
}

impl Vcpu {
    pub fn rip(&self) -> u64 {
        self.vmcs.read(Field::GuestRip)
    }

    pub fn set_rip(&mut self, rip: u64) {
        self.vmcs.write(Field::GuestRip, rip);
    }

    pub fn rflags(&self) -> u64 {
        self.vmcs.read(Field::GuestRflags)
    }

    /// Length of the instruction that caused the exit (valid for instruction exits).
    pub fn instruction_length(&self) -> u64 {
        self.vmcs.read(Field::VmExitInstructionLength)
    }

    /// General-purpose register by its architectural number (0 = RAX ... 15 = R15).
    pub fn gpr(&self, index: u8) -> u64 {
        if index == 4 {
            self.vmcs.read(Field::GuestRsp)
        } else {
            self.regs.get(index)
        }
    }

    pub fn set_gpr(&mut self, index: u8, value: u64) {
        if index == 4 {
            self.vmcs.write(Field::GuestRsp, value);
        } else {
            self.regs.set(index, value);
        }
    }

    /// Writes a 32-bit result the way the CPU does in 64-bit mode: the upper half is zeroed
    /// (SDM Vol. 1 3.4.1.1), which is also harmless outside 64-bit mode.
    pub fn set_gpr32(&mut self, index: u8, value: u32) {
        self.set_gpr(index, value as u64);
    }

    /// CR0 as the guest sees it: bits owned by Vigil (the guest/host mask) come from the read
    /// shadow (SDM Vol. 3C 26.3).
    pub fn guest_cr0(&self) -> u64 {
        let mask = self.vmcs.read(Field::Cr0GuestHostMask);
        (self.vmcs.read(Field::GuestCr0) & !mask) | (self.vmcs.read(Field::Cr0ReadShadow) & mask)
    }

    pub fn guest_cr4(&self) -> u64 {
        let mask = self.vmcs.read(Field::Cr4GuestHostMask);
        (self.vmcs.read(Field::GuestCr4) & !mask) | (self.vmcs.read(Field::Cr4ReadShadow) & mask)
    }

    pub fn efer(&self) -> u64 {
        self.vmcs.read(Field::GuestIa32Efer)
    }

    /// The current privilege level: SS.DPL (SDM Vol. 3A 5.5; VM entry keeps it in SS access
    /// rights, 27.3.1.2).
    pub fn cpl(&self) -> u8 {
        ((self.vmcs.read(Field::GuestSsAccessRights) >> 5) & 3) as u8
    }

    /// True in 64-bit mode (IA-32e mode with CS.L = 1).
    pub fn long_mode_64(&self) -> bool {
        let ia32e = self.vmcs.read(Field::EntryControls)
            & EntryControls::IA32E_MODE_GUEST.bits() as u64
            != 0;
        ia32e && self.vmcs.read(Field::GuestCsAccessRights) & (1 << 13) != 0
    }

    /// EDX:EAX as one 64-bit value (RDMSR/WRMSR/XSETBV operands).
    pub fn edx_eax(&self) -> u64 {
        (self.regs.rdx << 32) | (self.regs.rax & 0xFFFF_FFFF)
    }

    pub fn set_edx_eax(&mut self, value: u64) {
        self.regs.rax = value & 0xFFFF_FFFF;
        self.regs.rdx = value >> 32;
    }

    /// Whether the guest's paging is on, so linear addresses need a page walk.
    pub fn paging(&self) -> bool {
        self.guest_cr0() & CR0_PG != 0
    }
}

/// Control-register, mode and TLB side effects of emulated guest writes.
impl Vcpu {
    pub fn guest_cr3(&self) -> u64 {
        self.vmcs.read(Field::GuestCr3)
    }

    /// Bits of CR0 VMX forces to 1 (FIXED0), except PE and PG which unrestricted guests may
    /// clear (SDM Vol. 3C 27.3.1.1).
    fn cr0_forced(&self) -> u64 {
        let mut forced = self.caps.cr0_fixed0;
        if self.unrestricted() {
            forced &= !(CR0_PE | CR0_PG);
        }
        forced
    }

    pub fn unrestricted(&self) -> bool {
        self.vmcs.read(Field::SecondaryProcBasedControls)
            & vmx::caps::SecondaryProcBased::UNRESTRICTED_GUEST.bits() as u64
            != 0
    }

    /// Sets CR0 as the guest asked: the guest's value goes to the read shadow, the real
    /// register gets the bits VMX requires.
    pub fn set_guest_cr0(&mut self, value: u64) {
        self.vmcs.write(Field::Cr0ReadShadow, value);
        self.vmcs.write(
            Field::GuestCr0,
            (value | self.cr0_forced()) & self.caps.cr0_fixed1,
        );
    }

    pub fn set_guest_cr4(&mut self, value: u64) {
        self.vmcs.write(Field::Cr4ReadShadow, value);
        self.vmcs.write(
            Field::GuestCr4,
            (value | self.caps.cr4_fixed0) & self.caps.cr4_fixed1,
        );
    }

    pub fn set_guest_cr3(&mut self, value: u64) {
        self.vmcs.write(Field::GuestCr3, value);
    }

    /// CR4 bits a guest may set: what the processor supports, less VMXE and SMXE, which belong
    /// to features hidden from the guest.
    pub fn guest_cr4_supported(&self) -> u64 {
        self.caps.cr4_fixed1 & !(CR4_VMXE | CR4_SMXE)
    }

    /// Enters or leaves IA-32e mode after an emulated CR0.PG change with EFER.LME set: EFER.LMA
    /// and the "IA-32e mode guest" entry control must agree (SDM Vol. 3C 27.3.1.1).
    pub fn set_long_mode_active(&mut self, active: bool) {
        let efer = self.efer();
        let bit = EntryControls::IA32E_MODE_GUEST.bits() as u64;
        let entry = self.vmcs.read(Field::EntryControls);
        if active {
            self.vmcs.write(Field::GuestIa32Efer, efer | EFER_LMA);
            self.vmcs.write(Field::EntryControls, entry | bit);
        } else {
            self.vmcs.write(Field::GuestIa32Efer, efer & !EFER_LMA);
            self.vmcs.write(Field::EntryControls, entry & !bit);
        }
    }

    /// Drops the guest's cached linear translations, as the emulated instruction would have on
    /// bare metal. With VPID the entries survive VM exits, so they must be invalidated by VPID
    /// (SDM Vol. 3C 29.4.3); without VPID every VM entry already flushes them.
    pub fn flush_guest_tlb(&mut self) {
        use vmx::ept::{invvpid, InvvpidType};
        if self.vpid != 0 {
            let kind = if self.caps.invvpid_single() {
                InvvpidType::SingleContext
            } else {
                InvvpidType::AllContext
            };
            // Only fails if the type is unsupported, which the capability check rules out.
            let _ = invvpid(kind, self.vpid, 0);
        }
    }

    /// Drops the guest's cached translation of one linear address (INVVPID type 0), or its whole
    /// context where the processor lacks that type.
    pub fn flush_guest_address(&mut self, address: u64) {
        use vmx::ept::{invvpid, InvvpidType};
        if self.vpid == 0 {
            return;
        }
        if self.caps.invvpid_individual_address() {
            // Fails only for a non-canonical address, which INVLPG treats as a no-op too.
            let _ = invvpid(InvvpidType::IndividualAddress, self.vpid, address);
        } else {
            self.flush_guest_tlb();
        }
    }

    /// With PAE paging outside IA-32e mode and EPT on, VM entry takes the four PDPTEs from the
    /// VMCS, not from memory (SDM Vol. 3C 27.3.2.4), so an emulated CR write must load them as
    /// the processor would have (SDM Vol. 3A 5.4.1).
    pub fn load_pdptes_if_pae(&mut self) {
        let pae = self.guest_cr0() & CR0_PG != 0
            && self.guest_cr4() & CR4_PAE != 0
            && self.efer() & EFER_LMA == 0;
        if !pae {
            return;
        }
        let base = self.guest_cr3() & 0xFFFF_FFE0;
        let fields = [
            Field::GuestPdpte0,
            Field::GuestPdpte1,
            Field::GuestPdpte2,
            Field::GuestPdpte3,
        ];
        for (i, field) in fields.into_iter().enumerate() {
            let entry = super::guest_mem::read_u64(base + 8 * i as u64).unwrap_or(0);
            self.vmcs.write(field, entry);
        }
    }

    /// The registers a guest page walk depends on, as the guest sees them.
    pub fn paging_regs(&self) -> x86_arch::paging::PagingRegs {
        x86_arch::paging::PagingRegs {
            cr0: self.guest_cr0(),
            cr3: self.guest_cr3(),
            cr4: self.guest_cr4(),
            efer: self.efer(),
            phys_addr_width: self.max_phys_bits() as u8,
        }
    }

    /// Guest-linear to guest-physical, as the guest's own access would translate
    /// (`x86_arch::paging`), reading its page tables through checked guest-physical reads.
    pub fn translate(
        &self,
        linear: u64,
        access: x86_arch::paging::Access,
    ) -> Result<x86_arch::paging::GuestTranslation, x86_arch::paging::PageFault> {
        x86_arch::paging::translate(
            &super::guest_mem::read_u64,
            &self.paging_regs(),
            linear,
            access,
        )
    }

    /// Sets the guest's CR2, which VMX does not switch: the host register is the guest's.
    pub fn set_cr2(&mut self, value: u64) {
        // SAFETY: Vigil does not use CR2 for anything but reporting its own faults.
        unsafe { core::arch::asm!("mov cr2, {}", in(reg) value, options(nostack, nomem)) };
    }

    /// Physical-address width (CPUID.80000008H:EAX[7:0]).
    pub fn max_phys_bits(&self) -> u32 {
        crate::arch::regs::cpuid(0x8000_0008, 0)[0] & 0xFF
    }
}

impl Vcpu {
    /// The IDT-vectoring information of this exit (not valid when no event was being delivered).
    pub fn idt_vectoring(&self) -> vmx::exit::InterruptionInfo {
        vmx::exit::InterruptionInfo(self.vmcs.read(Field::IdtVectoringInfo) as u32)
    }
}
