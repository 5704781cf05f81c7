//! What a #VMEXIT reports: the exit code, EXITINFO1/EXITINFO2 for the intercepts that have
//! them, and the event whose delivery it interrupted (APM Vol. 2 15.6, 15.7).

mod code;
mod event;
mod info;

pub use code::ExitCode;
pub use event::{kind as event_kind, EventInfo, ERROR_CODE_VALID, VALID};
pub use info::{
    dr_gpr, msr_is_write, CrInfo, IoInfo, NpfInfo, SegEncoding, TaskSwitchInfo, TaskSwitchSource,
};
