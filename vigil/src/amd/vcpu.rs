//! One SVM vCPU: the VMCB, the saved registers and the processor's SVM features, implementing
//! the exit layer's [`Vcpu`] trait. This is where each piece of guest state lives (VMCB field,
//! saved register, host register SVM does not switch) and where the VMCB is kept consistent with
//! what the exit layer asks for (EFER.SVME, which the guest must not see; events; TLB flushes).
//!
//! Two things SVM lacks that VMX has are done here:
//! - **A halted vCPU.** The VMCB has no activity state. A HLT that Vigil intercepted and
//!   emulated is carried out by the processor itself: the next VMRUN enters at the HLT with the
//!   HLT intercept off and the physical-interrupt intercept on, so the guest halts until an
//!   interrupt (which then exits before the guest takes it, and Vigil puts the intercepts back
//!   and re-enters at once: the interrupt, still pending, is delivered to the guest then).
//! - **A pending single-step trap.** VMX keeps the trap owed after an emulated instruction in the
//!   guest's pending debug exceptions; SVM has none. The trap is injected as the #DB it becomes
//!   (DR6.BS set, as the processor sets it, APM Vol. 2 13.1.3.6), which is delivered before any
//!   instruction runs, as the trap of the previous instruction is (its priority is above
//!   external interrupts and NMIs, Vol. 2 8.5). An interrupt the exit layer wants to deliver at
//!   the same entry waits for the next one.

use super::switch::SvmRegs;
use super::ExitState;
use crate::host::HostCpu;
use core::cell::Cell;
use core::fmt;
use svm::caps::{Features, SvmCaps};
use svm::exit::{EventInfo, ExitCode};
use svm::intercept::{tlb, vintr, Misc1, EFER_SVME};
use svm::npt::PageSize;
use svm::vmcb::{seg_fields, Attrib, Field, VmcbAccess, VmcbPtr};
use vigil_core::cpu::Exited;
use vigil_core::exit::Stop;
use vigil_core::nested::Perms;
use vigil_core::time::{EntryTime, HiddenTime};
use vigil_core::vcpu::{
    msr as m, Activity, DescriptorTable, Flush, Interruptibility, Mode, Seg, SegAttrs, Segment,
    Vcpu, Window,
};
use x86_arch::event::Event;
use x86_arch::regs::*;

pub struct SvmVcpu {
    pub regs: SvmRegs,
    pub vmcb: VmcbPtr,
    pub caps: SvmCaps,
    pub asid: u32,
    /// The nested page tables' root (N_CR3) with the guest's A20 gate open.
    pub ncr3: u64,
    /// The root of the guest's view with its A20 gate closed (`npt::build`).
    pub ncr3_a20: u64,
    /// Whether the guest's A20 gate is open (N_CR3 is `ncr3`).
    pub a20_open: bool,
    pub npt_largest: PageSize,
    pub host: HostCpu,
    /// The exit being handled and what it said, for reports and lengths.
    pub exit: ExitState,
    /// The exceptions the configuration intercepts (the debugger adds its own on top).
    pub user_exceptions: u32,
    pub phys_bits: u8,
    /// CR4 bits this processor implements (from CPUID).
    pub cr4_supported: u64,
    /// Take instruction lengths from nRIP (the processor has NRIP save and the test option did
    /// not turn it off); otherwise decode them.
    pub use_nrips: bool,
    /// The length of the intercepted instruction, once known.
    pub(super) len: Cell<Option<u8>>,
    /// The guest executed a HLT that Vigil emulates (see the module comment): the address and
    /// length of the HLT while it waits to be carried out.
    pub(super) halt_at: Option<(u64, u8)>,
    /// The HLT is being carried out by the processor (the intercepts are swapped).
    pub(super) halting: bool,
    /// TLB_CONTROL for the next VMRUN.
    pub(super) tlb_control: u64,
    /// A #DB single-step trap occupies this entry's EVENTINJ.
    pub(super) step_trap: bool,
    /// An event that lost its entry to the single-step trap: injected at the next one.
    pub(super) deferred: Option<Event>,
    /// The SVM round trips (calibrated, by the switch's path as in
    /// `vigil_core::time::tsc::Calibration`), for the time of exits Vigil handles inside `run`.
    pub round_trip: [u64; 4],
    /// The configuration intercepts HLT (`trap=hlt`).
    pub(super) trap_hlt: bool,
    /// The guest-state fields VMRUN checks, as they were before the last VMRUN, when Vigil had
    /// changed one since the previous #VMEXIT: a VMRUN that fails its checks may write the
    /// processor's own state over them (Bochs does), and the report must explain the values the
    /// processor refused. (Unchanged since the #VMEXIT, they are the processor's own and cannot
    /// be what it refuses.)
    pub(super) checked_state: Option<[u64; CHECKED.len()]>,
    /// Vigil changed one of the [`CHECKED`] fields since the last #VMEXIT.
    pub(super) checked_dirty: bool,
    /// RFLAGS.TF as the last VMRUN entered the guest: the first instruction it ran traps.
    pub(super) entered_with_tf: bool,
    /// The last instruction fetch's translation (`decode::FetchCache`).
    pub(super) fetch_cache: Cell<super::decode::FetchCache>,
}

/// The state-save fields the VMRUN consistency checks read (APM Vol. 2 15.5.1).
pub(super) const CHECKED: [Field; 8] = [
    Field::Efer,
    Field::Cr0,
    Field::Cr3,
    Field::Cr4,
    Field::Dr6,
    Field::Dr7,
    Field::CsAttrib,
    Field::GPat,
];

/// The VMCB fields of GDTR and IDTR: base, limit.
fn dtable_fields(table: DescriptorTable) -> (Field, Field) {
    match table {
        DescriptorTable::Gdtr => (Field::GdtrBase, Field::GdtrLimit),
        DescriptorTable::Idtr => (Field::IdtrBase, Field::IdtrLimit),
    }
}

/// The exit layer's segment numbers as the VMCB orders them.
fn seg_number(seg: Seg) -> u8 {
    match seg {
        Seg::Es => 0,
        Seg::Cs => 1,
        Seg::Ss => 2,
        Seg::Ds => 3,
        Seg::Fs => 4,
        Seg::Gs => 5,
        Seg::Ldtr => 6,
        Seg::Tr => 7,
    }
}

/// The VMCB field of an MSR SVM switches: through VMRUN (EFER, PAT with nested paging) or
/// through VMLOAD/VMSAVE (the rest), APM Vol. 2 15.5.1, 15.5.2.
fn msr_field(msr: u32) -> Option<Field> {
    Some(match msr {
        m::IA32_PAT => Field::GPat,
        m::IA32_SYSENTER_CS => Field::SysenterCs,
        m::IA32_SYSENTER_ESP => Field::SysenterEsp,
        m::IA32_SYSENTER_EIP => Field::SysenterEip,
        m::IA32_STAR => Field::Star,
        m::IA32_LSTAR => Field::Lstar,
        m::IA32_CSTAR => Field::Cstar,
        m::IA32_FMASK => Field::Sfmask,
        m::IA32_FS_BASE => Field::FsBase,
        m::IA32_GS_BASE => Field::GsBase,
        m::IA32_KERNEL_GS_BASE => Field::KernelGsBase,
        _ => return None,
    })
}

impl SvmVcpu {
    pub(super) fn set_bits(&mut self, f: Field, bits: u64, on: bool) {
        let v = self.vmcb.read(f);
        let new = if on { v | bits } else { v & !bits };
        if new != v {
            self.vmcb.write(f, new);
        }
    }

    pub(super) fn misc1(&self) -> Misc1 {
        Misc1::from_bits_retain(self.vmcb.read(Field::InterceptMisc1) as u32)
    }

    pub(super) fn set_misc1(&mut self, bits: Misc1, on: bool) {
        self.set_bits(Field::InterceptMisc1, bits.bits() as u64, on);
    }

    /// The code size of the guest's current instruction, in bits.
    pub(super) fn code_bits(&self) -> u8 {
        self.mode().code_bits()
    }

    /// The intercepted instruction's length, from nRIP or (without it) from its bytes: compared
    /// with the exit's plain encoding, else decoded.
    pub(super) fn intercepted_len(&self) -> Option<u8> {
        if let Some(len) = self.len.get() {
            return Some(len);
        }
        let len = self.exit.next_rip.and_then(|next| {
            let mut len = next.wrapping_sub(self.rip());
            if self.code_bits() != 64 {
                len &= if self.code_bits() == 16 {
                    0xFFFF
                } else {
                    0xFFFF_FFFF
                };
            }
            (1..=15).contains(&len).then_some(len as u8)
        });
        let len = len
            .or_else(|| super::decode::plain_len(self))
            .or_else(|| super::decode::fetch_decode(self).map(|d| d.len));
        self.len.set(len);
        len
    }

    /// Whether an event is already set to be injected at the next VMRUN.
    fn injecting(&self) -> bool {
        EventInfo(self.vmcb.read(Field::EventInj)).valid()
    }

    /// Moves RIP past the instruction that raised `event` (INTn, INT3, INTO, INT1): SVM injects
    /// such events with no instruction length, delivering them to the RIP in the VMCB (APM
    /// Vol. 2 15.20).
    fn step_over_raising_instruction(&mut self, event: &Event) {
        if event.kind.from_instruction() && event.instruction_len != 0 {
            let mut rip = self.rip().wrapping_add(event.instruction_len as u64);
            match self.code_bits() {
                16 => rip &= 0xFFFF,
                32 => rip &= 0xFFFF_FFFF,
                _ => {}
            }
            self.set_rip(rip);
        }
    }

    /// Prepares the VMCB for the next VMRUN: the event or HLT that waits, the TLB flush asked
    /// for.
    pub(super) fn before_entry(&mut self) {
        if let Some(e) = self.deferred {
            if !self.injecting() {
                self.deferred = None;
                self.step_over_raising_instruction(&e);
                self.vmcb.write(Field::EventInj, EventInfo::inject(&e).0);
            }
        }
        if let Some((hlt, len)) = self.halt_at.take() {
            // An event wakes the HLT at once: the guest takes it instead of halting.
            if !self.injecting() {
                self.halting = true;
                self.set_rip(hlt);
                self.set_misc1(Misc1::HLT, false);
                self.set_misc1(Misc1::INTR, true);
                self.exit.halt = (hlt, len);
            }
        }
        self.vmcb.write(Field::TlbControl, self.tlb_control);
        self.tlb_control = tlb::NOTHING;
        // Every field may have changed since the last VMRUN (15.15.3).
        self.vmcb.write(Field::VmcbClean, 0);
        self.checked_state = core::mem::take(&mut self.checked_dirty).then(|| {
            let mut state = [0; CHECKED.len()];
            for (slot, f) in state.iter_mut().zip(CHECKED) {
                *slot = self.vmcb.read(f);
            }
            state
        });
        self.entered_with_tf = self.rflags() & RFLAGS_TF != 0;
    }

    /// Puts back the checked fields as the failed VMRUN found them.
    pub(super) fn restore_checked_state(&mut self) {
        if let Some(state) = self.checked_state {
            for (value, f) in state.into_iter().zip(CHECKED) {
                self.vmcb.write(f, value);
            }
        }
    }

    /// After the #VMEXIT that ended a halt carried out by the processor: the intercepts go back
    /// as the configuration has them. Returns whether the exit was the interrupt that woke the
    /// guest (Vigil's own, not the guest's: re-enter at once).
    pub(super) fn after_halt(&mut self, code: ExitCode) -> bool {
        self.halting = false;
        self.set_misc1(Misc1::INTR, false);
        self.set_misc1(Misc1::HLT, self.trap_hlt);
        let (hlt, len) = self.exit.halt;
        if code == ExitCode::INTR {
            if self.rip() == hlt {
                // The interrupt was pending before the HLT ran: the HLT completes at once.
                self.set_rip(hlt.wrapping_add(len as u64));
            }
            return true;
        }
        false
    }
}

impl Vcpu for SvmVcpu {
    type Host = HostCpu;

    #[inline]
    fn host(&mut self) -> &mut HostCpu {
        &mut self.host
    }

    fn run(&mut self, time: &EntryTime) -> Result<Exited, Stop> {
        self.regs.hide = time.hide as u64;
        self.regs.deadline = 0;
        if time.hide {
            self.regs.deadline = time.deadline;
            self.regs.credit = time.credit;
            self.regs.tsc_offset = time.offset;
            self.regs.limit = time.limit;
            self.regs.multiplier = time.multiplier;
        }
        self.enter()
    }

    #[inline]
    fn hidden_time(&self) -> HiddenTime {
        HiddenTime {
            offset: self.regs.tsc_offset,
            deadline_armed: self.regs.deadline != 0,
            disarm_tsc: self.regs.disarm_tsc,
        }
    }

    #[inline]
    fn gpr(&self, n: u8) -> u64 {
        match n {
            0 => self.vmcb.read(Field::Rax),
            4 => self.vmcb.read(Field::Rsp),
            _ => self.regs.get(n),
        }
    }

    #[inline]
    fn set_gpr(&mut self, n: u8, value: u64) {
        match n {
            0 => self.vmcb.write(Field::Rax, value),
            4 => self.vmcb.write(Field::Rsp, value),
            _ => self.regs.set(n, value),
        }
    }

    #[inline]
    fn rip(&self) -> u64 {
        self.vmcb.read(Field::Rip)
    }

    #[inline]
    fn set_rip(&mut self, rip: u64) {
        self.vmcb.write(Field::Rip, rip);
    }

    /// nRIP minus RIP with NRIP save, else decoded from the instruction's bytes. An instruction
    /// that cannot be read or decoded (it just ran, so this does not happen) counts as one byte.
    fn instruction_len(&self) -> u64 {
        self.intercepted_len().unwrap_or(1) as u64
    }

    #[inline]
    fn rflags(&self) -> u64 {
        self.vmcb.read(Field::Rflags)
    }

    fn set_rflags(&mut self, rflags: u64) {
        self.vmcb.write(Field::Rflags, rflags);
    }

    /// SVM pins no CR0 or CR4 bit: the VMCB holds the guest's own values (15.5.1).
    fn cr0(&self) -> u64 {
        self.vmcb.read(Field::Cr0)
    }

    fn set_cr0(&mut self, value: u64) {
        self.checked_dirty = true;
        self.vmcb.write(Field::Cr0, value);
    }

    /// VMRUN and #VMEXIT switch CR2 through the VMCB.
    fn cr2(&self) -> u64 {
        self.vmcb.read(Field::Cr2)
    }

    fn set_cr2(&mut self, value: u64) {
        self.vmcb.write(Field::Cr2, value);
    }

    fn cr3(&self) -> u64 {
        self.vmcb.read(Field::Cr3)
    }

    fn set_cr3(&mut self, value: u64) {
        self.checked_dirty = true;
        self.vmcb.write(Field::Cr3, value);
    }

    fn cr4(&self) -> u64 {
        self.vmcb.read(Field::Cr4)
    }

    fn set_cr4(&mut self, value: u64) {
        self.checked_dirty = true;
        self.vmcb.write(Field::Cr4, value);
    }

    fn cr4_allowed(&self) -> u64 {
        self.cr4_supported
    }

    /// EFER as the guest knows it: SVME is Vigil's (VMRUN requires it in the guest's VMCB,
    /// 15.5.1) and reads as clear.
    fn efer(&self) -> u64 {
        self.vmcb.read(Field::Efer) & !EFER_SVME
    }

    fn set_efer(&mut self, value: u64) {
        self.checked_dirty = true;
        self.vmcb.write(Field::Efer, value | EFER_SVME);
    }

    /// The VMCB's CPL field: VMRUN takes the CPL from it, not from SS (15.5.1).
    fn cpl(&self) -> u8 {
        self.vmcb.read(Field::Cpl) as u8 & 3
    }

    fn mode(&self) -> Mode {
        if self.cr0() & CR0_PE == 0 {
            return Mode::Real;
        }
        if self.rflags() & RFLAGS_VM != 0 {
            return Mode::Virtual8086;
        }
        let cs = Attrib(self.vmcb.read(Field::CsAttrib) as u16);
        if self.vmcb.read(Field::Efer) & EFER_LMA != 0 && cs.long() {
            Mode::Long64
        } else if cs.db() {
            Mode::Protected32
        } else {
            Mode::Protected16
        }
    }

    fn segment(&self, seg: Seg) -> Segment {
        let f = seg_fields(seg_number(seg));
        let a = Attrib(self.vmcb.read(f.attrib) as u16);
        Segment {
            selector: self.vmcb.read(f.selector) as u16,
            base: self.vmcb.read(f.base),
            limit: self.vmcb.read(f.limit) as u32,
            attrs: SegAttrs {
                typ: a.typ(),
                s: a.s(),
                dpl: a.dpl(),
                present: a.present(),
                avl: a.avl(),
                long: a.long(),
                db: a.db(),
                granularity: a.g(),
                // The VMCB has no "unusable" flag: a null segment is one that is not present.
                unusable: !a.present(),
            },
        }
    }

    fn set_segment(&mut self, seg: Seg, value: &Segment) {
        self.checked_dirty |= seg == Seg::Cs;
        let f = seg_fields(seg_number(seg));
        let a = &value.attrs;
        let attrib = Attrib::new(
            a.typ,
            a.s,
            a.dpl,
            a.present && !a.unusable,
            a.avl,
            a.long,
            a.db,
            a.granularity,
        );
        self.vmcb.write(f.selector, value.selector as u64);
        self.vmcb.write(f.base, value.base);
        self.vmcb.write(f.limit, value.limit as u64);
        self.vmcb.write(f.attrib, attrib.0 as u64);
        if seg == Seg::Ss {
            let cpl = if self.cr0() & CR0_PE == 0 { 0 } else { a.dpl };
            self.vmcb.write(Field::Cpl, cpl as u64);
        }
    }

    fn dtable(&self, table: DescriptorTable) -> (u64, u32) {
        let (base, limit) = dtable_fields(table);
        (self.vmcb.read(base), self.vmcb.read(limit) as u32)
    }

    fn set_dtable(&mut self, table: DescriptorTable, base: u64, limit: u32) {
        let (b, l) = dtable_fields(table);
        self.vmcb.write(b, base);
        self.vmcb.write(l, u64::from(limit));
    }

    /// DR6 and DR7 are switched through the VMCB; DR0-DR3 are not switched, so the host's
    /// registers are the guest's (15.5.1, 15.6).
    fn dr(&self, n: u8) -> u64 {
        let v: u64;
        // SAFETY: reading a debug register has no side effects.
        unsafe {
            match n {
                0 => core::arch::asm!("mov {}, dr0", out(reg) v, options(nomem, nostack)),
                1 => core::arch::asm!("mov {}, dr1", out(reg) v, options(nomem, nostack)),
                2 => core::arch::asm!("mov {}, dr2", out(reg) v, options(nomem, nostack)),
                3 => core::arch::asm!("mov {}, dr3", out(reg) v, options(nomem, nostack)),
                6 => return self.vmcb.read(Field::Dr6),
                _ => return self.vmcb.read(Field::Dr7),
            }
        }
        v
    }

    fn set_dr(&mut self, n: u8, v: u64) {
        self.checked_dirty = true;
        // SAFETY: DR0-3 belong to the guest while Vigil uses no hardware breakpoint; the guest's
        // DR7, which arms them, is in the VMCB, and #VMEXIT clears the host's DR7.
        unsafe {
            match n {
                0 => core::arch::asm!("mov dr0, {}", in(reg) v, options(nomem, nostack)),
                1 => core::arch::asm!("mov dr1, {}", in(reg) v, options(nomem, nostack)),
                2 => core::arch::asm!("mov dr2, {}", in(reg) v, options(nomem, nostack)),
                3 => core::arch::asm!("mov dr3, {}", in(reg) v, options(nomem, nostack)),
                6 => self.vmcb.write(Field::Dr6, v),
                _ => self.vmcb.write(Field::Dr7, v),
            }
        }
    }

    fn msr(&self, msr: u32) -> Option<u64> {
        if msr == m::IA32_EFER {
            return Some(self.efer());
        }
        msr_field(msr).map(|f| self.vmcb.read(f))
    }

    fn set_msr(&mut self, msr: u32, value: u64) -> bool {
        if msr == m::IA32_EFER {
            self.set_efer(value);
            return true;
        }
        match msr_field(msr) {
            Some(f) => {
                self.checked_dirty |= f == Field::GPat;
                self.vmcb.write(f, value);
                true
            }
            None => false,
        }
    }

    /// SVM has one interrupt-shadow bit for STI and MOV SS alike (15.21.5), and keeps NMI
    /// blocking to itself.
    fn interruptibility(&self) -> Interruptibility {
        Interruptibility {
            sti: self.vmcb.read(Field::InterruptShadow) & 1 != 0,
            mov_ss: false,
            nmi: false,
        }
    }

    fn set_interruptibility(&mut self, value: Interruptibility) {
        self.set_bits(Field::InterruptShadow, 1, value.sti || value.mov_ss);
    }

    /// EVENTINJ (15.20). An event raised by an instruction is delivered to the RIP in the VMCB,
    /// which is first moved past the instruction. An event wakes an emulated HLT.
    fn inject(&mut self, event: &Event) {
        if self.step_trap && self.injecting() {
            // The single-step trap of the previous instruction comes first.
            self.deferred = Some(*event);
            return;
        }
        self.step_over_raising_instruction(event);
        self.vmcb.write(Field::EventInj, EventInfo::inject(event).0);
        self.halt_at = None;
    }

    /// The trap owed after an emulated instruction with RFLAGS.TF set: a #DB with DR6.BS, as the
    /// processor delivers it (Vol. 2 13.1.3.6), injected now.
    fn single_step_trap(&mut self) {
        let dr6 = self.vmcb.read(Field::Dr6);
        self.vmcb.write(Field::Dr6, dr6 | DR6_BS | DR6_FIXED1);
        let db = Event::DB;
        if self.injecting() {
            self.deferred = Some(db);
        } else {
            self.vmcb.write(Field::EventInj, EventInfo::inject(&db).0);
            self.step_trap = true;
        }
        self.halt_at = None;
    }

    /// The interrupt window: a virtual interrupt request (V_IRQ, any priority) with the VINTR
    /// intercept, which exits as soon as the guest could take it (15.21.4). SVM has no NMI
    /// window: NMIs wait for the next exit.
    fn request_window(&mut self, kind: Window, on: bool) -> bool {
        match kind {
            Window::Interrupt => {
                let bits = vintr::V_IRQ | vintr::IGN_TPR | (0xF << vintr::PRIO_SHIFT);
                self.set_bits(Field::VIntr, bits, on);
                self.set_misc1(Misc1::VINTR, on);
                true
            }
            Window::Nmi => false,
        }
    }

    fn activity(&self) -> Activity {
        if self.halt_at.is_some() || self.halting {
            Activity::Halt
        } else {
            Activity::Active
        }
    }

    /// Only HLT and back: SVM has no shutdown or wait-for-SIPI state to enter.
    fn set_activity(&mut self, state: Activity) {
        self.halt_at = match state {
            // Called by the HLT handler at the HLT, before the exit layer moves RIP past it.
            Activity::Halt => Some((self.rip(), self.instruction_len() as u8)),
            _ => None,
        };
    }

    /// INVLPGA for one address; TLB_CONTROL at the next VMRUN otherwise (15.16.2): this ASID
    /// alone with flush-by-ASID, every ASID without it.
    fn flush(&mut self, what: Flush) {
        let by_asid = self.caps.has(Features::FLUSH_BY_ASID);
        let control = match what {
            Flush::Address(a) => {
                super::instr::invlpga(a, self.asid);
                return;
            }
            Flush::All if by_asid => tlb::GUEST,
            Flush::NonGlobal if by_asid => tlb::GUEST_NON_GLOBAL,
            _ => tlb::ALL,
        };
        // A wider flush already asked for stays.
        if self.tlb_control == tlb::NOTHING || control == tlb::ALL || control == tlb::GUEST {
            self.tlb_control = control;
        }
    }

    /// Another vCPU changed the nested tables: this ASID's TLB entries, which combine guest and
    /// nested translations (15.25.5), go at the next VMRUN.
    fn invalidate_nested(&mut self) {
        self.flush(Flush::All);
    }

    /// Switches N_CR3 between the guest's two views (`npt::build`); the translations of the old
    /// one go with this ASID's TLB entries.
    fn set_a20(&mut self, open: bool) -> bool {
        if self.a20_open != open {
            self.a20_open = open;
            let root = if open { self.ncr3 } else { self.ncr3_a20 };
            self.vmcb.write(Field::NestedCr3, root);
            self.flush(Flush::All);
        }
        true
    }

    /// Sets the I/O permission map's bits of `ports` as the ownership table says now (15.10.1:
    /// one bit per port).
    fn refresh_io_traps(
        &mut self,
        table: &vigil_core::owners::PortTable,
        ports: core::ops::RangeInclusive<u16>,
    ) {
        let iopm = self.vmcb.read(Field::IopmBase);
        for port in ports {
            let byte = (iopm + u64::from(port / 8)) as *mut u8;
            let bit = 1u8 << (port % 8);
            // SAFETY: the map's pages are Vigil's, identity-mapped, and the processor reads
            // them only while the guest runs; `port / 8` stays within the first 8 KiB.
            unsafe {
                let v = byte.read_volatile();
                byte.write_volatile(if table.exits(port) { v | bit } else { v & !bit });
            }
        }
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

    /// The page's nested entry; the guest's TLB entries (which combine guest and nested
    /// translations, 15.25.5) go with it.
    fn set_page_perms(&mut self, page: u64, perms: Perms) -> bool {
        // Both views of the guest's memory keep the debugger's page permissions.
        let _ = super::npt::set_page_perms(self.ncr3_a20, self.npt_largest, page, perms);
        let changed = super::npt::set_page_perms(self.ncr3, self.npt_largest, page, perms);
        if changed {
            self.flush(Flush::All);
        }
        changed
    }

    /// Nested page tables have no read permission apart from presence.
    fn exec_only_pages(&self) -> bool {
        false
    }

    fn set_tsc_offset(&mut self, offset: u64) {
        self.vmcb.write(Field::TscOffset, offset);
    }

    fn rdtsc_exits(&self) -> bool {
        self.misc1().contains(Misc1::RDTSC)
    }

    /// Vigil does not use the TSC ratio MSR (`setup.rs`); where every read of the TSC exits
    /// (`tsc=hide`, `tsc=scale`, `trap=rdtsc`), the guest's TSC is scaled in software
    /// (`vigil_core::time::Time::scaled_in_software`): the multiplier lives in the virtual TSC
    /// alone, and the processor's TSC offset matters only to reads that do not exit.
    fn tsc_scaling(&self) -> bool {
        self.rdtsc_exits()
    }

    fn intercept_exception(&mut self, vector: u8, on: bool) {
        let bit = 1u64 << (vector & 31);
        let keep = self.user_exceptions as u64 & bit != 0;
        self.set_bits(Field::InterceptExceptions, bit, on || keep);
    }

    /// SVM has no preemption timer, so there is no periodic exit: `false`. What it has is the
    /// PAUSE intercept with a filter count (15.14.4): a guest spinning in a wait loop exits every
    /// 65535 PAUSEs (every PAUSE without the filter), and those exits poll for the debugger; a
    /// guest that spins without PAUSE is seen at its next exit.
    fn set_poll_timer(&mut self, ticks: Option<u64>) -> bool {
        let count = if self.caps.has(Features::PAUSE_FILTER) {
            0xFFFF
        } else {
            0
        };
        self.vmcb.write(Field::PauseFilterCount, count);
        self.set_misc1(Misc1::PAUSE, ticks.is_some());
        false
    }

    fn report(&mut self, what: &str) {
        super::report::exit_report(self, what);
    }

    fn dump(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        svm::vmcb::dump(&self.vmcb, out)
    }

    fn describe_gpa(&self, gpa: u64, out: &mut dyn fmt::Write) -> fmt::Result {
        super::npt::describe(self.ncr3, self.phys_bits, gpa, out)
    }
}
