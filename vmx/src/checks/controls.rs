//! Checks on the VM-execution, VM-exit and VM-entry control fields (SDM Vol. 3C 27.2.1).
//! A processor reports any of these with VM-instruction error 7.

use super::rules::*;
use super::Ctx;
use crate::caps::{
    Allowed, EntryControls, ExitControls, PinBased, PrimaryProcBased, SecondaryProcBased,
};
use crate::exit::{exception_has_error_code, InterruptionType};
use crate::regs::CR0_PE;
use crate::vmcs::Field;
use alloc::format;

pub(super) fn check(c: &mut Ctx) {
    execution(c);
    exit(c);
    entry(c);
    event_injection(c);
}

/// Reports the bits of a control word that break its allowed settings (SDM Vol. 3C 27.2.1.1).
fn allowed(c: &mut Ctx, rule: Rule, field: Field, what: &str, allowed: Allowed, value: u32) {
    if allowed.permits(value) {
        return;
    }
    let must_be_1 = allowed.allowed0 & !value;
    let must_be_0 = value & !allowed.allowed1;
    c.fail(
        rule,
        format!(
            "{what} {value:#010x}: bits {must_be_1:#x} must be 1, bits {must_be_0:#x} must be 0"
        ),
        &[field],
    );
}

fn page_address(c: &mut Ctx, rule: Rule, field: Field, what: &str) {
    let addr = c.read(field);
    if !c.page_ok(addr) {
        c.fail(
            rule,
            format!("{what} {addr:#x} is not 4-KiB aligned within the physical-address width"),
            &[field],
        );
    }
}

fn execution(c: &mut Ctx) {
    let caps = *c.caps;
    allowed(
        c,
        CTL_PIN_ALLOWED,
        Field::PinBasedControls,
        "pin-based controls",
        caps.pinbased,
        c.pin.bits(),
    );
    allowed(
        c,
        CTL_PROC_ALLOWED,
        Field::PrimaryProcBasedControls,
        "primary processor-based controls",
        caps.procbased,
        c.proc1.bits(),
    );
    if c.proc1
        .contains(PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS)
    {
        allowed(
            c,
            CTL_PROC2_ALLOWED,
            Field::SecondaryProcBasedControls,
            "secondary processor-based controls",
            caps.procbased2,
            c.proc2.bits(),
        );
    }

    // The SDM fixes the limit at 4 and points to IA32_VMX_MISC bits 24:16 for the number a
    // processor actually supports.
    let max_targets = match caps.misc_cr3_targets() {
        0 => 4,
        n => n,
    };
    let targets = c.read(Field::Cr3TargetCount);
    if targets > max_targets as u64 {
        c.fail(
            CTL_CR3_TARGETS,
            format!("{targets} CR3 targets, at most {max_targets} supported"),
            &[Field::Cr3TargetCount],
        );
    }

    if c.proc1.contains(PrimaryProcBased::USE_IO_BITMAPS) {
        page_address(c, CTL_IO_BITMAPS, Field::IoBitmapA, "I/O bitmap A");
        page_address(c, CTL_IO_BITMAPS, Field::IoBitmapB, "I/O bitmap B");
    }
    if c.proc1.contains(PrimaryProcBased::USE_MSR_BITMAPS) {
        page_address(c, CTL_MSR_BITMAP, Field::MsrBitmap, "MSR bitmap");
    }

    let vid = c
        .proc2
        .contains(SecondaryProcBased::VIRTUAL_INTERRUPT_DELIVERY);
    if c.proc1.contains(PrimaryProcBased::USE_TPR_SHADOW) {
        page_address(
            c,
            CTL_VIRTUAL_APIC,
            Field::VirtualApicAddress,
            "virtual-APIC page",
        );
        let threshold = c.read(Field::TprThreshold);
        if !vid && threshold & !0xf != 0 {
            c.fail(
                CTL_TPR_THRESHOLD,
                format!("TPR threshold {threshold:#x} has bits above 3"),
                &[Field::TprThreshold],
            );
        }
    } else {
        let needs_tpr = SecondaryProcBased::VIRTUALIZE_X2APIC_MODE
            | SecondaryProcBased::APIC_REGISTER_VIRTUALIZATION
            | SecondaryProcBased::VIRTUAL_INTERRUPT_DELIVERY;
        if c.proc2.intersects(needs_tpr) {
            c.fail(
                CTL_APIC_VIRT_NEEDS_TPR,
                format!("{:?} set without use TPR shadow", c.proc2 & needs_tpr),
                &[
                    Field::PrimaryProcBasedControls,
                    Field::SecondaryProcBasedControls,
                ],
            );
        }
    }

    if !c.pin.contains(PinBased::NMI_EXITING) && c.pin.contains(PinBased::VIRTUAL_NMIS) {
        c.fail(
            CTL_VIRTUAL_NMIS,
            "virtual NMIs set without NMI exiting".into(),
            &[Field::PinBasedControls],
        );
    }
    if !c.pin.contains(PinBased::VIRTUAL_NMIS)
        && c.proc1.contains(PrimaryProcBased::NMI_WINDOW_EXITING)
    {
        c.fail(
            CTL_NMI_WINDOW,
            "NMI-window exiting set without virtual NMIs".into(),
            &[Field::PinBasedControls, Field::PrimaryProcBasedControls],
        );
    }

    if c.proc2
        .contains(SecondaryProcBased::VIRTUALIZE_APIC_ACCESSES)
    {
        page_address(
            c,
            CTL_APIC_ACCESS,
            Field::ApicAccessAddress,
            "APIC-access page",
        );
        if c.proc2.contains(SecondaryProcBased::VIRTUALIZE_X2APIC_MODE) {
            c.fail(
                CTL_X2APIC_VS_APIC_ACCESS,
                "virtualize x2APIC mode and virtualize APIC accesses both set".into(),
                &[Field::SecondaryProcBasedControls],
            );
        }
    }
    if vid && !c.pin.contains(PinBased::EXTERNAL_INTERRUPT_EXITING) {
        c.fail(
            CTL_VID_EXT_INT,
            "virtual-interrupt delivery set without external-interrupt exiting".into(),
            &[Field::PinBasedControls, Field::SecondaryProcBasedControls],
        );
    }
    if c.pin.contains(PinBased::PROCESS_POSTED_INTERRUPTS) {
        posted_interrupts(c, vid);
    }

    if c.proc2.contains(SecondaryProcBased::ENABLE_VPID) && c.read(Field::VirtualProcessorId) == 0 {
        c.fail(
            CTL_VPID,
            "enable VPID set with VPID 0 (reserved for the VMM)".into(),
            &[Field::VirtualProcessorId],
        );
    }

    let ept = c.proc2.contains(SecondaryProcBased::ENABLE_EPT);
    if ept {
        ept_pointer(c);
    }
    if c.proc2.contains(SecondaryProcBased::ENABLE_PML) {
        if !ept {
            c.fail(
                CTL_PML,
                "page-modification logging set without EPT".into(),
                &[Field::SecondaryProcBasedControls],
            );
        }
        page_address(c, CTL_PML, Field::PmlAddress, "PML address");
    }
    if c.unrestricted() && !ept {
        c.fail(
            CTL_UG_EPT,
            "unrestricted guest set without EPT".into(),
            &[Field::SecondaryProcBasedControls],
        );
    }
    if c.proc2
        .contains(SecondaryProcBased::MODE_BASED_EXECUTE_CONTROL)
        && !ept
    {
        c.fail(
            CTL_MBE_EPT,
            "mode-based execute control set without EPT".into(),
            &[Field::SecondaryProcBasedControls],
        );
    }
    if c.proc2
        .contains(SecondaryProcBased::SUB_PAGE_WRITE_PERMISSIONS)
    {
        if !ept {
            c.fail(
                CTL_SPP,
                "sub-page write permissions set without EPT".into(),
                &[Field::SecondaryProcBasedControls],
            );
        }
        page_address(
            c,
            CTL_SPP,
            Field::SubPagePermissionTablePointer,
            "SPP table pointer",
        );
    }
    if c.proc2.contains(SecondaryProcBased::ENABLE_VM_FUNCTIONS) {
        vm_functions(c, ept);
    }
    if c.proc2.contains(SecondaryProcBased::VMCS_SHADOWING) {
        page_address(c, CTL_SHADOW, Field::VmreadBitmapAddress, "VMREAD bitmap");
        page_address(c, CTL_SHADOW, Field::VmwriteBitmapAddress, "VMWRITE bitmap");
    }
    if c.proc2.contains(SecondaryProcBased::EPT_VIOLATION_VE) {
        page_address(
            c,
            CTL_VE,
            Field::VirtualizationExceptionInfoAddress,
            "#VE information address",
        );
    }
    // Not among the SDM's listed checks, but Bochs (our test processor) rejects it and a zero
    // multiplier would freeze the guest's TSC.
    if c.proc2.contains(SecondaryProcBased::USE_TSC_SCALING) && c.read(Field::TscMultiplier) == 0 {
        c.fail(
            CTL_TSC_MULTIPLIER,
            "TSC scaling set with multiplier 0".into(),
            &[Field::TscMultiplier],
        );
    }
}

fn posted_interrupts(c: &mut Ctx, vid: bool) {
    if !vid {
        c.fail(
            CTL_POSTED,
            "posted interrupts without virtual-interrupt delivery".into(),
            &[Field::SecondaryProcBasedControls],
        );
    }
    if !c.exit.contains(ExitControls::ACK_INTERRUPT_ON_EXIT) {
        c.fail(
            CTL_POSTED,
            "posted interrupts without acknowledge interrupt on exit".into(),
            &[Field::ExitControls],
        );
    }
    let vector = c.read(Field::PostedInterruptNotificationVector);
    if vector > 0xff {
        c.fail(
            CTL_POSTED,
            format!("notification vector {vector:#x} above 255"),
            &[Field::PostedInterruptNotificationVector],
        );
    }
    let desc = c.read(Field::PostedInterruptDescriptorAddress);
    if desc & 0x3f != 0 || !c.phys_ok(desc) {
        c.fail(
            CTL_POSTED,
            format!("descriptor address {desc:#x} not 64-byte aligned within the physical-address width"),
            &[Field::PostedInterruptDescriptorAddress],
        );
    }
}

/// EPTP layout: memory type 2:0, walk length - 1 in 5:3, A/D enable 6, supervisor shadow-stack
/// control 7, bits 11:8 reserved (SDM Vol. 3C 25.6.11, checked per 27.2.1.1).
fn ept_pointer(c: &mut Ctx) {
    let eptp = c.read(Field::EptPointer);
    let caps = *c.caps;
    let mut problems = alloc::vec::Vec::new();
    match eptp & 7 {
        0 if caps.ept_uc() => {}
        6 if caps.ept_wb() => {}
        t => problems.push(format!("memory type {t} not supported")),
    }
    match (eptp >> 3) & 7 {
        3 if caps.ept_walk_length_4() => {}
        4 if caps.ept_walk_length_5() => {}
        n => problems.push(format!("page-walk length {} not supported", n + 1)),
    }
    if eptp & (1 << 6) != 0 && !caps.ept_ad_bits() {
        problems.push("A/D flags enabled but not supported".into());
    }
    if eptp & (1 << 7) != 0 && caps.ept_vpid & (1 << 23) == 0 {
        problems.push("supervisor shadow-stack control enabled but not supported".into());
    }
    if eptp & 0xf00 != 0 {
        problems.push("reserved bits 11:8 set".into());
    }
    if !c.phys_ok(eptp) {
        problems.push("address beyond the physical-address width".into());
    }
    if !problems.is_empty() {
        c.fail(
            CTL_EPTP,
            format!("EPT pointer {eptp:#x}: {}", problems.join(", ")),
            &[Field::EptPointer],
        );
    }
}

fn vm_functions(c: &mut Ctx, ept: bool) {
    let funcs = c.read(Field::VmFunctionControls);
    let unsupported = funcs & !c.caps.vmfunc;
    if unsupported != 0 {
        c.fail(
            CTL_VMFUNC,
            format!("VM functions {unsupported:#x} not supported"),
            &[Field::VmFunctionControls],
        );
    }
    // Bit 0 is EPTP switching (SDM Vol. 3C 25.6.14).
    if funcs & 1 != 0 {
        if !ept {
            c.fail(
                CTL_VMFUNC,
                "EPTP switching without EPT".into(),
                &[Field::VmFunctionControls],
            );
        }
        page_address(c, CTL_VMFUNC, Field::EptpListAddress, "EPTP list");
    }
}

/// An MSR area of `count` 16-byte entries must be 16-byte aligned and lie wholly below the
/// physical-address limit (SDM Vol. 3C 27.2.1.2, 27.2.1.3).
fn msr_area(c: &mut Ctx, rule: Rule, addr_field: Field, count_field: Field, what: &str) {
    let count = c.read(count_field);
    if count == 0 {
        return;
    }
    let addr = c.read(addr_field);
    let last = addr.checked_add(count * 16 - 1);
    if addr & 0xf != 0 || !c.phys_ok(addr) || !last.is_some_and(|l| c.phys_ok(l)) {
        c.fail(
            rule,
            format!("{what} at {addr:#x} with {count} entries is misaligned or beyond the physical-address width"),
            &[addr_field, count_field],
        );
    }
}

fn exit(c: &mut Ctx) {
    let caps = *c.caps;
    allowed(
        c,
        CTL_EXIT_ALLOWED,
        Field::ExitControls,
        "VM-exit controls",
        caps.exit,
        c.exit.bits(),
    );
    if !c.pin.contains(PinBased::VMX_PREEMPTION_TIMER)
        && c.exit.contains(ExitControls::SAVE_VMX_PREEMPTION_TIMER)
    {
        c.fail(
            CTL_EXIT_TIMER,
            "save VMX-preemption timer value set without the preemption timer".into(),
            &[Field::PinBasedControls, Field::ExitControls],
        );
    }
    msr_area(
        c,
        CTL_EXIT_MSR_STORE,
        Field::VmExitMsrStoreAddress,
        Field::VmExitMsrStoreCount,
        "VM-exit MSR-store area",
    );
    msr_area(
        c,
        CTL_EXIT_MSR_LOAD,
        Field::VmExitMsrLoadAddress,
        Field::VmExitMsrLoadCount,
        "VM-exit MSR-load area",
    );
}

fn entry(c: &mut Ctx) {
    let caps = *c.caps;
    allowed(
        c,
        CTL_ENTRY_ALLOWED,
        Field::EntryControls,
        "VM-entry controls",
        caps.entry,
        c.entry.bits(),
    );
    let smm = EntryControls::ENTRY_TO_SMM | EntryControls::DEACTIVATE_DUAL_MONITOR;
    if !c.platform.in_smm && c.entry.intersects(smm) {
        c.fail(
            CTL_ENTRY_SMM,
            format!("{:?} set outside SMM", c.entry & smm),
            &[Field::EntryControls],
        );
    }
    msr_area(
        c,
        CTL_ENTRY_MSR_LOAD,
        Field::VmEntryMsrLoadAddress,
        Field::VmEntryMsrLoadCount,
        "VM-entry MSR-load area",
    );
}

/// The VM-entry interruption-information checks (SDM Vol. 3C 27.2.1.3).
fn event_injection(c: &mut Ctx) {
    let Some(info) = c.injected_event() else {
        return;
    };
    let kind = info.kind();
    let vector = info.vector();
    let f = [Field::VmEntryInterruptionInfo];

    match kind {
        InterruptionType::Reserved => {
            c.fail(
                CTL_EVENT_TYPE,
                "injected event of reserved type 1".into(),
                &f,
            );
        }
        InterruptionType::OtherEvent if !c.caps.has_mtf() => {
            c.fail(
                CTL_EVENT_TYPE,
                "injected event of type 7 (other) without monitor trap flag support".into(),
                &f,
            );
        }
        _ => {}
    }
    let bad_vector = match kind {
        InterruptionType::Nmi => vector != 2,
        InterruptionType::HardwareException => vector > 31,
        InterruptionType::OtherEvent => vector != 0,
        _ => false,
    };
    if bad_vector {
        c.fail(
            CTL_EVENT_VECTOR,
            format!("vector {vector} invalid for an injected {}", kind.name()),
            &f,
        );
    }

    // The error-code rule (SDM Vol. 3C 27.2.1.3): in real mode under unrestricted guest nothing
    // pushes an error code; otherwise exactly the hardware exceptions that push one must set
    // deliver-error-code. IA32_VMX_BASIC bit 56 drops the "exactly" for hardware exceptions.
    let protected = !c.unrestricted() || c.read(Field::GuestCr0) & CR0_PE != 0;
    let may_have = protected && kind == InterruptionType::HardwareException;
    let must_have =
        may_have && exception_has_error_code(vector) && !c.caps.relaxed_error_code_injection();
    let has = info.has_error_code();
    if (has && !may_have) || (!has && must_have) {
        let what = if has {
            "an error code it cannot have"
        } else {
            "no error code though it needs one"
        };
        c.fail(
            CTL_EVENT_ERROR_CODE,
            format!("injected {} vector {vector} with {what}", kind.name()),
            &[Field::VmEntryInterruptionInfo, Field::GuestCr0],
        );
    }

    if info.reserved_bits() != 0 {
        c.fail(
            CTL_EVENT_RESERVED,
            format!("reserved bits {:#x} set", info.reserved_bits()),
            &f,
        );
    }
    let code = c.read(Field::VmEntryExceptionErrorCode);
    // Bochs checks these bits as the SDM lists them; an error code is 16 bits wide.
    if has && code >> 16 != 0 {
        c.fail(
            CTL_EVENT_ERROR_VALUE,
            format!("error code {code:#x} has bits above 15"),
            &[Field::VmEntryExceptionErrorCode],
        );
    }
    if kind.needs_instruction_length() {
        let len = c.read(Field::VmEntryInstructionLength);
        let min = if c.caps.misc_zero_length_injection() {
            0
        } else {
            1
        };
        if !(min..=15).contains(&len) {
            c.fail(
                CTL_EVENT_LENGTH,
                format!("instruction length {len} for an injected {}", kind.name()),
                &[Field::VmEntryInstructionLength],
            );
        }
    }
}
