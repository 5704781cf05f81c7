//! Events as the processor delivers them through the IDT — interrupts, NMIs, exceptions — and
//! what happens when an exception occurs while the processor delivers another event: deliver the
//! second one normally, raise a double fault, or shut down (SDM Vol. 3A 7.15, "Interrupt 8 —
//! Double Fault Exception", with its table of exception classes and their combinations; APM
//! Vol. 2 8.2.9).
//!
//! A hypervisor needs the rules whenever an intercepted exception arrives while another event was
//! being delivered (VMX IDT-vectoring information, SDM Vol. 3C 28.2.4; SVM EXITINTINFO, APM
//! Vol. 2 15.7.2): the processor stopped before combining the two, so the hypervisor must, or a
//! guest with a broken IDT loops forever instead of triple-faulting. Both backends describe
//! events with [`Event`], so the rules exist once.

use core::fmt;

/// How an event is delivered. Intel's VM-entry interruption types (SDM Vol. 3C 25.8.3) and AMD's
/// EVENTINJ types (APM Vol. 2 15.20) both map onto it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    ExternalInterrupt,
    Nmi,
    /// A fault, trap or abort the processor raised itself.
    HardwareException,
    /// INT n.
    SoftwareInterrupt,
    /// INT1 (ICEBP).
    PrivilegedSoftwareException,
    /// INT3 and INTO.
    SoftwareException,
}

impl EventKind {
    /// Kinds delivered as if by an instruction: delivery pushes the address after it, so
    /// re-delivering one needs the instruction's length (SDM Vol. 3C 27.6.1.1).
    pub const fn from_instruction(self) -> bool {
        matches!(
            self,
            EventKind::SoftwareInterrupt
                | EventKind::PrivilegedSoftwareException
                | EventKind::SoftwareException
        )
    }

    pub const fn name(self) -> &'static str {
        match self {
            EventKind::ExternalInterrupt => "external interrupt",
            EventKind::Nmi => "NMI",
            EventKind::HardwareException => "hardware exception",
            EventKind::SoftwareInterrupt => "software interrupt",
            EventKind::PrivilegedSoftwareException => "privileged software exception",
            EventKind::SoftwareException => "software exception",
        }
    }
}

/// One event to deliver, or one whose delivery was interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    pub vector: u8,
    pub kind: EventKind,
    /// Pushed on the handler's stack (only hardware exceptions have one).
    pub error_code: Option<u32>,
    /// The length of the instruction that raised a software interrupt or exception (0 for
    /// other kinds).
    pub instruction_len: u8,
}

pub const DE: u8 = 0;
pub const DB: u8 = 1;
pub const NMI: u8 = 2;
pub const BP: u8 = 3;
pub const UD: u8 = 6;
pub const DF: u8 = 8;
pub const GP: u8 = 13;
pub const PF: u8 = 14;

impl Event {
    /// A hardware exception without an error code.
    pub const fn exception(vector: u8) -> Event {
        Event {
            vector,
            kind: EventKind::HardwareException,
            error_code: None,
            instruction_len: 0,
        }
    }

    /// A hardware exception that pushes `code`.
    pub const fn fault(vector: u8, code: u32) -> Event {
        Event {
            vector,
            kind: EventKind::HardwareException,
            error_code: Some(code),
            instruction_len: 0,
        }
    }

    pub const UD: Event = Event::exception(UD);
    pub const GP0: Event = Event::fault(GP, 0);
    /// #DF always pushes 0 (SDM Vol. 3A 7.15, interrupt 8).
    pub const DF: Event = Event::fault(DF, 0);
    /// A debug exception; what caused it is in DR6.
    pub const DB: Event = Event::exception(DB);

    pub const fn external(vector: u8) -> Event {
        Event {
            vector,
            kind: EventKind::ExternalInterrupt,
            error_code: None,
            instruction_len: 0,
        }
    }

    pub const fn nmi() -> Event {
        Event {
            vector: NMI,
            kind: EventKind::Nmi,
            error_code: None,
            instruction_len: 0,
        }
    }

    /// A page fault: the error code of SDM Vol. 3A 4.7 (CR2 is set separately).
    pub const fn page_fault(code: u32) -> Event {
        Event::fault(PF, code)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            EventKind::HardwareException
            | EventKind::SoftwareException
            | EventKind::PrivilegedSoftwareException => write!(
                f,
                "{} {} (vector {})",
                self.kind.name(),
                exception_name(self.vector),
                self.vector
            )?,
            EventKind::Nmi => f.write_str("NMI")?,
            _ => write!(f, "{} vector {:#04x}", self.kind.name(), self.vector)?,
        }
        if let Some(code) = self.error_code {
            write!(f, ", error code {code:#x}")?;
        }
        Ok(())
    }
}

/// Exceptions that push an error code (SDM Vol. 3A 6.15).
pub const fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21)
}

/// Whether a hardware exception is a fault — reported at the instruction that caused it, which
/// runs again after the handler — rather than a trap (#DB as a trap, #BP, #OF) or an abort (#DF,
/// #MC). Delivery of a fault pushes RFLAGS with RF set, so the restarted instruction does not
/// hit its own instruction breakpoint again (SDM Vol. 3A 6.5, Table 6-1; Vol. 3B 18.3.1.1).
pub const fn exception_is_fault(vector: u8) -> bool {
    !matches!(vector, 1 | 2 | 3 | 4 | 8 | 18)
}

/// The mnemonic of an exception vector (SDM Vol. 3A Table 6-1).
pub const fn exception_name(vector: u8) -> &'static str {
    match vector {
        0 => "#DE",
        1 => "#DB",
        2 => "NMI",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        9 => "coprocessor segment overrun",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        18 => "#MC",
        19 => "#XM",
        20 => "#VE",
        21 => "#CP",
        _ => "reserved exception",
    }
}

/// The classes of SDM Vol. 3A 7.15.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionClass {
    Benign,
    Contributory,
    PageFault,
    DoubleFault,
}

/// The class of a hardware exception vector: #DE, #TS, #NP, #SS, #GP and #CP are contributory,
/// #PF (and #VE, delivered like it) the page-fault class, #DF its own; the rest benign.
pub const fn exception_class(vector: u8) -> ExceptionClass {
    match vector {
        0 | 10 | 11 | 12 | 13 | 21 => ExceptionClass::Contributory,
        14 | 20 => ExceptionClass::PageFault,
        8 => ExceptionClass::DoubleFault,
        _ => ExceptionClass::Benign,
    }
}

/// How the second exception is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nested {
    /// Deliver the second exception as if the first event had not been there.
    Serial,
    /// Deliver #DF (error code 0) instead.
    DoubleFault,
    /// The processor shuts down (a triple fault).
    Shutdown,
}

/// Combines the event being delivered (`first`, if any) with an exception `second` that
/// occurred during its delivery. Interrupts, NMIs and software exceptions count as benign first
/// events.
pub fn nest(first: Option<&Event>, second: u8) -> Nested {
    let Some(first) = first.filter(|e| e.kind == EventKind::HardwareException) else {
        return Nested::Serial;
    };
    let second = exception_class(second);
    match (exception_class(first.vector), second) {
        (ExceptionClass::DoubleFault, _) => Nested::Shutdown,
        (ExceptionClass::Contributory, ExceptionClass::Contributory) => Nested::DoubleFault,
        (ExceptionClass::PageFault, ExceptionClass::Contributory | ExceptionClass::PageFault) => {
            Nested::DoubleFault
        }
        _ => Nested::Serial,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn combinations_follow_the_double_fault_table() {
        let hw = |v| Some(Event::exception(v));
        assert_eq!(
            nest(hw(13).as_ref(), 13),
            Nested::DoubleFault,
            "#GP during #GP"
        );
        assert_eq!(nest(hw(13).as_ref(), 14), Nested::Serial, "#PF during #GP");
        assert_eq!(
            nest(hw(14).as_ref(), 14),
            Nested::DoubleFault,
            "#PF during #PF"
        );
        assert_eq!(
            nest(hw(14).as_ref(), 13),
            Nested::DoubleFault,
            "#GP during #PF"
        );
        assert_eq!(nest(hw(14).as_ref(), 6), Nested::Serial, "#UD during #PF");
        assert_eq!(nest(hw(6).as_ref(), 13), Nested::Serial, "#GP during #UD");
        assert_eq!(
            nest(hw(8).as_ref(), 6),
            Nested::Shutdown,
            "anything during #DF"
        );
        assert_eq!(
            nest(Some(&Event::external(0x20)), 13),
            Nested::Serial,
            "#GP during an interrupt"
        );
        assert_eq!(
            nest(Some(&Event::nmi()), 14),
            Nested::Serial,
            "#PF during an NMI"
        );
        let int3 = Event {
            kind: EventKind::SoftwareException,
            instruction_len: 1,
            ..Event::exception(3)
        };
        assert_eq!(nest(Some(&int3), 13), Nested::Serial, "#GP during INT3");
        assert_eq!(nest(None, 13), Nested::Serial, "no event being delivered");
    }

    #[test]
    fn error_codes_and_names() {
        for v in [8, 10, 11, 12, 13, 14, 17, 21] {
            assert!(exception_has_error_code(v), "{v}");
        }
        for v in [0, 1, 3, 6, 7, 16, 18, 19] {
            assert!(!exception_has_error_code(v), "{v}");
        }
        assert_eq!(
            format!("{}", Event::GP0),
            "hardware exception #GP (vector 13), error code 0x0"
        );
        assert_eq!(
            format!("{}", Event::external(0x30)),
            "external interrupt vector 0x30"
        );
        assert!(exception_is_fault(13) && exception_is_fault(14) && exception_is_fault(6));
        assert!(!exception_is_fault(1) && !exception_is_fault(3) && !exception_is_fault(8));
        assert!(EventKind::SoftwareInterrupt.from_instruction());
        assert!(!EventKind::Nmi.from_instruction());
    }
}
