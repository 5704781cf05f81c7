//! Triple fault (exit reason 2). Real hardware would shut down (and most boards reset); Vigil
//! stops the guest with a full report, since the guest's state at this point is what its
//! developer needs to see.

use super::{Action, Stop};
use crate::vmm::Vcpu;

pub fn handle(vcpu: &mut Vcpu) -> Action {
    crate::report::exit_report(vcpu, "the guest triple-faulted (shutdown)");
    Action::Stop(Stop::Failed("guest triple fault"))
}
