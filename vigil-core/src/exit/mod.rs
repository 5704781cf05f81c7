//! One handler per exit reason, and what they share: the decoded exit ([`Exit`]), the handler's
//! answer ([`Action`]), the dispatch, and the completion of every exit ([`complete`]).
//!
//! A backend decodes its own exit information (VMX: exit reason, qualification, instruction
//! information; SVM: EXITCODE, EXITINFO1/2) into an `Exit`. [`dispatch`] hands it to its handler,
//! which reads and writes guest state through the [`Vcpu`](crate::vcpu::Vcpu) trait and answers
//! with an `Action`. [`complete::complete`] then carries the action out as the processor would
//! have: skip the instruction (ending an STI/MOV SS shadow and raising the single-step trap the
//! guest's RFLAGS.TF asks for), or deliver an event, and re-queue the event whose delivery the
//! exit interrupted.

pub mod complete;
mod cpuid;
mod cr_access;
mod exception;
mod hlt;
mod hypercall;
mod init;
mod invd;
mod invlpg;
mod invpcid;
pub mod io;
mod io_string;
mod mov_dr;
mod msr;
mod nested_fault;
mod rdpmc;
mod rdtsc;
mod sipi;
mod task_switch;
#[cfg(test)]
mod tests;
mod triple_fault;
mod undefined;
mod window;
mod xsetbv;

pub use hypercall::VERSION as HYPERCALL_VERSION;

use crate::cpu::Cpu;
use crate::nested::Perms;
use crate::vcpu::{Seg, Vcpu};
use x86_arch::event::{Event, Nested};

/// An I/O instruction (IN, OUT, INS, OUTS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoAccess {
    pub port: u16,
    /// 1, 2 or 4 bytes.
    pub size: u8,
    /// IN or INS.
    pub input: bool,
    /// INS or OUTS.
    pub string: bool,
    pub rep: bool,
    /// Address size of a string instruction in bytes: 2, 4 or 8.
    pub addr_size: u8,
    /// The segment of the memory operand: DS or an override for OUTS, always ES for INS.
    pub segment: Seg,
}

/// A control-register access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrAccess {
    pub cr: u8,
    pub op: CrOp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrOp {
    /// MOV to CR from a general-purpose register.
    Write(u8),
    /// MOV from CR to a general-purpose register.
    Read(u8),
    Clts,
    /// LMSW with its 16-bit source operand.
    Lmsw(u16),
}

/// MOV to or from a debug register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrAccess {
    pub dr: u8,
    /// MOV from DR (a read).
    pub read: bool,
    pub gpr: u8,
}

/// An access that the nested page tables refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NestedFault {
    pub gpa: u64,
    /// The guest-linear address, when the processor reports one.
    pub linear: Option<u64>,
    pub read: bool,
    pub write: bool,
    pub fetch: bool,
    /// What the entry allowed (nothing for a page that is not mapped).
    pub allowed: Perms,
}

/// What started a hardware task switch (SDM Vol. 3C 28.2.1, Table 28-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskSwitchSource {
    Call,
    Iret,
    Jmp,
    /// A task gate in the IDT, during event delivery.
    Gate,
}

/// One exit, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Cpuid,
    Rdtsc,
    Rdtscp,
    Rdmsr,
    Wrmsr,
    Rdpmc,
    /// VMCALL (VMMCALL on AMD).
    Hypercall,
    Xsetbv,
    Invd,
    Hlt,
    Io(IoAccess),
    Cr(CrAccess),
    Dr(DrAccess),
    Invlpg {
        linear: u64,
    },
    /// INVPCID: the register holding the type, and the linear address of the 16-byte
    /// descriptor (already computed from the memory operand).
    Invpcid {
        kind_gpr: u8,
        descriptor: u64,
    },
    /// An exception the backend was asked to intercept, before its delivery. `info` is what
    /// delivery would have set: the faulting address (CR2) for #PF, the DR6 bits for #DB.
    Exception {
        event: Event,
        info: u64,
    },
    /// The guest can take a maskable interrupt now.
    InterruptWindow,
    /// The guest can take an NMI now.
    NmiWindow,
    TripleFault,
    /// An INIT signal (blocked in guest operation, so it exits).
    Init,
    /// A start-up IPI to a vCPU waiting for one.
    Sipi {
        vector: u8,
    },
    TaskSwitch {
        selector: u16,
        source: TaskSwitchSource,
    },
    NestedFault(NestedFault),
    /// A nested-paging entry the processor cannot use: a bug in Vigil's tables.
    NestedMisconfig {
        gpa: u64,
    },
    /// An instruction that raises #UD on the processor the guest is shown: the virtualization
    /// instructions (VMX or SVM is hidden from the guest) and GETSEC (SMX is off).
    Undefined {
        mnemonic: &'static str,
    },
    /// The debugger's per-instruction exit (VMX's monitor trap flag).
    Step,
    /// The debugger's periodic exit (VMX's preemption timer), to poll COM2.
    Timer,
    /// Anything else: no handler, so the guest stops with a full report.
    Unhandled {
        reason: &'static str,
    },
}

/// Exits by kind, for statistics: the neutral names a table shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitKind {
    Exception,
    TripleFault,
    Init,
    Sipi,
    InterruptWindow,
    NmiWindow,
    TaskSwitch,
    Cpuid,
    Undefined,
    Hlt,
    Invd,
    Invlpg,
    Invpcid,
    Rdpmc,
    Rdtsc,
    Rdtscp,
    Hypercall,
    Cr,
    Dr,
    Io,
    Rdmsr,
    Wrmsr,
    Xsetbv,
    NestedFault,
    NestedMisconfig,
    Step,
    Timer,
    Unhandled,
}

impl ExitKind {
    pub const COUNT: usize = ExitKind::Unhandled as usize + 1;

    /// The name statistics tables show.
    pub const fn name(self) -> &'static str {
        match self {
            ExitKind::Exception => "exception or NMI",
            ExitKind::TripleFault => "triple fault",
            ExitKind::Init => "INIT signal",
            ExitKind::Sipi => "start-up IPI",
            ExitKind::InterruptWindow => "interrupt window",
            ExitKind::NmiWindow => "NMI window",
            ExitKind::TaskSwitch => "task switch",
            ExitKind::Cpuid => "CPUID",
            ExitKind::Undefined => "undefined instruction",
            ExitKind::Hlt => "HLT",
            ExitKind::Invd => "INVD",
            ExitKind::Invlpg => "INVLPG",
            ExitKind::Invpcid => "INVPCID",
            ExitKind::Rdpmc => "RDPMC",
            ExitKind::Rdtsc => "RDTSC",
            ExitKind::Rdtscp => "RDTSCP",
            ExitKind::Hypercall => "hypercall",
            ExitKind::Cr => "control-register access",
            ExitKind::Dr => "MOV DR",
            ExitKind::Io => "I/O instruction",
            ExitKind::Rdmsr => "RDMSR",
            ExitKind::Wrmsr => "WRMSR",
            ExitKind::Xsetbv => "XSETBV",
            ExitKind::NestedFault => "nested page fault",
            ExitKind::NestedMisconfig => "nested-paging misconfiguration",
            ExitKind::Step => "debugger step",
            ExitKind::Timer => "poll timer",
            ExitKind::Unhandled => "unhandled",
        }
    }

    /// The kind with statistics index `i`.
    pub fn from_index(i: usize) -> Option<ExitKind> {
        ALL_KINDS.get(i).copied()
    }
}

const ALL_KINDS: [ExitKind; ExitKind::COUNT] = [
    ExitKind::Exception,
    ExitKind::TripleFault,
    ExitKind::Init,
    ExitKind::Sipi,
    ExitKind::InterruptWindow,
    ExitKind::NmiWindow,
    ExitKind::TaskSwitch,
    ExitKind::Cpuid,
    ExitKind::Undefined,
    ExitKind::Hlt,
    ExitKind::Invd,
    ExitKind::Invlpg,
    ExitKind::Invpcid,
    ExitKind::Rdpmc,
    ExitKind::Rdtsc,
    ExitKind::Rdtscp,
    ExitKind::Hypercall,
    ExitKind::Cr,
    ExitKind::Dr,
    ExitKind::Io,
    ExitKind::Rdmsr,
    ExitKind::Wrmsr,
    ExitKind::Xsetbv,
    ExitKind::NestedFault,
    ExitKind::NestedMisconfig,
    ExitKind::Step,
    ExitKind::Timer,
    ExitKind::Unhandled,
];

/// The name of statistics index `i` (for the table).
pub fn kind_name(i: u16) -> &'static str {
    ExitKind::from_index(i as usize).map_or("?", ExitKind::name)
}

impl Exit {
    pub const fn kind(&self) -> ExitKind {
        match self {
            Exit::Cpuid => ExitKind::Cpuid,
            Exit::Rdtsc => ExitKind::Rdtsc,
            Exit::Rdtscp => ExitKind::Rdtscp,
            Exit::Rdmsr => ExitKind::Rdmsr,
            Exit::Wrmsr => ExitKind::Wrmsr,
            Exit::Rdpmc => ExitKind::Rdpmc,
            Exit::Hypercall => ExitKind::Hypercall,
            Exit::Xsetbv => ExitKind::Xsetbv,
            Exit::Invd => ExitKind::Invd,
            Exit::Hlt => ExitKind::Hlt,
            Exit::Io(_) => ExitKind::Io,
            Exit::Cr(_) => ExitKind::Cr,
            Exit::Dr(_) => ExitKind::Dr,
            Exit::Invlpg { .. } => ExitKind::Invlpg,
            Exit::Invpcid { .. } => ExitKind::Invpcid,
            Exit::Exception { .. } => ExitKind::Exception,
            Exit::InterruptWindow => ExitKind::InterruptWindow,
            Exit::NmiWindow => ExitKind::NmiWindow,
            Exit::TripleFault => ExitKind::TripleFault,
            Exit::Init => ExitKind::Init,
            Exit::Sipi { .. } => ExitKind::Sipi,
            Exit::TaskSwitch { .. } => ExitKind::TaskSwitch,
            Exit::NestedFault(_) => ExitKind::NestedFault,
            Exit::NestedMisconfig { .. } => ExitKind::NestedMisconfig,
            Exit::Undefined { .. } => ExitKind::Undefined,
            Exit::Step => ExitKind::Step,
            Exit::Timer => ExitKind::Timer,
            Exit::Unhandled { .. } => ExitKind::Unhandled,
        }
    }
}

/// Why the guest stopped for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The guest turned the machine off (ACPI S5 or the emulator's shutdown port), or asked
    /// for a sleep state Vigil cannot resume it from.
    PowerOff,
    /// The guest asked for a reset (the handler logged through what): the run ends; on real
    /// hardware Vigil scrubs its memory and resets the machine.
    Reset,
    /// The guest did something Vigil cannot continue from; the report has been printed.
    Failed(&'static str),
    /// Another vCPU ended the run; this one only stops.
    Elsewhere,
}

/// What a handler wants done with the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Re-enter at the same instruction (the handler changed state so it runs differently).
    Resume,
    /// The instruction was emulated: skip it, as its retirement would.
    Advance,
    /// Deliver an event at the instruction (RIP does not move).
    Inject(Event),
    Stop(Stop),
}

/// Routes one exit to its handler.
#[inline]
pub fn dispatch<V: Vcpu>(cpu: &mut Cpu<V>, exit: &Exit) -> Action {
    match *exit {
        Exit::Cpuid => cpuid::handle(cpu),
        Exit::Rdtsc => rdtsc::handle(cpu, false),
        Exit::Rdtscp => rdtsc::handle(cpu, true),
        Exit::Rdmsr => msr::read(cpu),
        Exit::Wrmsr => msr::write(cpu),
        Exit::Rdpmc => rdpmc::handle(cpu),
        Exit::Hypercall => hypercall::handle(cpu),
        Exit::Xsetbv => xsetbv::handle(cpu),
        Exit::Invd => invd::handle(cpu),
        Exit::Hlt => hlt::handle(cpu),
        Exit::Io(io) => io::handle(cpu, &io),
        Exit::Cr(access) => cr_access::handle(cpu, access),
        Exit::Dr(access) => mov_dr::handle(cpu, access),
        Exit::Invlpg { linear } => invlpg::handle(cpu, linear),
        Exit::Invpcid {
            kind_gpr,
            descriptor,
        } => invpcid::handle(cpu, kind_gpr, descriptor),
        Exit::Exception { event, info } => exception::handle(cpu, &event, info),
        Exit::InterruptWindow => window::handle(cpu, crate::vcpu::Window::Interrupt),
        Exit::NmiWindow => window::handle(cpu, crate::vcpu::Window::Nmi),
        Exit::TripleFault => triple_fault::handle(cpu),
        Exit::Init => init::handle(cpu),
        Exit::Sipi { vector } => sipi::handle(cpu, vector),
        Exit::TaskSwitch { selector, source } => task_switch::handle(cpu, selector, source),
        Exit::NestedFault(f) => nested_fault::handle(cpu, &f),
        Exit::NestedMisconfig { gpa } => nested_fault::misconfig(cpu, gpa),
        Exit::Undefined { mnemonic } => undefined::handle(cpu, mnemonic),
        // Only the debugger asks for these, and it takes them before dispatch; one that arrives
        // after it detached (a timer armed at the last entry) changes nothing.
        Exit::Step | Exit::Timer => Action::Resume,
        Exit::Unhandled { reason } => {
            cpu.vcpu
                .report(&alloc::format!("no handler for this exit ({reason})"));
            Action::Stop(Stop::Failed("unhandled VM exit"))
        }
    }
}

/// Reads guest-linear memory as the guest's own data load would: through its page tables (a
/// failed walk is the #PF it would get, with CR2 set), and only guest RAM (anything else is
/// #GP, as every access outside the guest's memory is).
pub(crate) fn read_linear<V: Vcpu>(vcpu: &mut V, linear: u64, buf: &mut [u8]) -> Result<(), Event> {
    let access = x86_arch::paging::Access {
        user: vcpu.cpl() == 3,
        ..x86_arch::paging::Access::READ
    };
    let mut done = 0;
    while done < buf.len() {
        let at = linear.wrapping_add(done as u64);
        let n = (4096 - (at & 0xFFF) as usize).min(buf.len() - done);
        let gpa = page_walk(vcpu, at, access)?;
        if !vcpu.read_phys(gpa, &mut buf[done..done + n]) {
            return Err(Event::GP0);
        }
        done += n;
    }
    Ok(())
}

/// The guest-physical address of `linear` for `access`, or the fault the guest would get.
pub(crate) fn page_walk<V: Vcpu>(
    vcpu: &mut V,
    linear: u64,
    access: x86_arch::paging::Access,
) -> Result<u64, Event> {
    match vcpu.translate(linear, access) {
        Ok(t) => Ok(t.gpa),
        Err(fault) if fault.is_page_fault() => {
            vcpu.set_cr2(linear);
            Err(Event::page_fault(fault.error_code()))
        }
        Err(_) => Err(Event::GP0),
    }
}

/// An exception `vector` that arose while the processor delivered another event (the one the
/// exit interrupted): combined with it as the double-fault rules say (`x86_arch::event::nest`,
/// SDM Vol. 3A 7.15) — delivered as `serial` would, turned into #DF, or a shutdown that stops the
/// guest like a triple fault. Either way the interrupted event is resolved here: a #DF or a
/// shutdown replaces it; delivered serially, a fault or software event recurs when its
/// instruction runs again, while an external interrupt or NMI is kept for delivery after the
/// exception (`complete`).
pub(crate) fn deliver_nested<V: Vcpu>(
    cpu: &mut Cpu<V>,
    vector: u8,
    serial: impl FnOnce(&mut Cpu<V>) -> Action,
) -> Action {
    let first = cpu.events.interrupted;
    match x86_arch::event::nest(first.as_ref(), vector) {
        Nested::Serial => {
            cpu.events.interrupted = first.filter(complete::is_asynchronous);
            serial(cpu)
        }
        Nested::DoubleFault => {
            cpu.events.interrupted = None;
            Action::Inject(Event::DF)
        }
        Nested::Shutdown => {
            cpu.events.interrupted = None;
            cpu.vcpu
                .report("an exception while delivering a double fault (shutdown)");
            Action::Stop(Stop::Failed("guest triple fault"))
        }
    }
}
