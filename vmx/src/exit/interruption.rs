//! The interruption-information format shared by the VM-entry interruption-information field
//! (SDM Vol. 3C 25.8.3), the VM-exit interruption information and the IDT-vectoring information
//! (SDM Vol. 3C 28.2.2, 28.2.4).

use core::fmt;
use x86_arch::event::{Event, EventKind};

/// Bits 10:8 of interruption information.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InterruptionType {
    ExternalInterrupt = 0,
    Reserved = 1,
    Nmi = 2,
    HardwareException = 3,
    SoftwareInterrupt = 4,
    /// INT1 (ICEBP).
    PrivilegedSoftwareException = 5,
    /// INT3 and INTO.
    SoftwareException = 6,
    /// Only MTF injection (vector 0) uses it on VM entry.
    OtherEvent = 7,
}

impl InterruptionType {
    pub const fn from_bits(b: u32) -> InterruptionType {
        match b & 7 {
            0 => InterruptionType::ExternalInterrupt,
            1 => InterruptionType::Reserved,
            2 => InterruptionType::Nmi,
            3 => InterruptionType::HardwareException,
            4 => InterruptionType::SoftwareInterrupt,
            5 => InterruptionType::PrivilegedSoftwareException,
            6 => InterruptionType::SoftwareException,
            _ => InterruptionType::OtherEvent,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            InterruptionType::ExternalInterrupt => "external interrupt",
            InterruptionType::Reserved => "reserved type",
            InterruptionType::Nmi => "NMI",
            InterruptionType::HardwareException => "hardware exception",
            InterruptionType::SoftwareInterrupt => "software interrupt",
            InterruptionType::PrivilegedSoftwareException => "privileged software exception",
            InterruptionType::SoftwareException => "software exception",
            InterruptionType::OtherEvent => "other event",
        }
    }

    /// Types that VM entry delivers as if by an instruction, so they need the VM-entry
    /// instruction length (SDM Vol. 3C 27.2.1.3).
    pub const fn needs_instruction_length(self) -> bool {
        matches!(
            self,
            InterruptionType::SoftwareInterrupt
                | InterruptionType::PrivilegedSoftwareException
                | InterruptionType::SoftwareException
        )
    }
}

impl InterruptionType {
    /// The interruption type that delivers events of `kind`.
    pub const fn from_kind(kind: EventKind) -> InterruptionType {
        match kind {
            EventKind::ExternalInterrupt => InterruptionType::ExternalInterrupt,
            EventKind::Nmi => InterruptionType::Nmi,
            EventKind::HardwareException => InterruptionType::HardwareException,
            EventKind::SoftwareInterrupt => InterruptionType::SoftwareInterrupt,
            EventKind::PrivilegedSoftwareException => InterruptionType::PrivilegedSoftwareException,
            EventKind::SoftwareException => InterruptionType::SoftwareException,
        }
    }

    /// The kind of event delivered through the IDT; `None` for the reserved type and "other
    /// event" (MTF), which are not.
    pub const fn event_kind(self) -> Option<EventKind> {
        Some(match self {
            InterruptionType::ExternalInterrupt => EventKind::ExternalInterrupt,
            InterruptionType::Nmi => EventKind::Nmi,
            InterruptionType::HardwareException => EventKind::HardwareException,
            InterruptionType::SoftwareInterrupt => EventKind::SoftwareInterrupt,
            InterruptionType::PrivilegedSoftwareException => EventKind::PrivilegedSoftwareException,
            InterruptionType::SoftwareException => EventKind::SoftwareException,
            InterruptionType::Reserved | InterruptionType::OtherEvent => return None,
        })
    }
}

/// Interruption information, either decoded from the VMCS or built for injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InterruptionInfo(pub u32);

impl InterruptionInfo {
    pub const VALID: u32 = 1 << 31;
    pub const ERROR_CODE: u32 = 1 << 11;
    pub const NMI_UNBLOCKING: u32 = 1 << 12;

    /// A valid event of `kind` with `vector`, no error code.
    pub const fn new(vector: u8, kind: InterruptionType) -> InterruptionInfo {
        InterruptionInfo(Self::VALID | ((kind as u32) << 8) | vector as u32)
    }

    /// A hardware exception, with the error-code bit set for the vectors that push one
    /// (#DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP: SDM Vol. 3A 6.15), which is also what VM entry
    /// requires in protected mode (SDM Vol. 3C 27.2.1.3).
    pub const fn exception(vector: u8) -> InterruptionInfo {
        let info = Self::new(vector, InterruptionType::HardwareException);
        if exception_has_error_code(vector) {
            info.with_error_code()
        } else {
            info
        }
    }

    /// An external interrupt with `vector`.
    pub const fn external(vector: u8) -> InterruptionInfo {
        Self::new(vector, InterruptionType::ExternalInterrupt)
    }

    /// An NMI (vector 2).
    pub const fn nmi() -> InterruptionInfo {
        Self::new(2, InterruptionType::Nmi)
    }

    pub const fn with_error_code(self) -> InterruptionInfo {
        InterruptionInfo(self.0 | Self::ERROR_CODE)
    }

    pub const fn vector(self) -> u8 {
        self.0 as u8
    }
    pub const fn kind(self) -> InterruptionType {
        InterruptionType::from_bits(self.0 >> 8)
    }
    pub const fn has_error_code(self) -> bool {
        self.0 & Self::ERROR_CODE != 0
    }
    /// Bit 12 on exit: the event happened while an IRET was unblocking NMIs; the hypervisor must
    /// set "blocking by NMI" again before resuming (SDM Vol. 3C 28.2.3).
    pub const fn nmi_unblocking(self) -> bool {
        self.0 & Self::NMI_UNBLOCKING != 0
    }
    pub const fn valid(self) -> bool {
        self.0 & Self::VALID != 0
    }
    /// Bits 30:12 must be 0 for VM-entry injection (SDM Vol. 3C 27.2.1.3).
    pub const fn reserved_bits(self) -> u32 {
        self.0 & 0x7fff_f000
    }

    /// Turns event information saved on exit (IDT-vectoring information) into the value that
    /// re-injects it on the next entry: same vector, type and error-code bit, valid, and with
    /// the exit-only bit 12 cleared (SDM Vol. 3C 28.2.4, 27.6.1).
    pub const fn for_reinjection(self) -> InterruptionInfo {
        InterruptionInfo(self.0 & (Self::VALID | Self::ERROR_CODE | 0x7ff))
    }
}

impl InterruptionInfo {
    /// The VM-entry interruption information that injects `event` (SDM Vol. 3C 25.8.3); its
    /// error code and instruction length go to their own fields.
    pub const fn from_event(event: &Event) -> InterruptionInfo {
        let info = Self::new(event.vector, InterruptionType::from_kind(event.kind));
        if event.error_code.is_some() {
            info.with_error_code()
        } else {
            info
        }
    }

    /// The event a valid exit or IDT-vectoring information describes, with the error code and
    /// instruction length read from their fields (used only if the information says so).
    pub fn event(self, error_code: u32, instruction_len: u64) -> Option<Event> {
        if !self.valid() {
            return None;
        }
        let kind = self.kind().event_kind()?;
        Some(Event {
            vector: self.vector(),
            kind,
            error_code: self.has_error_code().then_some(error_code),
            instruction_len: if kind.from_instruction() {
                instruction_len as u8
            } else {
                0
            },
        })
    }
}

pub use x86_arch::event::{exception_has_error_code, exception_name};

impl fmt::Display for InterruptionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.valid() {
            return f.write_str("none");
        }
        let kind = self.kind();
        match kind {
            InterruptionType::HardwareException
            | InterruptionType::SoftwareException
            | InterruptionType::PrivilegedSoftwareException => write!(
                f,
                "{} {} (vector {})",
                kind.name(),
                exception_name(self.vector()),
                self.vector()
            )?,
            InterruptionType::Nmi => f.write_str("NMI")?,
            _ => write!(f, "{} vector {:#04x}", kind.name(), self.vector())?,
        }
        if self.has_error_code() {
            f.write_str(", error code valid")?;
        }
        if self.nmi_unblocking() {
            f.write_str(", NMI unblocking due to IRET")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn building_for_injection() {
        assert_eq!(InterruptionInfo::exception(13).0, 0x8000_0b0d);
        assert_eq!(InterruptionInfo::exception(6).0, 0x8000_0306);
        assert_eq!(InterruptionInfo::external(0x20).0, 0x8000_0020);
        assert_eq!(InterruptionInfo::nmi().0, 0x8000_0202);
        assert_eq!(
            InterruptionInfo::new(3, InterruptionType::SoftwareException).0,
            0x8000_0603
        );
        assert!(InterruptionType::SoftwareException.needs_instruction_length());
        assert!(!InterruptionType::HardwareException.needs_instruction_length());
    }

    #[test]
    fn decoding_exit_information() {
        let i = InterruptionInfo(0x8000_1b0e);
        assert!(i.valid() && i.has_error_code() && i.nmi_unblocking());
        assert_eq!(i.kind(), InterruptionType::HardwareException);
        assert_eq!(i.vector(), 14);
        assert_eq!(
            format!("{i}"),
            "hardware exception #PF (vector 14), error code valid, NMI unblocking due to IRET"
        );
        assert_eq!(i.for_reinjection().0, 0x8000_0b0e);
        assert_eq!(
            format!("{}", InterruptionInfo(0x8000_0030)),
            "external interrupt vector 0x30"
        );
        assert_eq!(format!("{}", InterruptionInfo(0x30)), "none");
        assert_eq!(
            InterruptionInfo(0x8000_1000 | 0x4000_0000).reserved_bits(),
            0x4000_1000
        );
    }

    #[test]
    fn events_round_trip() {
        let pf = Event::page_fault(2);
        let info = InterruptionInfo::from_event(&pf);
        assert_eq!(info.0, 0x8000_0b0e);
        assert_eq!(info.event(2, 0), Some(pf));
        let int3 = InterruptionInfo(0x8000_0603).event(0, 1).unwrap();
        assert_eq!(
            (int3.kind, int3.instruction_len, int3.error_code),
            (EventKind::SoftwareException, 1, None)
        );
        assert_eq!(
            InterruptionInfo(0x8000_0020).event(0, 3),
            Some(Event::external(0x20))
        );
        assert_eq!(InterruptionInfo(0x20).event(0, 0), None);
        assert_eq!(
            InterruptionInfo(0x8000_0700).event(0, 0),
            None,
            "MTF is not an IDT event"
        );
    }
}
