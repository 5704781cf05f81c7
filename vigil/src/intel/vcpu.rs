//! One VMX vCPU: the VMCS, the saved registers and the capabilities, implementing the exit
//! layer's [`Vcpu`] trait. This is where each piece of guest state lives (VMCS field, saved
//! register, read shadow, host register VMX does not switch) and where the VMCS is kept
//! consistent with what the exit layer asks for (forced CR bits, the "IA-32e mode guest" entry
//! control, PDPTE copies, pending debug exceptions).

use super::switch::GuestRegs;
use crate::host::HostCpu;
use core::arch::asm;
use core::fmt;
use vigil_core::cpu::Exited;
use vigil_core::exit::Stop;
use vigil_core::nested::Perms;
use vigil_core::time::EntryTime;
use vigil_core::vcpu::{
    msr as m, Activity, DescriptorTable, Flush, Interruptibility, Mode, Seg, SegAttrs, Segment,
    Vcpu, Window,
};
use vmx::caps::{EntryControls, PinBased, PrimaryProcBased, SecondaryProcBased, VmxCaps};
use vmx::exit::InterruptionInfo;
use vmx::vmcs::{Field, RealVmcs, VmcsAccess};
use x86_arch::cpuid::Features;
use x86_arch::event::Event;
use x86_arch::regs::*;

const ACTIVITY_HLT: u64 = 1;
const ACTIVITY_SHUTDOWN: u64 = 2;
const ACTIVITY_WAIT_FOR_SIPI: u64 = 3;
/// Interruptibility state: blocking by STI, MOV SS, NMI (SDM Vol. 3C 25.4.2, Table 25-3).
const BLOCKING_STI: u64 = 1 << 0;
const BLOCKING_MOV_SS: u64 = 1 << 1;
const BLOCKING_NMI: u64 = 1 << 3;
/// Pending debug exceptions: BS (SDM Vol. 3C 25.4.2, Table 25-4).
const PENDING_BS: u64 = 1 << 14;

pub struct VmxVcpu {
    pub regs: GuestRegs,
    pub vmcs: RealVmcs,
    pub caps: VmxCaps,
    pub vpid: u16,
    pub eptp: u64,
    /// The guest's view with its A20 gate closed (`ept::build`).
    pub eptp_a20: u64,
    /// Whether the guest's A20 gate is open (the EPT pointer in use is `eptp`).
    pub a20_open: bool,
    /// I/O bitmap A; bitmap B is the page after it (SDM Vol. 3C 25.6.4).
    pub io_bitmap: u64,
    pub host: HostCpu,
    /// Basic reason of the exit being handled, for reports.
    pub exit_reason: u16,
    /// The guest/host masks of CR0 and CR4 (constant after set-up: they decide which bits come
    /// from the read shadows).
    pub cr0_mask: u64,
    pub cr4_mask: u64,
    /// The exceptions the configuration intercepts (the debugger adds its own on top).
    pub user_exceptions: u32,
    /// The monitor trap flag was seen to trap (`calibrate::probe_monitor_trap`).
    pub mtf_works: bool,
    /// CPUID features whose instructions the controls leave disabled (`setup::controls`).
    pub hidden: Features,
    /// Without unrestricted guest: the guest's paging state while its paging is off
    /// (`flat.rs`).
    pub flat: Option<super::flat::Flat>,
    /// Why the guest cannot go on (a state this processor cannot run), for the next entry.
    pub unsupported: Option<&'static str>,
    /// The debugger's poll interval for the preemption timer (`set_poll_timer`).
    pub poll: Option<u64>,
    /// The preemption timer is armed to retry injecting an NMI Vigil holds for the guest.
    pub nmi_retry: bool,
    pub phys_bits: u8,
}

/// The VMCS fields of a segment register: selector, base, limit, access rights.
fn seg_fields(seg: Seg) -> [Field; 4] {
    use Field::*;
    match seg {
        Seg::Es => [
            GuestEsSelector,
            GuestEsBase,
            GuestEsLimit,
            GuestEsAccessRights,
        ],
        Seg::Cs => [
            GuestCsSelector,
            GuestCsBase,
            GuestCsLimit,
            GuestCsAccessRights,
        ],
        Seg::Ss => [
            GuestSsSelector,
            GuestSsBase,
            GuestSsLimit,
            GuestSsAccessRights,
        ],
        Seg::Ds => [
            GuestDsSelector,
            GuestDsBase,
            GuestDsLimit,
            GuestDsAccessRights,
        ],
        Seg::Fs => [
            GuestFsSelector,
            GuestFsBase,
            GuestFsLimit,
            GuestFsAccessRights,
        ],
        Seg::Gs => [
            GuestGsSelector,
            GuestGsBase,
            GuestGsLimit,
            GuestGsAccessRights,
        ],
        Seg::Ldtr => [
            GuestLdtrSelector,
            GuestLdtrBase,
            GuestLdtrLimit,
            GuestLdtrAccessRights,
        ],
        Seg::Tr => [
            GuestTrSelector,
            GuestTrBase,
            GuestTrLimit,
            GuestTrAccessRights,
        ],
    }
}

/// The VMCS fields of GDTR and IDTR: base, limit.
fn dtable_fields(table: DescriptorTable) -> (Field, Field) {
    match table {
        DescriptorTable::Gdtr => (Field::GuestGdtrBase, Field::GuestGdtrLimit),
        DescriptorTable::Idtr => (Field::GuestIdtrBase, Field::GuestIdtrLimit),
    }
}

/// Access rights in the VMCS format (SDM Vol. 3C 25.4.1, Table 25-2).
fn ar_decode(ar: u64) -> SegAttrs {
    SegAttrs {
        typ: (ar & 0xF) as u8,
        s: ar & (1 << 4) != 0,
        dpl: ((ar >> 5) & 3) as u8,
        present: ar & (1 << 7) != 0,
        avl: ar & (1 << 12) != 0,
        long: ar & (1 << 13) != 0,
        db: ar & (1 << 14) != 0,
        granularity: ar & (1 << 15) != 0,
        unusable: ar & (1 << 16) != 0,
    }
}

fn ar_encode(a: &SegAttrs) -> u64 {
    (a.typ as u64 & 0xF)
        | (a.s as u64) << 4
        | (a.dpl as u64 & 3) << 5
        | (a.present as u64) << 7
        | (a.avl as u64) << 12
        | (a.long as u64) << 13
        | (a.db as u64) << 14
        | (a.granularity as u64) << 15
        | (a.unusable as u64) << 16
}

/// The VMCS field of an MSR that VMX switches on entry and exit (SDM Vol. 3C 25.4.1).
fn msr_field(msr: u32) -> Option<Field> {
    Some(match msr {
        m::IA32_SYSENTER_CS => Field::GuestIa32SysenterCs,
        m::IA32_SYSENTER_ESP => Field::GuestIa32SysenterEsp,
        m::IA32_SYSENTER_EIP => Field::GuestIa32SysenterEip,
        m::IA32_DEBUGCTL => Field::GuestIa32Debugctl,
        m::IA32_PAT => Field::GuestIa32Pat,
        m::IA32_EFER => Field::GuestIa32Efer,
        m::IA32_FS_BASE => Field::GuestFsBase,
        m::IA32_GS_BASE => Field::GuestGsBase,
        _ => return None,
    })
}

impl VmxVcpu {
    fn set_bits(&mut self, f: Field, bits: u64, on: bool) {
        let v = self.vmcs.read(f);
        let new = if on { v | bits } else { v & !bits };
        if new != v {
            self.vmcs.write(f, new);
        }
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
            & SecondaryProcBased::UNRESTRICTED_GUEST.bits() as u64
            != 0
    }

    /// A pending single step must be recorded in BS whenever the guest halts or sits in an
    /// STI/MOV SS shadow with RFLAGS.TF set (and DEBUGCTL.BTF clear), or VM entry fails
    /// (SDM Vol. 3C 27.3.1.5).
    fn keep_pending_bs(&mut self, rflags: u64) {
        let blocked = self.vmcs.read(Field::GuestInterruptibilityState)
            & (BLOCKING_STI | BLOCKING_MOV_SS)
            != 0
            || self.vmcs.read(Field::GuestActivityState) == ACTIVITY_HLT;
        if blocked {
            let btf = self.vmcs.read(Field::GuestIa32Debugctl) & DEBUGCTL_BTF != 0;
            let stepping = rflags & RFLAGS_TF != 0 && !btf;
            self.set_bits(Field::GuestPendingDebugExceptions, PENDING_BS, stepping);
        }
    }

    /// Drops the guest's cached linear translations. With VPID the entries survive VM exits, so
    /// they must be invalidated by VPID (SDM Vol. 3C 29.4.3); without VPID every VM entry
    /// already flushes them.
    fn invvpid(&self, what: Flush) {
        use vmx::ept::{invvpid, InvvpidType};
        if self.vpid == 0 {
            return;
        }
        let single = if self.caps.invvpid_single() {
            InvvpidType::SingleContext
        } else {
            InvvpidType::AllContext
        };
        // Each fails only for a type the capability checks rule out, or (individual address)
        // for a non-canonical address, which INVLPG treats as a no-op too.
        let _ = match what {
            Flush::Address(a) if self.caps.invvpid_individual_address() => {
                invvpid(InvvpidType::IndividualAddress, self.vpid, a)
            }
            _ => invvpid(single, self.vpid, 0),
        };
    }
}

impl VmxVcpu {
    /// The VMX-preemption timer, reloaded from its field at every entry; it counts down at the
    /// TSC rate divided by 2^rate (SDM Vol. 3C 26.5.1). False without one.
    pub(super) fn arm_preemption_timer(&mut self, ticks: Option<u64>) -> bool {
        if !self.caps.has_preemption_timer() {
            return false;
        }
        let bit = PinBased::VMX_PREEMPTION_TIMER.bits() as u64;
        self.set_bits(Field::PinBasedControls, bit, ticks.is_some());
        if let Some(t) = ticks {
            let value = t >> self.caps.misc_preemption_timer_rate();
            self.vmcs
                .write(Field::VmxPreemptionTimerValue, value.max(1));
        }
        true
    }
}

impl Vcpu for VmxVcpu {
    type Host = HostCpu;

    #[inline]
    fn host(&mut self) -> &mut HostCpu {
        &mut self.host
    }

    #[inline(always)]
    fn run(&mut self, time: &EntryTime) -> Result<Exited, Stop> {
        if let Some(why) = self.unsupported {
            self.report(why);
            return Err(Stop::Failed(why));
        }
        self.regs.hide = time.hide as u64;
        self.regs.deadline = if time.hide { time.deadline } else { 0 };
        self.regs.credit = time.credit;
        self.regs.tsc_offset = time.offset;
        self.nmi_before_entry();
        let entered = self.enter();
        self.nmi_after_exit();
        match entered {
            Ok(exited) => Ok(exited),
            Err(failure) => {
                super::report::entry_failure(self, failure);
                Err(Stop::Failed("VM entry failed"))
            }
        }
    }

    #[inline]
    fn gpr(&self, n: u8) -> u64 {
        if n == 4 {
            self.vmcs.read(Field::GuestRsp)
        } else {
            self.regs.get(n)
        }
    }

    #[inline]
    fn set_gpr(&mut self, n: u8, value: u64) {
        if n == 4 {
            self.vmcs.write(Field::GuestRsp, value);
        } else {
            self.regs.set(n, value);
        }
    }

    #[inline]
    fn rip(&self) -> u64 {
        self.vmcs.read(Field::GuestRip)
    }

    #[inline]
    fn set_rip(&mut self, rip: u64) {
        self.vmcs.write(Field::GuestRip, rip);
    }

    #[inline]
    fn instruction_len(&self) -> u64 {
        self.vmcs.read(Field::VmExitInstructionLength)
    }

    #[inline]
    fn rflags(&self) -> u64 {
        self.vmcs.read(Field::GuestRflags)
    }

    fn set_rflags(&mut self, rflags: u64) {
        let old = self.rflags();
        self.vmcs.write(Field::GuestRflags, rflags);
        if (old ^ rflags) & RFLAGS_TF != 0 {
            self.keep_pending_bs(rflags);
        }
    }

    /// Bits Vigil owns (the guest/host mask) come from the read shadow (SDM Vol. 3C 26.3).
    fn cr0(&self) -> u64 {
        let mask = self.cr0_mask;
        (self.vmcs.read(Field::GuestCr0) & !mask) | (self.vmcs.read(Field::Cr0ReadShadow) & mask)
    }

    /// The guest's value goes to the read shadow, the real register gets the bits VMX requires.
    /// Without unrestricted guest, a change of PG moves the guest on or off the identity page
    /// tables (`flat.rs`).
    fn set_cr0(&mut self, value: u64) {
        let old = self.vmcs.read(Field::Cr0ReadShadow);
        self.vmcs.write(Field::Cr0ReadShadow, value);
        self.vmcs.write(
            Field::GuestCr0,
            (value | self.cr0_forced()) & self.caps.cr0_fixed1,
        );
        if self.flat.is_some() {
            if value & CR0_PE == 0 {
                self.unsupported = Some(
                    "the guest left protected mode: real mode needs unrestricted guest, which this processor lacks",
                );
            }
            if (old ^ value) & CR0_PG != 0 {
                self.paging_changed();
            }
        }
    }

    /// VMX does not switch CR2: the host register is the guest's.
    fn cr2(&self) -> u64 {
        let v: u64;
        // SAFETY: reading CR2 has no side effects.
        unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }

    fn set_cr2(&mut self, value: u64) {
        // SAFETY: Vigil does not use CR2 for anything but reporting its own faults.
        unsafe { asm!("mov cr2, {}", in(reg) value, options(nostack, nomem)) };
    }

    /// The guest's CR3, which Vigil keeps while the guest's paging is off on identity tables.
    fn cr3(&self) -> u64 {
        match self.flat {
            Some(f) if self.paging_shadowed() => f.cr3,
            _ => self.vmcs.read(Field::GuestCr3),
        }
    }

    fn set_cr3(&mut self, value: u64) {
        if self.paging_shadowed() {
            if let Some(f) = self.flat.as_mut() {
                f.cr3 = value;
            }
        } else {
            self.vmcs.write(Field::GuestCr3, value);
        }
    }

    fn cr4(&self) -> u64 {
        let mask = self.cr4_mask;
        (self.vmcs.read(Field::GuestCr4) & !mask) | (self.vmcs.read(Field::Cr4ReadShadow) & mask)
    }

    fn set_cr4(&mut self, value: u64) {
        self.vmcs.write(Field::Cr4ReadShadow, value);
        self.vmcs.write(Field::GuestCr4, self.real_cr4(value));
    }

    /// What the processor supports, less VMXE and SMXE, which belong to features hidden from
    /// the guest.
    fn cr4_allowed(&self) -> u64 {
        self.caps.cr4_fixed1 & !(CR4_VMXE | CR4_SMXE)
    }

    fn hidden_features(&self) -> Features {
        self.hidden
    }

    /// With PAE paging outside IA-32e mode and EPT on, VM entry takes the four PDPTEs from the
    /// VMCS, not from memory (SDM Vol. 3C 27.3.2.4).
    fn set_pdptes(&mut self, pdptes: [u64; 4]) {
        let fields = [
            Field::GuestPdpte0,
            Field::GuestPdpte1,
            Field::GuestPdpte2,
            Field::GuestPdpte3,
        ];
        for (field, e) in fields.into_iter().zip(pdptes) {
            self.vmcs.write(field, e);
        }
    }

    fn efer(&self) -> u64 {
        match self.flat {
            Some(f) if self.paging_shadowed() => f.efer,
            _ => self.vmcs.read(Field::GuestIa32Efer),
        }
    }

    /// EFER.LMA and the "IA-32e mode guest" entry control must agree (SDM Vol. 3C 27.3.1.1).
    fn set_efer(&mut self, value: u64) {
        self.store_efer(value);
    }

    /// SS.DPL (SDM Vol. 3A 5.5; VM entry keeps it in SS access rights, 27.3.1.2).
    fn cpl(&self) -> u8 {
        ((self.vmcs.read(Field::GuestSsAccessRights) >> 5) & 3) as u8
    }

    fn mode(&self) -> Mode {
        if self.cr0() & CR0_PE == 0 {
            return Mode::Real;
        }
        if self.rflags() & RFLAGS_VM != 0 {
            return Mode::Virtual8086;
        }
        let cs = self.vmcs.read(Field::GuestCsAccessRights);
        if self.long_mode_64() {
            Mode::Long64
        } else if cs & (1 << 14) != 0 {
            Mode::Protected32
        } else {
            Mode::Protected16
        }
    }

    /// IA-32e mode with CS.L = 1.
    #[inline]
    fn long_mode_64(&self) -> bool {
        let ia32e = self.vmcs.read(Field::EntryControls)
            & EntryControls::IA32E_MODE_GUEST.bits() as u64
            != 0;
        ia32e && self.vmcs.read(Field::GuestCsAccessRights) & (1 << 13) != 0
    }

    fn segment(&self, seg: Seg) -> Segment {
        let [sel, base, limit, ar] = seg_fields(seg);
        Segment {
            selector: self.vmcs.read(sel) as u16,
            base: self.vmcs.read(base),
            limit: self.vmcs.read(limit) as u32,
            attrs: ar_decode(self.vmcs.read(ar)),
        }
    }

    fn set_segment(&mut self, seg: Seg, value: &Segment) {
        let [sel, base, limit, ar] = seg_fields(seg);
        self.vmcs.write(sel, value.selector as u64);
        self.vmcs.write(base, value.base);
        self.vmcs.write(limit, value.limit as u64);
        self.vmcs.write(ar, ar_encode(&value.attrs));
    }

    fn dtable(&self, table: DescriptorTable) -> (u64, u32) {
        let (base, limit) = dtable_fields(table);
        (self.vmcs.read(base), self.vmcs.read(limit) as u32)
    }

    fn set_dtable(&mut self, table: DescriptorTable, base: u64, limit: u32) {
        let (b, l) = dtable_fields(table);
        self.vmcs.write(b, base);
        self.vmcs.write(l, limit as u64);
    }

    /// DR0-DR3 and DR6 are not switched by VMX, so the host registers are the guest's; DR7
    /// lives in the VMCS (SDM Vol. 3C 28.3.1 with "save debug controls").
    fn dr(&self, n: u8) -> u64 {
        let v: u64;
        // SAFETY: reading a debug register has no side effects.
        unsafe {
            match n {
                0 => asm!("mov {}, dr0", out(reg) v, options(nomem, nostack)),
                1 => asm!("mov {}, dr1", out(reg) v, options(nomem, nostack)),
                2 => asm!("mov {}, dr2", out(reg) v, options(nomem, nostack)),
                3 => asm!("mov {}, dr3", out(reg) v, options(nomem, nostack)),
                6 => asm!("mov {}, dr6", out(reg) v, options(nomem, nostack)),
                _ => return self.vmcs.read(Field::GuestDr7),
            }
        }
        v
    }

    fn set_dr(&mut self, n: u8, v: u64) {
        // SAFETY: DR0-3 and DR6 belong to the guest while Vigil does not use hardware
        // breakpoints; DR7 (which arms them) is the guest's VMCS copy, so nothing fires in Vigil.
        unsafe {
            match n {
                0 => asm!("mov dr0, {}", in(reg) v, options(nomem, nostack)),
                1 => asm!("mov dr1, {}", in(reg) v, options(nomem, nostack)),
                2 => asm!("mov dr2, {}", in(reg) v, options(nomem, nostack)),
                3 => asm!("mov dr3, {}", in(reg) v, options(nomem, nostack)),
                6 => asm!("mov dr6, {}", in(reg) v, options(nomem, nostack)),
                _ => self.vmcs.write(Field::GuestDr7, v),
            }
        }
    }

    fn msr(&self, msr: u32) -> Option<u64> {
        if msr == m::IA32_EFER {
            return Some(self.efer());
        }
        msr_field(msr).map(|f| self.vmcs.read(f))
    }

    fn set_msr(&mut self, msr: u32, value: u64) -> bool {
        match msr {
            m::IA32_EFER => {
                self.set_efer(value);
                true
            }
            _ => match msr_field(msr) {
                Some(f) => {
                    self.vmcs.write(f, value);
                    true
                }
                None => false,
            },
        }
    }

    #[inline]
    fn interruptibility(&self) -> Interruptibility {
        let v = self.vmcs.read(Field::GuestInterruptibilityState);
        Interruptibility {
            sti: v & BLOCKING_STI != 0,
            mov_ss: v & BLOCKING_MOV_SS != 0,
            nmi: v & BLOCKING_NMI != 0,
        }
    }

    fn set_interruptibility(&mut self, i: Interruptibility) {
        let v = self.vmcs.read(Field::GuestInterruptibilityState)
            & !(BLOCKING_STI | BLOCKING_MOV_SS | BLOCKING_NMI);
        let new = v
            | if i.sti { BLOCKING_STI } else { 0 }
            | if i.mov_ss { BLOCKING_MOV_SS } else { 0 }
            | if i.nmi { BLOCKING_NMI } else { 0 };
        self.vmcs.write(Field::GuestInterruptibilityState, new);
    }

    /// VM-entry event injection (SDM Vol. 3C 27.6.1). The activity state must be active: an
    /// event ends a HLT, and entry refuses most events into a halted vCPU (27.3.1.5).
    fn inject(&mut self, event: &Event) {
        let info = InterruptionInfo::from_event(event);
        if let Some(code) = event.error_code {
            self.vmcs
                .write(Field::VmEntryExceptionErrorCode, code as u64);
        }
        if event.kind.from_instruction() {
            self.vmcs.write(
                Field::VmEntryInstructionLength,
                event.instruction_len as u64,
            );
        }
        self.vmcs
            .write(Field::VmEntryInterruptionInfo, info.0 as u64);
        self.vmcs.write(Field::GuestActivityState, 0);
    }

    /// A pending debug exception with BS: after the entry the processor delivers the #DB as the
    /// trap of the previous instruction, updating DR6, honouring MOV SS blocking, and waking a
    /// halted vCPU as a real trap would (SDM Vol. 3C 27.7.3).
    fn single_step_trap(&mut self) {
        self.set_bits(Field::GuestPendingDebugExceptions, PENDING_BS, true);
    }

    /// Interrupt-window exiting (SDM Vol. 3C 26.7.5). NMI-window exiting needs virtual NMIs,
    /// which Vigil does not use (26.7.6): NMIs wait for the next exit instead.
    fn request_window(&mut self, kind: Window, on: bool) -> bool {
        let bit = PrimaryProcBased::INTERRUPT_WINDOW_EXITING;
        match kind {
            Window::Interrupt if self.caps.procbased.allowed1 & bit.bits() != 0 => {
                self.set_bits(Field::PrimaryProcBasedControls, bit.bits() as u64, on);
                true
            }
            _ => false,
        }
    }

    fn activity(&self) -> Activity {
        match self.vmcs.read(Field::GuestActivityState) {
            ACTIVITY_HLT => Activity::Halt,
            ACTIVITY_SHUTDOWN => Activity::Shutdown,
            ACTIVITY_WAIT_FOR_SIPI => Activity::WaitForSipi,
            _ => Activity::Active,
        }
    }

    fn set_activity(&mut self, state: Activity) {
        let value = match state {
            Activity::Active => 0,
            Activity::Halt => ACTIVITY_HLT,
            Activity::Shutdown => ACTIVITY_SHUTDOWN,
            Activity::WaitForSipi => ACTIVITY_WAIT_FOR_SIPI,
        };
        self.vmcs.write(Field::GuestActivityState, value);
    }

    fn flush(&mut self, what: Flush) {
        self.invvpid(what);
    }

    fn invalidate_nested(&mut self) {
        super::ept::invalidate(&self.caps, self.eptp);
    }

    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool {
        crate::guest_mem::read(gpa, buf)
    }

    fn write_phys(&mut self, gpa: u64, bytes: &[u8]) -> bool {
        crate::guest_mem::write(gpa, bytes)
    }

    fn read_mmio(&mut self, gpa: u64, buf: &mut [u8]) -> bool {
        gpa >> self.phys_bits == 0 && crate::guest_mem::read_device(gpa, buf)
    }

    fn write_mmio(&mut self, gpa: u64, bytes: &[u8]) -> bool {
        gpa >> self.phys_bits == 0 && crate::guest_mem::write_device(gpa, bytes)
    }

    fn phys_addr_bits(&self) -> u8 {
        self.phys_bits
    }

    /// Switches the EPT pointer between the guest's two views (`ept::build`) and drops what
    /// the processor cached of the old one (SDM Vol. 3C 29.4.3.4).
    fn set_a20(&mut self, open: bool) -> bool {
        if self.a20_open != open {
            self.a20_open = open;
            let eptp = if open { self.eptp } else { self.eptp_a20 };
            self.vmcs.write(Field::EptPointer, eptp);
            let _ = vmx::ept::invept(vmx::ept::InveptType::AllContext, eptp);
        }
        true
    }

    /// Sets the I/O-bitmap bits of `ports` as the ownership table says now (SDM Vol. 3C
    /// 25.6.4): bitmap A holds ports 0-7FFFH, B the rest, one bit per port.
    fn refresh_io_traps(
        &mut self,
        table: &vigil_core::owners::PortTable,
        ports: core::ops::RangeInclusive<u16>,
    ) {
        for port in ports {
            let byte = (self.io_bitmap + u64::from(port / 8)) as *mut u8;
            let bit = 1u8 << (port % 8);
            // SAFETY: the two bitmap pages are Vigil's, identity-mapped, and the processor reads
            // them only while the guest runs; `port / 8` stays within the 8 KiB.
            unsafe {
                let v = byte.read_volatile();
                byte.write_volatile(if table.exits(port) { v | bit } else { v & !bit });
            }
        }
    }

    fn set_page_perms(&mut self, page: u64, perms: Perms) -> bool {
        // Both views of the guest's memory keep the debugger's page permissions.
        let _ = super::ept::set_page_perms(&self.caps, self.eptp_a20, page, perms);
        super::ept::set_page_perms(&self.caps, self.eptp, page, perms)
    }

    fn exec_only_pages(&self) -> bool {
        self.caps.ept_execute_only()
    }

    fn set_tsc_offset(&mut self, offset: u64) {
        self.vmcs.write(Field::TscOffset, offset);
    }

    fn rdtsc_exits(&self) -> bool {
        self.vmcs.read(Field::PrimaryProcBasedControls)
            & PrimaryProcBased::RDTSC_EXITING.bits() as u64
            != 0
    }

    fn has_step_trap(&self) -> bool {
        self.mtf_works
    }

    /// The monitor trap flag (SDM Vol. 3C 26.5.2).
    fn set_step_trap(&mut self, on: bool) {
        self.set_bits(
            Field::PrimaryProcBasedControls,
            PrimaryProcBased::MONITOR_TRAP_FLAG.bits() as u64,
            on && self.mtf_works,
        );
    }

    fn intercept_exception(&mut self, vector: u8, on: bool) {
        let bit = 1u64 << (vector & 31);
        let keep = self.user_exceptions as u64 & bit != 0;
        self.set_bits(Field::ExceptionBitmap, bit, on || keep);
    }

    /// The VMX-preemption timer (a held NMI may shorten it for a while).
    fn set_poll_timer(&mut self, ticks: Option<u64>) -> bool {
        self.poll = ticks;
        if self.nmi_retry {
            return self.caps.has_preemption_timer();
        }
        self.arm_preemption_timer(ticks)
    }

    fn report(&mut self, what: &str) {
        super::report::exit_report(self, what);
    }

    fn dump(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        vmx::vmcs::dump(&self.vmcs, out)
    }

    fn describe_gpa(&self, gpa: u64, out: &mut dyn fmt::Write) -> fmt::Result {
        super::ept::describe(self.eptp, gpa, out)
    }
}
