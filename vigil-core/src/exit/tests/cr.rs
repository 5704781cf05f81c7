//! Control-register writes as the processor performs them, PDPTE loads included.

use crate::exit::{Action, CrAccess, CrOp, Exit};
use crate::testing::{cpu, cpu_with, exit, FakeVcpu};

use crate::vcpu::{Flush, Seg};
use x86_arch::event::Event;
use x86_arch::regs::*;

fn mov_to(cr: u8, gpr: u8) -> Exit {
    Exit::Cr(CrAccess {
        cr,
        op: CrOp::Write(gpr),
    })
}

/// A 32-bit guest with PAE paging, its PDPT at 0x3000 holding two present entries.
fn pae() -> FakeVcpu {
    let mut v = FakeVcpu::protected32();
    v.cr0 |= CR0_PG;
    v.cr4 = CR4_PAE;
    v.cr3 = 0x3000;
    v.poke64(0x3000, 0x4001);
    v.poke64(0x3008, 0x5001);
    v
}

#[test]
fn cr0_writes_take_the_guests_value() {
    let mut c = cpu_with("", FakeVcpu::protected32());
    c.vcpu.gprs[3] = CR0_PE | CR0_ET | CR0_MP;
    assert_eq!(exit(&mut c, mov_to(0, 3)), Action::Advance);
    assert_eq!(
        c.vcpu.cr0,
        CR0_PE | CR0_ET | CR0_MP,
        "NE cleared as the guest asked"
    );
}

#[test]
fn invalid_cr0_values_get_gp() {
    let mut c = cpu_with("", FakeVcpu::protected32());
    let before = c.vcpu.cr0;
    for bad in [CR0_PG | CR0_ET, CR0_PE | CR0_NW] {
        c.vcpu.gprs[0] = bad;
        assert_eq!(
            exit(&mut c, mov_to(0, 0)),
            Action::Inject(Event::GP0),
            "{bad:#x}"
        );
    }
    assert_eq!(c.vcpu.cr0, before);
    // In 64-bit mode the upper half is visible, and reserved.
    let mut c = cpu("");
    c.vcpu.gprs[0] = c.vcpu.cr0 | 1 << 32;
    assert_eq!(exit(&mut c, mov_to(0, 0)), Action::Inject(Event::GP0));
}

#[test]
fn paging_on_with_lme_enters_ia32e_mode() {
    let mut v = FakeVcpu::protected32();
    v.cr4 = CR4_PAE;
    v.efer = EFER_LME;
    v.cr3 = 0x10_0000;
    let mut c = cpu_with("", v);
    c.vcpu.gprs[0] = c.vcpu.cr0 | CR0_PG;
    exit(&mut c, mov_to(0, 0));
    assert_eq!(c.vcpu.efer, EFER_LME | EFER_LMA);
    assert_eq!(c.vcpu.pdptes, None, "IA-32e paging has no PDPTE registers");
    assert!(c.vcpu.flushes.contains(&Flush::All));
    // ... and PG with LME but without PAE faults.
    let mut v = FakeVcpu::protected32();
    v.efer = EFER_LME;
    let mut c = cpu_with("", v);
    c.vcpu.gprs[0] = c.vcpu.cr0 | CR0_PG;
    assert_eq!(exit(&mut c, mov_to(0, 0)), Action::Inject(Event::GP0));
}

#[test]
fn paging_cannot_be_turned_off_in_64_bit_mode() {
    let mut c = cpu("");
    c.vcpu.gprs[0] = c.vcpu.cr0 & !CR0_PG;
    assert_eq!(exit(&mut c, mov_to(0, 0)), Action::Inject(Event::GP0));
}

#[test]
fn a_cr0_write_that_changes_only_ne_loads_no_pdptes() {
    // The PDPT holds an entry with reserved bits: a MOV that loaded the PDPTEs would fault,
    // but changing NE does not load them (SDM Vol. 3A 4.4.1).
    let mut v = pae();
    v.poke64(0x3010, 0x6001 | 1 << 5);
    let mut c = cpu_with("", v);
    c.vcpu.gprs[0] = c.vcpu.cr0 ^ CR0_NE;
    assert_eq!(exit(&mut c, mov_to(0, 0)), Action::Advance);
    assert_eq!(c.vcpu.pdptes, None);
}

#[test]
fn a_cr3_load_under_pae_loads_and_checks_the_pdptes() {
    let mut c = cpu_with("", pae());
    c.vcpu.gprs[1] = 0x3000;
    assert_eq!(exit(&mut c, mov_to(3, 1)), Action::Advance);
    assert_eq!(c.vcpu.pdptes, Some([0x4001, 0x5001, 0, 0]));
    assert_eq!(c.vcpu.flushes, [Flush::NonGlobal]);
    // A present PDPTE with a reserved bit: #GP, and nothing changes.
    c.vcpu.poke64(0x7000, 0x8001 | 1 << 7);
    c.vcpu.gprs[1] = 0x7000;
    assert_eq!(exit(&mut c, mov_to(3, 1)), Action::Inject(Event::GP0));
    assert_eq!(c.vcpu.cr3, 0x3000);
    assert_eq!(c.vcpu.pdptes, Some([0x4001, 0x5001, 0, 0]));
}

#[test]
fn cr3_beyond_the_physical_address_width_gets_gp() {
    let mut c = cpu("");
    c.vcpu.gprs[1] = 1 << 45;
    assert_eq!(exit(&mut c, mov_to(3, 1)), Action::Inject(Event::GP0));
}

#[test]
fn a_pcid_cr3_load_with_bit_63_keeps_the_tlb() {
    let mut c = cpu("");
    c.vcpu.cr4 |= CR4_PCIDE;
    c.vcpu.gprs[1] = 1 << 63 | 0x20_0000 | 5;
    assert_eq!(exit(&mut c, mov_to(3, 1)), Action::Advance);
    assert_eq!(c.vcpu.cr3, 0x20_0005);
    assert!(c.vcpu.flushes.is_empty());
}

#[test]
fn cr4_checks() {
    let mut c = cpu("");
    c.vcpu.gprs[0] = c.vcpu.cr4 | CR4_VMXE;
    assert_eq!(
        exit(&mut c, mov_to(4, 0)),
        Action::Inject(Event::GP0),
        "VMX is hidden"
    );
    c.vcpu.gprs[0] = 0;
    assert_eq!(
        exit(&mut c, mov_to(4, 0)),
        Action::Inject(Event::GP0),
        "PAE in long mode"
    );
    c.vcpu.cr3 = 0x10_0001;
    c.vcpu.gprs[0] = c.vcpu.cr4 | CR4_PCIDE;
    assert_eq!(
        exit(&mut c, mov_to(4, 0)),
        Action::Inject(Event::GP0),
        "PCIDE with CR3[11:0]"
    );
    c.vcpu.cr3 = 0x10_0000;
    c.vcpu.gprs[0] = c.vcpu.cr4 | CR4_PGE;
    assert_eq!(exit(&mut c, mov_to(4, 0)), Action::Advance);
    assert_eq!(c.vcpu.flushes, [Flush::All]);
}

#[test]
fn mov_from_cr3_clts_and_lmsw() {
    let mut c = cpu("");
    exit(
        &mut c,
        Exit::Cr(CrAccess {
            cr: 3,
            op: CrOp::Read(5),
        }),
    );
    assert_eq!(c.vcpu.gprs[5], 0x10_0000);
    c.vcpu.cr0 |= CR0_TS;
    exit(
        &mut c,
        Exit::Cr(CrAccess {
            cr: 0,
            op: CrOp::Clts,
        }),
    );
    assert_eq!(c.vcpu.cr0 & CR0_TS, 0);
    // LMSW sets MP/EM/TS but can never clear PE.
    exit(
        &mut c,
        Exit::Cr(CrAccess {
            cr: 0,
            op: CrOp::Lmsw(0b1010),
        }),
    );
    assert_eq!(c.vcpu.cr0 & 0xF, CR0_PE | CR0_MP | CR0_TS);
}

#[test]
fn a_32_bit_guest_writes_the_low_half_of_the_register() {
    let mut v = FakeVcpu::protected32();
    v.segs[Seg::Cs as usize].attrs.long = false;
    let mut c = cpu_with("", v);
    c.vcpu.gprs[2] = 0xFFFF_FFFF_0000_0000 | CR0_PE | CR0_ET;
    assert_eq!(exit(&mut c, mov_to(0, 2)), Action::Advance);
    assert_eq!(c.vcpu.cr0, CR0_PE | CR0_ET);
}
