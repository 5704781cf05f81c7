//! Every rule is exercised by one case: a baseline VMCB that passes everything, with one change
//! that must break exactly that rule; near misses must still pass.

use super::*;
use crate::intercept::{Misc1, Misc2, SVM_INSTRUCTIONS};
use crate::vmcb::Vmcb;
use alloc::boxed::Box;
use alloc::collections::BTreeSet;
use alloc::vec;

const VMCB_PA: u64 = 0x7F00_0000;
const PAT_POWER_ON: u64 = 0x0007_0406_0007_0406;

/// A processor like Bochs' `ryzen`: 40-bit physical addresses, long mode, NXE and FFXSR, the
/// SSE/XSAVE/SMEP/SMAP/FSGSBASE CR4 bits, nested paging, no CET.
fn ryzen() -> Platform {
    Platform {
        phys_addr_width: 40,
        long_mode: true,
        efer_supported: EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE | EFER_SVME | (1 << 14),
        cr4_supported: 0x7FF | CR4_FSGSBASE | CR4_OSXSAVE | CR4_SMEP | CR4_SMAP,
        nested_paging: true,
        cet: false,
    }
}

struct Env {
    v: Box<Vmcb>,
    platform: Platform,
    host: Host,
}

impl Env {
    fn set(&mut self, f: Field, value: u64) {
        self.v.write(f, value);
    }
    fn or(&mut self, f: Field, bits: u64) {
        let v = self.v.read(f);
        self.v.write(f, v | bits);
    }
    fn clear(&mut self, f: Field, bits: u64) {
        let v = self.v.read(f);
        self.v.write(f, v & !bits);
    }
    fn ids(&self) -> BTreeSet<&'static str> {
        check_vmrun(&*self.v, &self.platform, &self.host)
            .iter()
            .map(|v| v.rule)
            .collect()
    }
}

/// Vigil's own first VMCB: a 32-bit protected-mode guest with flat segments, paging off,
/// nested paging on, the intercepts Vigil always sets.
fn baseline32() -> Env {
    let mut v = Box::new(Vmcb::zeroed());
    v.write(
        Field::InterceptMisc1,
        (Misc1::CPUID | Misc1::IOIO_PROT | Misc1::MSR_PROT | Misc1::SHUTDOWN | Misc1::INVD).bits()
            as u64,
    );
    v.write(
        Field::InterceptMisc2,
        (SVM_INSTRUCTIONS | Misc2::VMMCALL).bits() as u64,
    );
    v.write(Field::IopmBase, 0x7F01_0000);
    v.write(Field::MsrpmBase, 0x7F04_0000);
    v.write(Field::GuestAsid, 1);
    v.write(
        Field::NestedControl,
        crate::intercept::nested_control::NP_ENABLE,
    );
    v.write(Field::NestedCr3, 0x7F10_0000);
    let code = Attrib::new(0xB, true, 0, true, false, false, true, true);
    let data = Attrib::new(0x3, true, 0, true, false, false, true, true);
    for (n, sel, a) in [
        (0, 0x18, data),
        (1, 0x10, code),
        (2, 0x18, data),
        (3, 0x18, data),
    ] {
        let s = crate::vmcb::seg_fields(n);
        v.write(s.selector, sel);
        v.write(s.attrib, a.0 as u64);
        v.write(s.limit, 0xFFFF_FFFF);
    }
    v.write(Field::Efer, EFER_SVME);
    v.write(Field::Cr0, CR0_PE | CR0_ET);
    v.write(Field::Dr6, 0xFFFF_0FF0);
    v.write(Field::Dr7, 0x400);
    v.write(Field::Rflags, 2);
    v.write(Field::Rip, 0x10_000C);
    v.write(Field::GPat, PAT_POWER_ON);
    Env {
        v,
        platform: ryzen(),
        host: Host::long_mode(VMCB_PA),
    }
}

/// The same guest later, in 64-bit mode with paging.
fn baseline64() -> Env {
    let mut e = baseline32();
    e.set(
        Field::Efer,
        EFER_SVME | EFER_LME | EFER_LMA | EFER_NXE | EFER_SCE,
    );
    e.set(Field::Cr0, CR0_PE | CR0_ET | CR0_NE | CR0_WP | CR0_PG);
    e.set(Field::Cr4, CR4_PAE | CR4_PGE | CR4_OSFXSR | CR4_OSXMMEXCPT);
    e.set(Field::Cr3, 0x100_0000);
    e.set(
        Field::CsAttrib,
        Attrib::new(0xB, true, 0, true, false, true, false, true).0 as u64,
    );
    e
}

#[test]
fn baselines_pass_every_rule() {
    for e in [baseline32(), baseline64()] {
        let found = check_vmrun(&*e.v, &e.platform, &e.host);
        assert!(found.is_empty(), "{found:#?}");
    }
    // And with the widest platform limits.
    let e = baseline64();
    assert!(check_vmrun(&*e.v, &Platform::default(), &e.host).is_empty());
}

type Case = (&'static str, fn(&mut Env));

/// One change per rule, each breaking that rule alone.
const CASES: &[Case] = &[
    ("vmrun.host.svme", |e| e.host.efer &= !EFER_SVME),
    ("vmrun.host.protected_mode", |e| e.host.v8086 = true),
    ("vmrun.host.cpl", |e| e.host.cpl = 3),
    ("vmrun.vmcb_address", |e| e.host.vmcb_pa = VMCB_PA + 0x10),
    ("control.intercept.vmrun", |e| {
        e.clear(Field::InterceptMisc2, Misc2::VMRUN.bits() as u64)
    }),
    ("control.iopm.address", |e| {
        // The last page of the physical address space cannot hold 12 KiB.
        e.set(Field::IopmBase, (1 << 40) - 0x1000)
    }),
    ("control.msrpm.address", |e| {
        e.set(Field::MsrpmBase, 1 << 41)
    }),
    ("control.asid.zero", |e| e.set(Field::GuestAsid, 0)),
    ("control.eventinj.type", |e| {
        e.set(Field::EventInj, crate::exit::VALID | (5 << 8) | 0x20)
    }),
    ("control.eventinj.exception_vector", |e| {
        e.set(Field::EventInj, crate::exit::VALID | (3 << 8) | 2)
    }),
    ("control.np.supported", |e| e.platform.nested_paging = false),
    ("control.np.host_paging", |e| e.host.cr0 &= !CR0_PG),
    ("control.np.ncr3", |e| e.set(Field::NestedCr3, 1 << 45)),
    ("guest.g_pat", |e| {
        e.set(Field::GPat, (PAT_POWER_ON & !0xFF) | 2)
    }),
    ("guest.efer.svme", |e| e.clear(Field::Efer, EFER_SVME)),
    ("guest.cr0.nw_without_cd", |e| e.or(Field::Cr0, CR0_NW)),
    ("guest.cr0.high", |e| e.or(Field::Cr0, 1 << 32)),
    ("guest.cr3.mbz", |e| e.set(Field::Cr3, 1 << 32)),
    ("guest.cr4.mbz", |e| e.or(Field::Cr4, CR4_VMXE)),
    ("guest.dr6.high", |e| e.or(Field::Dr6, 1 << 40)),
    ("guest.dr7.high", |e| e.or(Field::Dr7, 1 << 33)),
    ("guest.efer.mbz", |e| e.or(Field::Efer, 1 << 20)),
    ("guest.efer.long_mode_supported", |e| {
        e.platform.long_mode = false;
        e.or(Field::Efer, EFER_LME)
    }),
    ("guest.efer.lme_pg_without_pae", |e| {
        e.set(Field::Efer, EFER_SVME | EFER_LME);
        e.or(Field::Cr0, CR0_PG)
    }),
    ("guest.efer.lme_pg_without_pe", |e| {
        e.set(Field::Efer, EFER_SVME | EFER_LME);
        e.set(Field::Cr4, CR4_PAE);
        e.set(Field::Cr0, CR0_PG | CR0_ET)
    }),
    ("guest.cs.long_and_default", |e| {
        *e = baseline64();
        e.or(Field::CsAttrib, 1 << 10)
    }),
    ("guest.cr4.cet_without_wp", |e| {
        e.platform.cet = true;
        e.platform.cr4_supported |= CR4_CET;
        e.set(Field::Cr4, CR4_CET)
    }),
];

#[test]
fn every_rule_has_a_case_and_each_case_breaks_its_rule_alone() {
    let covered: BTreeSet<&str> = CASES.iter().map(|(id, _)| *id).collect();
    let all: BTreeSet<&str> = rules::ALL.iter().map(|r| r.id).collect();
    assert_eq!(
        covered, all,
        "rules without a case, or cases without a rule"
    );
    assert_eq!(covered.len(), CASES.len(), "one case per rule");
    for (id, break_it) in CASES {
        let mut e = baseline32();
        break_it(&mut e);
        assert_eq!(e.ids(), BTreeSet::from([*id]), "case {id}");
    }
}

#[test]
fn near_misses_pass() {
    let near: &[Case] = &[
        ("NW with CD", |e| e.or(Field::Cr0, CR0_NW | CR0_CD)),
        ("the last 12 KiB below MAXPHYADDR", |e| {
            e.set(Field::IopmBase, (1 << 40) - 0x3000)
        }),
        ("low bits of the map bases are ignored", |e| {
            e.or(Field::MsrpmBase, 0xFFF)
        }),
        ("CS.L and CS.D outside long mode", |e| {
            e.or(Field::CsAttrib, 1 << 9)
        }),
        ("LME without PG", |e| e.or(Field::Efer, EFER_LME)),
        (
            "paged real mode (PG without PE) is allowed for SVM guests",
            |e| e.set(Field::Cr0, CR0_PG | CR0_ET),
        ),
        ("CR3 bits above 32 in long mode, below MAXPHYADDR", |e| {
            *e = baseline64();
            e.set(Field::Cr3, 1 << 39)
        }),
        ("an injected #GP with its error code", |e| {
            e.set(
                Field::EventInj,
                crate::exit::EventInfo::inject(&x86_arch::event::Event::GP0).0,
            )
        }),
        ("an invalid G_PAT without nested paging", |e| {
            e.set(Field::NestedControl, 0);
            e.set(Field::GPat, 0x0202_0202_0202_0202)
        }),
        ("a software interrupt with any vector", |e| {
            e.set(Field::EventInj, crate::exit::VALID | (4 << 8) | 2)
        }),
        ("an invalid injection that is not valid", |e| {
            e.set(Field::EventInj, 5 << 8)
        }),
    ];
    for (what, change) in near {
        let mut e = baseline32();
        change(&mut e);
        assert_eq!(e.ids(), BTreeSet::new(), "{what}");
    }
}

#[test]
fn violations_read_well_and_predict_the_failure() {
    let mut e = baseline32();
    e.set(Field::GuestAsid, 0);
    e.clear(Field::Efer, EFER_SVME);
    let found = check_vmrun(&*e.v, &e.platform, &e.host);
    assert_eq!(found.len(), 2);
    let text = alloc::format!("{}", found[0]);
    assert!(
        text.starts_with(
            "[control.asid.zero] APM Vol. 2 15.5.1: guest ASID 0 is the host's; guest ASID = 0x0"
        ),
        "{text}"
    );
    assert_eq!(predicted_failures(&found), vec![Failure::VmexitInvalid]);
    assert!(agrees(&found, Failure::VmexitInvalid));
    assert!(!agrees(&found, Failure::GeneralProtection));
    // The instruction's own faults come first.
    e.host.cpl = 3;
    let found = check_vmrun(&*e.v, &e.platform, &e.host);
    assert_eq!(predicted_failures(&found), vec![Failure::GeneralProtection]);
    e.host.efer = 0;
    let found = check_vmrun(&*e.v, &e.platform, &e.host);
    assert_eq!(predicted_failures(&found), vec![Failure::InvalidOpcode]);
    let mut report = alloc::string::String::new();
    write_report(&found, Some(Failure::InvalidOpcode), &mut report).unwrap();
    assert!(report.contains("as the checks predict"), "{report}");
    report.clear();
    write_report(&[], Some(Failure::VmexitInvalid), &mut report).unwrap();
    assert!(report.contains("could be [guest.efer.svme]"), "{report}");
}

#[test]
fn rule_ids_are_unique_and_cite_chapter_15() {
    let ids: BTreeSet<&str> = rules::ALL.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), rules::ALL.len());
    for r in rules::ALL {
        assert!(r.apm.starts_with("15."), "{}", r.id);
        assert!(!r.requires.is_empty());
        assert_eq!(rules::find(r.id), Some(r));
    }
    assert!(rules_for(Failure::InvalidOpcode).count() >= 2);
}
