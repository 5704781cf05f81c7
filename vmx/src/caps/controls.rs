//! The VMX control words as bit sets (SDM Vol. 3C 25.6.1, 25.6.2, 25.7.1, 25.8.1), each bit with
//! the feature it stands for and what a hypervisor does when the processor lacks it.

use bitflags::bitflags;

bitflags! {
    /// Pin-based VM-execution controls (SDM Vol. 3C 25.6.1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct PinBased: u32 {
        const EXTERNAL_INTERRUPT_EXITING = 1 << 0;
        const NMI_EXITING = 1 << 3;
        const VIRTUAL_NMIS = 1 << 5;
        const VMX_PREEMPTION_TIMER = 1 << 6;
        const PROCESS_POSTED_INTERRUPTS = 1 << 7;
    }

    /// Primary processor-based VM-execution controls (SDM Vol. 3C 25.6.2).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct PrimaryProcBased: u32 {
        const INTERRUPT_WINDOW_EXITING = 1 << 2;
        const USE_TSC_OFFSETTING = 1 << 3;
        const HLT_EXITING = 1 << 7;
        const INVLPG_EXITING = 1 << 9;
        const MWAIT_EXITING = 1 << 10;
        const RDPMC_EXITING = 1 << 11;
        const RDTSC_EXITING = 1 << 12;
        const CR3_LOAD_EXITING = 1 << 15;
        const CR3_STORE_EXITING = 1 << 16;
        const ACTIVATE_TERTIARY_CONTROLS = 1 << 17;
        const CR8_LOAD_EXITING = 1 << 19;
        const CR8_STORE_EXITING = 1 << 20;
        const USE_TPR_SHADOW = 1 << 21;
        const NMI_WINDOW_EXITING = 1 << 22;
        const MOV_DR_EXITING = 1 << 23;
        const UNCONDITIONAL_IO_EXITING = 1 << 24;
        const USE_IO_BITMAPS = 1 << 25;
        const MONITOR_TRAP_FLAG = 1 << 27;
        const USE_MSR_BITMAPS = 1 << 28;
        const MONITOR_EXITING = 1 << 29;
        const PAUSE_EXITING = 1 << 30;
        const ACTIVATE_SECONDARY_CONTROLS = 1 << 31;
    }

    /// Secondary processor-based VM-execution controls (SDM Vol. 3C 25.6.2).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct SecondaryProcBased: u32 {
        const VIRTUALIZE_APIC_ACCESSES = 1 << 0;
        const ENABLE_EPT = 1 << 1;
        const DESCRIPTOR_TABLE_EXITING = 1 << 2;
        const ENABLE_RDTSCP = 1 << 3;
        const VIRTUALIZE_X2APIC_MODE = 1 << 4;
        const ENABLE_VPID = 1 << 5;
        const WBINVD_EXITING = 1 << 6;
        const UNRESTRICTED_GUEST = 1 << 7;
        const APIC_REGISTER_VIRTUALIZATION = 1 << 8;
        const VIRTUAL_INTERRUPT_DELIVERY = 1 << 9;
        const PAUSE_LOOP_EXITING = 1 << 10;
        const RDRAND_EXITING = 1 << 11;
        const ENABLE_INVPCID = 1 << 12;
        const ENABLE_VM_FUNCTIONS = 1 << 13;
        const VMCS_SHADOWING = 1 << 14;
        const ENABLE_ENCLS_EXITING = 1 << 15;
        const RDSEED_EXITING = 1 << 16;
        const ENABLE_PML = 1 << 17;
        const EPT_VIOLATION_VE = 1 << 18;
        const CONCEAL_VMX_FROM_PT = 1 << 19;
        const ENABLE_XSAVES_XRSTORS = 1 << 20;
        const PASID_TRANSLATION = 1 << 21;
        const MODE_BASED_EXECUTE_CONTROL = 1 << 22;
        const SUB_PAGE_WRITE_PERMISSIONS = 1 << 23;
        const PT_USES_GUEST_PHYSICAL_ADDRESSES = 1 << 24;
        const USE_TSC_SCALING = 1 << 25;
        const ENABLE_USER_WAIT_AND_PAUSE = 1 << 26;
        const ENABLE_PCONFIG = 1 << 27;
        const ENABLE_ENCLV_EXITING = 1 << 28;
        const VMM_BUS_LOCK_DETECTION = 1 << 30;
        const INSTRUCTION_TIMEOUT = 1 << 31;
    }

    /// Primary VM-exit controls (SDM Vol. 3C 25.7.1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct ExitControls: u32 {
        const SAVE_DEBUG_CONTROLS = 1 << 2;
        const HOST_ADDRESS_SPACE_SIZE = 1 << 9;
        const LOAD_IA32_PERF_GLOBAL_CTRL = 1 << 12;
        const ACK_INTERRUPT_ON_EXIT = 1 << 15;
        const SAVE_IA32_PAT = 1 << 18;
        const LOAD_IA32_PAT = 1 << 19;
        const SAVE_IA32_EFER = 1 << 20;
        const LOAD_IA32_EFER = 1 << 21;
        const SAVE_VMX_PREEMPTION_TIMER = 1 << 22;
        const CLEAR_IA32_BNDCFGS = 1 << 23;
        const CONCEAL_VMX_FROM_PT = 1 << 24;
        const CLEAR_IA32_RTIT_CTL = 1 << 25;
        const CLEAR_IA32_LBR_CTL = 1 << 26;
        const CLEAR_UINV = 1 << 27;
        const LOAD_CET_STATE = 1 << 28;
        const LOAD_PKRS = 1 << 29;
        const SAVE_IA32_PERF_GLOBAL_CTRL = 1 << 30;
        const ACTIVATE_SECONDARY_CONTROLS = 1 << 31;
    }

    /// VM-entry controls (SDM Vol. 3C 25.8.1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct EntryControls: u32 {
        const LOAD_DEBUG_CONTROLS = 1 << 2;
        const IA32E_MODE_GUEST = 1 << 9;
        const ENTRY_TO_SMM = 1 << 10;
        const DEACTIVATE_DUAL_MONITOR = 1 << 11;
        const LOAD_IA32_PERF_GLOBAL_CTRL = 1 << 13;
        const LOAD_IA32_PAT = 1 << 14;
        const LOAD_IA32_EFER = 1 << 15;
        const LOAD_IA32_BNDCFGS = 1 << 16;
        const CONCEAL_VMX_FROM_PT = 1 << 17;
        const LOAD_IA32_RTIT_CTL = 1 << 18;
        const LOAD_UINV = 1 << 19;
        const LOAD_CET_STATE = 1 << 20;
        const LOAD_IA32_LBR_CTL = 1 << 21;
        const LOAD_PKRS = 1 << 22;
        const LOAD_FRED = 1 << 23;
    }
}

/// A 32-bit VMX control word together with what each of its bits means to a user who has to
/// live without it.
pub trait ControlSet: bitflags::Flags<Bits = u32> + Copy {
    /// The control word's name, e.g. "secondary processor-based VM-execution controls".
    const WHAT: &'static str;
    /// A readable feature name for one bit, e.g. "unrestricted guest".
    fn feature(bit: u32) -> &'static str;
    /// What happens instead when the processor does not allow the bit to be 1.
    fn fallback(bit: u32) -> &'static str;
}

const DEFAULT_FALLBACK: &str = "the hypervisor runs without it";

impl ControlSet for PinBased {
    const WHAT: &'static str = "pin-based VM-execution controls";
    fn feature(bit: u32) -> &'static str {
        match bit {
            0 => "external-interrupt exiting",
            3 => "NMI exiting",
            5 => "virtual NMIs",
            6 => "VMX-preemption timer",
            7 => "posted interrupts",
            _ => "reserved pin-based control",
        }
    }
    fn fallback(bit: u32) -> &'static str {
        match bit {
            6 => "no time slice can be imposed on the guest; it runs until it exits by itself",
            5 => "NMI blocking is not tracked for the guest",
            _ => DEFAULT_FALLBACK,
        }
    }
}

impl ControlSet for PrimaryProcBased {
    const WHAT: &'static str = "primary processor-based VM-execution controls";
    fn feature(bit: u32) -> &'static str {
        match bit {
            2 => "interrupt-window exiting",
            3 => "TSC offsetting",
            7 => "HLT exiting",
            9 => "INVLPG exiting",
            10 => "MWAIT exiting",
            11 => "RDPMC exiting",
            12 => "RDTSC exiting",
            15 => "CR3-load exiting",
            16 => "CR3-store exiting",
            17 => "tertiary controls",
            19 => "CR8-load exiting",
            20 => "CR8-store exiting",
            21 => "TPR shadow",
            22 => "NMI-window exiting",
            23 => "MOV-DR exiting",
            24 => "unconditional I/O exiting",
            25 => "I/O bitmaps",
            27 => "monitor trap flag",
            28 => "MSR bitmaps",
            29 => "MONITOR exiting",
            30 => "PAUSE exiting",
            31 => "secondary controls",
            _ => "reserved processor-based control",
        }
    }
    fn fallback(bit: u32) -> &'static str {
        match bit {
            3 => "the guest reads the host's TSC unchanged",
            12 => "RDTSC cannot be trapped; the guest reads the TSC directly",
            25 => "I/O ports cannot be trapped selectively",
            27 => "single-stepping the guest is not available",
            28 => "every RDMSR/WRMSR of the guest exits",
            31 => "EPT, VPID, unrestricted guest and the other secondary features are unavailable",
            15 | 16 => "the bit stays forced on and CR3 accesses exit",
            _ => DEFAULT_FALLBACK,
        }
    }
}

impl ControlSet for SecondaryProcBased {
    const WHAT: &'static str = "secondary processor-based VM-execution controls";
    fn feature(bit: u32) -> &'static str {
        match bit {
            0 => "APIC-access virtualization",
            1 => "EPT",
            2 => "descriptor-table exiting",
            3 => "RDTSCP",
            4 => "x2APIC-mode virtualization",
            5 => "VPID",
            6 => "WBINVD exiting",
            7 => "unrestricted guest",
            8 => "APIC-register virtualization",
            9 => "virtual-interrupt delivery",
            10 => "PAUSE-loop exiting",
            11 => "RDRAND exiting",
            12 => "INVPCID",
            13 => "VM functions",
            14 => "VMCS shadowing",
            15 => "ENCLS exiting",
            16 => "RDSEED exiting",
            17 => "page-modification logging",
            18 => "EPT-violation #VE",
            19 => "concealing VMX from PT",
            20 => "XSAVES/XRSTORS",
            21 => "PASID translation",
            22 => "mode-based execute control for EPT",
            23 => "sub-page write permissions for EPT",
            24 => "PT using guest-physical addresses",
            25 => "TSC scaling",
            26 => "user wait and pause",
            27 => "PCONFIG",
            28 => "ENCLV exiting",
            30 => "VMM bus-lock detection",
            31 => "instruction timeout",
            _ => "reserved secondary control",
        }
    }
    fn fallback(bit: u32) -> &'static str {
        match bit {
            1 => "the guest cannot be given its own physical address space",
            3 => "RDTSCP raises #UD in the guest",
            5 => "TLB is flushed on every VM exit and entry",
            7 => "the guest will start with paging on",
            12 => "INVPCID raises #UD in the guest",
            20 => "XSAVES/XRSTORS raise #UD in the guest",
            25 => "the guest's TSC runs at the host's rate",
            _ => DEFAULT_FALLBACK,
        }
    }
}

impl ControlSet for ExitControls {
    const WHAT: &'static str = "VM-exit controls";
    fn feature(bit: u32) -> &'static str {
        match bit {
            2 => "save debug controls",
            9 => "host address-space size",
            12 => "load IA32_PERF_GLOBAL_CTRL on exit",
            15 => "acknowledge interrupt on exit",
            18 => "save IA32_PAT on exit",
            19 => "load IA32_PAT on exit",
            20 => "save IA32_EFER on exit",
            21 => "load IA32_EFER on exit",
            22 => "save VMX-preemption timer value",
            23 => "clear IA32_BNDCFGS",
            24 => "conceal VMX from PT on exit",
            25 => "clear IA32_RTIT_CTL",
            26 => "clear IA32_LBR_CTL",
            27 => "clear UINV",
            28 => "load CET state on exit",
            29 => "load PKRS on exit",
            30 => "save IA32_PERF_GLOBAL_CTRL",
            31 => "secondary VM-exit controls",
            _ => "reserved VM-exit control",
        }
    }
    fn fallback(bit: u32) -> &'static str {
        match bit {
            9 => "a 64-bit host cannot run at all",
            18 | 19 => "the guest's PAT must be switched by hand or shared with the host",
            20 | 21 => "the guest's EFER must be switched through the MSR-load areas",
            22 => "the preemption timer restarts from its full value on every entry",
            _ => DEFAULT_FALLBACK,
        }
    }
}

impl ControlSet for EntryControls {
    const WHAT: &'static str = "VM-entry controls";
    fn feature(bit: u32) -> &'static str {
        match bit {
            2 => "load debug controls",
            9 => "IA-32e mode guest",
            10 => "entry to SMM",
            11 => "deactivate dual-monitor treatment",
            13 => "load IA32_PERF_GLOBAL_CTRL on entry",
            14 => "load IA32_PAT on entry",
            15 => "load IA32_EFER on entry",
            16 => "load IA32_BNDCFGS",
            17 => "conceal VMX from PT on entry",
            18 => "load IA32_RTIT_CTL",
            19 => "load UINV",
            20 => "load CET state on entry",
            21 => "load guest IA32_LBR_CTL",
            22 => "load PKRS on entry",
            23 => "load FRED state",
            _ => "reserved VM-entry control",
        }
    }
    fn fallback(bit: u32) -> &'static str {
        match bit {
            9 => "a 64-bit guest cannot be entered",
            14 => "the guest's PAT must be switched by hand or shared with the host",
            15 => "the guest's EFER must be switched through the MSR-load areas",
            _ => DEFAULT_FALLBACK,
        }
    }
}
