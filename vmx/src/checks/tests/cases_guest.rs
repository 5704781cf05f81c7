//! Cases for the guest-state rules (SDM Vol. 3C 27.3.1).

use super::*;
use crate::regs::*;

fn usable_ldtr(e: &mut Env) {
    e.seg(LDTR, 0x20, 0xb000, 0xff, 0x82);
}

fn inject(e: &mut Env, info: u64) {
    e.set(VmEntryInterruptionInfo, info);
}

pub(super) fn cases() -> Vec<Case> {
    let mut v = registers();
    v.extend(segments());
    v.extend(non_register());
    v
}

fn registers() -> Vec<Case> {
    vec![
        case("guest.cr0.fixed", b64, |e| e.clear(GuestCr0, CR0_NE)),
        case("guest.cr0.pg_without_pe", b32, |e| {
            e.set(GuestCr0, 0x8000_0030)
        }),
        case("guest.cr4.fixed", b64, |e| e.clear(GuestCr4, CR4_VMXE)),
        case("guest.cr4.cet_wp", b64, |e| {
            e.or(GuestCr4, CR4_CET);
            e.clear(GuestCr0, CR0_WP);
        })
        .near(|e| e.or(GuestCr4, CR4_CET)),
        case("guest.ia32e.paging", b64, |e| e.clear(GuestCr4, CR4_PAE)),
        case("guest.cr4.pcide", b32, |e| e.or(GuestCr4, CR4_PCIDE)).near(|e| {
            let mut b = b64();
            b.or(GuestCr4, CR4_PCIDE);
            *e = b;
        }),
        case("guest.cr3.width", b64, |e| e.set(GuestCr3, 1 << 52)),
        case("guest.debugctl.reserved", b64, |e| {
            e.set(GuestIa32Debugctl, 1 << 20)
        })
        .near(|e| {
            e.set(GuestIa32Debugctl, 1 << 20);
            e.clear(EntryControls, En::LOAD_DEBUG_CONTROLS.bits().into());
        }),
        case("guest.dr7.reserved", b64, |e| {
            e.set(GuestDr7, (1 << 32) | 0x400)
        }),
        case("guest.sysenter.canonical", b64, |e| {
            e.set(GuestIa32SysenterEsp, 0x0000_9000_0000_0000)
        }),
        case("guest.pat", b64, |e| e.set(GuestIa32Pat, 0x8)),
        case("guest.efer.reserved", b64, |e| e.or(GuestIa32Efer, 1 << 14)),
        case("guest.efer.lma", b32, |e| {
            e.set(GuestIa32Efer, EFER_LMA | EFER_LME)
        }),
        case("guest.efer.lme", b64, |e| e.clear(GuestIa32Efer, EFER_LME)).near(|e| {
            // With paging off (unrestricted guest) LME may be set before LMA follows.
            let mut b = b32();
            b.set(GuestIa32Efer, EFER_LME);
            *e = b;
        }),
        case("guest.gdtr_idtr.base_canonical", b64, |e| {
            e.set(GuestGdtrBase, 0x0000_8000_0000_0000)
        }),
        case("guest.gdtr_idtr.limit", b64, |e| {
            e.set(GuestIdtrLimit, 0x1_0000)
        })
        .near(|e| e.set(GuestIdtrLimit, 0xffff)),
        case("guest.rip.high", b32, |e| e.set(GuestRip, 0x1_0000_0000)),
        case("guest.rip.canonical", b64, |e| {
            e.set(GuestRip, 0x0000_8000_0000_0000)
        })
        .near(|e| e.set(GuestRip, 0x0000_7fff_ffff_fff0)),
        case("guest.rflags.reserved", b64, |e| e.set(GuestRflags, 0))
            .near(|e| e.set(GuestRflags, 0x3d_7fd7)),
        case("guest.rflags.vm", breal, make_v86),
        case("guest.rflags.if_for_interrupt", b64, |e| {
            inject(e, 0x8000_0030)
        })
        .near(|e| {
            inject(e, 0x8000_0030);
            e.or(GuestRflags, RFLAGS_IF);
        }),
    ]
}

fn segments() -> Vec<Case> {
    vec![
        case("guest.tr.ti", b64, |e| e.set(GuestTrSelector, 0x1c)),
        case("guest.ldtr.ti", b64, |e| {
            usable_ldtr(e);
            e.set(GuestLdtrSelector, 0x24);
        })
        .near(usable_ldtr),
        case("guest.ss.rpl_cs", b64, |e| e.set(GuestCsSelector, 0x0b)).near(|e| {
            let mut b = b32();
            b.set(GuestCsSelector, 0x0b);
            *e = b;
        }),
        case("guest.v86.base", bv86, |e| e.set(GuestDsBase, 0x100)),
        case("guest.v86.limit", bv86, |e| e.set(GuestEsLimit, 0xf_ffff)),
        case("guest.v86.access_rights", bv86, |e| {
            e.set(GuestFsAccessRights, 0xf1)
        }),
        case("guest.segment.base_canonical", b64, |e| {
            e.set(GuestFsBase, 0x0000_8000_0000_0000)
        }),
        case("guest.segment.base_high", b64, |e| {
            e.set(GuestDsBase, 0x1_0000_0000)
        })
        .near(|e| {
            e.set(GuestDsBase, 0x1_0000_0000);
            e.set(GuestDsAccessRights, 0x1_0000);
        }),
        case("guest.cs.type", b64, |e| e.set(GuestCsAccessRights, 0xa093)).near(|e| {
            let mut b = b32();
            b.set(GuestCsAccessRights, 0xc093);
            *e = b;
        }),
        case("guest.ss.type", b64, |e| e.set(GuestSsAccessRights, 0xc09b)),
        case("guest.data_segment.type", b64, |e| {
            e.set(GuestDsAccessRights, 0xc092)
        })
        .near(|e| {
            e.set(GuestDsAccessRights, 0x1_c092);
        }),
        case("guest.segment.s", b64, |e| {
            e.set(GuestDsAccessRights, 0xc083)
        }),
        case("guest.cs.dpl", b64, |e| e.set(GuestCsAccessRights, 0xa0fb)),
        case("guest.ss.dpl", breal, |e| e.set(GuestSsAccessRights, 0xf3)).also(&["guest.cs.dpl"]),
        case("guest.data_segment.dpl", b64, |e| {
            e.set(GuestDsSelector, 0x13)
        })
        .near(|e| {
            let mut b = b32();
            b.set(GuestDsSelector, 0x13);
            *e = b;
        }),
        case("guest.segment.present", b64, |e| {
            e.set(GuestGsAccessRights, 0xc013)
        }),
        case("guest.segment.reserved", b64, |e| {
            e.set(GuestEsAccessRights, 0xc193)
        }),
        case("guest.segment.granularity", b64, |e| {
            e.set(GuestSsLimit, 0xffff_f000)
        })
        .near(|e| {
            e.set(GuestSsLimit, 0xf_ffff);
            e.set(GuestSsAccessRights, 0x4093);
        }),
        case("guest.cs.l_db", b64, |e| e.set(GuestCsAccessRights, 0xe09b)),
        case("guest.system_segment.s", b64, |e| {
            e.set(GuestTrAccessRights, 0x9b)
        }),
        case("guest.tr.type", b64, |e| e.set(GuestTrAccessRights, 0x83)).near(|e| {
            let mut b = b32();
            b.set(GuestTrAccessRights, 0x83);
            *e = b;
        }),
        case("guest.tr.unusable", b64, |e| {
            e.set(GuestTrAccessRights, 0x1_008b)
        }),
        case("guest.ldtr.type", b64, |e| {
            usable_ldtr(e);
            e.set(GuestLdtrAccessRights, 0x83);
        }),
    ]
}

fn non_register() -> Vec<Case> {
    vec![
        case("guest.activity.supported", b64, |e| {
            e.set(GuestActivityState, 3);
            e.caps.misc &= !(1 << 8);
        })
        .near(|e| e.set(GuestActivityState, 3)),
        case("guest.activity.hlt_dpl", b32, |e| {
            e.set(GuestActivityState, 1);
            e.set(GuestSsAccessRights, 0xc0f3);
            e.set(GuestCsAccessRights, 0xc0fb);
        })
        .near(|e| e.set(GuestActivityState, 1)),
        case("guest.activity.blocking", b64, |e| {
            e.set(GuestActivityState, 1);
            e.set(GuestInterruptibilityState, 1);
            e.or(GuestRflags, RFLAGS_IF);
        }),
        case("guest.activity.injection", b64, |e| {
            e.set(GuestActivityState, 3);
            inject(e, 0x8000_0306);
        })
        .near(|e| {
            // #MC may be injected into a halted guest.
            e.set(GuestActivityState, 1);
            inject(e, 0x8000_0312);
        }),
        case("guest.activity.smm_sipi", b64, |e| {
            e.platform.in_smm = true;
            e.or(EntryControls, En::ENTRY_TO_SMM.bits().into());
            e.set(GuestInterruptibilityState, 4);
            e.set(GuestActivityState, 3);
        }),
        case("guest.interruptibility.reserved", b64, |e| {
            e.set(GuestInterruptibilityState, 1 << 5)
        }),
        case("guest.interruptibility.sti_and_mov_ss", b64, |e| {
            e.set(GuestInterruptibilityState, 3);
            e.or(GuestRflags, RFLAGS_IF);
        }),
        case("guest.interruptibility.sti_if", b64, |e| {
            e.set(GuestInterruptibilityState, 1)
        })
        .near(|e| {
            e.set(GuestInterruptibilityState, 1);
            e.or(GuestRflags, RFLAGS_IF);
        }),
        case("guest.interruptibility.smi", b64, |e| {
            e.set(GuestInterruptibilityState, 4)
        })
        .near(|e| {
            e.set(GuestInterruptibilityState, 4);
            e.platform.in_smm = true;
        }),
        case("guest.interruptibility.external_interrupt", b64, |e| {
            inject(e, 0x8000_0030);
            e.or(GuestRflags, RFLAGS_IF);
            e.set(GuestInterruptibilityState, 2);
        }),
        case("guest.interruptibility.nmi", b64, |e| {
            inject(e, 0x8000_0202);
            e.set(GuestInterruptibilityState, 2);
        })
        .near(|e| {
            inject(e, 0x8000_0202);
            e.set(GuestInterruptibilityState, 8);
        }),
        case("guest.interruptibility.virtual_nmi", b64, |e| {
            e.or(
                PinBasedControls,
                (PinBased::NMI_EXITING | PinBased::VIRTUAL_NMIS)
                    .bits()
                    .into(),
            );
            inject(e, 0x8000_0202);
            e.set(GuestInterruptibilityState, 8);
        }),
        case("guest.pending_debug.reserved", b64, |e| {
            e.set(GuestPendingDebugExceptions, 1 << 4)
        })
        .near(|e| e.set(GuestPendingDebugExceptions, 0x500f)),
        case("guest.pending_debug.bs", b64, |e| {
            e.set(GuestInterruptibilityState, 1);
            e.or(GuestRflags, RFLAGS_IF | RFLAGS_TF);
        })
        .near(|e| {
            e.set(GuestInterruptibilityState, 1);
            e.or(GuestRflags, RFLAGS_IF | RFLAGS_TF);
            e.set(GuestPendingDebugExceptions, 1 << 14);
        }),
        case("guest.vmcs_link_pointer", b64, |e| {
            e.set(VmcsLinkPointer, 0x1000_0001)
        })
        .near(|e| e.set(VmcsLinkPointer, 0x1000_0000)),
        case("guest.pdpte.reserved", b32, |e| {
            e.set(GuestCr0, 0x8000_0031);
            e.set(GuestCr4, 0x2020);
            e.set(GuestPdpte0, 0x6003);
        })
        .near(|e| {
            e.set(GuestCr0, 0x8000_0031);
            e.set(GuestCr4, 0x2020);
            e.set(GuestPdpte0, 0x6001);
            // Not present: its other bits are ignored.
            e.set(GuestPdpte1, 0x6006);
        }),
    ]
}
