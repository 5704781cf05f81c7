//! VM-instruction error numbers (SDM Vol. 3C 31.4).

/// Named VM-instruction error numbers, for code that needs to compare against them.
pub struct VmInstructionError;

impl VmInstructionError {
    pub const VMCALL_IN_ROOT: u32 = 1;
    pub const VMCLEAR_INVALID_ADDRESS: u32 = 2;
    pub const VMCLEAR_VMXON_POINTER: u32 = 3;
    pub const VMLAUNCH_NON_CLEAR: u32 = 4;
    pub const VMRESUME_NON_LAUNCHED: u32 = 5;
    pub const VMRESUME_AFTER_VMXOFF: u32 = 6;
    pub const ENTRY_INVALID_CONTROLS: u32 = 7;
    pub const ENTRY_INVALID_HOST_STATE: u32 = 8;
    pub const VMPTRLD_INVALID_ADDRESS: u32 = 9;
    pub const VMPTRLD_VMXON_POINTER: u32 = 10;
    pub const VMPTRLD_BAD_REVISION: u32 = 11;
    pub const UNSUPPORTED_COMPONENT: u32 = 12;
    pub const WRITE_READ_ONLY: u32 = 13;
    pub const VMXON_IN_ROOT: u32 = 15;
    pub const ENTRY_INVALID_EXECUTIVE_VMCS: u32 = 16;
    pub const ENTRY_NON_LAUNCHED_EXECUTIVE_VMCS: u32 = 17;
    pub const ENTRY_EXECUTIVE_NOT_VMXON: u32 = 18;
    pub const VMCALL_NON_CLEAR: u32 = 19;
    pub const VMCALL_INVALID_EXIT_CONTROLS: u32 = 20;
    pub const VMCALL_BAD_MSEG_REVISION: u32 = 22;
    pub const VMXOFF_DUAL_MONITOR: u32 = 23;
    pub const VMCALL_INVALID_SMM_FEATURES: u32 = 24;
    pub const ENTRY_INVALID_EXECUTIVE_CONTROLS: u32 = 25;
    pub const ENTRY_BLOCKED_BY_MOV_SS: u32 = 26;
    pub const INVALID_INVEPT_INVVPID_OPERAND: u32 = 28;
}

/// What a VM-instruction error number means, in a phrase (SDM Vol. 3C 31.4). Numbers the SDM
/// leaves unassigned (0, 14, 21, 27, 29 and above) are named as such rather than guessed at.
pub fn vm_instruction_error_name(n: u32) -> &'static str {
    match n {
        0 => "no error recorded",
        1 => "VMCALL executed in VMX root operation",
        2 => "VMCLEAR with an invalid physical address",
        3 => "VMCLEAR with the VMXON pointer",
        4 => "VMLAUNCH with a VMCS that is not clear",
        5 => "VMRESUME with a VMCS that was never launched",
        6 => "VMRESUME after VMXOFF",
        7 => "VM entry with invalid control field(s)",
        8 => "VM entry with invalid host-state field(s)",
        9 => "VMPTRLD with an invalid physical address",
        10 => "VMPTRLD with the VMXON pointer",
        11 => "VMPTRLD with a wrong VMCS revision identifier",
        12 => "VMREAD/VMWRITE of an unsupported VMCS component",
        13 => "VMWRITE to a read-only VMCS component",
        15 => "VMXON executed in VMX root operation",
        16 => "VM entry with an invalid executive-VMCS pointer",
        17 => "VM entry with a non-launched executive VMCS",
        18 => "VM entry with an executive-VMCS pointer that is not the VMXON pointer",
        19 => "VMCALL with a VMCS that is not clear",
        20 => "VMCALL with invalid VM-exit control fields",
        22 => "VMCALL with a wrong MSEG revision identifier",
        23 => "VMXOFF under the dual-monitor treatment of SMIs and SMM",
        24 => "VMCALL with invalid SMM-monitor features",
        25 => "VM entry with invalid VM-execution control fields in the executive VMCS",
        26 => "VM entry with events blocked by MOV SS",
        28 => "invalid operand to INVEPT/INVVPID",
        _ => "unassigned VM-instruction error number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_assigned_number_has_its_own_name() {
        let assigned = (1..=28).filter(|n| ![14, 21, 27].contains(n));
        let mut names: alloc::vec::Vec<&str> = assigned.map(vm_instruction_error_name).collect();
        assert!(names.iter().all(|n| *n != vm_instruction_error_name(14)));
        let len = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), len, "two numbers share a name");
    }

    #[test]
    fn entry_errors_are_named() {
        assert!(vm_instruction_error_name(7).contains("control"));
        assert!(vm_instruction_error_name(8).contains("host-state"));
        assert!(
            vm_instruction_error_name(VmInstructionError::ENTRY_BLOCKED_BY_MOV_SS)
                .contains("MOV SS")
        );
        assert_eq!(
            vm_instruction_error_name(99),
            "unassigned VM-instruction error number"
        );
    }
}
