//! The vendor-neutral exit loop and one handler per exit reason.
//!
//! The backend (VMX today) decodes each VM exit into an [`Exit`]; [`dispatch`] hands it to its
//! handler, which answers with an [`Action`]. The loop applies the action, records statistics
//! and re-enters the guest. Nothing here reads raw VMCS encodings: guest state goes through the
//! [`Vcpu`] methods.

mod cpuid;
mod cr_access;
mod ept_violation;
mod exception;
mod hlt;
mod init_signal;
mod invd;
mod invlpg;
mod io;
mod io_string;
mod mov_dr;
mod msr;
mod rdpmc;
mod rdtsc;
mod triple_fault;
mod unconditional_ud;
mod vmcall;
mod xsetbv;

use crate::vmm::Vcpu;
use vmx::exit::{CrAccess, DrAccess, IoQualification};

/// One VM exit, decoded.
#[derive(Clone, Copy, Debug)]
pub enum Exit {
    Cpuid,
    Rdtsc,
    Rdtscp,
    Rdmsr,
    Wrmsr,
    Io(IoQualification),
    CrAccess(CrAccess),
    MovDr(DrAccess),
    Hlt,
    Invlpg {
        address: u64,
    },
    Rdpmc,
    Vmcall,
    Xsetbv,
    Invd,
    /// An exception or NMI the exception bitmap made exit.
    Exception {
        vector: u8,
        error_code: Option<u32>,
    },
    TripleFault,
    InitSignal,
    EptViolation {
        gpa: u64,
        linear: Option<u64>,
        read: bool,
        write: bool,
        fetch: bool,
    },
    EptMisconfig {
        gpa: u64,
    },
    /// An instruction that raises #UD on a processor without the feature the guest is shown:
    /// the VMX instructions (VMX is hidden from the guest) and GETSEC (SMX is off).
    UndefinedForGuest {
        mnemonic: &'static str,
    },
    /// The monitor trap flag: one guest instruction retired (the debugger's single step).
    MonitorTrap,
    /// The VMX-preemption timer expired (the debugger polls COM2).
    PreemptionTimer,
    /// Any other exit: no handler exists, so the guest is stopped with a full report.
    Unhandled,
}

/// An event to deliver to the guest on the next entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub vector: u8,
    pub error_code: Option<u32>,
}

impl Fault {
    pub const UD: Fault = Fault {
        vector: 6,
        error_code: None,
    };
    pub const GP0: Fault = Fault {
        vector: 13,
        error_code: Some(0),
    };
}

/// Why the guest stopped for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The guest turned the machine off (ACPI S5 or the emulator's shutdown port).
    PowerOff,
    /// The guest did something Vigil cannot continue from; the report has been printed.
    Failed(&'static str),
}

/// What a handler wants done with the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Re-enter at the same instruction (the handler changed state so it runs differently).
    Resume,
    /// The instruction was emulated: skip it.
    Advance,
    /// Deliver a fault at the instruction (RIP does not move).
    Inject(Fault),
    Stop(Stop),
}

/// An exception `vector` that arose while the processor delivered another event: combined with
/// it as the double-fault rules say (`x86_arch::event::nest`, SDM Vol. 3A 7.15) — delivered as
/// `serial` would, turned into #DF, or a shutdown that stops the guest like a triple fault.
fn deliver_nested(vcpu: &mut Vcpu, vector: u8, serial: impl FnOnce(&mut Vcpu) -> Action) -> Action {
    use vmx::vmcs::VmcsAccess;
    use x86_arch::event::Nested;
    let v = vcpu.idt_vectoring();
    let first = v.event(
        vcpu.vmcs.read(vmx::vmcs::Field::IdtVectoringErrorCode) as u32,
        0,
    );
    match x86_arch::event::nest(first.as_ref(), vector) {
        Nested::Serial => serial(vcpu),
        Nested::DoubleFault => Action::Inject(Fault {
            vector: 8,
            error_code: Some(0),
        }),
        Nested::Shutdown => {
            crate::report::exit_report(
                vcpu,
                "an exception while delivering a double fault (shutdown)",
            );
            Action::Stop(Stop::Failed("guest triple fault"))
        }
    }
}

/// Routes one exit to its handler.
pub fn dispatch(vcpu: &mut Vcpu, exit: Exit) -> Action {
    // The debugger's own exits, and the #BP/#DB/EPT violations it caused, come first.
    if let Some(action) = crate::gdb::intercept(vcpu, &exit) {
        return action;
    }
    match exit {
        Exit::Cpuid => cpuid::handle(vcpu),
        Exit::Rdtsc => rdtsc::handle(vcpu, false),
        Exit::Rdtscp => rdtsc::handle(vcpu, true),
        Exit::Rdmsr => msr::handle_read(vcpu),
        Exit::Wrmsr => msr::handle_write(vcpu),
        Exit::Io(q) => io::handle(vcpu, q),
        Exit::CrAccess(q) => cr_access::handle(vcpu, q),
        Exit::Hlt => hlt::handle(vcpu),
        Exit::Invlpg { address } => invlpg::handle(vcpu, address),
        Exit::Rdpmc => rdpmc::handle(vcpu),
        Exit::Vmcall => vmcall::handle(vcpu),
        Exit::Xsetbv => xsetbv::handle(vcpu),
        Exit::Invd => invd::handle(vcpu),
        Exit::Exception { vector, error_code } => exception::handle(vcpu, vector, error_code),
        Exit::TripleFault => triple_fault::handle(vcpu),
        Exit::InitSignal => init_signal::handle(vcpu),
        Exit::EptViolation {
            gpa,
            linear,
            read,
            write,
            fetch,
        } => ept_violation::handle(vcpu, gpa, linear, read, write, fetch),
        Exit::EptMisconfig { gpa } => ept_violation::misconfig(vcpu, gpa),
        Exit::UndefinedForGuest { mnemonic } => unconditional_ud::handle(vcpu, mnemonic),
        Exit::MovDr(q) => mov_dr::handle(vcpu, q),
        // Only the debugger enables these; without it they do not happen.
        Exit::MonitorTrap | Exit::PreemptionTimer => Action::Resume,
        Exit::Unhandled => {
            crate::report::exit_report(vcpu, "no handler for this exit");
            Action::Stop(Stop::Failed("unhandled VM exit"))
        }
    }
}

pub use io::SHUTDOWN_PORT;

/// The exit loop: enter, decode, handle, account, repeat — until a handler stops the guest.
pub fn run(vcpu: &mut Vcpu) -> Stop {
    if vcpu.config.gdb_wait {
        if let Some(stop) = crate::gdb::wait_for_attach(vcpu) {
            return stop;
        }
    }
    let mut last = None;
    loop {
        vcpu.prepare_time(last.as_ref());
        let exit = match vcpu.enter() {
            Ok(exit) => exit,
            Err(failure) => {
                crate::report::entry_failure(vcpu, failure);
                return Stop::Failed("VM entry failed");
            }
        };
        let action = dispatch(vcpu, exit);
        let action = crate::gdb::after(vcpu, action);
        vcpu.apply(action);
        // Host ticks from the exit (read by the exit stub) to just before the next entry.
        let now = crate::arch::regs::rdtsc();
        vcpu.stats
            .record(vcpu.exit_reason, now.wrapping_sub(vcpu.regs.exit_tsc));
        if let Action::Stop(stop) = action {
            return stop;
        }
        last = Some(exit);
    }
}
