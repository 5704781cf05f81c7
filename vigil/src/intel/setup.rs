//! Building the VMCS for one vCPU: controls fitted to the processor's capabilities, Vigil's
//! host state, the guest's initial state as its boot protocol defines it, and the bitmaps that
//! decide which guest events exit.

use super::vcpu::VmxVcpu;
use super::{instr, switch};
use crate::arch::{gdt, regs};
use crate::mem::alloc_frames;
use alloc::format;
use alloc::string::String;
use vigil::loader::EntryState;
use vigil_core::config::{Config, TscMode};
use vigil_core::cpu::Vm;
use vigil_core::owners::{
    MsrHandler, MsrRule, Owner, Owners, IA32_FEATURE_CONTROL, IA32_TSC_ADJUST,
};
use vigil_core::time::tsc::VirtualTsc;
use vigil_core::vcpu::Vcpu;
use vmx::caps::*;
use vmx::regs::*;
use vmx::vmcs::{Field, RealVmcs, VmcsAccess};
use x86_arch::cpuid::{Feature, Features};

/// Where the guest starts and what it owns.
#[derive(Clone, Copy, Debug)]
pub struct GuestSetup {
    pub entry: EntryState,
    /// Guest-physical address of a GDT with flat 32-bit code (0x10) and data (0x18) segments,
    /// for the protected-mode entry.
    pub gdt: u64,
    /// The EPT pointer (SDM Vol. 3C 25.6.11).
    pub eptp: u64,
    /// The EPT pointer of the guest's view with its A20 gate closed (`ept::build`).
    pub eptp_a20: u64,
    /// What the FADT says of the fixed hardware Vigil owns.
    pub acpi: vigil_core::platform::Acpi,
    /// Without unrestricted guest: the identity page tables the guest runs on while its paging
    /// is off (`flat.rs`).
    pub identity_table: Option<u64>,
}

const IA32_PAT: u32 = 0x277;
const IA32_EFER: u32 = 0xC000_0080;
const PAT_POWER_ON: u64 = 0x0007_0406_0007_0406;

/// The MSRs that belong to VMX, which is Vigil's: their entries in the ownership table.
pub static VMX_MSRS: [MsrRule; 2] = [
    MsrRule {
        msrs: IA32_FEATURE_CONTROL..=IA32_FEATURE_CONTROL,
        owner: Owner::Vigil,
        read: Some(MsrHandler::FeatureControl),
        write: Some(MsrHandler::FeatureControl),
        why: "VMX is Vigil's: the guest sees the register locked with VMX disabled",
    },
    MsrRule {
        msrs: 0x480..=0x493,
        owner: Owner::Vigil,
        read: Some(MsrHandler::Absent),
        write: Some(MsrHandler::Absent),
        why: "the VMX capability MSRs: VMX is hidden, so they raise #GP as without VMX",
    },
];

/// The backend's MSR rules for the ownership table: VMX's MSRs, and EFER where the processor
/// lacks unrestricted guest (`flat.rs`).
pub fn vmx_msrs(caps: &VmxCaps) -> alloc::vec::Vec<MsrRule> {
    let mut rules = VMX_MSRS.to_vec();
    if !caps.has_unrestricted_guest() {
        rules.push(super::flat::EFER_RULE);
    }
    rules
}

/// Every control word, fitted to the processor, with a line for each feature it lacks; and the
/// CPUID features the guest must not be shown because their instructions are not enabled.
fn controls(caps: &VmxCaps, config: &Config) -> Result<([u32; 5], Features), String> {
    let mut primary = PrimaryProcBased::USE_MSR_BITMAPS
        | PrimaryProcBased::USE_IO_BITMAPS
        | PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS;
    let t = &config.trap;
    for (on, bit) in [
        (t.rdtsc, PrimaryProcBased::RDTSC_EXITING),
        (t.hlt, PrimaryProcBased::HLT_EXITING),
        (t.invlpg, PrimaryProcBased::INVLPG_EXITING),
        (t.rdpmc, PrimaryProcBased::RDPMC_EXITING),
        (t.cr3_load, PrimaryProcBased::CR3_LOAD_EXITING),
        (t.cr3_store, PrimaryProcBased::CR3_STORE_EXITING),
        (t.mov_dr, PrimaryProcBased::MOV_DR_EXITING),
        (
            config.tsc.virtualized(),
            PrimaryProcBased::USE_TSC_OFFSETTING,
        ),
        (config.tsc == TscMode::Hide, PrimaryProcBased::RDTSC_EXITING),
        // Without hardware scaling, a scaled TSC is emulated: every read must exit.
        (
            matches!(config.tsc, TscMode::Scale(..)) && !caps.has_tsc_scaling(),
            PrimaryProcBased::RDTSC_EXITING,
        ),
    ] {
        if on {
            primary |= bit;
        }
    }
    let mut secondary = SecondaryProcBased::ENABLE_EPT
        | SecondaryProcBased::ENABLE_VPID
        | SecondaryProcBased::UNRESTRICTED_GUEST;
    // --- Instructions the guest may use (begin): every gated feature the host shows gets its
    // enable control (SDM Vol. 3C 26.3), or CPUID hides it. UMWAIT and TPAUSE exit while RDTSC
    // exits (SDM Vol. 3C 26.1.3), and Vigil does not emulate a wait in virtual time: with RDTSC
    // exiting, WAITPKG is hidden.
    let rdtsc_exits = adjust(caps.procbased, primary)
        .value
        .contains(PrimaryProcBased::RDTSC_EXITING);
    let refused = if rdtsc_exits {
        Features::of(&[Feature::Waitpkg])
    } else {
        Features::NONE
    };
    let (gated, hidden) = instruction_controls(caps.procbased2, host_features(), refused);
    secondary |= gated;
    // --- Instructions the guest may use (end).
    if matches!(config.tsc, TscMode::Scale(..)) && caps.has_tsc_scaling() {
        secondary |= SecondaryProcBased::USE_TSC_SCALING;
    }
    let exit = ExitControls::HOST_ADDRESS_SPACE_SIZE
        | ExitControls::SAVE_IA32_EFER
        | ExitControls::LOAD_IA32_EFER
        | ExitControls::SAVE_IA32_PAT
        | ExitControls::LOAD_IA32_PAT
        | ExitControls::SAVE_DEBUG_CONTROLS;
    let entry = EntryControls::LOAD_IA32_EFER
        | EntryControls::LOAD_IA32_PAT
        | EntryControls::LOAD_DEBUG_CONTROLS;

    let pin = adjust(caps.pinbased, PinBased::empty());
    let primary = adjust(caps.procbased, primary);
    let secondary = adjust(caps.procbased2, secondary);
    let exit = adjust(caps.exit, exit);
    let entry = adjust(caps.entry, entry);

    // Features Vigil cannot do without are reported once, as the error below; the others get
    // a line saying what happens instead.
    let essential_primary = PrimaryProcBased::USE_MSR_BITMAPS | PrimaryProcBased::USE_IO_BITMAPS;
    // Without unrestricted guest the guest runs on identity page tables while its paging is
    // off (`flat.rs`): a limit (no real mode), said once at launch, not a missing feature.
    let essential_secondary =
        SecondaryProcBased::ENABLE_EPT | SecondaryProcBased::UNRESTRICTED_GUEST;
    let essential_exit = ExitControls::LOAD_IA32_EFER | ExitControls::SAVE_IA32_EFER;
    for m in describe_missing(primary.dropped - essential_primary)
        .into_iter()
        .chain(describe_missing(secondary.dropped - essential_secondary))
        .chain(describe_missing(exit.dropped - essential_exit))
        .chain(describe_missing(
            entry.dropped - EntryControls::LOAD_IA32_EFER,
        ))
    {
        log::warn!("{m}");
    }
    let required = [
        (
            primary
                .dropped
                .intersects(PrimaryProcBased::USE_MSR_BITMAPS | PrimaryProcBased::USE_IO_BITMAPS),
            "MSR and I/O bitmaps",
        ),
        (
            secondary.dropped.contains(SecondaryProcBased::ENABLE_EPT),
            "EPT",
        ),
        (
            exit.dropped
                .intersects(ExitControls::LOAD_IA32_EFER | ExitControls::SAVE_IA32_EFER),
            "EFER switching",
        ),
        (
            primary.dropped.contains(PrimaryProcBased::RDTSC_EXITING),
            "RDTSC exiting (asked for by trap=rdtsc)",
        ),
    ];
    if let Some((_, what)) = required.iter().find(|(missing, _)| *missing) {
        return Err(format!("this processor lacks {what}, which Vigil requires"));
    }
    Ok((
        [
            pin.value.bits(),
            primary.value.bits(),
            secondary.value.bits(),
            exit.value.bits(),
            entry.value.bits(),
        ],
        hidden,
    ))
}

/// The gated features the host's CPUID reports.
fn host_features() -> Features {
    let mut shows = Features::NONE;
    let max = regs::cpuid(0, 0)[0];
    let max_ext = regs::cpuid(0x8000_0000, 0)[0];
    for (_, feature) in INSTRUCTION_CONTROLS {
        let at = feature.location();
        let present = if at.leaf >= 0x8000_0000 { max_ext } else { max };
        if at.leaf <= present && at.is_set(&regs::cpuid(at.leaf, at.subleaf.unwrap_or(0))) {
            shows.insert(feature);
        }
    }
    shows
}

/// Fills an MSR bitmap page from the ownership table (SDM Vol. 3C 25.6.9): read bitmaps for
/// MSRs 0-1FFFH at 0 and C0000000H-C0001FFFH at 1024, write bitmaps at 2048 and 3072. MSRs
/// outside both ranges always exit, and the table serves them too.
fn msr_bitmap(owners: &Owners) -> Result<u64, String> {
    let page = alloc_frames(1).ok_or("out of memory for the MSR bitmap")?;
    // SAFETY: a fresh zeroed frame from Vigil's pool.
    let bits = unsafe { &mut *(page as *mut [u8; 4096]) };
    for (first, base) in [(0u32, 0usize), (0xC000_0000, 1024)] {
        for i in 0..0x2000u32 {
            for (write, half) in [(false, 0), (true, 2048)] {
                if owners.msrs.exits(first + i, write) {
                    bits[half + base + i as usize / 8] |= 1 << (i % 8);
                }
            }
        }
    }
    crate::mem::protect(page, page + 4096);
    Ok(page)
}

/// The VM's I/O bitmaps, shared by every vCPU: a decoder Vigil follows moves its trap for all
/// of them at once (`VmxVcpu::refresh_io_traps`).
static IO_BITMAPS: spin::Once<Result<u64, String>> = spin::Once::new();

/// Fills I/O bitmaps A (ports 0-7FFFH) and B (8000H-FFFFH), two consecutive pages, from the
/// ownership table (SDM Vol. 3C 25.6.4), once per VM.
fn io_bitmaps(owners: &Owners) -> Result<u64, String> {
    IO_BITMAPS.call_once(|| new_io_bitmaps(owners)).clone()
}

fn new_io_bitmaps(owners: &Owners) -> Result<u64, String> {
    let pages = alloc_frames(2).ok_or("out of memory for the I/O bitmaps")?;
    // SAFETY: two fresh zeroed frames from Vigil's pool.
    let bits = unsafe { &mut *(pages as *mut [u8; 8192]) };
    for port in owners.ports.trapped() {
        bits[port as usize / 8] |= 1 << (port % 8);
    }
    crate::mem::protect(pages, pages + 8192);
    Ok(pages)
}

/// The MSR and I/O bitmaps, built once from the ownership table and shared by every vCPU's
/// VMCS (they only decide what exits).
#[derive(Clone, Copy, Debug)]
pub struct Bitmaps {
    pub msr: u64,
    /// I/O bitmap A; B is the next page.
    pub io: u64,
}

pub fn bitmaps(owners: &Owners) -> Result<Bitmaps, String> {
    Ok(Bitmaps {
        msr: msr_bitmap(owners)?,
        io: io_bitmaps(owners)?,
    })
}

/// Creates the vCPU's VMCS on this processor, makes it current and fills it in. Returns the
/// vCPU and the guest's virtual TSC as it starts: a new one for the boot vCPU (`tsc` None), or
/// the boot vCPU's for another, so that every vCPU's TSC is the same function of the host's
/// (the processors' TSCs are synchronized) and values read on different vCPUs never go back.
pub fn create_vcpu(
    caps: VmxCaps,
    vm: &'static Vm,
    guest: &GuestSetup,
    bitmaps: &Bitmaps,
    cpu: &crate::percpu::PerCpu,
    tsc: Option<&VirtualTsc>,
) -> Result<(VmxVcpu, VirtualTsc), String> {
    let config = &vm.config;
    let ([pin, primary, secondary, exit, entry], hidden) = controls(&caps, config)?;
    for f in hidden.iter() {
        log::info!(
            "CPUID hides {} from the guest: its instructions are not enabled in VMX non-root operation",
            f.name()
        );
    }
    let vmcs_phys = alloc_frames(1).ok_or("out of memory for the VMCS")?;
    // SAFETY: the region is a fresh frame; its first dword must hold the VMCS revision
    // identifier before VMPTRLD (SDM Vol. 3C 25.2).
    unsafe { (vmcs_phys as *mut u32).write(caps.revision_id()) };
    // SAFETY: VMX root operation is on; the region is prepared as required.
    unsafe {
        instr::vmclear(vmcs_phys).map_err(|e| format!("VMCLEAR failed: {e:?}"))?;
        instr::vmptrld(vmcs_phys).map_err(|e| format!("VMPTRLD failed: {e:?}"))?;
    }
    let mut v = RealVmcs;
    let w = |v: &mut RealVmcs, f: Field, value: u64| {
        v.try_write(f, value)
            .map_err(|e| format!("VMWRITE {} failed: {e}", f.name()))
    };

    // Controls.
    w(&mut v, Field::PinBasedControls, pin as u64)?;
    w(&mut v, Field::PrimaryProcBasedControls, primary as u64)?;
    w(&mut v, Field::SecondaryProcBasedControls, secondary as u64)?;
    w(&mut v, Field::ExitControls, exit as u64)?;
    w(&mut v, Field::EntryControls, entry as u64)?;
    w(
        &mut v,
        Field::ExceptionBitmap,
        config.trap.exceptions as u64,
    )?;
    w(&mut v, Field::MsrBitmap, bitmaps.msr)?;
    w(&mut v, Field::IoBitmapA, bitmaps.io)?;
    w(&mut v, Field::IoBitmapB, bitmaps.io + 4096)?;
    w(&mut v, Field::EptPointer, guest.eptp)?;
    let vpid = if secondary & SecondaryProcBased::ENABLE_VPID.bits() != 0 {
        1 + cpu.id as u16
    } else {
        0
    };
    if vpid != 0 {
        w(&mut v, Field::VirtualProcessorId, vpid as u64)?;
    }
    let tsc_adjust_supported = regs::cpuid(0, 0)[0] >= 7 && regs::cpuid(7, 0)[1] & (1 << 1) != 0;
    let adjust = if tsc_adjust_supported {
        regs::rdmsr(IA32_TSC_ADJUST)
    } else {
        0
    };
    // IA32_TSC_ADJUST is per processor: each vCPU starts with its own processor's.
    let vtsc = match tsc {
        None => VirtualTsc::new(config.tsc, regs::rdtsc(), adjust),
        Some(t) => VirtualTsc {
            adjust,
            deadline: 0,
            ..t.clone()
        },
    };
    w(&mut v, Field::TscOffset, vtsc.offset)?;
    if secondary & SecondaryProcBased::USE_TSC_SCALING.bits() != 0 {
        w(&mut v, Field::TscMultiplier, vtsc.multiplier)?;
    }
    // --- Fields software must initialize (begin). VMCLEAR leaves a VMCS's contents undefined
    // (SDM Vol. 3C 25.11.3), so every field the processor consults with Vigil's controls gets a
    // value on purpose:
    // - #PF exits exactly as exception-bitmap bit 14 says: mask and match 0 (25.6.3).
    w(&mut v, Field::PageFaultErrorCodeMask, 0)?;
    w(&mut v, Field::PageFaultErrorCodeMatch, 0)?;
    // - No CR3-target values: with CR3-load exiting, every MOV to CR3 exits (25.6.7).
    w(&mut v, Field::Cr3TargetCount, 0)?;
    for f in [
        Field::Cr3TargetValue0,
        Field::Cr3TargetValue1,
        Field::Cr3TargetValue2,
        Field::Cr3TargetValue3,
    ]
    .into_iter()
    .take(caps.misc_cr3_targets() as usize)
    {
        w(&mut v, f, 0)?;
    }
    // - No MSR lists: VMX switches the MSRs Vigil needs through its controls (25.7.2, 25.8.2).
    w(&mut v, Field::VmExitMsrStoreCount, 0)?;
    w(&mut v, Field::VmExitMsrLoadCount, 0)?;
    w(&mut v, Field::VmEntryMsrLoadCount, 0)?;
    // - Nothing to inject at the first entry (25.8.3): the valid bit is 0.
    w(&mut v, Field::VmEntryInterruptionInfo, 0)?;
    w(&mut v, Field::VmEntryExceptionErrorCode, 0)?;
    w(&mut v, Field::VmEntryInstructionLength, 0)?;
    // - XSAVES and XRSTORS never exit for a component of IA32_XSS (25.6, "XSS-Exiting Bitmap").
    if secondary & SecondaryProcBased::ENABLE_XSAVES_XRSTORS.bits() != 0 {
        w(&mut v, Field::XssExitingBitmap, 0)?;
    }
    // - Not a shadow VMCS, and no VMCS behind it (25.4.2).
    w(&mut v, Field::VmcsLinkPointer, u64::MAX)?;
    // Fields of controls Vigil leaves 0 (TPR shadow, APIC virtualization, PAUSE-loop exiting,
    // VM functions, VMCS shadowing, ENCLS/ENCLV/PCONFIG exiting, PML, #VE, the secondary exit
    // controls) are not consulted; the SMM executive-VMCS pointer serves only the dual-monitor
    // treatment, which Vigil does not use. The preemption timer's value is written whenever
    // the timer is armed (`VmxVcpu::arm_preemption_timer`). Fields software must initialize (end).
    // The guest/host masks give Vigil the CR bits VMX pins, so the guest reads back what it
    // wrote (its read shadow) and any attempt to change them exits for emulation.
    let unrestricted = secondary & SecondaryProcBased::UNRESTRICTED_GUEST.bits() != 0;
    let mut cr0_pinned = caps.cr0_fixed0 | !caps.cr0_fixed1;
    if unrestricted {
        cr0_pinned &= !(CR0_PE | CR0_PG);
    }
    // The user's own bits come on top: their writes exit and are emulated (and logged).
    let cr0_mask = (cr0_pinned | config.trap.cr0_mask) & 0xFFFF_FFFF;
    let mut cr4_mask = (caps.cr4_fixed0 | !caps.cr4_fixed1 | config.trap.cr4_mask) & 0xFFFF_FFFF;
    if !unrestricted {
        // The paging bits are the guest's own while the processor runs it on identity tables.
        cr4_mask |= super::flat::CR4_PAGING;
    }
    w(&mut v, Field::Cr0GuestHostMask, cr0_mask)?;
    w(&mut v, Field::Cr4GuestHostMask, cr4_mask)?;

    // Host state: what a VM exit loads (SDM Vol. 3C 28.5).
    w(&mut v, Field::HostCr0, regs::cr0())?;
    w(&mut v, Field::HostCr3, regs::cr3())?;
    w(&mut v, Field::HostCr4, regs::cr4())?;
    w(&mut v, Field::HostCsSelector, gdt::KERNEL_CS as u64)?;
    for f in [
        Field::HostSsSelector,
        Field::HostDsSelector,
        Field::HostEsSelector,
    ] {
        w(&mut v, f, gdt::KERNEL_DS as u64)?;
    }
    w(&mut v, Field::HostFsSelector, 0)?;
    w(&mut v, Field::HostGsSelector, 0)?;
    w(&mut v, Field::HostTrSelector, gdt::TSS_SEL as u64)?;
    w(&mut v, Field::HostFsBase, 0)?;
    // GS base is how Vigil finds the running CPU's state (percpu.rs).
    w(&mut v, Field::HostGsBase, cpu.address())?;
    w(&mut v, Field::HostTrBase, cpu.tables.tss_base())?;
    w(&mut v, Field::HostGdtrBase, regs::sgdt().0)?;
    w(&mut v, Field::HostIdtrBase, regs::sidt().0)?;
    w(&mut v, Field::HostIa32SysenterCs, 0)?;
    w(&mut v, Field::HostIa32SysenterEsp, 0)?;
    w(&mut v, Field::HostIa32SysenterEip, 0)?;
    w(&mut v, Field::HostIa32Efer, regs::rdmsr(IA32_EFER))?;
    w(&mut v, Field::HostIa32Pat, regs::rdmsr(IA32_PAT))?;
    w(&mut v, Field::HostRip, switch::host_rip())?;

    // Guest state: 32-bit protected mode, flat segments, paging off (multiboot spec 3.2;
    // the Linux 32-bit boot protocol asks for the same).
    let e = &guest.entry;
    let flat =
        |v: &mut RealVmcs, sel: Field, base: Field, limit: Field, ar: Field, s: u64, a: u64| {
            w(v, sel, s)?;
            w(v, base, 0)?;
            w(v, limit, 0xFFFF_FFFF)?;
            w(v, ar, a)
        };
    use Field::*;
    flat(
        &mut v,
        GuestCsSelector,
        GuestCsBase,
        GuestCsLimit,
        GuestCsAccessRights,
        0x10,
        0xC09B,
    )?;
    for (s, b, l, a) in [
        (
            GuestDsSelector,
            GuestDsBase,
            GuestDsLimit,
            GuestDsAccessRights,
        ),
        (
            GuestEsSelector,
            GuestEsBase,
            GuestEsLimit,
            GuestEsAccessRights,
        ),
        (
            GuestSsSelector,
            GuestSsBase,
            GuestSsLimit,
            GuestSsAccessRights,
        ),
        (
            GuestFsSelector,
            GuestFsBase,
            GuestFsLimit,
            GuestFsAccessRights,
        ),
        (
            GuestGsSelector,
            GuestGsBase,
            GuestGsLimit,
            GuestGsAccessRights,
        ),
    ] {
        flat(&mut v, s, b, l, a, 0x18, 0xC093)?;
    }
    // TR must be a usable busy TSS and LDTR may be unusable (SDM Vol. 3C 27.3.1.2).
    w(&mut v, GuestTrSelector, 0)?;
    w(&mut v, GuestTrBase, 0)?;
    w(&mut v, GuestTrLimit, 0xFFFF)?;
    w(&mut v, GuestTrAccessRights, 0x8B)?;
    w(&mut v, GuestLdtrSelector, 0)?;
    w(&mut v, GuestLdtrBase, 0)?;
    w(&mut v, GuestLdtrLimit, 0)?;
    w(&mut v, GuestLdtrAccessRights, 1 << 16)?;
    w(&mut v, GuestGdtrBase, guest.gdt)?;
    w(&mut v, GuestGdtrLimit, 0x1F)?;
    w(&mut v, GuestIdtrBase, 0)?;
    w(&mut v, GuestIdtrLimit, 0x3FF)?;
    w(&mut v, GuestDr7, 0x400)?;
    w(&mut v, GuestRflags, 0x2)?;
    w(&mut v, GuestRsp, 0)?;
    w(&mut v, GuestRip, e.rip)?;
    w(&mut v, GuestIa32Efer, 0)?;
    w(&mut v, GuestIa32Pat, PAT_POWER_ON)?;
    w(&mut v, GuestIa32Debugctl, 0)?;
    w(&mut v, GuestIa32SysenterCs, 0)?;
    w(&mut v, GuestIa32SysenterEsp, 0)?;
    w(&mut v, GuestIa32SysenterEip, 0)?;
    w(&mut v, GuestActivityState, 0)?;
    w(&mut v, GuestInterruptibilityState, 0)?;
    w(&mut v, GuestPendingDebugExceptions, 0)?;
    w(&mut v, GuestCr3, 0)?;

    let mut vcpu = VmxVcpu {
        regs: Default::default(),
        vmcs: v,
        caps,
        vpid,
        eptp: guest.eptp,
        eptp_a20: guest.eptp_a20,
        a20_open: true,
        io_bitmap: bitmaps.io,
        host: crate::host::HostCpu,
        exit_reason: 0,
        cr0_mask,
        cr4_mask,
        user_exceptions: config.trap.exceptions,
        mtf_works: false,
        hidden,
        flat: guest.identity_table.map(|table| super::flat::Flat {
            table,
            cr3: 0,
            efer: 0,
            cr3_exits: primary
                & (PrimaryProcBased::CR3_LOAD_EXITING | PrimaryProcBased::CR3_STORE_EXITING).bits(),
        }),
        unsupported: None,
        poll: None,
        nmi_retry: false,
        phys_bits: (regs::cpuid(0x8000_0008, 0)[0] & 0xFF) as u8,
    };
    vcpu.set_cr0(CR0_PE | CR0_ET);
    vcpu.set_cr4(0);
    // Paging starts off: on the identity tables where the processor needs paging.
    vcpu.paging_changed();
    vcpu.regs.rax = e.rax;
    vcpu.regs.rbx = e.rbx;
    vcpu.regs.rsi = e.rsi;
    Ok((vcpu, vtsc))
}
