//! One virtual CPU as the exit layer keeps it: the backend's vCPU ([`Vcpu`]) plus the neutral
//! state Vigil holds about it — its statistics, its time, the events waiting for delivery, where
//! it is in the start-up protocol — and a reference to what every vCPU of the machine shares
//! ([`Vm`]). With several vCPUs, each has its own `Cpu` on its own processor; the `Vm`
//! (configuration, ownership table, the vCPUs' meeting points) is one.

use crate::config::Config;
use crate::exit::Exit;
use crate::owners::Owners;
use crate::smp::startup::Startup;
use crate::smp::Smp;
use crate::stats::ExitStats;
use crate::time::Time;
use crate::vcpu::Vcpu;
use alloc::boxed::Box;
use x86_arch::event::Event;

/// What every vCPU shares: the configuration, the ownership table (fixed after boot but for
/// the decoders Vigil follows), and the platform Vigil owns.
#[derive(Debug)]
pub struct Vm {
    pub config: Config,
    pub owners: Owners,
    /// The vCPUs' meeting points: holds, the end of the run, nested-table changes.
    pub smp: Smp,
    pub platform: crate::platform::Platform,
}

/// Events between exits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    /// The event whose delivery this exit interrupted (VMX IDT-vectoring information, SVM
    /// EXITINTINFO). Unless a handler resolves it, it is delivered again (`exit::complete`).
    pub interrupted: Option<Event>,
    /// An external interrupt that lost its entry to another event: delivered at the guest's
    /// next interrupt window.
    pub pending_interrupt: Option<Event>,
    /// Likewise an NMI, at the next NMI window.
    pub pending_nmi: bool,
}

/// What the backend reports about one exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exited {
    pub exit: Exit,
    /// The event whose delivery the exit interrupted, if any.
    pub interrupted: Option<Event>,
    /// Host TSC read by the world switch right after the exit.
    pub exit_tsc: u64,
    /// Set when the entry hid the previous exit's time (`time::EntryTime::hide`).
    pub hidden: Option<crate::time::HiddenTime>,
}

pub struct Cpu<V: Vcpu> {
    pub vcpu: V,
    pub vm: &'static Vm,
    /// The vCPU's number (0 is the boot CPU).
    pub id: u32,
    pub stats: Box<ExitStats>,
    pub time: Time,
    pub events: Events,
    /// Bytes written so far to the emulator's shutdown port, matched against "Shutdown".
    pub shutdown_progress: usize,
    /// Host TSC at the exit being handled.
    pub exit_tsc: u64,
    /// Where this vCPU is in the start-up protocol (the boot vCPU runs from the start).
    pub startup: Startup,
    /// The generation of the shared nested tables this vCPU's processor has cached.
    pub nested_seen: u64,
}

impl<V: Vcpu> Cpu<V> {
    pub fn new(vcpu: V, vm: &'static Vm, id: u32, time: Time) -> Cpu<V> {
        Cpu {
            vcpu,
            vm,
            id,
            stats: ExitStats::new_boxed(),
            time,
            events: Events::default(),
            shutdown_progress: 0,
            exit_tsc: 0,
            startup: Startup::Running,
            nested_seen: vm.smp.nested_generation(),
        }
    }

    /// Whether this is the boot vCPU (the one the guest starts on).
    pub fn is_bsp(&self) -> bool {
        self.id == 0
    }

    pub fn config(&self) -> &'static Config {
        &self.vm.config
    }

    /// EDX:EAX as one 64-bit value (RDMSR/WRMSR/XSETBV operands).
    pub fn edx_eax(&self) -> u64 {
        (self.vcpu.gpr(2) << 32) | (self.vcpu.gpr(0) & 0xFFFF_FFFF)
    }

    /// Writes EDX:EAX as RDMSR/RDTSC do: each a 32-bit result, zero-extended (SDM Vol. 1
    /// 3.4.1.1).
    pub fn set_edx_eax(&mut self, value: u64) {
        self.vcpu.set_gpr(0, value & 0xFFFF_FFFF);
        self.vcpu.set_gpr(2, value >> 32);
    }
}
