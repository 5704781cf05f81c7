//! A hardware task switch: a CALL or JMP to a TSS or task gate, IRET with RFLAGS.NT set, or an
//! event whose IDT gate is a task gate (SDM Vol. 3A, "Task Switching"). 32-bit guests put #DF
//! and NMI behind task gates so that their handlers run on a known-good stack.
//!
//! Task switches always exit in VMX non-root operation (SDM Vol. 3C 26.4.2), after the processor
//! has checked the gate, the privilege levels, the new TSS descriptor's type (available, or busy
//! for IRET), its presence and its limit, and before anything changed (the reference emulator
//! exits at the same point). Vigil does the rest of "Task Switching" here:
//!
//! 1. Checks that can still fault *before* the switch: the current TSS's limit, and every page
//!    of the two TSSs and the two GDT entries the switch touches. A fault here is delivered in
//!    the old task, as if the switch never started.
//! 2. The old task: the busy bit cleared for JMP and IRET, its state saved in its TSS (NT
//!    cleared in the saved EFLAGS for IRET), the back link of the new TSS for CALL and events.
//! 3. The new task (the commit point): the busy bit set unless IRET, TR, CR0.TS, DR7's local
//!    enables cleared (SDM Vol. 3B 18.2.4), NT set for CALL and events, EFLAGS, EIP, the
//!    general-purpose registers, CR3 (with paging), LDTR and the segment registers, each
//!    descriptor checked as "Task Switching" step 13 and the reference emulator check them. A
//!    fault from here on is delivered in the new task's context.
//! 4. The event's error code, if it has one, pushed on the new task's stack; the TSS's debug
//!    trap bit raises #DB with DR6.BT; EIP beyond the CS limit raises #GP.
//!
//! Faults raised by the switch carry EXT (error-code bit 0) when the switch delivers an event
//! from outside the program (SDM Vol. 3A, "Error Code"), and combine with that event by the double-fault
//! rules: the delivery of a contributory exception through a task gate that faults becomes #DF.

use super::{deliver_nested, page_walk, Action, Stop, TaskSwitchSource};
use crate::cpu::Cpu;
use crate::exit::cr_access::{load_pdptes, pae_paging};
use crate::vcpu::{Activity, Flush, Interruptibility, Seg, SegAttrs, Segment, TableReg, Vcpu};
use x86_arch::event::{exception_is_fault, nest, Event, EventKind, Nested, DB};
use x86_arch::paging::Access;
use x86_arch::regs::*;

const TS: u8 = 10;
const NP: u8 = 11;
const SS: u8 = 12;
const GP: u8 = 13;

/// Linear addresses outside IA-32e mode are 32 bits wide.
const MASK32: u64 = 0xFFFF_FFFF;
/// The busy bit of a TSS descriptor's type, in the descriptor's high dword (SDM Vol. 3A, "TSS
/// Descriptor").
const BUSY: u32 = 1 << 9;
/// DR7's local breakpoint enables L0-L3 and LE, which every task switch clears.
const DR7_LOCAL: u64 = 0x155;

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>, selector: u16, source: TaskSwitchSource) -> Action {
    let event = if source == TaskSwitchSource::Gate {
        match cpu.events.interrupted.take() {
            Some(e) => Some(e),
            None => {
                cpu.vcpu.report(&alloc::format!(
                    "task switch through a task gate to TSS {selector:#x} without the event it delivers"
                ));
                return Action::Stop(Stop::Failed("task switch without its event"));
            }
        }
    } else {
        None
    };
    // The processor raises #GP for every task switch in IA-32e mode before any exit (SDM Vol.
    // 3A, "Task Management in 64-bit Mode"): one here is not something a guest can do.
    if cpu.vcpu.efer() & EFER_LMA != 0 {
        cpu.vcpu
            .report("task switch exit in IA-32e mode, where task switches do not exist");
        return Action::Stop(Stop::Failed("task switch in IA-32e mode"));
    }
    let result = switch(&mut cpu.vcpu, selector, source, event.as_ref());
    if cpu.config().log_exits {
        log::info!(
            "task switch to {selector:#x} by {source:?} (event {event:?}) -> {result:?}, rip {:#x}",
            cpu.vcpu.rip()
        );
    }
    match result {
        Ok(None) => Action::Resume,
        Ok(Some(trap)) => Action::Inject(trap),
        // Nothing changed: the fault belongs to the old task, and to the event's delivery.
        Err(Fault::Before(fault)) => {
            cpu.events.interrupted = event;
            deliver_nested(cpu, fault.vector, |_| Action::Inject(fault))
        }
        // The switch happened, and with it the event's delivery: only the fault is left, unless
        // it meets the event under the double-fault rules.
        Err(Fault::After(fault)) => match nest(event.as_ref(), fault.vector) {
            Nested::Serial => Action::Inject(fault),
            Nested::DoubleFault => Action::Inject(Event::DF),
            Nested::Shutdown => {
                cpu.vcpu
                    .report("a fault in a task switch that delivered a double fault (shutdown)");
                Action::Stop(Stop::Failed("guest triple fault"))
            }
        },
    }
}

/// A fault the switch raised, and on which side of the commit point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Before(Event),
    After(Event),
}

/// A segment descriptor as it sits in a descriptor table (SDM Vol. 3A 3.4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Descriptor(u64);

impl Descriptor {
    fn base(self) -> u64 {
        ((self.0 >> 16) & 0xFF_FFFF) | ((self.0 >> 56) & 0xFF) << 24
    }

    /// The limit in bytes, scaled by the granularity bit.
    fn limit(self) -> u32 {
        let raw = ((self.0 & 0xFFFF) | ((self.0 >> 48) & 0xF) << 16) as u32;
        if self.attrs().granularity {
            (raw << 12) | 0xFFF
        } else {
            raw
        }
    }

    fn attrs(self) -> SegAttrs {
        let access = (self.0 >> 40) as u8;
        let flags = (self.0 >> 52) as u8;
        SegAttrs {
            typ: access & 0xF,
            s: access & 0x10 != 0,
            dpl: (access >> 5) & 3,
            present: access & 0x80 != 0,
            avl: flags & 1 != 0,
            long: flags & 2 != 0,
            db: flags & 4 != 0,
            granularity: flags & 8 != 0,
            unusable: false,
        }
    }

    fn segment(self, selector: u16) -> Segment {
        Segment {
            selector,
            base: self.base(),
            limit: self.limit(),
            attrs: self.attrs(),
        }
    }
}

/// Code or data type bits (S = 1): executable, conforming (code) or expand-down (data),
/// readable (code) or writable (data), accessed.
const TYPE_CODE: u8 = 8;
const TYPE_CONFORMING: u8 = 4;
const TYPE_READ_WRITE: u8 = 2;
const TYPE_ACCESSED: u8 = 1;
/// System descriptor types (S = 0).
const TYPE_LDT: u8 = 2;

/// Implicit supervisor-mode access to guest-linear memory (descriptor tables and TSSs are read
/// and written at privilege 0 whatever the CPL, SDM Vol. 3A 4.6.1), one page at a time.
fn system_access<V: Vcpu>(
    vcpu: &mut V,
    linear: u64,
    len: usize,
    write: bool,
    mut each: impl FnMut(&mut V, u64, usize, usize) -> bool,
) -> Result<(), Event> {
    let access = if write { Access::WRITE } else { Access::READ };
    let mut done = 0;
    while done < len {
        let at = linear.wrapping_add(done as u64) & MASK32;
        let n = (4096 - (at & 0xFFF) as usize).min(len - done);
        let gpa = page_walk(vcpu, at, access)?;
        if !each(vcpu, gpa, done, n) {
            return Err(Event::GP0);
        }
        done += n;
    }
    Ok(())
}

fn read<V: Vcpu>(vcpu: &mut V, linear: u64, buf: &mut [u8]) -> Result<(), Event> {
    let len = buf.len();
    system_access(vcpu, linear, len, false, |v, gpa, at, n| {
        v.read_phys(gpa, &mut buf[at..at + n])
    })
}

fn write<V: Vcpu>(vcpu: &mut V, linear: u64, bytes: &[u8]) -> Result<(), Event> {
    system_access(vcpu, linear, bytes.len(), true, |v, gpa, at, n| {
        v.write_phys(gpa, &bytes[at..at + n])
    })
}

/// Only translates (a write that must not fault half-way is probed first).
fn probe<V: Vcpu>(vcpu: &mut V, linear: u64, len: usize, write: bool) -> Result<(), Event> {
    system_access(vcpu, linear, len, write, |_, _, _, _| true)
}

fn read_u32<V: Vcpu>(vcpu: &mut V, linear: u64) -> Result<u32, Event> {
    let mut b = [0u8; 4];
    read(vcpu, linear, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// The descriptor tables a selector can name: the GDT, and the LDT when one is loaded.
#[derive(Clone, Copy)]
struct Tables {
    gdt: TableReg,
    /// Base and limit of the LDT; `None` while LDTR is null or not yet valid.
    ldt: Option<(u64, u32)>,
}

impl Tables {
    /// Where the descriptor of `selector` lies, or `None` outside its table's limit (SDM Vol.
    /// 3A 3.4.2).
    fn slot(&self, selector: u16) -> Option<u64> {
        let offset = (selector & !7) as u64;
        let (base, limit) = if selector & 4 != 0 {
            self.ldt?
        } else {
            (self.gdt.base, self.gdt.limit as u32)
        };
        (offset + 7 <= limit as u64).then_some((base + offset) & MASK32)
    }

    /// The descriptor of `selector`: `Ok(None)` outside its table, `Err` if reading it faults.
    fn fetch<V: Vcpu>(
        &self,
        vcpu: &mut V,
        selector: u16,
    ) -> Result<Option<(u64, Descriptor)>, Event> {
        let Some(at) = self.slot(selector) else {
            return Ok(None);
        };
        let mut b = [0u8; 8];
        read(vcpu, at, &mut b)?;
        Ok(Some((at, Descriptor(u64::from_le_bytes(b)))))
    }
}

/// The new task's dynamic state, read from its TSS.
#[derive(Clone, Copy, Debug, Default)]
struct TaskState {
    cr3: Option<u32>,
    eip: u32,
    eflags: u32,
    /// EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI.
    gprs: [u32; 8],
    /// ES, CS, SS, DS, FS, GS.
    sregs: [u16; 6],
    ldt: u16,
    /// The T (debug trap) bit.
    trap: bool,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads a 32-bit (SDM Vol. 3A, "Task-State Segment (TSS)") or 16-bit ("16-Bit Task-State
/// Segment (TSS)") TSS.
fn read_tss<V: Vcpu>(vcpu: &mut V, base: u64, wide: bool) -> Result<TaskState, Event> {
    let mut b = [0u8; 0x68];
    if wide {
        read(vcpu, base, &mut b)?;
        let mut s = TaskState {
            cr3: Some(le32(&b, 0x1C)),
            eip: le32(&b, 0x20),
            eflags: le32(&b, 0x24),
            ldt: le16(&b, 0x60),
            trap: le16(&b, 0x64) & 1 != 0,
            ..TaskState::default()
        };
        for (i, r) in s.gprs.iter_mut().enumerate() {
            *r = le32(&b, 0x28 + 4 * i);
        }
        for (i, r) in s.sregs.iter_mut().enumerate() {
            *r = le16(&b, 0x48 + 4 * i);
        }
        Ok(s)
    } else {
        read(vcpu, base, &mut b[..0x2C])?;
        // A 16-bit TSS leaves the upper halves undefined; the reference emulator loads them
        // with 0xFFFF, and FS and GS with null selectors.
        let mut s = TaskState {
            cr3: None,
            eip: le16(&b, 14) as u32,
            eflags: le16(&b, 16) as u32,
            ldt: le16(&b, 42),
            trap: false,
            ..TaskState::default()
        };
        for (i, r) in s.gprs.iter_mut().enumerate() {
            *r = 0xFFFF_0000 | le16(&b, 18 + 2 * i) as u32;
        }
        for (i, r) in s.sregs[..4].iter_mut().enumerate() {
            *r = le16(&b, 34 + 2 * i);
        }
        Ok(s)
    }
}

/// The order of the segment registers in a TSS and in `TaskState::sregs`.
const TSS_SEGS: [Seg; 6] = [Seg::Es, Seg::Cs, Seg::Ss, Seg::Ds, Seg::Fs, Seg::Gs];
const ES: usize = 0;
const CS: usize = 1;
const SSI: usize = 2;
const DS: usize = 3;

/// Saves the outgoing task in its TSS: EIP, EFLAGS, the general-purpose registers and the
/// segment selectors ("Task Switching" step 8). The static fields are left alone.
fn save_tss<V: Vcpu>(
    vcpu: &mut V,
    base: u64,
    wide: bool,
    eip: u32,
    eflags: u32,
) -> Result<(), Event> {
    // Architectural register order: EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI.
    let gprs: [u32; 8] = core::array::from_fn(|i| vcpu.gpr(i as u8) as u32);
    let sels: [u16; 6] = core::array::from_fn(|i| vcpu.segment(TSS_SEGS[i]).selector);
    if wide {
        let mut b = [0u8; 40];
        b[0..4].copy_from_slice(&eip.to_le_bytes());
        b[4..8].copy_from_slice(&eflags.to_le_bytes());
        for (i, r) in gprs.iter().enumerate() {
            b[8 + 4 * i..12 + 4 * i].copy_from_slice(&r.to_le_bytes());
        }
        write(vcpu, base + 0x20, &b)?;
        // Selectors are words in dword slots: the upper halves keep what they hold.
        for (i, sel) in sels.iter().enumerate() {
            write(vcpu, base + 0x48 + 4 * i as u64, &sel.to_le_bytes())?;
        }
    } else {
        let mut b = [0u8; 28];
        b[0..2].copy_from_slice(&(eip as u16).to_le_bytes());
        b[2..4].copy_from_slice(&(eflags as u16).to_le_bytes());
        for (i, r) in gprs.iter().enumerate() {
            b[4 + 2 * i..6 + 2 * i].copy_from_slice(&(*r as u16).to_le_bytes());
        }
        for (i, sel) in sels[..4].iter().enumerate() {
            b[20 + 2 * i..22 + 2 * i].copy_from_slice(&sel.to_le_bytes());
        }
        write(vcpu, base + 14, &b)?;
    }
    Ok(())
}

/// Reads, changes and writes back the high dword of a descriptor (busy bits).
fn update_high<V: Vcpu>(vcpu: &mut V, at: u64, f: impl FnOnce(u32) -> u32) -> Result<(), Event> {
    let high = read_u32(vcpu, at + 4)?;
    write(vcpu, at + 4, &f(high).to_le_bytes())
}

/// Sets the accessed bit of a code or data descriptor, in the table and in its loaded copy, as
/// loading a segment register does (SDM Vol. 3A 3.4.5.1).
fn touch<V: Vcpu>(vcpu: &mut V, at: u64, seg: &mut Segment) -> Result<(), Event> {
    if seg.attrs.typ & TYPE_ACCESSED == 0 {
        seg.attrs.typ |= TYPE_ACCESSED;
        let mut b = [0u8; 1];
        read(vcpu, at + 5, &mut b)?;
        write(vcpu, at + 5, &[b[0] | TYPE_ACCESSED])?;
    }
    Ok(())
}

/// A segment register whose load did not complete: the selector is in place, the descriptor
/// part unusable (using it raises #GP, as with the reference emulator's invalid cache).
fn unloaded(selector: u16) -> Segment {
    Segment {
        selector,
        base: 0,
        limit: 0,
        attrs: SegAttrs {
            unusable: true,
            ..SegAttrs::default()
        },
    }
}

/// A flat stand-in for CS or SS when the switch faults before loading them: the fault is
/// delivered from privilege `dpl` with the new task's selectors, which is all the delivery
/// uses of them (the handler's CS comes from the IDT gate; a stack switch takes SS from the
/// TSS).
fn stand_in(selector: u16, code: bool, dpl: u8) -> Segment {
    Segment {
        selector,
        base: 0,
        limit: 0xFFFF_FFFF,
        attrs: SegAttrs {
            typ: if code {
                TYPE_CODE | TYPE_READ_WRITE | TYPE_ACCESSED
            } else {
                TYPE_READ_WRITE | TYPE_ACCESSED
            },
            s: true,
            dpl,
            present: true,
            db: true,
            granularity: true,
            ..SegAttrs::default()
        },
    }
}

/// A segment register of a virtual-8086 task (SDM Vol. 3A 20.1.1; the form VM entry requires,
/// SDM Vol. 3C 27.3.1.2).
fn v86(selector: u16) -> Segment {
    Segment {
        selector,
        base: (selector as u64) << 4,
        limit: 0xFFFF,
        attrs: SegAttrs {
            typ: TYPE_READ_WRITE | TYPE_ACCESSED,
            s: true,
            dpl: 3,
            present: true,
            ..SegAttrs::default()
        },
    }
}

/// Carries out the switch. `Ok(Some(event))` is a trap to deliver before the new task's first
/// instruction (the TSS's T bit).
fn switch<V: Vcpu>(
    vcpu: &mut V,
    selector: u16,
    source: TaskSwitchSource,
    event: Option<&Event>,
) -> Result<Option<Event>, Fault> {
    use TaskSwitchSource::*;
    let ext = u32::from(event.is_some_and(|e| {
        matches!(
            e.kind,
            EventKind::HardwareException
                | EventKind::Nmi
                | EventKind::ExternalInterrupt
                | EventKind::PrivilegedSoftwareException
        )
    }));
    let code = |sel: u16| (sel as u32 & 0xFFFC) | ext;
    let before = |vector: u8, sel: u16| Fault::Before(Event::fault(vector, code(sel)));
    let pre = Fault::Before;

    let tables = Tables {
        gdt: vcpu.gdtr(),
        ldt: None,
    };
    // --- Before the commit point: nothing may change until every access is known to work.
    // The processor has already checked the new TSS descriptor; read it again for its base,
    // limit and width (a descriptor that is not a TSS here would be the processor's mistake).
    let (new_slot, new_desc) = match tables.fetch(vcpu, selector & !4).map_err(pre)? {
        Some(d) if selector & 4 == 0 => d,
        _ => return Err(before(GP, selector)),
    };
    let new_attrs = new_desc.attrs();
    let wide = match (new_attrs.s, new_attrs.typ) {
        (false, 9 | 11) => true,
        (false, 1 | 3) => false,
        _ => return Err(before(GP, selector)),
    };
    let new_base = new_desc.base();
    if new_desc.limit() < if wide { 0x67 } else { 0x2B } {
        return Err(before(TS, selector));
    }
    // The current TSS must hold what is saved in it ("Task Switching" step 5).
    let tr = vcpu.segment(Seg::Tr);
    let old_wide = tr.attrs.typ & 8 != 0;
    if tr.limit < if old_wide { 0x5F } else { 0x29 } {
        return Err(before(TS, tr.selector));
    }
    let old_slot = tables.slot(tr.selector);
    let links = matches!(source, Call | Gate);
    let (save_at, save_len) = if old_wide {
        (tr.base + 0x20, 0x3E)
    } else {
        (tr.base + 14, 28)
    };
    probe(vcpu, new_base, if wide { 0x68 } else { 0x2C }, false).map_err(pre)?;
    probe(vcpu, save_at, save_len, true).map_err(pre)?;
    if links {
        probe(vcpu, new_base, 2, true).map_err(pre)?;
    }
    if matches!(source, Jmp | Iret) {
        if let Some(at) = old_slot {
            probe(vcpu, at, 8, true).map_err(pre)?;
        }
    }
    if source != Iret {
        probe(vcpu, new_slot, 8, true).map_err(pre)?;
    }

    // --- The old task.
    // The address the old task resumes at: after the instruction that switched, or after INT n
    // / INT3 / INTO / INT1; at the interrupted instruction for other events.
    let rip = vcpu.rip();
    let len = match (source, event) {
        (Gate, Some(e)) if e.kind.from_instruction() => e.instruction_len as u64,
        (Gate, _) => 0,
        _ => vcpu.instruction_len(),
    };
    let mut old_eip = rip.wrapping_add(len) & MASK32;
    if vcpu.mode().code_bits() == 16 {
        old_eip &= 0xFFFF;
    }
    let mut old_eflags = vcpu.rflags();
    if source == Iret {
        old_eflags &= !RFLAGS_NT;
    }
    // A fault delivered through a task gate leaves RF set in the saved image, as delivery
    // through an interrupt gate does in the pushed one (SDM Vol. 3B 18.3.1.1).
    if let Some(e) = event {
        if e.kind == EventKind::HardwareException && exception_is_fault(e.vector) && e.vector != DB
        {
            old_eflags |= RFLAGS_RF;
        }
    }
    if matches!(source, Jmp | Iret) {
        if let Some(at) = old_slot {
            update_high(vcpu, at, |h| h & !BUSY).map_err(pre)?;
        }
    }
    save_tss(vcpu, tr.base, old_wide, old_eip as u32, old_eflags as u32).map_err(pre)?;
    if links {
        write(vcpu, new_base, &tr.selector.to_le_bytes()).map_err(pre)?;
    }
    let new = read_tss(vcpu, new_base, wide).map_err(pre)?;
    if source != Iret {
        update_high(vcpu, new_slot, |h| h | BUSY).map_err(pre)?;
    }

    // --- The commit point: from here on the new task is current, and faults are its own.
    vcpu.set_segment(
        Seg::Tr,
        &Segment {
            attrs: SegAttrs {
                typ: new_attrs.typ | 2,
                ..new_attrs
            },
            ..new_desc.segment(selector)
        },
    );
    vcpu.set_cr0(vcpu.cr0() | CR0_TS);
    let dr7 = vcpu.dr(7);
    if dr7 & DR7_LOCAL != 0 {
        vcpu.set_dr(7, dr7 & !DR7_LOCAL);
    }
    let mut eflags = (new.eflags as u64 & !RFLAGS_RESERVED) | RFLAGS_FIXED1;
    if links {
        eflags |= RFLAGS_NT;
    }
    // Blocking by STI or MOV SS ends with the old task; an NMI delivered through a task gate
    // blocks NMIs as any NMI delivery does, and IRET unblocks them (SDM Vol. 3A, "Handling
    // Multiple NMIs").
    let shadow = vcpu.interruptibility();
    let nmi = match (source, event) {
        (Iret, _) => false,
        (Gate, Some(e)) if e.kind == EventKind::Nmi => true,
        _ => shadow.nmi,
    };
    vcpu.set_interruptibility(Interruptibility {
        sti: false,
        mov_ss: false,
        nmi,
    });
    if vcpu.activity() != Activity::Active {
        vcpu.set_activity(Activity::Active);
    }
    vcpu.set_rflags(eflags);
    vcpu.set_rip(new.eip as u64);
    for (i, r) in new.gprs.iter().enumerate() {
        vcpu.set_gpr(i as u8, *r as u64);
    }
    load_segments(vcpu, tables, &new, eflags, ext)?;

    // The event's error code goes on the new task's stack (SDM Vol. 3A, "Interrupt Tasks").
    if let Some(error_code) = event.and_then(|e| e.error_code) {
        push(vcpu, error_code, wide, ext)?;
    }
    let cs = vcpu.segment(Seg::Cs);
    if vcpu.rip() > cs.limit as u64 {
        return Err(Fault::After(Event::fault(GP, ext)));
    }
    if new.trap {
        // The T bit: #DB as the new task starts, with BT in DR6 (SDM Vol. 3B 18.2.3, 18.3.1.5).
        vcpu.set_dr(6, vcpu.dr(6) | DR6_BT);
        return Ok(Some(Event::DB));
    }
    Ok(None)
}

/// Loads CR3, LDTR and the segment registers of the new task, checking each descriptor ("Task
/// Switching" step 13, in the reference emulator's order: CR3, LDTR, SS, DS, ES, FS, GS, CS).
/// A fault leaves every register the switch did not load with its selector and an unusable
/// descriptor, CS and SS with stand-ins valid for VM entry.
fn load_segments<V: Vcpu>(
    vcpu: &mut V,
    mut tables: Tables,
    new: &TaskState,
    eflags: u64,
    ext: u32,
) -> Result<(), Fault> {
    let code = |sel: u16| (sel as u32 & 0xFFFC) | ext;
    let after = |vector: u8, sel: u16| Event::fault(vector, code(sel));
    let sel = new.sregs;
    let v8086 = eflags & RFLAGS_VM != 0;
    let cs_rpl = if v8086 { 3 } else { (sel[CS] & 3) as u8 };

    // Until SS is loaded the new task runs at privilege 3 for the fault's delivery, so that it
    // switches to the new TSS's ring-0 stack, as the reference emulator does.
    let mut segs: [Segment; 6] = core::array::from_fn(|i| {
        if v8086 {
            v86(sel[i])
        } else {
            match i {
                CS => stand_in(sel[i], true, 3),
                SSI => stand_in(sel[i], false, 3),
                _ => unloaded(sel[i]),
            }
        }
    });
    let mut ldtr = unloaded(new.ldt);
    let mut fault: Option<Event> = None;

    let mut step =
        |vcpu: &mut V, segs: &mut [Segment; 6], ldtr: &mut Segment| -> Result<(), Event> {
            if let Some(cr3) = new.cr3 {
                let cr0 = vcpu.cr0();
                if cr0 & CR0_PG != 0 && cr3 as u64 != vcpu.cr3() {
                    vcpu.set_cr3(cr3 as u64);
                    vcpu.flush(Flush::NonGlobal);
                    if pae_paging(cr0, vcpu.cr4(), vcpu.efer()) {
                        match load_pdptes(vcpu, cr3 as u64) {
                            Ok(p) => vcpu.set_pdptes(p),
                            Err(_) => {
                                // The reference emulator leaves the PDPTE cache empty.
                                vcpu.set_pdptes([0; 4]);
                                return Err(Event::fault(TS, ext));
                            }
                        }
                    }
                }
            }
            // LDTR: null, or an LDT descriptor in the GDT.
            if new.ldt & 4 != 0 {
                return Err(after(TS, new.ldt));
            }
            if new.ldt & !3 != 0 {
                let Some((_, d)) = tables.fetch(vcpu, new.ldt)? else {
                    return Err(after(TS, new.ldt));
                };
                let a = d.attrs();
                if a.s || a.typ != TYPE_LDT || !a.present {
                    return Err(after(TS, new.ldt));
                }
                *ldtr = d.segment(new.ldt);
                tables.ldt = Some((ldtr.base, ldtr.limit));
            }
            if v8086 {
                return Ok(());
            }
            // SS: a present, writable data segment at the new CPL.
            let s = sel[SSI];
            if s & !3 == 0 {
                return Err(after(TS, s));
            }
            let Some((at, d)) = tables.fetch(vcpu, s)? else {
                return Err(after(TS, s));
            };
            let a = d.attrs();
            if !a.s || a.typ & TYPE_CODE != 0 || a.typ & TYPE_READ_WRITE == 0 {
                return Err(after(TS, s));
            }
            if !a.present {
                return Err(after(SS, s));
            }
            if a.dpl != cs_rpl || a.dpl != (s & 3) as u8 {
                return Err(after(TS, s));
            }
            let mut ss = d.segment(s);
            touch(vcpu, at, &mut ss)?;
            segs[SSI] = ss;
            // With SS loaded the CPL is the new one: the stand-in CS follows it.
            segs[CS] = stand_in(sel[CS], true, a.dpl);
            // DS, ES, FS, GS: null, or data or readable code the new CPL may use.
            for i in [DS, ES, 4, 5] {
                let s = sel[i];
                if s & !3 == 0 {
                    continue;
                }
                let Some((at, d)) = tables.fetch(vcpu, s)? else {
                    return Err(after(TS, s));
                };
                let a = d.attrs();
                let code = a.typ & TYPE_CODE != 0;
                if !a.s || (code && a.typ & TYPE_READ_WRITE == 0) {
                    return Err(after(TS, s));
                }
                let conforming = code && a.typ & TYPE_CONFORMING != 0;
                if !conforming && ((s & 3) as u8 > a.dpl || cs_rpl > a.dpl) {
                    return Err(after(TS, s));
                }
                if !a.present {
                    return Err(after(NP, s));
                }
                let mut seg = d.segment(s);
                touch(vcpu, at, &mut seg)?;
                segs[i] = seg;
            }
            // CS: a present code segment; non-conforming at DPL = RPL, conforming at DPL <= RPL.
            let s = sel[CS];
            if s & !3 == 0 {
                return Err(after(TS, s));
            }
            let Some((at, d)) = tables.fetch(vcpu, s)? else {
                return Err(after(TS, s));
            };
            let a = d.attrs();
            if !a.s || a.typ & TYPE_CODE == 0 {
                return Err(after(TS, s));
            }
            let conforming = a.typ & TYPE_CONFORMING != 0;
            if (!conforming && a.dpl != cs_rpl) || (conforming && a.dpl > cs_rpl) {
                return Err(after(TS, s));
            }
            if !a.present {
                return Err(after(NP, s));
            }
            let mut cs = d.segment(s);
            touch(vcpu, at, &mut cs)?;
            segs[CS] = cs;
            Ok(())
        };
    if let Err(e) = step(vcpu, &mut segs, &mut ldtr) {
        fault = Some(e);
    }
    vcpu.set_segment(Seg::Ldtr, &ldtr);
    for (i, seg) in segs.iter().enumerate() {
        vcpu.set_segment(TSS_SEGS[i], seg);
    }
    match fault {
        Some(e) => Err(Fault::After(e)),
        None => Ok(()),
    }
}

/// Pushes the event's error code on the new task's stack, as a dword for a 32-bit TSS and a
/// word for a 16-bit one (SDM Vol. 3A, "Interrupt Tasks"), with the stack's own address size
/// and limit (a stack fault is #SS: "Interrupt 12—Stack Fault Exception").
fn push<V: Vcpu>(vcpu: &mut V, error_code: u32, wide: bool, ext: u32) -> Result<(), Fault> {
    let ss = vcpu.segment(Seg::Ss);
    let size: u64 = if wide { 4 } else { 2 };
    let rsp = vcpu.gpr(crate::vcpu::gpr::RSP);
    let (top, wrap) = if ss.attrs.db {
        (rsp & MASK32, MASK32)
    } else {
        (rsp & 0xFFFF, 0xFFFF)
    };
    let offset = top.wrapping_sub(size) & wrap;
    let last = offset + size - 1;
    let expand_down = ss.attrs.typ & TYPE_CONFORMING != 0;
    let inside = if expand_down {
        offset > ss.limit as u64 && last <= wrap
    } else {
        last <= ss.limit as u64
    };
    if ss.attrs.unusable || !inside || last > wrap {
        return Err(Fault::After(Event::fault(SS, ext)));
    }
    let bytes = error_code.to_le_bytes();
    let linear = ss.base.wrapping_add(offset) & MASK32;
    // A CPL-3 task's stack is written with user privilege.
    let access = Access {
        user: ss.attrs.dpl == 3,
        ..Access::WRITE
    };
    let mut done = 0usize;
    while done < size as usize {
        let at = linear.wrapping_add(done as u64) & MASK32;
        let n = (4096 - (at & 0xFFF) as usize).min(size as usize - done);
        let gpa = page_walk(vcpu, at, access).map_err(Fault::After)?;
        if !vcpu.write_phys(gpa, &bytes[done..done + n]) {
            return Err(Fault::After(Event::GP0));
        }
        done += n;
    }
    vcpu.set_gpr(crate::vcpu::gpr::RSP, (rsp & !wrap) | offset);
    Ok(())
}
