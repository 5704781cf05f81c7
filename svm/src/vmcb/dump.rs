//! A readable dump of a VMCB: control area, then the guest's state, one field per line with its
//! offset; segments on one line each. Fields that read zero are left out, except the ones a
//! reader always wants to see.

use super::{seg_fields, Area, Attrib, Field, VmcbAccess};
use core::fmt;

/// Fields shown even when zero.
const ALWAYS: &[Field] = &[
    Field::ExitCode,
    Field::ExitInfo1,
    Field::ExitInfo2,
    Field::ExitIntInfo,
    Field::EventInj,
    Field::GuestAsid,
    Field::Cr0,
    Field::Cr3,
    Field::Cr4,
    Field::Efer,
    Field::Rip,
    Field::Rflags,
    Field::Cpl,
];

fn is_segment_field(f: Field) -> bool {
    (0..8).any(|n| {
        let s = seg_fields(n);
        [s.selector, s.attrib, s.limit, s.base].contains(&f)
    })
}

/// Writes `vmcb` for a human.
pub fn dump(vmcb: &dyn VmcbAccess, out: &mut dyn fmt::Write) -> fmt::Result {
    writeln!(out, "  -- control area")?;
    for &f in Field::ALL.iter().filter(|f| f.area() == Area::Control) {
        let v = vmcb.read(f);
        if v != 0 || ALWAYS.contains(&f) {
            writeln!(out, "  {:#05x} {:<36} {v:#x}", f.offset(), f.name())?;
        }
    }
    writeln!(out, "  -- state save area")?;
    const NAMES: [&str; 8] = ["ES", "CS", "SS", "DS", "FS", "GS", "LDTR", "TR"];
    for (n, name) in NAMES.iter().enumerate() {
        let s = seg_fields(n as u8);
        writeln!(
            out,
            "  {:#05x} {:<4} selector {:#06x} base {:#x} limit {:#x} attrib {}",
            s.selector.offset(),
            name,
            vmcb.read(s.selector),
            vmcb.read(s.base),
            vmcb.read(s.limit),
            Attrib(vmcb.read(s.attrib) as u16)
        )?;
    }
    for &f in Field::ALL
        .iter()
        .filter(|f| f.area() == Area::Save && !is_segment_field(**f))
    {
        let v = vmcb.read(f);
        if v != 0 || ALWAYS.contains(&f) {
            writeln!(out, "  {:#05x} {:<36} {v:#x}", f.offset(), f.name())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Vmcb;
    use super::*;
    use alloc::string::String;

    #[test]
    fn dump_names_fields_and_segments() {
        let mut v = Vmcb::zeroed();
        v.write(Field::ExitCode, 0x72);
        v.write(Field::CsSelector, 0x10);
        v.write(Field::CsAttrib, 0xC9B);
        v.write(Field::TscOffset, 0x1000);
        let mut s = String::new();
        dump(&v, &mut s).unwrap();
        assert!(s.contains("EXITCODE"), "{s}");
        assert!(s.contains("0x72"));
        assert!(s.contains("CS   selector 0x0010"), "{s}");
        assert!(s.contains("TSC_OFFSET"));
        assert!(
            !s.contains("PAUSE filter count"),
            "zero fields are left out"
        );
        assert!(s.contains("CPL"), "CPL is always shown");
    }
}
