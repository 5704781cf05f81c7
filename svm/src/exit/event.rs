//! EVENTINJ and EXITINTINFO (APM Vol. 2 15.20, 15.7.2): one format for the event a VMRUN
//! injects and the event whose delivery an intercept interrupted.
//!
//! Bits 7:0 vector, 10:8 type (0 external interrupt, 2 NMI, 3 exception, 4 software interrupt
//! INTn), 11 error code valid, 31 valid, 63:32 the error code. There is no instruction-length
//! field: to inject an event that an instruction raises (INTn, INT3, INTO, INT1) the hypervisor
//! points RIP past the instruction first, so that delivery pushes the return address hardware
//! would (KVM's `svm_update_soft_interrupt_rip` does the same).

use core::fmt;
use x86_arch::event::{Event, EventKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventInfo(pub u64);

pub const VALID: u64 = 1 << 31;
pub const ERROR_CODE_VALID: u64 = 1 << 11;

/// The TYPE field.
pub mod kind {
    pub const INTR: u8 = 0;
    pub const NMI: u8 = 2;
    pub const EXCEPTION: u8 = 3;
    pub const SOFTWARE_INTERRUPT: u8 = 4;
}

impl EventInfo {
    pub const NONE: EventInfo = EventInfo(0);

    pub const fn valid(self) -> bool {
        self.0 & VALID != 0
    }
    pub const fn vector(self) -> u8 {
        self.0 as u8
    }
    pub const fn kind(self) -> u8 {
        ((self.0 >> 8) & 7) as u8
    }
    pub const fn error_code(self) -> Option<u32> {
        if self.0 & ERROR_CODE_VALID != 0 {
            Some((self.0 >> 32) as u32)
        } else {
            None
        }
    }

    /// The EVENTINJ value that delivers `event`. INT3 and INTO are injected as exceptions 3
    /// and 4, INT1 as exception 1: the processor then delivers them as the traps they are, to
    /// the RIP the caller has set past the instruction.
    pub const fn inject(event: &Event) -> EventInfo {
        let kind = match event.kind {
            EventKind::ExternalInterrupt => kind::INTR,
            EventKind::Nmi => kind::NMI,
            EventKind::HardwareException
            | EventKind::SoftwareException
            | EventKind::PrivilegedSoftwareException => kind::EXCEPTION,
            EventKind::SoftwareInterrupt => kind::SOFTWARE_INTERRUPT,
        };
        let vector = match event.kind {
            EventKind::Nmi => 2,
            _ => event.vector,
        };
        let code = match event.error_code {
            Some(c) if matches!(event.kind, EventKind::HardwareException) => {
                ((c as u64) << 32) | ERROR_CODE_VALID
            }
            _ => 0,
        };
        EventInfo(VALID | code | ((kind as u64) << 8) | vector as u64)
    }

    /// The event an EXITINTINFO describes; `instruction_len` is the length of the instruction
    /// that raised it, for the kinds an instruction raises. `None` if not valid or of a reserved
    /// type. Exceptions 3 and 4 are the INT3 and INTO instructions (the only way they arise).
    pub const fn event(self, instruction_len: u8) -> Option<Event> {
        if !self.valid() {
            return None;
        }
        let (kind, len) = match self.kind() {
            kind::INTR => (EventKind::ExternalInterrupt, 0),
            kind::NMI => (EventKind::Nmi, 0),
            kind::EXCEPTION if matches!(self.vector(), 3 | 4) => {
                (EventKind::SoftwareException, instruction_len)
            }
            kind::EXCEPTION => (EventKind::HardwareException, 0),
            kind::SOFTWARE_INTERRUPT => (EventKind::SoftwareInterrupt, instruction_len),
            _ => return None,
        };
        Some(Event {
            vector: self.vector(),
            kind,
            error_code: match kind {
                EventKind::HardwareException => self.error_code(),
                _ => None,
            },
            instruction_len: len,
        })
    }

    /// Whether the type is one VMRUN accepts, and an exception's vector one that exists as an
    /// exception (15.20): a reserved type, or type 3 with vector 2 (NMI) or above 31, makes
    /// VMRUN fail.
    pub const fn injectable(self) -> bool {
        match self.kind() {
            kind::INTR | kind::NMI | kind::SOFTWARE_INTERRUPT => true,
            kind::EXCEPTION => self.vector() != 2 && self.vector() < 32,
            _ => false,
        }
    }
}

impl fmt::Display for EventInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.valid() {
            return write!(f, "{:#x} (none)", self.0);
        }
        let kind = match self.kind() {
            kind::INTR => "external interrupt",
            kind::NMI => "NMI",
            kind::EXCEPTION => "exception",
            kind::SOFTWARE_INTERRUPT => "software interrupt",
            _ => "reserved type",
        };
        write!(f, "{:#x} ({kind}, vector {}", self.0, self.vector())?;
        if let Some(c) = self.error_code() {
            write!(f, ", error code {c:#x}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x86_arch::event::{DF, GP, PF};

    #[test]
    fn injection_encodes_type_vector_and_error_code() {
        let gp = EventInfo::inject(&Event::GP0);
        assert_eq!(gp.0, VALID | ERROR_CODE_VALID | (3 << 8) | GP as u64);
        let pf = EventInfo::inject(&Event::page_fault(0x6));
        assert_eq!(pf.error_code(), Some(6));
        assert_eq!(pf.vector(), PF);
        assert_eq!(EventInfo::inject(&Event::nmi()).0, VALID | (2 << 8) | 2);
        assert_eq!(EventInfo::inject(&Event::external(0x30)).0, VALID | 0x30);
        let int80 = Event {
            vector: 0x80,
            kind: EventKind::SoftwareInterrupt,
            error_code: None,
            instruction_len: 2,
        };
        assert_eq!(EventInfo::inject(&int80).0, VALID | (4 << 8) | 0x80);
        let int3 = Event {
            kind: EventKind::SoftwareException,
            instruction_len: 1,
            ..Event::exception(3)
        };
        assert_eq!(EventInfo::inject(&int3).0, VALID | (3 << 8) | 3);
    }

    #[test]
    fn exit_int_info_round_trips_through_event() {
        for e in [
            Event::GP0,
            Event::DF,
            Event::page_fault(0x15),
            Event::nmi(),
            Event::external(0xEF),
            Event::exception(6),
        ] {
            assert_eq!(EventInfo::inject(&e).event(0), Some(e), "{e}");
        }
        let int3 = EventInfo(VALID | (3 << 8) | 3).event(1).unwrap();
        assert_eq!(int3.kind, EventKind::SoftwareException);
        assert_eq!(int3.instruction_len, 1);
        let int_n = EventInfo(VALID | (4 << 8) | 0x21).event(2).unwrap();
        assert_eq!(int_n.kind, EventKind::SoftwareInterrupt);
        assert_eq!(int_n.instruction_len, 2);
        assert_eq!(EventInfo(3 << 8 | DF as u64).event(0), None, "not valid");
        assert_eq!(
            EventInfo(VALID | (1 << 8)).event(0),
            None,
            "reserved type 1"
        );
    }

    #[test]
    fn vmrun_refuses_reserved_types_and_non_exception_vectors() {
        assert!(EventInfo(VALID | (3 << 8) | 13).injectable());
        assert!(
            !EventInfo(VALID | (3 << 8) | 2).injectable(),
            "NMI as exception"
        );
        assert!(!EventInfo(VALID | (3 << 8) | 32).injectable());
        for t in [1u64, 5, 6, 7] {
            assert!(!EventInfo(VALID | (t << 8)).injectable(), "type {t}");
        }
        assert!(EventInfo(VALID | (4 << 8) | 0xFF).injectable());
    }
}
