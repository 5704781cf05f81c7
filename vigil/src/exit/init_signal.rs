//! INIT signal (exit reason 3). In VMX non-root operation INIT is blocked and exits instead
//! (SDM Vol. 3C 26.2). On the boot CPU an INIT means the guest asked for a reset, which Vigil
//! does not emulate: it ends the run with a report.

use super::{Action, Stop};
use crate::vmm::Vcpu;

pub fn handle(vcpu: &mut Vcpu) -> Action {
    crate::report::exit_report(vcpu, "INIT signal (the guest asked for a reset)");
    Action::Stop(Stop::Failed("guest reset (INIT) is not supported"))
}
