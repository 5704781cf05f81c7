//! Cases for the control-field rules (SDM Vol. 3C 27.2.1).

use super::*;

fn pin(e: &mut Env, f: PinBased) {
    e.or(PinBasedControls, f.bits().into());
}
fn p1(e: &mut Env, f: P1) {
    e.or(PrimaryProcBasedControls, f.bits().into());
}
fn p2(e: &mut Env, f: P2) {
    e.or(SecondaryProcBasedControls, f.bits().into());
}
fn tpr_shadow(e: &mut Env) {
    p1(e, P1::USE_TPR_SHADOW);
    e.set(VirtualApicAddress, 0x60_0000);
}
fn no_ept(e: &mut Env) {
    e.clear(SecondaryProcBasedControls, P2::ENABLE_EPT.bits().into());
}

pub(super) fn cases() -> Vec<Case> {
    vec![
        case("controls.pin.allowed", b64, |e| e.set(PinBasedControls, 0)),
        case("controls.proc.allowed", b64, |e| {
            e.or(PrimaryProcBasedControls, 1)
        }),
        case("controls.proc2.allowed", b64, |e| {
            e.or(SecondaryProcBasedControls, 1 << 29)
        })
        .near(|e| {
            // Without "activate secondary controls" the secondary word is not looked at.
            e.or(SecondaryProcBasedControls, 1 << 29);
            e.clear(
                PrimaryProcBasedControls,
                P1::ACTIVATE_SECONDARY_CONTROLS.bits().into(),
            );
        }),
        case("controls.cr3_target_count", b64, |e| {
            e.set(Cr3TargetCount, 5)
        })
        .near(|e| e.set(Cr3TargetCount, 4)),
        case("controls.io_bitmaps.address", b64, |e| {
            p1(e, P1::USE_IO_BITMAPS);
            e.set(IoBitmapA, 0x1234);
            e.set(IoBitmapB, 0x2000);
        })
        .near(|e| {
            p1(e, P1::USE_IO_BITMAPS);
            e.set(IoBitmapA, 0x1000);
            e.set(IoBitmapB, 0x2000);
        }),
        case("controls.msr_bitmap.address", b64, |e| {
            e.set(MsrBitmap, 0x20_0800)
        })
        .near(|e| {
            e.set(MsrBitmap, 0x20_0800);
            e.clear(PrimaryProcBasedControls, P1::USE_MSR_BITMAPS.bits().into());
        }),
        case("controls.tpr_shadow.address", b64, |e| {
            tpr_shadow(e);
            e.set(VirtualApicAddress, 1 << 52);
        })
        .near(tpr_shadow),
        case("controls.tpr_shadow.threshold", b64, |e| {
            tpr_shadow(e);
            e.set(TprThreshold, 0x10);
        })
        .near(|e| {
            tpr_shadow(e);
            e.set(TprThreshold, 0xf);
        }),
        case("controls.apic_virtualization.tpr_shadow", b64, |e| {
            p2(e, P2::APIC_REGISTER_VIRTUALIZATION)
        })
        .near(|e| {
            p2(e, P2::APIC_REGISTER_VIRTUALIZATION);
            tpr_shadow(e);
        }),
        case("controls.nmi.virtual_nmis", b64, |e| {
            pin(e, PinBased::VIRTUAL_NMIS)
        })
        .near(|e| pin(e, PinBased::VIRTUAL_NMIS | PinBased::NMI_EXITING)),
        case("controls.nmi.window", b64, |e| {
            p1(e, P1::NMI_WINDOW_EXITING)
        })
        .near(|e| {
            p1(e, P1::NMI_WINDOW_EXITING);
            pin(e, PinBased::VIRTUAL_NMIS | PinBased::NMI_EXITING);
        }),
        case("controls.apic_access.address", b64, |e| {
            p2(e, P2::VIRTUALIZE_APIC_ACCESSES);
            e.set(ApicAccessAddress, 0x123);
        })
        .near(|e| {
            p2(e, P2::VIRTUALIZE_APIC_ACCESSES);
            e.set(ApicAccessAddress, 0xfee0_0000);
        }),
        case("controls.apic_access.x2apic", b64, |e| {
            tpr_shadow(e);
            p2(e, P2::VIRTUALIZE_APIC_ACCESSES | P2::VIRTUALIZE_X2APIC_MODE);
            e.set(ApicAccessAddress, 0xfee0_0000);
        }),
        case("controls.virtual_interrupt_delivery.exiting", b64, |e| {
            tpr_shadow(e);
            p2(e, P2::VIRTUAL_INTERRUPT_DELIVERY);
        })
        .near(|e| {
            tpr_shadow(e);
            p2(e, P2::VIRTUAL_INTERRUPT_DELIVERY);
            pin(e, PinBased::EXTERNAL_INTERRUPT_EXITING);
        }),
        case("controls.posted_interrupts", b64, |e| {
            tpr_shadow(e);
            p2(e, P2::VIRTUAL_INTERRUPT_DELIVERY);
            pin(
                e,
                PinBased::EXTERNAL_INTERRUPT_EXITING | PinBased::PROCESS_POSTED_INTERRUPTS,
            );
            e.set(PostedInterruptNotificationVector, 0xf2);
            e.set(PostedInterruptDescriptorAddress, 0x70_0020);
        })
        .near(|e| {
            tpr_shadow(e);
            p2(e, P2::VIRTUAL_INTERRUPT_DELIVERY);
            pin(
                e,
                PinBased::EXTERNAL_INTERRUPT_EXITING | PinBased::PROCESS_POSTED_INTERRUPTS,
            );
            e.set(PostedInterruptNotificationVector, 0xf2);
            e.set(PostedInterruptDescriptorAddress, 0x70_0040);
        }),
        case("controls.vpid.nonzero", b64, |e| {
            e.set(VirtualProcessorId, 0)
        })
        .near(|e| {
            e.set(VirtualProcessorId, 0);
            e.clear(SecondaryProcBasedControls, P2::ENABLE_VPID.bits().into());
        }),
        case("controls.ept.pointer", b64, |e| e.or(EptPointer, 1 << 8))
            .near(|e| e.or(EptPointer, 1 << 6)),
        case("controls.pml", b64, |e| {
            p2(e, P2::ENABLE_PML);
            e.set(PmlAddress, 0x80_0000);
            no_ept(e);
        })
        .near(|e| {
            p2(e, P2::ENABLE_PML);
            e.set(PmlAddress, 0x80_0000);
        }),
        case("controls.unrestricted_guest.ept", b32, no_ept),
        case("controls.mode_based_ept.ept", b64, |e| {
            p2(e, P2::MODE_BASED_EXECUTE_CONTROL);
            no_ept(e);
        })
        .near(|e| p2(e, P2::MODE_BASED_EXECUTE_CONTROL)),
        case("controls.sub_page_permissions", b64, |e| {
            p2(e, P2::SUB_PAGE_WRITE_PERMISSIONS);
            e.set(SubPagePermissionTablePointer, 0x123);
        })
        .near(|e| {
            p2(e, P2::SUB_PAGE_WRITE_PERMISSIONS);
            e.set(SubPagePermissionTablePointer, 0x90_0000);
        }),
        case("controls.vm_functions", b64, |e| {
            p2(e, P2::ENABLE_VM_FUNCTIONS);
            e.set(VmFunctionControls, 2);
        })
        .near(|e| {
            p2(e, P2::ENABLE_VM_FUNCTIONS);
            e.set(VmFunctionControls, 1);
            e.set(EptpListAddress, 0xa0_0000);
        }),
        case("controls.vmcs_shadowing.bitmaps", b64, |e| {
            p2(e, P2::VMCS_SHADOWING);
            e.set(VmreadBitmapAddress, 0xb0_0001);
            e.set(VmwriteBitmapAddress, 0xb1_0000);
        }),
        case("controls.ept_violation_ve.address", b64, |e| {
            p2(e, P2::EPT_VIOLATION_VE);
            e.set(VirtualizationExceptionInfoAddress, 0x10);
        }),
        case("controls.tsc_scaling.multiplier", b64, |e| {
            p2(e, P2::USE_TSC_SCALING)
        })
        .near(|e| {
            p2(e, P2::USE_TSC_SCALING);
            e.set(TscMultiplier, 1 << 48);
        }),
        case("controls.exit.allowed", b64, |e| {
            e.or(ExitControls, 1 << 31)
        }),
        case("controls.exit.save_preemption_timer", b64, |e| {
            e.or(ExitControls, Ex::SAVE_VMX_PREEMPTION_TIMER.bits().into())
        })
        .near(|e| {
            e.or(ExitControls, Ex::SAVE_VMX_PREEMPTION_TIMER.bits().into());
            pin(e, PinBased::VMX_PREEMPTION_TIMER);
        }),
        case("controls.exit.msr_store_area", b64, |e| {
            e.set(VmExitMsrStoreCount, 2);
            e.set(VmExitMsrStoreAddress, 0xc0_0008);
        })
        .near(|e| {
            e.set(VmExitMsrStoreCount, 2);
            e.set(VmExitMsrStoreAddress, 0xc0_0010);
        }),
        case("controls.exit.msr_load_area", b64, |e| {
            // The second entry would straddle the 52-bit limit.
            e.set(VmExitMsrLoadCount, 2);
            e.set(VmExitMsrLoadAddress, (1 << 52) - 16);
        })
        .near(|e| {
            e.set(VmExitMsrLoadCount, 1);
            e.set(VmExitMsrLoadAddress, (1 << 52) - 16);
        }),
        case("controls.entry.allowed", b64, |e| {
            e.or(EntryControls, 1 << 31)
        }),
        case("controls.entry.smm", b64, |e| {
            e.or(EntryControls, En::DEACTIVATE_DUAL_MONITOR.bits().into())
        })
        .near(|e| {
            e.or(EntryControls, En::DEACTIVATE_DUAL_MONITOR.bits().into());
            e.platform.in_smm = true;
        }),
        case("controls.entry.msr_load_area", b64, |e| {
            e.set(VmEntryMsrLoadCount, 1);
            e.set(VmEntryMsrLoadAddress, 0xd0_0004);
        }),
        case("controls.entry.event.type", b64, |e| {
            e.set(VmEntryInterruptionInfo, 0x8000_0100)
        }),
        case("controls.entry.event.vector", b64, |e| {
            e.set(VmEntryInterruptionInfo, 0x8000_0203)
        })
        .near(|e| e.set(VmEntryInterruptionInfo, 0x8000_0202)),
        case("controls.entry.event.deliver_error_code", b64, |e| {
            e.set(VmEntryInterruptionInfo, 0x8000_030d)
        })
        .near(|e| e.set(VmEntryInterruptionInfo, 0x8000_0b0d)),
        case("controls.entry.event.reserved", b64, |e| {
            e.set(VmEntryInterruptionInfo, 0x8000_1306)
        }),
        case("controls.entry.event.error_code_value", b64, |e| {
            e.set(VmEntryInterruptionInfo, 0x8000_0b0d);
            e.set(VmEntryExceptionErrorCode, 0x1_0000);
        })
        .near(|e| {
            e.set(VmEntryInterruptionInfo, 0x8000_0b0d);
            e.set(VmEntryExceptionErrorCode, 0xffff);
        }),
        case("controls.entry.event.instruction_length", b64, |e| {
            e.set(VmEntryInterruptionInfo, 0x8000_0480);
            e.set(VmEntryInstructionLength, 16);
        })
        .near(|e| {
            e.set(VmEntryInterruptionInfo, 0x8000_0480);
            e.set(VmEntryInstructionLength, 2);
        }),
    ]
}

#[test]
fn error_code_rules_depend_on_mode_and_basic_bit_56() {
    // Real mode under unrestricted guest: #GP pushes nothing, so deliver-error-code must be 0.
    let mut e = breal();
    e.set(VmEntryInterruptionInfo, 0x8000_030d);
    assert!(e.check().is_empty(), "{:#?}", e.check());
    e.set(VmEntryInterruptionInfo, 0x8000_0b0d);
    assert_eq!(
        e.rule_ids().into_iter().collect::<Vec<_>>(),
        ["controls.entry.event.deliver_error_code"]
    );

    // IA32_VMX_BASIC bit 56: a hardware exception may go either way.
    let mut e = b64();
    e.caps.basic |= 1 << 56;
    e.set(VmEntryInterruptionInfo, 0x8000_030d);
    assert!(e.check().is_empty());
    e.set(VmEntryInterruptionInfo, 0x8000_0b06);
    assert!(e.check().is_empty());
    // ...but never a non-exception.
    e.set(VmEntryInterruptionInfo, 0x8000_0a02);
    assert_eq!(
        e.rule_ids().into_iter().collect::<Vec<_>>(),
        ["controls.entry.event.deliver_error_code"]
    );
}

#[test]
fn zero_instruction_length_needs_misc_bit_30() {
    let mut e = b64();
    e.set(VmEntryInterruptionInfo, 0x8000_0603); // INT3
    e.set(VmEntryInstructionLength, 0);
    assert!(e.check().is_empty());
    e.caps.misc &= !(1 << 30);
    assert_eq!(
        e.rule_ids().into_iter().collect::<Vec<_>>(),
        ["controls.entry.event.instruction_length"]
    );
}

#[test]
fn ept_pointer_follows_capabilities() {
    let mut e = b64();
    e.set(EptPointer, 0x30_0000 | 6 | (4 << 3)); // 5-level walk, not supported here
    assert!(e.rule_ids().contains("controls.ept.pointer"));
    e.caps.ept_vpid |= 1 << 7;
    assert!(e.check().is_empty());
    e.set(EptPointer, 0x30_0000 | (3 << 3) | (1 << 6)); // UC with A/D
    e.caps.ept_vpid &= !((1 << 8) | (1 << 21));
    let v = e.check();
    assert_eq!(v.len(), 1);
    assert!(
        v[0].summary.contains("memory type 0") && v[0].summary.contains("A/D"),
        "{}",
        v[0].summary
    );
}
