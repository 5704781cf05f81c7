//! A readable dump of a whole VMCS, for the moment an entry fails or a guest misbehaves.

use super::{vm_instruction_error_name, Field, Kind, VmcsAccess, Width};
use core::fmt::{self, Write};

const GROUPS: [(Kind, &str); 4] = [
    (Kind::Control, "controls"),
    (Kind::Guest, "guest state"),
    (Kind::Host, "host state"),
    (Kind::ReadOnly, "exit information"),
];

/// Writes every field of `vmcs`, grouped as controls, guest state, host state and exit
/// information. Fields the processor does not implement are listed together at the end of their
/// group rather than one line each (a real processor lacks many of the newer ones); any other
/// read failure is shown on the field's own line.
pub fn dump(vmcs: &dyn VmcsAccess, out: &mut dyn Write) -> fmt::Result {
    for (kind, title) in GROUPS {
        writeln!(out, "{title}:")?;
        let mut missing = 0usize;
        for &f in Field::ALL.iter().filter(|f| f.kind() == kind) {
            match vmcs.try_read(f) {
                Ok(v) => {
                    write!(out, "  {:<52} {:04x} = ", f.name(), f.encoding())?;
                    write_value(out, f.width(), v)?;
                    annotate(out, f, v)?;
                    writeln!(out)?;
                }
                Err(e) if e.is_unsupported() => missing += 1,
                Err(e) => writeln!(
                    out,
                    "  {:<52} {:04x} = <unreadable: {e}>",
                    f.name(),
                    f.encoding()
                )?,
            }
        }
        if missing > 0 {
            write!(out, "  not supported by this processor ({missing}):")?;
            let mut first = true;
            for &f in Field::ALL.iter().filter(|f| f.kind() == kind) {
                if vmcs.try_read(f).is_err_and(|e| e.is_unsupported()) {
                    write!(out, "{} {}", if first { "" } else { "," }, f.name())?;
                    first = false;
                }
            }
            writeln!(out)?;
        }
    }
    Ok(())
}

fn write_value(out: &mut dyn Write, width: Width, v: u64) -> fmt::Result {
    match width {
        Width::Bits16 => write!(out, "{v:#06x}"),
        Width::Bits32 => write!(out, "{v:#010x}"),
        Width::Bits64 | Width::Natural => write!(out, "{v:#018x}"),
    }
}

/// Adds the meaning of the few fields whose raw number says little on its own.
fn annotate(out: &mut dyn Write, f: Field, v: u64) -> fmt::Result {
    match f {
        Field::VmInstructionError if v != 0 => {
            write!(out, "  ({})", vm_instruction_error_name(v as u32))
        }
        Field::VmExitReason => write!(out, "  ({})", crate::exit::ExitReasonField(v as u32)),
        Field::VmExitInterruptionInfo
        | Field::IdtVectoringInfo
        | Field::VmEntryInterruptionInfo
            if v & (1 << 31) != 0 =>
        {
            write!(out, "  ({})", crate::exit::InterruptionInfo(v as u32))
        }
        Field::GuestActivityState => write!(out, "  ({})", activity_state_name(v)),
        _ => Ok(()),
    }
}

/// Activity states (SDM Vol. 3C 25.4.2).
pub fn activity_state_name(v: u64) -> &'static str {
    match v {
        0 => "active",
        1 => "HLT",
        2 => "shutdown",
        3 => "wait-for-SIPI",
        _ => "reserved activity state",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmcs::{FakeVmcs, VmcsError};
    use alloc::string::String;

    struct Broken;
    impl VmcsAccess for Broken {
        fn try_read(&self, _: Field) -> Result<u64, VmcsError> {
            Err(VmcsError::NoCurrentVmcs)
        }
        fn try_write(&mut self, _: Field, _: u64) -> Result<(), VmcsError> {
            Err(VmcsError::NoCurrentVmcs)
        }
    }

    #[test]
    fn dump_groups_fields_and_shows_values() {
        let mut v = FakeVmcs::new();
        v.set(Field::GuestRip, 0x10_0000);
        v.set(Field::VmExitReason, 10);
        v.set(Field::GuestActivityState, 1);
        v.mark_unsupported(Field::GuestIa32FredConfig);
        v.mark_unsupported(Field::GuestIa32Pkrs);
        let mut s = String::new();
        dump(&v, &mut s).unwrap();
        let controls = s.find("controls:").unwrap();
        let guest = s.find("guest state:").unwrap();
        let host = s.find("host state:").unwrap();
        let exit = s.find("exit information:").unwrap();
        assert!(controls < guest && guest < host && host < exit);
        let rip = s.lines().find(|l| l.contains("guest RIP")).unwrap();
        assert!(rip.ends_with("0x0000000000100000"), "{rip}");
        assert!(s.contains("CPUID"), "exit reason not decoded:\n{s}");
        assert!(s.contains("(HLT)"));
        assert!(s.contains(
            "not supported by this processor (2): guest IA32_PKRS, guest IA32_FRED_CONFIG"
        ));
        assert!(!s
            .lines()
            .any(|l| l.trim_start().starts_with("guest IA32_PKRS")));
        // Every field appears once, either on its own line or in a "not supported" list.
        for &f in Field::ALL {
            assert!(s.contains(f.name()), "{} missing", f.name());
        }
    }

    #[test]
    fn unreadable_fields_are_marked() {
        let mut s = String::new();
        dump(&Broken, &mut s).unwrap();
        let line = s.lines().find(|l| l.contains("guest CR0")).unwrap();
        assert!(line.contains("<unreadable: no current VMCS"), "{line}");
    }
}
