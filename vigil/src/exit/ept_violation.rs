//! EPT violations and misconfigurations (exit reasons 48 and 49).
//!
//! The EPT maps guest RAM and the machine's device ranges; the only holes are Vigil's own memory
//! and addresses beyond the physical address space. An access to a hole gets #GP(0) in the guest,
//! always — reads, writes and instruction fetches alike — and Vigil logs the address. No byte of
//! Vigil's memory is ever read or written on the guest's behalf. If the access happened while
//! the processor was delivering an event (say, an IDT placed in a hole), the #GP escalates the
//! way exception delivery does (double-fault rules, `super::deliver_nested`): to #DF after a
//! contributory exception or page fault, and from #DF to a triple fault, which stops the guest
//! (SDM Vol. 3A 7.15, interrupt 8; Vol. 3C 28.2.4 for IDT-vectoring information).

use super::{Action, Fault, Stop};
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
    let vectoring = vcpu.idt_vectoring();
    let during_delivery = vectoring.valid().then(|| vectoring.vector());
    // A guest probing Vigil's memory page by page would otherwise flood the console (and, since
    // the UART's baud rate is modelled, slow itself down): the first few are warnings, the rest
    // are debug lines; the statistics table has the count.
    static SEEN: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
    let level = if SEEN.fetch_add(1, core::sync::atomic::Ordering::Relaxed) < 4 {
        log::Level::Warn
    } else {
        log::Level::Debug
    };
    log::log!(
        level,
        "guest {access} of guest-physical {gpa:#x}{} (rip {:#x}) is outside its memory: #GP{}",
        linear
            .map(|l| alloc::format!(" (linear {l:#x})"))
            .unwrap_or_default(),
        vcpu.rip(),
        match during_delivery {
            Some(v) => alloc::format!(" while delivering vector {v}"),
            None => alloc::string::String::new(),
        }
    );
    super::deliver_nested(vcpu, 13, |_| Action::Inject(Fault::GP0))
}

pub fn misconfig(vcpu: &mut Vcpu, gpa: u64) -> Action {
    // A misconfiguration is a bug in Vigil's EPT, not something the guest did.
    crate::report::exit_report(
        vcpu,
        &alloc::format!("EPT misconfiguration at guest-physical {gpa:#x}"),
    );
    Action::Stop(Stop::Failed("EPT misconfiguration (a Vigil bug)"))
}
