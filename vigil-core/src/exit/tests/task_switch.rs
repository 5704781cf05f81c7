//! Hardware task switches (SDM Vol. 3A, "Task Switching") on a 32-bit guest with paging off: what
//! is saved, what is loaded, the busy bits, NT and the back link for each source, events through
//! task gates, and the faults before and after the commit point.

use crate::cpu::Cpu;
use crate::exit::{Action, Exit, Stop, TaskSwitchSource};
use crate::testing::{cpu_with, exit, FakeVcpu};
use crate::vcpu::{Flush, Seg, SegAttrs, Segment};
use x86_arch::event::{Event, EventKind};
use x86_arch::regs::*;

const GDT: u64 = 0x8000;
const TSS_A: u64 = 0x9000;
const TSS_B: u64 = 0x9100;
const TSS_16: u64 = 0x9200;
const LDT: u64 = 0xA000;
const CODE: u16 = 0x08;
const DATA: u16 = 0x10;
const SEL_A: u16 = 0x18;
const SEL_B: u16 = 0x20;
const SEL_LDT: u16 = 0x28;
const SEL_16: u16 = 0x30;
const SEL_NP_DATA: u16 = 0x38;
const SEL_NP_CODE: u16 = 0x40;
const SEL_RING3_DATA: u16 = 0x48;
const STACK_B: u32 = 0x7000;

/// A descriptor from its parts: access byte (P, DPL, S, type) and flags nibble (G, D/B, L, AVL).
fn desc(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    (limit as u64 & 0xFFFF)
        | (base as u64 & 0xFF_FFFF) << 16
        | (access as u64) << 40
        | ((limit as u64 >> 16) & 0xF) << 48
        | (flags as u64 & 0xF) << 52
        | ((base as u64 >> 24) & 0xFF) << 56
}

fn put32(v: &mut FakeVcpu, at: u64, value: u32) {
    v.mem[at as usize..at as usize + 4].copy_from_slice(&value.to_le_bytes());
}

fn put16(v: &mut FakeVcpu, at: u64, value: u16) {
    v.mem[at as usize..at as usize + 2].copy_from_slice(&value.to_le_bytes());
}

fn get32(v: &FakeVcpu, at: u64) -> u32 {
    u32::from_le_bytes(v.peek(at, 4).try_into().unwrap())
}

fn get16(v: &FakeVcpu, at: u64) -> u16 {
    u16::from_le_bytes(v.peek(at, 2).try_into().unwrap())
}

fn gdt_entry(v: &FakeVcpu, sel: u16) -> u64 {
    u64::from_le_bytes(v.peek(GDT + (sel & !7) as u64, 8).try_into().unwrap())
}

fn busy(v: &FakeVcpu, sel: u16) -> bool {
    gdt_entry(v, sel) & (1 << 41) != 0
}

fn loaded(sel: u16, d: u64) -> Segment {
    let access = (d >> 40) as u8;
    let flags = (d >> 52) as u8;
    let g = flags & 8 != 0;
    let raw = ((d & 0xFFFF) | ((d >> 48) & 0xF) << 16) as u32;
    Segment {
        selector: sel,
        base: ((d >> 16) & 0xFF_FFFF) | ((d >> 56) & 0xFF) << 24,
        limit: if g { (raw << 12) | 0xFFF } else { raw },
        attrs: SegAttrs {
            typ: access & 0xF,
            s: access & 0x10 != 0,
            dpl: (access >> 5) & 3,
            present: access & 0x80 != 0,
            avl: flags & 1 != 0,
            long: flags & 2 != 0,
            db: flags & 4 != 0,
            granularity: g,
            unusable: false,
        },
    }
}

/// The values task B starts with: EAX..EDI in architectural order.
const B_GPRS: [u32; 8] = [
    0xB0B0_0000,
    0xB0B0_0001,
    0xB0B0_0002,
    0xB0B0_0003,
    STACK_B,
    0xB0B0_0005,
    0xB0B0_0006,
    0xB0B0_0007,
];

/// A 32-bit guest running task A (TSS at 0x9000, busy, in TR) with task B available, a 16-bit
/// TSS, an LDT, and flat ring-0 code and data; CS's descriptor is not yet accessed.
fn machine() -> FakeVcpu {
    let mut v = FakeVcpu::protected32();
    let entries: [(u16, u64); 10] = [
        (CODE, desc(0, 0xFFFFF, 0x9A, 0xC)),
        (DATA, desc(0, 0xFFFFF, 0x93, 0xC)),
        (SEL_A, desc(TSS_A as u32, 0x67, 0x8B, 0)),
        (SEL_B, desc(TSS_B as u32, 0x67, 0x89, 0)),
        (SEL_LDT, desc(LDT as u32, 0xF, 0x82, 0)),
        (SEL_16, desc(TSS_16 as u32, 0x2B, 0x81, 0)),
        (SEL_NP_DATA, desc(0, 0xFFFFF, 0x13, 0xC)),
        (SEL_NP_CODE, desc(0, 0xFFFFF, 0x1B, 0xC)),
        (SEL_RING3_DATA, desc(0, 0xFFFFF, 0xF3, 0xC)),
        (0x50, 0),
    ];
    for (sel, d) in entries {
        v.poke64(GDT + sel as u64, d);
    }
    v.dtables[0] = (GDT, 0x57);
    // The LDT's second entry: data based at 0x4_0000.
    v.poke64(LDT + 8, desc(0x4_0000, 0xFFFF, 0x93, 0x4));
    v.segs[Seg::Tr as usize] = loaded(SEL_A, desc(TSS_A as u32, 0x67, 0x8B, 0));
    v.segs[Seg::Ldtr as usize] = Segment {
        attrs: SegAttrs {
            unusable: true,
            ..SegAttrs::default()
        },
        ..Segment::default()
    };
    for seg in [Seg::Es, Seg::Cs, Seg::Ss, Seg::Ds, Seg::Fs, Seg::Gs] {
        let sel = if seg == Seg::Cs { CODE } else { DATA };
        let d = desc(0, 0xFFFFF, if seg == Seg::Cs { 0x9B } else { 0x93 }, 0xC);
        v.segs[seg as usize] = loaded(sel, d);
    }
    for (i, r) in v.gprs.iter_mut().take(8).enumerate() {
        *r = 0xA0A0_0000 + i as u64;
    }
    v.rip = 0x1000;
    v.len = 7;
    v.rflags = RFLAGS_FIXED1 | RFLAGS_IF | RFLAGS_CF;
    // Task B: flat ring 0 with its own stack.
    put32(&mut v, TSS_B + 0x20, 0x2000);
    put32(&mut v, TSS_B + 0x24, (RFLAGS_FIXED1 | RFLAGS_IF) as u32);
    for (i, r) in B_GPRS.iter().enumerate() {
        put32(&mut v, TSS_B + 0x28 + 4 * i as u64, *r);
    }
    for (i, sel) in [DATA, CODE, DATA, DATA, DATA, DATA].iter().enumerate() {
        put16(&mut v, TSS_B + 0x48 + 4 * i as u64, *sel);
    }
    put16(&mut v, TSS_B, 0x7777);
    v
}

fn switch_cpu(v: FakeVcpu) -> Cpu<FakeVcpu> {
    cpu_with("", v)
}

fn task_switch(selector: u16, source: TaskSwitchSource) -> Exit {
    Exit::TaskSwitch { selector, source }
}

#[test]
fn jmp_to_a_tss_saves_the_old_task_and_loads_the_new_one() {
    let mut c = switch_cpu(machine());
    c.vcpu.drs[7] = DR7_FIXED1 | 0x3FF;
    let a = exit(&mut c, task_switch(SEL_B, TaskSwitchSource::Jmp));
    assert_eq!(a, Action::Resume);
    let v = &c.vcpu;
    // The old task resumes after the 7-byte far JMP, with its flags and registers.
    assert_eq!(get32(v, TSS_A + 0x20), 0x1007);
    assert_eq!(
        get32(v, TSS_A + 0x24),
        (RFLAGS_FIXED1 | RFLAGS_IF | RFLAGS_CF) as u32
    );
    for i in 0..8 {
        assert_eq!(get32(v, TSS_A + 0x28 + 4 * i), 0xA0A0_0000 + i as u32);
    }
    assert_eq!(get16(v, TSS_A + 0x4C), CODE);
    assert_eq!(get16(v, TSS_A + 0x50), DATA);
    // JMP: the old task is no longer busy, the new one is; no back link.
    assert!(!busy(v, SEL_A));
    assert!(busy(v, SEL_B));
    assert_eq!(get16(v, TSS_B), 0x7777);
    // The new task.
    assert_eq!(v.rip, 0x2000);
    assert_eq!(
        v.rflags,
        RFLAGS_FIXED1 | RFLAGS_IF,
        "NT stays clear for JMP"
    );
    for (i, r) in B_GPRS.iter().enumerate() {
        assert_eq!(v.gprs[i], *r as u64);
    }
    let tr = v.segs[Seg::Tr as usize];
    assert_eq!(
        (tr.selector, tr.base, tr.limit, tr.attrs.typ),
        (SEL_B, TSS_B, 0x67, 0xB)
    );
    assert_ne!(v.cr0 & CR0_TS, 0, "CR0.TS after every task switch");
    assert_eq!(
        v.drs[7],
        DR7_FIXED1 | 0x3FF & !0x155,
        "local enables cleared"
    );
    // CS's descriptor gets its accessed bit, in the GDT and in the loaded copy.
    let cs = v.segs[Seg::Cs as usize];
    assert_eq!((cs.selector, cs.attrs.typ), (CODE, 0xB));
    assert_ne!(gdt_entry(v, CODE) & (1 << 40), 0);
    assert!(v.segs[Seg::Ldtr as usize].attrs.unusable);
    assert!(v.injected.is_empty());
}

#[test]
fn call_nests_the_new_task_and_iret_returns() {
    let mut c = switch_cpu(machine());
    assert_eq!(
        exit(&mut c, task_switch(SEL_B, TaskSwitchSource::Call)),
        Action::Resume
    );
    assert_ne!(c.vcpu.rflags & RFLAGS_NT, 0, "CALL sets NT");
    assert_eq!(get16(&c.vcpu, TSS_B), SEL_A, "back link to the caller");
    assert!(busy(&c.vcpu, SEL_A) && busy(&c.vcpu, SEL_B));
    // Task B returns with IRET (one byte) to the task in its back link; NMIs were blocked.
    c.vcpu.len = 1;
    c.vcpu.rip = 0x2010;
    c.vcpu.intr.nmi = true;
    assert_eq!(
        exit(&mut c, task_switch(SEL_A, TaskSwitchSource::Iret)),
        Action::Resume
    );
    let v = &c.vcpu;
    assert_eq!(v.rip, 0x1007, "the caller resumes after its CALL");
    assert_eq!(v.segs[Seg::Tr as usize].selector, SEL_A);
    assert!(!busy(v, SEL_B), "IRET frees the task it leaves");
    assert!(busy(v, SEL_A));
    assert_eq!(get32(v, TSS_B + 0x20), 0x2011);
    assert_eq!(
        get32(v, TSS_B + 0x24) as u64 & RFLAGS_NT,
        0,
        "NT is cleared in the saved image"
    );
    assert_eq!(v.rflags & RFLAGS_NT, 0, "the caller's own NT");
    assert!(!v.intr.nmi, "IRET unblocks NMIs");
    for i in 0..8 {
        assert_eq!(v.gprs[i], 0xA0A0_0000 + i as u64);
    }
}

#[test]
fn a_double_fault_through_a_task_gate_pushes_its_error_code_on_the_new_stack() {
    let mut c = switch_cpu(machine());
    c.events.interrupted = Some(Event::DF);
    assert_eq!(
        exit(&mut c, task_switch(SEL_B, TaskSwitchSource::Gate)),
        Action::Resume
    );
    let v = &c.vcpu;
    assert!(v.injected.is_empty(), "the #DF was delivered by the switch");
    assert_eq!(c.events.interrupted, None);
    assert_eq!(v.gprs[4], (STACK_B - 4) as u64);
    assert_eq!(get32(v, (STACK_B - 4) as u64), 0);
    assert_eq!(
        get32(v, TSS_A + 0x20),
        0x1000,
        "an abort: the old task stays at its instruction"
    );
    assert_ne!(v.rflags & RFLAGS_NT, 0);
    assert_eq!(get16(v, TSS_B), SEL_A);
    assert!(busy(v, SEL_A) && busy(v, SEL_B));
}

#[test]
fn a_fault_through_a_task_gate_saves_rf_and_its_instruction() {
    let mut c = switch_cpu(machine());
    c.events.interrupted = Some(Event::fault(13, 0x58));
    exit(&mut c, task_switch(SEL_B, TaskSwitchSource::Gate));
    assert_eq!(get32(&c.vcpu, TSS_A + 0x20), 0x1000);
    assert_ne!(get32(&c.vcpu, TSS_A + 0x24) as u64 & RFLAGS_RF, 0);
    assert_eq!(get32(&c.vcpu, (STACK_B - 4) as u64), 0x58);
}

#[test]
fn an_nmi_through_a_task_gate_blocks_nmis() {
    let mut c = switch_cpu(machine());
    c.events.interrupted = Some(Event::nmi());
    exit(&mut c, task_switch(SEL_B, TaskSwitchSource::Gate));
    assert!(c.vcpu.intr.nmi);
    assert!(c.vcpu.injected.is_empty());
    assert!(!c.events.pending_nmi, "delivered, not pending");
    assert_eq!(c.vcpu.gprs[4], STACK_B as u64, "no error code");
}

#[test]
fn int_n_through_a_task_gate_resumes_after_the_instruction() {
    let mut c = switch_cpu(machine());
    c.events.interrupted = Some(Event {
        vector: 0x40,
        kind: EventKind::SoftwareInterrupt,
        error_code: None,
        instruction_len: 2,
    });
    exit(&mut c, task_switch(SEL_B, TaskSwitchSource::Gate));
    assert_eq!(get32(&c.vcpu, TSS_A + 0x20), 0x1002);
    assert_eq!(c.vcpu.rip, 0x2000);
}

#[test]
fn a_current_tss_too_short_faults_before_anything_changes() {
    let mut v = machine();
    v.segs[Seg::Tr as usize].limit = 0x50;
    let before = v.mem.clone();
    let mut c = switch_cpu(v);
    assert_eq!(
        exit(&mut c, task_switch(SEL_B, TaskSwitchSource::Jmp)),
        Action::Inject(Event::fault(10, SEL_A as u32))
    );
    assert_eq!(c.vcpu.mem, before, "no memory written");
    assert_eq!(c.vcpu.segs[Seg::Tr as usize].selector, SEL_A);
    assert_eq!(c.vcpu.rip, 0x1000);
}

#[test]
fn a_page_fault_before_the_commit_point_leaves_the_old_task_and_keeps_an_nmi() {
    // 32-bit paging with the old TSS's page read-only and CR0.WP set: saving the old task
    // faults, so nothing is switched, and an NMI whose delivery started the switch waits.
    let mut v = machine();
    let pd = 0x2_0000u64;
    let pt = 0x2_1000u64;
    put32(&mut v, pd, pt as u32 | 0x7);
    for page in 0..512u64 {
        let writable = if page == TSS_A >> 12 { 0 } else { 2 };
        put32(&mut v, pt + 4 * page, (page << 12) as u32 | 0x5 | writable);
    }
    v.cr3 = pd;
    v.cr0 |= CR0_PG | CR0_WP;
    let before = v.mem.clone();
    let mut c = switch_cpu(v);
    c.events.interrupted = Some(Event::nmi());
    assert_eq!(
        exit(&mut c, task_switch(SEL_B, TaskSwitchSource::Gate)),
        Action::Inject(Event::page_fault(0x3))
    );
    assert_eq!(c.vcpu.cr2, TSS_A + 0x20);
    assert_eq!(c.vcpu.mem, before);
    assert_eq!(c.vcpu.segs[Seg::Tr as usize].selector, SEL_A);
    assert!(c.events.pending_nmi, "the NMI is delivered after the fault");
}

#[test]
fn a_bad_data_segment_in_the_new_task_faults_in_its_context() {
    let mut v = machine();
    put16(&mut v, TSS_B + 0x54, 0x78); // DS beyond the GDT's limit
    let mut c = switch_cpu(v);
    assert_eq!(
        exit(&mut c, task_switch(SEL_B, TaskSwitchSource::Call)),
        Action::Inject(Event::fault(10, 0x78))
    );
    let v = &c.vcpu;
    assert_eq!(
        v.segs[Seg::Tr as usize].selector,
        SEL_B,
        "past the commit point"
    );
    assert_eq!(v.rip, 0x2000);
    let ds = v.segs[Seg::Ds as usize];
    assert_eq!((ds.selector, ds.attrs.unusable), (0x78, true));
    assert_eq!(v.segs[Seg::Ss as usize].selector, DATA);
    assert!(!v.segs[Seg::Ss as usize].attrs.unusable);
    let cs = v.segs[Seg::Cs as usize];
    assert_eq!(
        (cs.selector, cs.attrs.dpl, cs.attrs.unusable),
        (CODE, 0, false)
    );
    assert_eq!(v.injected, [Event::fault(10, 0x78)]);
}

#[test]
fn faults_after_the_commit_point_carry_ext_and_follow_the_double_fault_rules() {
    // During an NMI: EXT set, delivered serially.
    let mut v = machine();
    put16(&mut v, TSS_B + 0x54, 0x78);
    let mut c = switch_cpu(v);
    c.events.interrupted = Some(Event::nmi());
    assert_eq!(
        exit(&mut c, task_switch(SEL_B, TaskSwitchSource::Gate)),
        Action::Inject(Event::fault(10, 0x79))
    );
    assert!(c.vcpu.intr.nmi && !c.events.pending_nmi);
    // During a #GP: #TS is contributory too, so #DF.
    let mut v = machine();
    put16(&mut v, TSS_B + 0x54, 0x78);
    let mut c = switch_cpu(v);
    c.events.interrupted = Some(Event::fault(13, 0));
    assert_eq!(
        exit(&mut c, task_switch(SEL_B, TaskSwitchSource::Gate)),
        Action::Inject(Event::DF)
    );
    // During a #DF: shutdown.
    let mut v = machine();
    put16(&mut v, TSS_B + 0x54, 0x78);
    let mut c = switch_cpu(v);
    c.events.interrupted = Some(Event::DF);
    assert_eq!(
        exit(&mut c, task_switch(SEL_B, TaskSwitchSource::Gate)),
        Action::Stop(Stop::Failed("guest triple fault"))
    );
}

#[test]
fn segment_checks_name_the_selector_and_the_right_exception() {
    // (field offset in the TSS, selector, expected exception)
    let cases: [(u64, u16, Event); 7] = [
        (0x50, 0, Event::fault(10, 0)),                            // SS null
        (0x50, SEL_NP_DATA, Event::fault(12, SEL_NP_DATA as u32)), // SS not present
        (0x50, CODE, Event::fault(10, CODE as u32)),               // SS not writable data
        (
            0x50,
            SEL_RING3_DATA | 3,
            Event::fault(10, SEL_RING3_DATA as u32),
        ), // SS DPL != CPL
        (0x4C, SEL_NP_CODE, Event::fault(11, SEL_NP_CODE as u32)), // CS not present
        (0x4C, DATA, Event::fault(10, DATA as u32)),               // CS not code
        (0x48, SEL_NP_DATA, Event::fault(11, SEL_NP_DATA as u32)), // ES not present
    ];
    for (field, sel, expected) in cases {
        let mut v = machine();
        put16(&mut v, TSS_B + field, sel);
        let mut c = switch_cpu(v);
        assert_eq!(
            exit(&mut c, task_switch(SEL_B, TaskSwitchSource::Jmp)),
            Action::Inject(expected),
            "field {field:#x} selector {sel:#x}"
        );
        let (cs, ss) = (c.vcpu.segs[Seg::Cs as usize], c.vcpu.segs[Seg::Ss as usize]);
        assert!(
            !cs.attrs.unusable && !ss.attrs.unusable,
            "CS and SS stay usable"
        );
        assert_eq!(cs.attrs.dpl, ss.attrs.dpl, "one CPL");
    }
}

#[test]
fn a_fault_before_ss_is_loaded_is_delivered_from_privilege_3() {
    // The reference emulator delivers it with a stack switch to the new TSS's ring-0 stack.
    let mut v = machine();
    put16(&mut v, TSS_B + 0x60, 0x0C); // LDT selector with TI set
    let mut c = switch_cpu(v);
    assert_eq!(
        exit(&mut c, task_switch(SEL_B, TaskSwitchSource::Jmp)),
        Action::Inject(Event::fault(10, 0x0C))
    );
    let ss = c.vcpu.segs[Seg::Ss as usize];
    assert_eq!((ss.selector, ss.attrs.dpl), (DATA, 3));
    assert_eq!(c.vcpu.segs[Seg::Cs as usize].attrs.dpl, 3);
}

#[test]
fn the_new_ldt_serves_the_new_tasks_selectors() {
    let mut v = machine();
    put16(&mut v, TSS_B + 0x60, SEL_LDT);
    put16(&mut v, TSS_B + 0x54, 0x0C); // DS: LDT entry 1
    let mut c = switch_cpu(v);
    assert_eq!(
        exit(&mut c, task_switch(SEL_B, TaskSwitchSource::Jmp)),
        Action::Resume
    );
    let ldtr = c.vcpu.segs[Seg::Ldtr as usize];
    assert_eq!(
        (ldtr.selector, ldtr.base, ldtr.limit, ldtr.attrs.typ),
        (SEL_LDT, LDT, 0xF, 2)
    );
    let ds = c.vcpu.segs[Seg::Ds as usize];
    assert_eq!((ds.selector, ds.base, ds.limit), (0x0C, 0x4_0000, 0xFFFF));
}

#[test]
fn the_debug_trap_bit_raises_db_with_bt() {
    let mut v = machine();
    put16(&mut v, TSS_B + 0x64, 1);
    let mut c = switch_cpu(v);
    assert_eq!(
        exit(&mut c, task_switch(SEL_B, TaskSwitchSource::Jmp)),
        Action::Inject(Event::DB)
    );
    assert_ne!(c.vcpu.drs[6] & DR6_BT, 0);
    assert_eq!(c.vcpu.rflags & RFLAGS_RF, 0, "a trap, not a fault");
}

#[test]
fn eip_beyond_the_new_cs_limit_is_a_general_protection_fault() {
    let mut v = machine();
    v.poke64(GDT + 0x50, desc(0, 0xFFF, 0x9B, 0x4));
    put16(&mut v, TSS_B + 0x4C, 0x50);
    let mut c = switch_cpu(v);
    assert_eq!(
        exit(&mut c, task_switch(SEL_B, TaskSwitchSource::Jmp)),
        Action::Inject(Event::GP0)
    );
    assert_eq!(c.vcpu.segs[Seg::Cs as usize].selector, 0x50);
}

#[test]
fn a_16_bit_tss_saves_and_loads_words() {
    let mut v = machine();
    put16(&mut v, TSS_16 + 14, 0x3000);
    put16(&mut v, TSS_16 + 16, 0x0202);
    for i in 0..8u64 {
        put16(&mut v, TSS_16 + 18 + 2 * i, 0x1600 + i as u16);
    }
    for (i, sel) in [DATA, CODE, DATA, DATA].iter().enumerate() {
        put16(&mut v, TSS_16 + 34 + 2 * i as u64, *sel);
    }
    let mut c = switch_cpu(v);
    assert_eq!(
        exit(&mut c, task_switch(SEL_16, TaskSwitchSource::Jmp)),
        Action::Resume
    );
    let v = &c.vcpu;
    assert_eq!(v.rip, 0x3000);
    assert_eq!(v.rflags, 0x0202);
    assert_eq!(
        v.gprs[0], 0xFFFF_1600,
        "the reference emulator's upper halves"
    );
    let tr = v.segs[Seg::Tr as usize];
    assert_eq!((tr.selector, tr.attrs.typ), (SEL_16, 3));
    assert!(v.segs[Seg::Fs as usize].attrs.unusable && v.segs[Seg::Gs as usize].attrs.unusable);
}

#[test]
fn cr3_is_loaded_with_paging_on_and_flushes_the_tlb() {
    let mut v = machine();
    // Identity map of the first 4 MiB with one large page in two page directories.
    v.cr4 |= CR4_PSE;
    for pd in [0x2_0000u64, 0x2_2000] {
        put32(&mut v, pd, 0x87);
    }
    v.cr3 = 0x2_0000;
    v.cr0 |= CR0_PG;
    put32(&mut v, TSS_B + 0x1C, 0x2_2000);
    let mut c = switch_cpu(v);
    exit(&mut c, task_switch(SEL_B, TaskSwitchSource::Jmp));
    assert_eq!(c.vcpu.cr3, 0x2_2000);
    assert!(c.vcpu.flushes.contains(&Flush::NonGlobal));
}

#[test]
fn a_virtual_8086_task_gets_real_mode_style_segments() {
    let mut v = machine();
    put32(&mut v, TSS_B + 0x24, (RFLAGS_FIXED1 | RFLAGS_VM) as u32);
    put16(&mut v, TSS_B + 0x4C, 0x1234);
    put16(&mut v, TSS_B + 0x20, 0x10);
    let mut c = switch_cpu(v);
    assert_eq!(
        exit(&mut c, task_switch(SEL_B, TaskSwitchSource::Jmp)),
        Action::Resume
    );
    let cs = c.vcpu.segs[Seg::Cs as usize];
    assert_eq!(
        (cs.base, cs.limit, cs.attrs.dpl, cs.attrs.typ),
        (0x12340, 0xFFFF, 3, 3)
    );
}
