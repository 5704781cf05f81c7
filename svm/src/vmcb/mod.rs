//! The virtual machine control block (APM Vol. 2 15.5.1, Appendix B): one 4-KiB page holding
//! the intercepts and controls (offset 0), and the guest's state (offset 400h). Unlike a VMCS it
//! is ordinary memory in a documented layout, read and written with loads and stores; VMRUN
//! reads it and #VMEXIT writes it back.

mod dump;
mod fields;

pub use dump::dump;
pub use fields::{seg_fields, Area, Field, SegFields};

use core::fmt;

/// Reads and writes VMCB fields by name.
pub trait VmcbAccess {
    /// The field's value, zero-extended.
    fn read(&self, field: Field) -> u64;
    /// Writes the low `field.width()` bytes of `value`.
    fn write(&mut self, field: Field, value: u64);
}

/// A VMCB in memory: a 4-KiB aligned page (VMRUN requires the alignment, 15.5.1).
#[repr(C, align(4096))]
#[derive(Clone)]
pub struct Vmcb(pub [u8; 4096]);

impl Vmcb {
    pub const fn zeroed() -> Vmcb {
        Vmcb([0; 4096])
    }
}

impl Default for Vmcb {
    fn default() -> Self {
        Vmcb::zeroed()
    }
}

impl fmt::Debug for Vmcb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        dump(self, f)
    }
}

fn read_le(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | b as u64)
}

impl VmcbAccess for Vmcb {
    fn read(&self, field: Field) -> u64 {
        let o = field.offset();
        read_le(&self.0[o..o + field.width()])
    }

    fn write(&mut self, field: Field, value: u64) {
        let o = field.offset();
        let w = field.width();
        self.0[o..o + w].copy_from_slice(&value.to_le_bytes()[..w]);
    }
}

/// The live VMCB of a vCPU, at a virtual address equal to its physical one. The processor
/// writes it on every #VMEXIT, behind the compiler's back, so every access is volatile.
#[derive(Debug)]
pub struct VmcbPtr(*mut u8);

// SAFETY: the VMCB belongs to one vCPU, which one CPU runs at a time.
unsafe impl Send for VmcbPtr {}

impl VmcbPtr {
    /// # Safety
    /// `page` must be a 4-KiB aligned, mapped, writable page that only this value accesses
    /// (besides the processor during VMRUN), for as long as the value lives.
    pub const unsafe fn new(page: *mut u8) -> VmcbPtr {
        VmcbPtr(page)
    }

    /// The page's address (virtual = physical where Vigil uses it).
    pub fn address(&self) -> u64 {
        self.0 as u64
    }
}

impl VmcbAccess for VmcbPtr {
    #[inline(always)]
    fn read(&self, field: Field) -> u64 {
        // SAFETY: `new`'s contract: the page is mapped and ours; offsets and widths come from
        // the catalogue and stay inside it, naturally aligned except CPL (one byte).
        unsafe {
            let p = self.0.add(field.offset());
            match field.width() {
                1 => p.read_volatile() as u64,
                2 => (p as *const u16).read_volatile() as u64,
                4 => (p as *const u32).read_volatile() as u64,
                _ => (p as *const u64).read_volatile(),
            }
        }
    }

    #[inline(always)]
    fn write(&mut self, field: Field, value: u64) {
        // SAFETY: as in `read`.
        unsafe {
            let p = self.0.add(field.offset());
            match field.width() {
                1 => p.write_volatile(value as u8),
                2 => (p as *mut u16).write_volatile(value as u16),
                4 => (p as *mut u32).write_volatile(value as u32),
                _ => (p as *mut u64).write_volatile(value),
            }
        }
    }
}

/// A segment's attributes in the VMCB's 12-bit format (APM Vol. 2 Table B-2, "attrib"):
/// bits 7:0 are the descriptor's access byte (type, S, DPL, P) and bits 11:8 its flags nibble
/// (AVL, L, D/B, G) — the descriptor's bits 47:40 and 55:52 packed together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attrib(pub u16);

impl Attrib {
    /// From the parts of a descriptor.
    #[allow(clippy::too_many_arguments)]
    pub const fn new(
        typ: u8,
        s: bool,
        dpl: u8,
        present: bool,
        avl: bool,
        long: bool,
        db: bool,
        g: bool,
    ) -> Attrib {
        Attrib(
            (typ as u16 & 0xF)
                | (s as u16) << 4
                | (dpl as u16 & 3) << 5
                | (present as u16) << 7
                | (avl as u16) << 8
                | (long as u16) << 9
                | (db as u16) << 10
                | (g as u16) << 11,
        )
    }

    /// From the 16-bit access-rights word a VMCS uses (bits 7:0 access byte, 15:12 flags).
    pub const fn from_vmx_access_rights(ar: u32) -> Attrib {
        Attrib(((ar & 0xFF) | ((ar >> 4) & 0xF00)) as u16)
    }

    pub const fn typ(self) -> u8 {
        (self.0 & 0xF) as u8
    }
    /// S: a code or data segment (not a system segment).
    pub const fn s(self) -> bool {
        self.0 & (1 << 4) != 0
    }
    pub const fn dpl(self) -> u8 {
        ((self.0 >> 5) & 3) as u8
    }
    pub const fn present(self) -> bool {
        self.0 & (1 << 7) != 0
    }
    pub const fn avl(self) -> bool {
        self.0 & (1 << 8) != 0
    }
    /// L: 64-bit code.
    pub const fn long(self) -> bool {
        self.0 & (1 << 9) != 0
    }
    /// D/B: 32-bit default operand size.
    pub const fn db(self) -> bool {
        self.0 & (1 << 10) != 0
    }
    pub const fn g(self) -> bool {
        self.0 & (1 << 11) != 0
    }
}

impl fmt::Display for Attrib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#05x} (type {:#x}{}, dpl {}{}{}{}{})",
            self.0,
            self.typ(),
            if self.s() { " s" } else { "" },
            self.dpl(),
            if self.present() { " p" } else { " not-present" },
            if self.long() { " l" } else { "" },
            if self.db() { " d" } else { "" },
            if self.g() { " g" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_those_of_the_manual() {
        // A few anchors of Tables B-1 and B-2; the rest follow from them in the catalogue.
        assert_eq!(Field::IopmBase.offset(), 0x40);
        assert_eq!(Field::GuestAsid.offset(), 0x58);
        assert_eq!(Field::ExitCode.offset(), 0x70);
        assert_eq!(Field::EventInj.offset(), 0xA8);
        assert_eq!(Field::NestedCr3.offset(), 0xB0);
        assert_eq!(Field::NextRip.offset(), 0xC8);
        assert_eq!(Field::CsAttrib.offset(), 0x412);
        assert_eq!(Field::Cpl.offset(), 0x4CB);
        assert_eq!(Field::Efer.offset(), 0x4D0);
        assert_eq!(Field::Rip.offset(), 0x578);
        assert_eq!(Field::Rax.offset(), 0x5F8);
        assert_eq!(Field::GPat.offset(), 0x668);
    }

    #[test]
    fn fields_are_sorted_aligned_disjoint_and_in_their_area() {
        let all = Field::ALL;
        for w in all.windows(2) {
            assert!(
                w[0].offset() + w[0].width() <= w[1].offset(),
                "{:?} overlaps {:?}",
                w[0],
                w[1]
            );
        }
        for &f in all {
            assert!(matches!(f.width(), 1 | 2 | 4 | 8));
            assert!(f.width() == 1 || f.offset() % f.width() == 0, "{f:?}");
            let save = f.offset() >= 0x400;
            assert_eq!(f.area() == Area::Save, save, "{f:?}");
            assert!(f.offset() + f.width() <= 4096);
            assert!(!f.name().is_empty());
        }
    }

    #[test]
    fn access_is_little_endian_and_width_limited() {
        let mut v = Vmcb::zeroed();
        v.write(Field::CsSelector, 0x1234_5678);
        assert_eq!(v.read(Field::CsSelector), 0x5678);
        assert_eq!(v.0[0x410..0x412], [0x78, 0x56]);
        assert_eq!(v.read(Field::CsAttrib), 0, "the neighbour is untouched");
        v.write(Field::Cpl, 3);
        assert_eq!(v.read(Field::Cpl), 3);
        v.write(Field::Rax, u64::MAX);
        assert_eq!(v.read(Field::Rax), u64::MAX);
        let mut page = Vmcb::zeroed();
        // SAFETY: the page lives on this stack frame for the pointer's lifetime.
        let mut p = unsafe { VmcbPtr::new(page.0.as_mut_ptr()) };
        p.write(Field::TscOffset, 0xDEAD_BEEF_0000_0001);
        p.write(Field::Cpl, 0x1FF);
        assert_eq!(p.read(Field::TscOffset), 0xDEAD_BEEF_0000_0001);
        assert_eq!(p.read(Field::Cpl), 0xFF);
        assert_eq!(page.0[0x4CB], 0xFF);
    }

    #[test]
    fn attributes_pack_the_access_byte_and_flags() {
        // A flat 32-bit code segment: access byte 9Bh, flags C (G, D).
        let a = Attrib::new(0xB, true, 0, true, false, false, true, true);
        assert_eq!(a.0, 0xC9B);
        assert_eq!(Attrib::from_vmx_access_rights(0xC09B), a);
        let long = Attrib::new(0xB, true, 3, true, false, true, false, true);
        assert!(long.long() && !long.db() && long.dpl() == 3 && long.present());
        assert_eq!(long.typ(), 0xB);
    }
}
