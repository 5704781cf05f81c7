//! How the guest's registers look to gdb. One stub serves 64-bit and 32-bit guests, so the
//! layout is chosen per session ([`Layout`]): gdb's `i386:x86-64` register set (`g` packets of
//! 0x218 bytes) or its `i386` one (0x134 bytes), both with the SSE feature, exactly as
//! `gdbstub_arch`'s `X86_64_SSE` and `X86_SSE` define them. The target description XML that
//! gdb reads at connection time names the layout; the register packets follow it.

use super::CpuRegs;
use gdbstub::arch::Arch;
use gdbstub_arch::x86::reg::{X86CoreRegs, X86SegmentRegs, X86_64CoreRegs};
use gdbstub_arch::x86::{X86_64_SSE, X86_SSE};

/// The register layout of a debugging session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// gdb's `i386:x86-64`: 64-bit registers (a guest in 32-bit mode shows them zero-extended).
    #[default]
    X86_64,
    /// gdb's `i386`: 32-bit registers, for 32-bit guests.
    I386,
}

impl Layout {
    /// From the guest image's ELF class (EI_CLASS: 1 = 32-bit, 2 = 64-bit), so the registers
    /// match the symbol file gdb loads.
    pub fn from_elf_class(class: u8) -> Layout {
        if class == 1 {
            Layout::I386
        } else {
            Layout::X86_64
        }
    }

    pub fn target_xml(self) -> &'static str {
        let xml = match self {
            Layout::X86_64 => X86_64_SSE::target_description_xml(),
            Layout::I386 => X86_SSE::target_description_xml(),
        };
        xml.unwrap_or("")
    }

    pub fn name(self) -> &'static str {
        match self {
            Layout::X86_64 => "x86-64",
            Layout::I386 => "i386",
        }
    }
}

/// The architecture the stub declares; the layout inside [`GdbRegs`] decides the packets.
pub enum GuestArch {}

impl Arch for GuestArch {
    type Usize = u64;
    type Registers = GdbRegs;
    type RegId = gdbstub_arch::x86::reg::id::X86_64CoreRegId;
    type BreakpointKind = usize;

    fn target_description_xml() -> Option<&'static str> {
        // Supplied per session by the target (TargetDescriptionXmlOverride).
        None
    }
}

/// Register values in one of the two layouts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GdbRegs {
    pub layout: Layout,
    pub long: X86_64CoreRegs,
    pub legacy: X86CoreRegs,
}

const X86_64_LEN: usize = 0x218;

impl GdbRegs {
    pub fn from_cpu(layout: Layout, r: &CpuRegs) -> GdbRegs {
        let segments = X86SegmentRegs {
            cs: r.seg[0] as u32,
            ss: r.seg[1] as u32,
            ds: r.seg[2] as u32,
            es: r.seg[3] as u32,
            fs: r.seg[4] as u32,
            gs: r.seg[5] as u32,
        };
        let mut out = GdbRegs {
            layout,
            ..GdbRegs::default()
        };
        match layout {
            Layout::X86_64 => {
                out.long.regs = r.gpr;
                out.long.rip = r.rip;
                out.long.eflags = r.rflags as u32;
                out.long.segments = segments;
                // MXCSR's power-on value (SDM Vol. 1 10.2.3.1); Vigil does not read x87/SSE state.
                out.long.mxcsr = 0x1F80;
            }
            Layout::I386 => {
                let g = |i: usize| r.gpr[i] as u32;
                let l = &mut out.legacy;
                // gdb's i386 order: EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI.
                (l.eax, l.ecx, l.edx, l.ebx) = (g(0), g(2), g(3), g(1));
                (l.esp, l.ebp, l.esi, l.edi) = (g(7), g(6), g(4), g(5));
                l.eip = r.rip as u32;
                l.eflags = r.rflags as u32;
                l.segments = segments;
                l.mxcsr = 0x1F80;
            }
        }
        out
    }

    /// Applies what gdb wrote to `r`: general-purpose registers, RIP and RFLAGS. Selectors are
    /// not written: a selector alone says nothing about the hidden descriptor VMX keeps.
    pub fn apply_to(&self, r: &mut CpuRegs) {
        match self.layout {
            Layout::X86_64 => {
                r.gpr = self.long.regs;
                r.rip = self.long.rip;
                r.rflags = self.long.eflags as u64;
            }
            Layout::I386 => {
                let l = &self.legacy;
                // A 32-bit write replaces the low half, as a 32-bit MOV in 64-bit mode would not;
                // outside 64-bit mode the upper halves are not visible anyway.
                for (i, v) in [
                    (0, l.eax),
                    (2, l.ecx),
                    (3, l.edx),
                    (1, l.ebx),
                    (7, l.esp),
                    (6, l.ebp),
                    (4, l.esi),
                    (5, l.edi),
                ] {
                    r.gpr[i] = v as u64;
                }
                r.rip = l.eip as u64;
                r.rflags = l.eflags as u64;
            }
        }
    }
}

impl gdbstub::arch::Registers for GdbRegs {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        match self.layout {
            Layout::X86_64 => self.long.rip,
            Layout::I386 => self.legacy.eip as u64,
        }
    }

    fn gdb_serialize(&self, write_byte: impl FnMut(Option<u8>)) {
        match self.layout {
            Layout::X86_64 => self.long.gdb_serialize(write_byte),
            Layout::I386 => self.legacy.gdb_serialize(write_byte),
        }
    }

    /// The packet's length tells the layout: gdb always sends the whole register set it read.
    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        if bytes.len() >= X86_64_LEN {
            self.layout = Layout::X86_64;
            self.long.gdb_deserialize(bytes)
        } else {
            self.layout = Layout::I386;
            self.legacy.gdb_deserialize(bytes)
        }
    }
}
