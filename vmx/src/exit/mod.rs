//! Decoding what a VM exit reports: the exit reason (SDM Vol. 3D Appendix C, Vol. 3C 25.9.1),
//! exit qualifications (28.2.1), event information (28.2.2-28.2.4) and instruction
//! information (28.2.5).

mod instruction_info;
mod interruption;
mod qualification;
mod reason;

pub use instruction_info::{InstructionDetail, InstructionInfo, MemOperand, Operand, SegReg};
pub use interruption::{
    exception_has_error_code, exception_name, InterruptionInfo, InterruptionType,
};
pub use qualification::{
    CrAccess, CrAccessType, DebugQualification, DrAccess, EptViolation, Gpr, InvlpgQualification,
    IoQualification, TaskSwitch, TaskSwitchSource,
};
pub use reason::{entry_failure_qualification_name, ExitReason, ExitReasonField};
