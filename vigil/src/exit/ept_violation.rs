//! EPT violations and misconfigurations (exit reasons 48 and 49).
//!
//! Guest RAM and the machine's device ranges are mapped; what is missing is Vigil's own memory
//! (and nothing else below the top of RAM). A guest that reaches for it is stopped with a
//! report naming the address and the access: Vigil's memory does not exist for the guest, and
//! silently emulating a hole would hide a guest bug or an attack.

use super::{Action, Stop};
use crate::vmm::Vcpu;

pub fn handle(
    vcpu: &mut Vcpu,
    gpa: u64,
    linear: Option<u64>,
    read: bool,
    write: bool,
    fetch: bool,
) -> Action {
    let access = match (read, write, fetch) {
        (_, true, _) => "write",
        (_, _, true) => "instruction fetch",
        _ => "read",
    };
    let what = alloc::format!(
        "EPT violation: {access} of guest-physical {gpa:#x}{} outside the guest's memory",
        linear
            .map(|l| alloc::format!(" (linear {l:#x})"))
            .unwrap_or_default()
    );
    crate::report::exit_report(vcpu, &what);
    Action::Stop(Stop::Failed(
        "guest accessed memory outside its address space",
    ))
}

pub fn misconfig(vcpu: &mut Vcpu, gpa: u64) -> Action {
    // A misconfiguration is a bug in Vigil's EPT, not something the guest did.
    crate::report::exit_report(
        vcpu,
        &alloc::format!("EPT misconfiguration at guest-physical {gpa:#x}"),
    );
    Action::Stop(Stop::Failed("EPT misconfiguration (a Vigil bug)"))
}
