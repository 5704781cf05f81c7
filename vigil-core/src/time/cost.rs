//! What each kind of exiting instruction costs on bare metal, for `tsc=hide`: the guest's TSC
//! loses an exit's host time but keeps this much of it, so a guest timing the instruction reads
//! what bare metal would show — never less ("nothing looks faster than bare").
//!
//! The backend measures the table at boot on the host, where none of these instructions exits
//! (VMX: `vigil/src/intel/calibrate.rs`): CPUID leaf by leaf, RDMSR and WRMSR, IN and OUT by
//! width, INS and OUTS by width as a first element plus each further one, XSETBV, WBINVD, an
//! exception's delivery, and one register move for the instructions nothing singles out. On
//! Bochs each of these is one tick (its TSC counts instructions); on hardware they are the
//! instructions' latencies.

use crate::exit::{Action, Exit};
use x86_arch::event::EventKind;

/// What the guest did at an exit, as far as its bare-metal cost goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cost {
    /// Nothing the guest executed: an asynchronous exit (a timer, an event window, INIT or a
    /// start-up IPI), or an instruction that is executed again after the entry (a REP string
    /// instruction's next slice). Bare metal spends nothing on it.
    Nothing,
    Cpuid {
        leaf: u32,
    },
    Rdtsc,
    Rdtscp,
    Rdmsr,
    Wrmsr,
    Xsetbv,
    /// WBINVD, and INVD (which Vigil executes as WBINVD).
    Wbinvd,
    In {
        size: u8,
    },
    Out {
        size: u8,
    },
    /// INS or OUTS that moved `elements` elements in this exit.
    Ins {
        size: u8,
        elements: u32,
    },
    Outs {
        size: u8,
        elements: u32,
    },
    /// An instruction the calibration does not single out (HLT, MOV to or from a control or debug
    /// register, INVLPG, INVPCID, RDPMC, a hypercall): the cost of one register move.
    Simple,
    /// An exception: the instruction that raised it (or whose exit was intercepted) and the
    /// delivery to the guest's handler, which the entry performs inside the hidden time.
    Fault,
}

/// Bare-metal costs in host ticks, measured at boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BareCosts {
    /// CPUID leaves 0-0x1F, one by one.
    pub cpuid_basic: [u32; 32],
    /// CPUID leaves 0x8000_0000-0x8000_001F.
    pub cpuid_extended: [u32; 32],
    /// Every other leaf (the hypervisor range, leaves beyond the maximum).
    pub cpuid_other: u32,
    pub rdtsc: u32,
    pub rdtscp: u32,
    pub rdmsr: u32,
    pub wrmsr: u32,
    pub xsetbv: u32,
    pub wbinvd: u32,
    /// IN and OUT of 1, 2 and 4 bytes.
    pub port_in: [u32; 3],
    pub port_out: [u32; 3],
    /// INS and OUTS of 1, 2 and 4 bytes: (the first element, each further element).
    pub ins: [(u32, u32); 3],
    pub outs: [(u32, u32); 3],
    pub simple: u32,
    pub fault: u32,
}

fn width(size: u8) -> usize {
    match size {
        1 => 0,
        2 => 1,
        _ => 2,
    }
}

impl BareCosts {
    /// Every kind of instruction costing `n` ticks (the tests' machines).
    #[cfg(test)]
    pub fn all(n: u32) -> BareCosts {
        BareCosts {
            cpuid_basic: [n; 32],
            cpuid_extended: [n; 32],
            cpuid_other: n,
            rdtsc: n,
            rdtscp: n,
            rdmsr: n,
            wrmsr: n,
            xsetbv: n,
            wbinvd: n,
            port_in: [n; 3],
            port_out: [n; 3],
            ins: [(n, n); 3],
            outs: [(n, n); 3],
            simple: n,
            fault: n,
        }
    }

    /// What `cost` takes on bare metal, in host ticks.
    pub fn ticks(&self, cost: Cost) -> u64 {
        let string = |(first, each): (u32, u32), elements: u32| match elements {
            0 => 0,
            n => first as u64 + each as u64 * (n as u64 - 1),
        };
        (match cost {
            Cost::Nothing => 0,
            Cost::Cpuid { leaf } => match leaf {
                0..=0x1F => self.cpuid_basic[leaf as usize],
                0x8000_0000..=0x8000_001F => self.cpuid_extended[(leaf & 0x1F) as usize],
                _ => self.cpuid_other,
            },
            Cost::Rdtsc => self.rdtsc,
            Cost::Rdtscp => self.rdtscp,
            Cost::Rdmsr => self.rdmsr,
            Cost::Wrmsr => self.wrmsr,
            Cost::Xsetbv => self.xsetbv,
            Cost::Wbinvd => self.wbinvd,
            Cost::In { size } => self.port_in[width(size)],
            Cost::Out { size } => self.port_out[width(size)],
            Cost::Ins { size, elements } => return string(self.ins[width(size)], elements),
            Cost::Outs { size, elements } => return string(self.outs[width(size)], elements),
            Cost::Simple => self.simple,
            Cost::Fault => self.fault,
        }) as u64
    }
}

/// The bare-metal kind of an exit that its handler answered with `action`. `detail` is what the
/// handler noted for it (`Time::detail`): CPUID's leaf, the elements a string I/O moved.
pub fn cost_of(exit: &Exit, action: &Action, detail: u32) -> Cost {
    match action {
        Action::Stop(_) => Cost::Nothing,
        // An interrupt or NMI that waited for its window: the guest executed nothing for it.
        Action::Inject(e) if matches!(e.kind, EventKind::ExternalInterrupt | EventKind::Nmi) => {
            Cost::Nothing
        }
        // The instruction raised an exception (bare metal raises the same one: an absent MSR, a
        // VMCALL, a fault the exception bitmap caught) or its string I/O faulted part-way.
        Action::Inject(_) => Cost::Fault,
        // A string instruction re-entered for its next slice: the elements of this slice.
        Action::Resume => match exit {
            Exit::Io(io) if io.string => string(io.size, io.input, detail),
            _ => Cost::Nothing,
        },
        Action::Advance => match exit {
            Exit::Cpuid => Cost::Cpuid { leaf: detail },
            Exit::Rdtsc => Cost::Rdtsc,
            Exit::Rdtscp => Cost::Rdtscp,
            Exit::Rdmsr => Cost::Rdmsr,
            Exit::Wrmsr => Cost::Wrmsr,
            Exit::Xsetbv => Cost::Xsetbv,
            Exit::Invd => Cost::Wbinvd,
            Exit::Io(io) if io.string => string(io.size, io.input, detail),
            Exit::Io(io) if io.input => Cost::In { size: io.size },
            Exit::Io(io) => Cost::Out { size: io.size },
            Exit::Hlt
            | Exit::Cr(_)
            | Exit::Dr(_)
            | Exit::Invlpg { .. }
            | Exit::Invpcid { .. }
            | Exit::Rdpmc
            | Exit::Hypercall
            | Exit::NestedFault(_) => Cost::Simple,
            _ => Cost::Nothing,
        },
    }
}

fn string(size: u8, input: bool, elements: u32) -> Cost {
    if input {
        Cost::Ins { size, elements }
    } else {
        Cost::Outs { size, elements }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::IoAccess;
    use crate::vcpu::Seg;
    use x86_arch::event::Event;

    fn table() -> BareCosts {
        let mut c = BareCosts {
            cpuid_other: 70,
            rdmsr: 80,
            port_in: [1000, 1001, 1002],
            port_out: [900, 901, 902],
            ins: [(1100, 10), (1200, 20), (1400, 40)],
            outs: [(1000, 9), (1000, 9), (1000, 9)],
            fault: 150,
            simple: 1,
            ..BareCosts::default()
        };
        c.cpuid_basic[0xB] = 200;
        c.cpuid_extended[1] = 60;
        c
    }

    fn io(size: u8, input: bool, string: bool) -> Exit {
        Exit::Io(IoAccess {
            port: 0x80,
            size,
            input,
            string,
            rep: string,
            addr_size: 8,
            segment: Seg::Ds,
        })
    }

    #[test]
    fn cpuid_costs_go_by_leaf() {
        let t = table();
        let cost = |leaf| t.ticks(cost_of(&Exit::Cpuid, &Action::Advance, leaf));
        assert_eq!(cost(0xB), 200);
        assert_eq!(cost(0x8000_0001), 60);
        assert_eq!(cost(0x4000_0000), 70);
        assert_eq!(cost(0x20), 70);
    }

    #[test]
    fn the_outcome_decides_the_kind() {
        let t = table();
        // An RDMSR that bare metal would fault on costs a fault, not a read.
        assert_eq!(
            t.ticks(cost_of(&Exit::Rdmsr, &Action::Inject(Event::GP0), 0)),
            150
        );
        assert_eq!(t.ticks(cost_of(&Exit::Rdmsr, &Action::Advance, 0)), 80);
        // An interrupt delivered at its window: nothing the guest executed.
        let irq = Event {
            vector: 32,
            kind: EventKind::ExternalInterrupt,
            error_code: None,
            instruction_len: 0,
        };
        assert_eq!(
            cost_of(&Exit::InterruptWindow, &Action::Inject(irq), 0),
            Cost::Nothing
        );
        assert_eq!(cost_of(&Exit::Timer, &Action::Resume, 0), Cost::Nothing);
    }

    #[test]
    fn port_io_by_width_and_strings_by_element() {
        let t = table();
        assert_eq!(
            t.ticks(cost_of(&io(2, true, false), &Action::Advance, 0)),
            1001
        );
        assert_eq!(
            t.ticks(cost_of(&io(4, false, false), &Action::Advance, 0)),
            902
        );
        // REP INSW of 5 elements: the first and four more.
        assert_eq!(
            t.ticks(cost_of(&io(2, true, true), &Action::Advance, 5)),
            1200 + 4 * 20
        );
        // A slice that will be re-entered is costed by what it moved.
        assert_eq!(
            cost_of(&io(1, false, true), &Action::Resume, 4096),
            Cost::Outs {
                size: 1,
                elements: 4096
            }
        );
        assert_eq!(
            t.ticks(Cost::Ins {
                size: 1,
                elements: 0
            }),
            0
        );
    }
}
