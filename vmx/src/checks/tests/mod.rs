//! Every rule is exercised by one case: a known-good baseline VMCS with one change that must
//! break exactly that rule (plus any listed companions), and where it sharpens the test a
//! near-miss change that must still pass.

mod cases_controls;
mod cases_guest;
mod cases_host;
mod outcome;

use super::*;
use crate::caps::{
    adjust, EntryControls as En, ExitControls as Ex, PinBased, PrimaryProcBased as P1,
    SecondaryProcBased as P2,
};
use crate::testing::rich_caps;
use crate::vmcs::{FakeVmcs, Field, Field::*};
use alloc::collections::BTreeSet;
use alloc::vec;
use alloc::vec::Vec;
use std::println;

/// A VMCS together with the processor it is checked against.
#[derive(Clone)]
pub(super) struct Env {
    pub v: FakeVmcs,
    pub caps: VmxCaps,
    pub platform: Platform,
}

impl Env {
    pub fn set(&mut self, f: Field, value: u64) {
        self.v.set(f, value);
    }
    pub fn or(&mut self, f: Field, bits: u64) {
        let v = self.v.get(f);
        self.v.set(f, v | bits);
    }
    pub fn clear(&mut self, f: Field, bits: u64) {
        let v = self.v.get(f);
        self.v.set(f, v & !bits);
    }
    pub fn check(&self) -> Vec<Violation> {
        check_vm_entry_with(&self.v, &self.caps, &self.platform)
    }
    pub fn rule_ids(&self) -> BTreeSet<&'static str> {
        self.check().iter().map(|v| v.rule).collect()
    }
    /// Sets a guest segment: selector, base, limit, access rights.
    pub fn seg(&mut self, fields: [Field; 4], sel: u64, base: u64, limit: u64, ar: u64) {
        for (f, v) in fields.into_iter().zip([sel, base, limit, ar]) {
            self.set(f, v);
        }
    }
}

pub(super) const CS: [Field; 4] = [
    GuestCsSelector,
    GuestCsBase,
    GuestCsLimit,
    GuestCsAccessRights,
];
pub(super) const SS: [Field; 4] = [
    GuestSsSelector,
    GuestSsBase,
    GuestSsLimit,
    GuestSsAccessRights,
];
pub(super) const DS: [Field; 4] = [
    GuestDsSelector,
    GuestDsBase,
    GuestDsLimit,
    GuestDsAccessRights,
];
pub(super) const ES: [Field; 4] = [
    GuestEsSelector,
    GuestEsBase,
    GuestEsLimit,
    GuestEsAccessRights,
];
pub(super) const FS: [Field; 4] = [
    GuestFsSelector,
    GuestFsBase,
    GuestFsLimit,
    GuestFsAccessRights,
];
pub(super) const GS: [Field; 4] = [
    GuestGsSelector,
    GuestGsBase,
    GuestGsLimit,
    GuestGsAccessRights,
];
pub(super) const TR: [Field; 4] = [
    GuestTrSelector,
    GuestTrBase,
    GuestTrLimit,
    GuestTrAccessRights,
];
pub(super) const LDTR: [Field; 4] = [
    GuestLdtrSelector,
    GuestLdtrBase,
    GuestLdtrLimit,
    GuestLdtrAccessRights,
];

/// Controls, host state and the parts of guest state every baseline shares: a 64-bit VMM with
/// EPT, VPID, MSR bitmaps and EFER/PAT switching.
fn common(p2: P2, entry: En) -> Env {
    let caps = rich_caps();
    let mut e = Env {
        v: FakeVmcs::new(),
        caps,
        platform: Platform::default(),
    };
    let pin = adjust(caps.pinbased, PinBased::empty()).value;
    let p1 = adjust(
        caps.procbased,
        P1::USE_MSR_BITMAPS | P1::ACTIVATE_SECONDARY_CONTROLS | P1::HLT_EXITING,
    )
    .value;
    let p2 = adjust(
        caps.procbased2,
        p2 | P2::ENABLE_EPT | P2::ENABLE_VPID | P2::ENABLE_RDTSCP,
    )
    .value;
    let exit = Ex::HOST_ADDRESS_SPACE_SIZE
        | Ex::SAVE_IA32_EFER
        | Ex::LOAD_IA32_EFER
        | Ex::SAVE_IA32_PAT
        | Ex::LOAD_IA32_PAT
        | Ex::ACK_INTERRUPT_ON_EXIT;
    let exit = adjust(caps.exit, exit).value;
    let entry = adjust(
        caps.entry,
        entry | En::LOAD_IA32_EFER | En::LOAD_IA32_PAT | En::LOAD_DEBUG_CONTROLS,
    )
    .value;
    e.set(PinBasedControls, pin.bits().into());
    e.set(PrimaryProcBasedControls, p1.bits().into());
    e.set(SecondaryProcBasedControls, p2.bits().into());
    e.set(ExitControls, exit.bits().into());
    e.set(EntryControls, entry.bits().into());
    e.set(MsrBitmap, 0x20_0000);
    e.set(EptPointer, 0x30_0000 | 6 | (3 << 3));
    e.set(VirtualProcessorId, 1);
    e.set(VmcsLinkPointer, u64::MAX);

    e.set(HostCr0, 0x8005_0033);
    e.set(HostCr3, 0x10_0000);
    e.set(HostCr4, 0x2020);
    e.set(HostCsSelector, 0x08);
    for f in [
        HostSsSelector,
        HostDsSelector,
        HostEsSelector,
        HostFsSelector,
        HostGsSelector,
    ] {
        e.set(f, 0x10);
    }
    e.set(HostTrSelector, 0x18);
    e.set(HostGsBase, 0x0400_8000);
    e.set(HostTrBase, 0x0400_9000);
    e.set(HostGdtrBase, 0x0400_a000);
    e.set(HostIdtrBase, 0x0400_b000);
    e.set(HostRsp, 0x0410_0000);
    e.set(HostRip, 0x0400_1000);
    e.set(HostIa32Efer, 0xd01);
    e.set(HostIa32Pat, 0x0007_0406_0007_0406);

    e.set(GuestIa32Pat, 0x0007_0406_0007_0406);
    e.set(GuestDr7, 0x400);
    e.set(GuestRflags, 0x2);
    e.seg(TR, 0x18, 0x9000, 0x67, 0x8b);
    e.seg(LDTR, 0, 0, 0, 0x1_0000);
    e.set(GuestGdtrBase, 0x8000);
    e.set(GuestGdtrLimit, 0x3f);
    e.set(GuestIdtrBase, 0xa000);
    e.set(GuestIdtrLimit, 0xfff);
    e
}

/// A 64-bit guest in long mode with paging, as a kernel runs.
pub(super) fn b64() -> Env {
    let mut e = common(P2::empty(), En::IA32E_MODE_GUEST);
    e.set(GuestCr0, 0x8005_0033);
    e.set(GuestCr3, 0x50_0000);
    e.set(GuestCr4, 0x2020);
    e.set(GuestIa32Efer, 0xd01);
    e.set(GuestRip, 0xffff_ffff_8000_1000);
    e.set(GuestRsp, 0xffff_ffff_8000_f000);
    e.seg(CS, 0x08, 0, 0xffff_ffff, 0xa09b);
    for s in [SS, DS, ES, FS] {
        e.seg(s, 0x10, 0, 0xffff_ffff, 0xc093);
    }
    e.seg(GS, 0x10, 0xffff_8000_0000_0000, 0xffff_ffff, 0xc093);
    e
}

/// A 32-bit unrestricted guest in protected mode with paging off, as the multiboot and Linux
/// 32-bit boot protocols start one.
pub(super) fn b32() -> Env {
    let mut e = common(P2::UNRESTRICTED_GUEST, En::empty());
    e.set(GuestCr0, 0x31);
    e.set(GuestCr4, 0x2000);
    e.set(GuestRip, 0x10_0000);
    e.set(GuestRsp, 0x8_0000);
    e.seg(CS, 0x08, 0, 0xffff_ffff, 0xc09b);
    for s in [SS, DS, ES, FS, GS] {
        e.seg(s, 0x10, 0, 0xffff_ffff, 0xc093);
    }
    e
}

/// An unrestricted guest in real mode at the reset vector.
pub(super) fn breal() -> Env {
    let mut e = common(P2::UNRESTRICTED_GUEST, En::empty());
    e.set(GuestCr0, 0x30);
    e.set(GuestCr4, 0x2000);
    e.set(GuestRip, 0xfff0);
    e.seg(CS, 0xf000, 0xf_0000, 0xffff, 0x9b);
    for s in [SS, DS, ES, FS, GS] {
        e.seg(s, 0, 0, 0xffff, 0x93);
    }
    e.seg(TR, 0, 0, 0xffff, 0x8b);
    e
}

/// A virtual-8086 task under a 32-bit paging guest, without unrestricted guest.
pub(super) fn bv86() -> Env {
    let mut e = b32();
    e.clear(
        SecondaryProcBasedControls,
        P2::UNRESTRICTED_GUEST.bits().into(),
    );
    e.set(GuestCr0, 0x8000_0031);
    make_v86(&mut e);
    e
}

/// Turns a protected-mode baseline into a virtual-8086 guest.
pub(super) fn make_v86(e: &mut Env) {
    e.or(GuestRflags, crate::regs::RFLAGS_VM);
    for s in [CS, SS, DS, ES, FS, GS] {
        e.seg(s, 0x1000, 0x1_0000, 0xffff, 0xf3);
    }
}

pub(super) struct Case {
    pub rule: &'static str,
    pub base: fn() -> Env,
    pub tweak: fn(&mut Env),
    pub also: &'static [&'static str],
    pub near_miss: Option<fn(&mut Env)>,
}

pub(super) fn case(rule: &'static str, base: fn() -> Env, tweak: fn(&mut Env)) -> Case {
    Case {
        rule,
        base,
        tweak,
        also: &[],
        near_miss: None,
    }
}

impl Case {
    pub fn also(mut self, also: &'static [&'static str]) -> Case {
        self.also = also;
        self
    }
    pub fn near(mut self, f: fn(&mut Env)) -> Case {
        self.near_miss = Some(f);
        self
    }
}

fn all_cases() -> Vec<Case> {
    let mut v = cases_controls::cases();
    v.extend(cases_host::cases());
    v.extend(cases_guest::cases());
    v
}

#[test]
fn baselines_pass() {
    for (name, base) in [
        ("64-bit", b64 as fn() -> Env),
        ("32-bit unrestricted", b32),
        ("real mode", breal),
        ("v86", bv86),
    ] {
        let violations = base().check();
        assert!(
            violations.is_empty(),
            "{name} baseline fails: {violations:#?}"
        );
    }
}

#[test]
fn every_rule_has_a_case() {
    let cases: BTreeSet<&str> = all_cases().iter().map(|c| c.rule).collect();
    let missing: Vec<&str> = rules::ALL
        .iter()
        .map(|r| r.id)
        .filter(|id| !id.starts_with("msr_load.") && !cases.contains(id))
        .collect();
    assert!(missing.is_empty(), "rules without a test case: {missing:?}");
    for c in all_cases() {
        assert!(
            rules::find(c.rule).is_some(),
            "case for unknown rule {}",
            c.rule
        );
    }
}

#[test]
fn each_case_breaks_exactly_its_rule() {
    let mut failures = Vec::new();
    for c in all_cases() {
        let mut e = (c.base)();
        (c.tweak)(&mut e);
        let got = e.rule_ids();
        let want: BTreeSet<&str> = c.also.iter().copied().chain([c.rule]).collect();
        if got != want {
            failures.push(alloc::format!("{}: expected {want:?}, got {got:?}", c.rule));
        }
        for v in e.check() {
            // Every report must read well and name its SDM section.
            let text = alloc::format!("{v}");
            assert!(
                text.starts_with(&alloc::format!("[{}] SDM Vol. 3C {}", v.rule, v.sdm)),
                "{text}"
            );
        }
    }
    for f in &failures {
        println!("{f}");
    }
    assert!(failures.is_empty(), "{} cases failed", failures.len());
}

#[test]
fn near_misses_pass() {
    let mut failures = Vec::new();
    for c in all_cases() {
        let Some(near) = c.near_miss else { continue };
        let mut e = (c.base)();
        near(&mut e);
        let got = e.rule_ids();
        if !got.is_empty() {
            failures.push(alloc::format!("{}: near miss fails {got:?}", c.rule));
        }
    }
    for f in &failures {
        println!("{f}");
    }
    assert!(failures.is_empty(), "{} near misses failed", failures.len());
}
