//! What the processor does when an exception occurs while it delivers another event: deliver the
//! second one normally, raise a double fault, or shut down (SDM Vol. 3A 7.15, "Interrupt 8 —
//! Double Fault Exception", with its table of exception classes and their combinations).
//!
//! A VMM needs this whenever an exception in the exception bitmap exits with valid IDT-vectoring
//! information (SDM Vol. 3C 28.2.4): the processor stopped before combining the two, so the VMM
//! must, or a guest with a broken IDT loops forever instead of triple-faulting.

use super::{InterruptionInfo, InterruptionType};

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

/// Combines the event being delivered (`first`, IDT-vectoring information) with an exception
/// `second` that occurred during its delivery. Interrupts, NMIs and software exceptions count as
/// benign first events.
pub fn nest(first: InterruptionInfo, second: u8) -> Nested {
    if !first.valid() || first.kind() != InterruptionType::HardwareException {
        return Nested::Serial;
    }
    let second = exception_class(second);
    match (exception_class(first.vector()), second) {
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

    #[test]
    fn combinations_follow_the_double_fault_table() {
        let hw = InterruptionInfo::exception;
        assert_eq!(nest(hw(13), 13), Nested::DoubleFault, "#GP during #GP");
        assert_eq!(nest(hw(13), 14), Nested::Serial, "#PF during #GP");
        assert_eq!(nest(hw(14), 14), Nested::DoubleFault, "#PF during #PF");
        assert_eq!(nest(hw(14), 13), Nested::DoubleFault, "#GP during #PF");
        assert_eq!(nest(hw(14), 6), Nested::Serial, "#UD during #PF");
        assert_eq!(nest(hw(6), 13), Nested::Serial, "#GP during #UD");
        assert_eq!(nest(hw(8), 6), Nested::Shutdown, "anything during #DF");
        assert_eq!(
            nest(InterruptionInfo::external(0x20), 13),
            Nested::Serial,
            "#GP during an interrupt"
        );
        assert_eq!(
            nest(InterruptionInfo::nmi(), 14),
            Nested::Serial,
            "#PF during an NMI"
        );
        assert_eq!(
            nest(InterruptionInfo(0), 13),
            Nested::Serial,
            "no event being delivered"
        );
    }
}
