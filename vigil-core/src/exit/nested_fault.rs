//! Nested page faults (VMX: EPT violations; SVM: #NPF) and nested-paging misconfigurations.
//!
//! The nested tables map guest RAM and the machine's device ranges; the only holes are Vigil's
//! own memory and addresses beyond the physical address space. An access to a hole gets #GP(0)
//! in the guest, always — reads, writes and instruction fetches alike — and Vigil logs the
//! address. No byte of Vigil's memory is ever read or written on the guest's behalf. If the
//! access happened while the processor was delivering an event (say, an IDT placed in a hole),
//! the #GP escalates the way exception delivery does (double-fault rules,
//! `super::deliver_nested`): to #DF after a contributory exception or page fault, and from #DF
//! to a triple fault, which stops the guest (SDM Vol. 3A 7.15, interrupt 8; Vol. 3C 28.2.4).
//! (Faults on the debugger's own pages never get here: the debugger takes them first.)

use super::{Action, NestedFault, Stop};
use crate::cpu::Cpu;
use crate::vcpu::Vcpu;
use core::sync::atomic::{AtomicU32, Ordering};
use x86_arch::event::{Event, GP};

/// Faults logged as warnings before the rest go to the debug level.
static SEEN: AtomicU32 = AtomicU32::new(0);

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>, f: &NestedFault) -> Action {
    let access = match (f.read, f.write, f.fetch) {
        (_, true, _) => "write",
        (_, _, true) => "instruction fetch",
        _ => "read",
    };
    // A guest probing Vigil's memory page by page would otherwise flood the console (and, since
    // the UART's baud rate is modelled, slow itself down): the first few are warnings, the rest
    // are debug lines; the statistics table has the count.
    let level = if SEEN.fetch_add(1, Ordering::Relaxed) < 4 {
        log::Level::Warn
    } else {
        log::Level::Debug
    };
    log::log!(
        level,
        "guest {access} of guest-physical {:#x}{} (rip {:#x}) is outside its memory: #GP{}",
        f.gpa,
        f.linear
            .map(|l| alloc::format!(" (linear {l:#x})"))
            .unwrap_or_default(),
        cpu.vcpu.rip(),
        match cpu.events.interrupted {
            Some(e) => alloc::format!(" while delivering vector {}", e.vector),
            None => alloc::string::String::new(),
        }
    );
    super::deliver_nested(cpu, GP, |_| Action::Inject(Event::GP0))
}

pub fn misconfig<V: Vcpu>(cpu: &mut Cpu<V>, gpa: u64) -> Action {
    // A misconfiguration is a bug in Vigil's tables, not something the guest did.
    cpu.events.interrupted = None;
    cpu.vcpu.report(&alloc::format!(
        "nested-paging misconfiguration at guest-physical {gpa:#x}"
    ));
    Action::Stop(Stop::Failed("nested-paging misconfiguration (a Vigil bug)"))
}
