//! Checks on the guest segment registers (SDM Vol. 3C 27.3.1.2). A processor reports any of
//! these as a VM exit with reason 33.
//!
//! Access rights use the VMCS layout (SDM Vol. 3C 25.4.1): type 3:0, S 4, DPL 6:5, P 7,
//! reserved 11:8, AVL 12, L 13, D/B 14, G 15, unusable 16, reserved 31:17.

use super::rules::*;
use super::Ctx;
use crate::regs::{CR0_PE, RFLAGS_VM};
use crate::vmcs::Field;
use alloc::format;

const AR_RESERVED: u64 = 0xfffe_0f00;

#[derive(Clone, Copy)]
struct Seg {
    name: &'static str,
    sel_f: Field,
    base_f: Field,
    limit_f: Field,
    ar_f: Field,
    sel: u64,
    base: u64,
    limit: u64,
    ar: u64,
}

impl Seg {
    fn read(c: &Ctx, name: &'static str, fields: [Field; 4]) -> Seg {
        let [sel_f, base_f, limit_f, ar_f] = fields;
        Seg {
            name,
            sel_f,
            base_f,
            limit_f,
            ar_f,
            sel: c.read(sel_f),
            base: c.read(base_f),
            limit: c.read(limit_f),
            ar: c.read(ar_f),
        }
    }
    fn ty(&self) -> u64 {
        self.ar & 0xf
    }
    fn s(&self) -> bool {
        self.ar & (1 << 4) != 0
    }
    fn dpl(&self) -> u64 {
        (self.ar >> 5) & 3
    }
    fn present(&self) -> bool {
        self.ar & (1 << 7) != 0
    }
    fn l(&self) -> bool {
        self.ar & (1 << 13) != 0
    }
    fn db(&self) -> bool {
        self.ar & (1 << 14) != 0
    }
    fn g(&self) -> bool {
        self.ar & (1 << 15) != 0
    }
    fn usable(&self) -> bool {
        self.ar & (1 << 16) == 0
    }
    fn rpl(&self) -> u64 {
        self.sel & 3
    }
    fn ti(&self) -> bool {
        self.sel & 4 != 0
    }
    /// A limit with any of bits 11:0 clear needs G = 0; one with any of bits 31:20 set needs
    /// G = 1 (SDM Vol. 3C 27.3.1.2).
    fn granularity_ok(&self) -> bool {
        if self.g() {
            self.limit & 0xfff == 0xfff
        } else {
            self.limit & 0xfff0_0000 == 0
        }
    }
}

fn segments(c: &Ctx) -> [Seg; 8] {
    use Field::*;
    [
        Seg::read(
            c,
            "CS",
            [
                GuestCsSelector,
                GuestCsBase,
                GuestCsLimit,
                GuestCsAccessRights,
            ],
        ),
        Seg::read(
            c,
            "SS",
            [
                GuestSsSelector,
                GuestSsBase,
                GuestSsLimit,
                GuestSsAccessRights,
            ],
        ),
        Seg::read(
            c,
            "DS",
            [
                GuestDsSelector,
                GuestDsBase,
                GuestDsLimit,
                GuestDsAccessRights,
            ],
        ),
        Seg::read(
            c,
            "ES",
            [
                GuestEsSelector,
                GuestEsBase,
                GuestEsLimit,
                GuestEsAccessRights,
            ],
        ),
        Seg::read(
            c,
            "FS",
            [
                GuestFsSelector,
                GuestFsBase,
                GuestFsLimit,
                GuestFsAccessRights,
            ],
        ),
        Seg::read(
            c,
            "GS",
            [
                GuestGsSelector,
                GuestGsBase,
                GuestGsLimit,
                GuestGsAccessRights,
            ],
        ),
        Seg::read(
            c,
            "TR",
            [
                GuestTrSelector,
                GuestTrBase,
                GuestTrLimit,
                GuestTrAccessRights,
            ],
        ),
        Seg::read(
            c,
            "LDTR",
            [
                GuestLdtrSelector,
                GuestLdtrBase,
                GuestLdtrLimit,
                GuestLdtrAccessRights,
            ],
        ),
    ]
}

pub(super) fn check(c: &mut Ctx) {
    let [cs, ss, ds, es, fs, gs, tr, ldtr] = segments(c);
    let v86 = c.read(Field::GuestRflags) & RFLAGS_VM != 0;
    let ug = c.unrestricted();

    // Selectors.
    if tr.ti() {
        c.fail(
            GUEST_TR_TI,
            format!("TR selector {:#x} has TI set", tr.sel),
            &[tr.sel_f],
        );
    }
    if ldtr.usable() && ldtr.ti() {
        c.fail(
            GUEST_LDTR_TI,
            format!("LDTR selector {:#x} has TI set", ldtr.sel),
            &[ldtr.sel_f],
        );
    }
    if !v86 && !ug && ss.rpl() != cs.rpl() {
        c.fail(
            GUEST_SS_CS_RPL,
            format!("SS.RPL {} differs from CS.RPL {}", ss.rpl(), cs.rpl()),
            &[ss.sel_f, cs.sel_f],
        );
    }

    // Bases.
    for s in [tr, fs, gs, ldtr] {
        if (s.name != "LDTR" || s.usable()) && !c.canonical(s.base) {
            c.fail(
                GUEST_BASE_CANONICAL,
                format!("{} base {:#x} not canonical", s.name, s.base),
                &[s.base_f],
            );
        }
    }
    for s in [cs, ss, ds, es] {
        if (s.name == "CS" || s.usable()) && s.base >> 32 != 0 {
            c.fail(
                GUEST_BASE_HIGH,
                format!("{} base {:#x} above 4 GiB", s.name, s.base),
                &[s.base_f],
            );
        }
    }

    if v86 {
        virtual_8086(c, [cs, ss, ds, es, fs, gs]);
    } else {
        code_and_data(c, cs, ss, [ds, es, fs, gs]);
    }
    task_register(c, tr);
    if ldtr.usable() {
        if ldtr.ty() != 2 {
            c.fail(
                GUEST_LDTR_TYPE,
                format!("LDTR type {} is not an LDT (2)", ldtr.ty()),
                &[ldtr.ar_f],
            );
        }
        descriptor_basics(c, ldtr, false);
    }
}

/// In virtual-8086 mode every segment must look as real-mode-style loading makes it.
fn virtual_8086(c: &mut Ctx, segs: [Seg; 6]) {
    for s in segs {
        if s.base != s.sel << 4 {
            c.fail(
                GUEST_V86_BASE,
                format!(
                    "{} base {:#x} is not selector {:#x} * 16",
                    s.name, s.base, s.sel
                ),
                &[s.base_f, s.sel_f],
            );
        }
        if s.limit != 0xffff {
            c.fail(
                GUEST_V86_LIMIT,
                format!("{} limit {:#x} is not 0xFFFF", s.name, s.limit),
                &[s.limit_f],
            );
        }
        if s.ar != 0xf3 {
            c.fail(
                GUEST_V86_AR,
                format!("{} access rights {:#x} are not 0xF3", s.name, s.ar),
                &[s.ar_f],
            );
        }
    }
}

/// S, P, reserved bits and granularity, common to every usable descriptor. `code_data` says
/// whether the descriptor must be a code/data one (S = 1) or a system one (S = 0).
fn descriptor_basics(c: &mut Ctx, s: Seg, code_data: bool) {
    if s.s() != code_data {
        let (rule, what) = if code_data {
            (GUEST_SEG_S, "a system")
        } else {
            (GUEST_SYSTEM_S, "a code/data")
        };
        c.fail(
            rule,
            format!(
                "{} is {what} descriptor (access rights {:#x})",
                s.name, s.ar
            ),
            &[s.ar_f],
        );
    }
    if !s.present() {
        c.fail(
            GUEST_SEG_PRESENT,
            format!("{} not present (access rights {:#x})", s.name, s.ar),
            &[s.ar_f],
        );
    }
    if s.ar & AR_RESERVED != 0 {
        c.fail(
            GUEST_SEG_RESERVED,
            format!(
                "{} access rights {:#x} set reserved bits {:#x}",
                s.name,
                s.ar,
                s.ar & AR_RESERVED
            ),
            &[s.ar_f],
        );
    }
    if !s.granularity_ok() {
        c.fail(
            GUEST_SEG_GRANULARITY,
            format!(
                "{} limit {:#x} does not fit G = {}",
                s.name,
                s.limit,
                s.g() as u8
            ),
            &[s.limit_f, s.ar_f],
        );
    }
}

fn code_and_data(c: &mut Ctx, cs: Seg, ss: Seg, data: [Seg; 4]) {
    let ug = c.unrestricted();
    let pe = c.read(Field::GuestCr0) & CR0_PE != 0;

    // CS is always checked, usable or not.
    let cs_ok = matches!(cs.ty(), 9 | 11 | 13 | 15) || (ug && cs.ty() == 3);
    if !cs_ok {
        c.fail(
            GUEST_CS_TYPE,
            format!("CS type {} is not an accessed code segment", cs.ty()),
            &[cs.ar_f],
        );
    }
    descriptor_basics(c, cs, true);
    let cs_dpl_ok = match cs.ty() {
        3 => cs.dpl() == 0,
        9 | 11 => cs.dpl() == ss.dpl(),
        13 | 15 => cs.dpl() <= ss.dpl(),
        _ => true,
    };
    if !cs_dpl_ok {
        c.fail(
            GUEST_CS_DPL,
            format!(
                "CS type {} with DPL {} against SS.DPL {}",
                cs.ty(),
                cs.dpl(),
                ss.dpl()
            ),
            &[cs.ar_f, ss.ar_f],
        );
    }
    if c.ia32e_guest() && cs.l() && cs.db() {
        c.fail(
            GUEST_CS_L_DB,
            "CS has both L and D/B set in IA-32e mode".into(),
            &[cs.ar_f],
        );
    }

    // SS: its DPL is the CPL, so these apply even when SS is unusable.
    if !ug && ss.dpl() != ss.rpl() {
        c.fail(
            GUEST_SS_DPL,
            format!("SS.DPL {} differs from SS.RPL {}", ss.dpl(), ss.rpl()),
            &[ss.ar_f, ss.sel_f],
        );
    } else if (cs.ty() == 3 || !pe) && ss.dpl() != 0 {
        c.fail(
            GUEST_SS_DPL,
            format!(
                "SS.DPL {} must be 0 in real mode or with a data-type CS",
                ss.dpl()
            ),
            &[ss.ar_f, Field::GuestCr0],
        );
    }
    if ss.usable() {
        if !matches!(ss.ty(), 3 | 7) {
            c.fail(
                GUEST_SS_TYPE,
                format!(
                    "SS type {} is not an accessed read/write data segment",
                    ss.ty()
                ),
                &[ss.ar_f],
            );
        }
        descriptor_basics(c, ss, true);
    }

    for s in data.into_iter().filter(Seg::usable) {
        let ty = s.ty();
        if ty & 1 == 0 || (ty & 8 != 0 && ty & 2 == 0) {
            c.fail(
                GUEST_DATA_TYPE,
                format!(
                    "{} type {ty} is not accessed, or is unreadable code",
                    s.name
                ),
                &[s.ar_f],
            );
        }
        descriptor_basics(c, s, true);
        // Types 0-11 are data or non-conforming code, whose DPL bounds the RPL.
        if !ug && ty <= 11 && s.dpl() < s.rpl() {
            c.fail(
                GUEST_DATA_DPL,
                format!("{} DPL {} below RPL {}", s.name, s.dpl(), s.rpl()),
                &[s.ar_f, s.sel_f],
            );
        }
    }
}

fn task_register(c: &mut Ctx, tr: Seg) {
    let type_ok = match tr.ty() {
        11 => true,
        3 => !c.ia32e_guest(),
        _ => false,
    };
    if !type_ok {
        c.fail(
            GUEST_TR_TYPE,
            format!(
                "TR type {} is not a busy TSS{}",
                tr.ty(),
                if c.ia32e_guest() {
                    " of 32/64 bits"
                } else {
                    ""
                }
            ),
            &[tr.ar_f],
        );
    }
    if !tr.usable() {
        c.fail(
            GUEST_TR_UNUSABLE,
            format!("TR marked unusable (access rights {:#x})", tr.ar),
            &[tr.ar_f],
        );
    }
    descriptor_basics(c, tr, false);
}
