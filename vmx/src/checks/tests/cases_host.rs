//! Cases for the host-state rules (SDM Vol. 3C 27.2.2 - 27.2.4).

use super::*;
use crate::regs::{CR0_NE, CR0_WP, CR4_CET, CR4_PCIDE};

/// A 32-bit VMM (outside IA-32e mode) entering the 32-bit baseline guest.
fn host32(e: &mut Env) {
    e.platform.host_long_mode = false;
    e.clear(ExitControls, Ex::HOST_ADDRESS_SPACE_SIZE.bits().into());
    e.set(HostIa32Efer, 0);
}

pub(super) fn cases() -> Vec<Case> {
    vec![
        case("host.cr0.fixed", b64, |e| e.clear(HostCr0, CR0_NE)),
        case("host.cr4.fixed", b64, |e| e.set(HostCr4, 0x20)),
        case("host.cr3.width", b64, |e| e.set(HostCr3, 1 << 52))
            .near(|e| e.set(HostCr3, (1 << 52) - 0x1000)),
        case("host.cr4.cet_wp", b64, |e| {
            e.or(HostCr4, CR4_CET);
            e.clear(HostCr0, CR0_WP);
        })
        .near(|e| e.or(HostCr4, CR4_CET)),
        case("host.sysenter.canonical", b64, |e| {
            e.set(HostIa32SysenterEip, 0x8000_0000_0000_0000)
        })
        .near(|e| e.set(HostIa32SysenterEip, 0xffff_8000_0000_0000)),
        case("host.pat", b64, |e| {
            e.set(HostIa32Pat, 0x0007_0406_0007_0402)
        })
        .near(|e| {
            e.set(HostIa32Pat, 0x0007_0406_0007_0402);
            e.clear(ExitControls, Ex::LOAD_IA32_PAT.bits().into());
        }),
        case("host.efer", b64, |e| e.set(HostIa32Efer, 0xc01)),
        case("host.selector.rpl_ti", b64, |e| e.set(HostDsSelector, 0x13)),
        case("host.cs.null", b64, |e| e.set(HostCsSelector, 0)),
        case("host.tr.null", b64, |e| e.set(HostTrSelector, 0)),
        case("host.ss.null", b32, |e| {
            host32(e);
            e.set(HostSsSelector, 0);
        })
        .near(|e| {
            // A 64-bit host may have a null SS.
            e.set(HostSsSelector, 0);
        }),
        case("host.base.canonical", b64, |e| {
            e.set(HostGsBase, 0x0000_8000_0000_0000)
        }),
        case("host.address_space_size", b64, |e| {
            e.clear(ExitControls, Ex::HOST_ADDRESS_SPACE_SIZE.bits().into());
            e.set(HostIa32Efer, 0x1);
        })
        .near(|e| {
            // A 32-bit VMM entering a 32-bit guest.
            let mut b = b32();
            host32(&mut b);
            *e = b;
        }),
        case("host.cr4.pae", b64, |e| e.set(HostCr4, 0x2000)),
        case("host.rip", b64, |e| e.set(HostRip, 0x0000_8000_0000_0000)),
        case("host.cr4.pcide", b32, |e| {
            host32(e);
            e.or(HostCr4, CR4_PCIDE);
        }),
    ]
}

#[test]
fn ia32e_guest_needs_a_64_bit_vmm() {
    let mut e = b64();
    host32(&mut e);
    assert!(e.rule_ids().contains("host.address_space_size"));
}
