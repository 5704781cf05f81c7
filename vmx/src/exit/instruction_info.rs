//! VM-exit instruction information (SDM Vol. 3C 28.2.5): the operands of the instruction that
//! exited, laid out differently for each instruction family.

use super::{ExitReason, Gpr};
use core::fmt;

/// A segment register as instruction information numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegReg {
    Es,
    Cs,
    Ss,
    Ds,
    Fs,
    Gs,
    /// Values 6 and 7 are undefined.
    Invalid(u8),
}

impl SegReg {
    pub const fn from_bits(b: u32) -> SegReg {
        match b & 7 {
            0 => SegReg::Es,
            1 => SegReg::Cs,
            2 => SegReg::Ss,
            3 => SegReg::Ds,
            4 => SegReg::Fs,
            5 => SegReg::Gs,
            n => SegReg::Invalid(n as u8),
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            SegReg::Es => "es",
            SegReg::Cs => "cs",
            SegReg::Ss => "ss",
            SegReg::Ds => "ds",
            SegReg::Fs => "fs",
            SegReg::Gs => "gs",
            SegReg::Invalid(_) => "?s",
        }
    }
}

/// A memory operand: segment:[base + index * scale + displacement]. The displacement is not in
/// the instruction information but in the exit qualification (SDM Vol. 3C 28.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemOperand {
    /// Address size in bits: 16, 32 or 64.
    pub address_size: u8,
    pub segment: SegReg,
    pub base: Option<Gpr>,
    pub index: Option<Gpr>,
    /// 1, 2, 4 or 8.
    pub scale: u8,
}

impl MemOperand {
    /// The fields at their common positions (Tables 28-9 to 28-14): scaling 1:0, address size
    /// 9:7, segment 17:15, index 21:18 with invalid bit 22, base 26:23 with invalid bit 27.
    const fn decode(info: u32) -> MemOperand {
        MemOperand {
            address_size: address_size(info),
            segment: SegReg::from_bits(info >> 15),
            base: if info & (1 << 27) == 0 {
                Some(Gpr::from_index(info >> 23))
            } else {
                None
            },
            index: if info & (1 << 22) == 0 {
                Some(Gpr::from_index(info >> 18))
            } else {
                None
            },
            scale: 1 << (info & 3),
        }
    }
}

const fn address_size(info: u32) -> u8 {
    match (info >> 7) & 7 {
        0 => 16,
        1 => 32,
        _ => 64,
    }
}

impl fmt::Display for MemOperand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:[", self.segment.name())?;
        match (self.base, self.index) {
            (Some(b), Some(i)) => write!(f, "{b}+{i}*{}", self.scale)?,
            (Some(b), None) => write!(f, "{b}")?,
            (None, Some(i)) => write!(f, "{i}*{}", self.scale)?,
            (None, None) => {}
        }
        write!(f, "+disp] (a{})", self.address_size)
    }
}

/// A register or memory operand (bit 10 chooses, where the instruction allows both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    Register(Gpr),
    Memory(MemOperand),
}

impl Operand {
    const fn decode(info: u32) -> Operand {
        if info & (1 << 10) != 0 {
            Operand::Register(Gpr::from_index(info >> 3))
        } else {
            Operand::Memory(MemOperand::decode(info))
        }
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Register(r) => write!(f, "{r}"),
            Operand::Memory(m) => write!(f, "{m}"),
        }
    }
}

/// The instruction information decoded for the instruction family of an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstructionDetail {
    /// INS/OUTS (Table 28-8): the segment is only reported for OUTS.
    StringIo { address_size: u8, segment: SegReg },
    /// INVEPT, INVPCID, INVVPID (Table 28-9): `kind` holds the type operand.
    Invalidation { descriptor: MemOperand, kind: Gpr },
    /// SGDT, SIDT, LGDT, LIDT (Table 28-10).
    DescriptorTable {
        instruction: &'static str,
        operand_size: u8,
        memory: MemOperand,
    },
    /// SLDT, STR, LLDT, LTR (Table 28-11).
    SegmentTable {
        instruction: &'static str,
        operand: Operand,
    },
    /// RDRAND, RDSEED, TPAUSE, UMWAIT (Table 28-12).
    Register { register: Gpr, operand_size: u8 },
    /// VMCLEAR, VMPTRLD, VMPTRST, VMXON, XRSTORS, XSAVES (Table 28-13).
    Memory(MemOperand),
    /// VMREAD, VMWRITE (Table 28-14): `operand` is the value's place (destination of VMREAD,
    /// source of VMWRITE), `field` the register holding the field encoding.
    VmreadVmwrite { operand: Operand, field: Gpr },
    /// LOADIWKEY: two XMM register numbers.
    Loadiwkey { xmm1: u8, xmm2: u8 },
}

/// The raw VM-exit instruction-information field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstructionInfo(pub u32);

impl InstructionInfo {
    /// Decodes for the instruction that caused `reason`; `None` for exits that do not report
    /// instruction information.
    pub const fn decode(self, reason: ExitReason) -> Option<InstructionDetail> {
        let i = self.0;
        Some(match reason {
            ExitReason::IoInstruction => InstructionDetail::StringIo {
                address_size: address_size(i),
                segment: SegReg::from_bits(i >> 15),
            },
            ExitReason::Invept | ExitReason::Invpcid | ExitReason::Invvpid => {
                InstructionDetail::Invalidation {
                    descriptor: MemOperand::decode(i),
                    kind: Gpr::from_index(i >> 28),
                }
            }
            ExitReason::GdtrIdtrAccess => InstructionDetail::DescriptorTable {
                instruction: match (i >> 28) & 3 {
                    0 => "sgdt",
                    1 => "sidt",
                    2 => "lgdt",
                    _ => "lidt",
                },
                operand_size: if i & (1 << 11) != 0 { 32 } else { 16 },
                memory: MemOperand::decode(i),
            },
            ExitReason::LdtrTrAccess => InstructionDetail::SegmentTable {
                instruction: match (i >> 28) & 3 {
                    0 => "sldt",
                    1 => "str",
                    2 => "lldt",
                    _ => "ltr",
                },
                operand: Operand::decode(i),
            },
            ExitReason::Rdrand | ExitReason::Rdseed | ExitReason::Tpause | ExitReason::Umwait => {
                InstructionDetail::Register {
                    register: Gpr::from_index(i >> 3),
                    operand_size: match (i >> 11) & 3 {
                        0 => 16,
                        1 => 32,
                        _ => 64,
                    },
                }
            }
            ExitReason::Vmclear
            | ExitReason::Vmptrld
            | ExitReason::Vmptrst
            | ExitReason::Vmxon
            | ExitReason::Xrstors
            | ExitReason::Xsaves => InstructionDetail::Memory(MemOperand::decode(i)),
            ExitReason::Vmread | ExitReason::Vmwrite => InstructionDetail::VmreadVmwrite {
                operand: Operand::decode(i),
                field: Gpr::from_index(i >> 28),
            },
            ExitReason::Loadiwkey => InstructionDetail::Loadiwkey {
                xmm1: ((i >> 3) & 0xf) as u8,
                xmm2: ((i >> 28) & 0xf) as u8,
            },
            _ => return None,
        })
    }
}

impl fmt::Display for InstructionDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstructionDetail::StringIo {
                address_size,
                segment,
            } => {
                write!(f, "string I/O, a{address_size}, segment {}", segment.name())
            }
            InstructionDetail::Invalidation { descriptor, kind } => {
                write!(f, "type in {kind}, descriptor at {descriptor}")
            }
            InstructionDetail::DescriptorTable {
                instruction,
                operand_size,
                memory,
            } => {
                write!(f, "{instruction} {memory} (o{operand_size})")
            }
            InstructionDetail::SegmentTable {
                instruction,
                operand,
            } => write!(f, "{instruction} {operand}"),
            InstructionDetail::Register {
                register,
                operand_size,
            } => write!(f, "{register} (o{operand_size})"),
            InstructionDetail::Memory(m) => write!(f, "operand at {m}"),
            InstructionDetail::VmreadVmwrite { operand, field } => {
                write!(f, "field in {field}, value {operand}")
            }
            InstructionDetail::Loadiwkey { xmm1, xmm2 } => write!(f, "xmm{xmm1}, xmm{xmm2}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn invept_operands() {
        // invept rcx, [rax+rbx*8] in 64-bit mode with DS.
        let info = 3 | (2 << 7) | (3 << 15) | (3 << 18) | (1 << 28);
        let d = InstructionInfo(info).decode(ExitReason::Invept).unwrap();
        let InstructionDetail::Invalidation { descriptor, kind } = d else {
            panic!("{d:?}")
        };
        assert_eq!(kind, Gpr::Rcx);
        assert_eq!(descriptor.base, Some(Gpr::Rax));
        assert_eq!(descriptor.index, Some(Gpr::Rbx));
        assert_eq!(descriptor.scale, 8);
        assert_eq!(descriptor.address_size, 64);
        assert_eq!(
            format!("{d}"),
            "type in rcx, descriptor at ds:[rax+rbx*8+disp] (a64)"
        );
    }

    #[test]
    fn invalid_base_and_index_are_absent() {
        let info = (1 << 7) | (2 << 15) | (1 << 22) | (1 << 27);
        let Some(InstructionDetail::Memory(m)) = InstructionInfo(info).decode(ExitReason::Vmptrld)
        else {
            panic!()
        };
        assert_eq!(
            (m.base, m.index, m.address_size, m.segment),
            (None, None, 32, SegReg::Ss)
        );
        assert_eq!(format!("{m}"), "ss:[+disp] (a32)");
    }

    #[test]
    fn descriptor_tables_and_segment_tables() {
        // lidt with 32-bit operand size.
        let lidt = (3 << 28) | (1 << 11) | (1 << 22) | (5 << 23) | (3 << 15) | (1 << 7);
        let d = InstructionInfo(lidt)
            .decode(ExitReason::GdtrIdtrAccess)
            .unwrap();
        assert_eq!(format!("{d}"), "lidt ds:[rbp+disp] (a32) (o32)");
        // ltr ax (register form).
        let ltr = (3 << 28) | (1 << 10);
        let d = InstructionInfo(ltr)
            .decode(ExitReason::LdtrTrAccess)
            .unwrap();
        assert_eq!(
            d,
            InstructionDetail::SegmentTable {
                instruction: "ltr",
                operand: Operand::Register(Gpr::Rax)
            }
        );
        assert_eq!(format!("{d}"), "ltr rax");
    }

    #[test]
    fn vmread_register_form_and_rdrand() {
        // vmread r8, rdx (field encoding in rdx).
        let i = (8 << 3) | (1 << 10) | (2 << 28);
        let d = InstructionInfo(i).decode(ExitReason::Vmread).unwrap();
        assert_eq!(
            d,
            InstructionDetail::VmreadVmwrite {
                operand: Operand::Register(Gpr::R8),
                field: Gpr::Rdx
            }
        );
        let r = InstructionInfo((6 << 3) | (2 << 11))
            .decode(ExitReason::Rdrand)
            .unwrap();
        assert_eq!(
            r,
            InstructionDetail::Register {
                register: Gpr::Rsi,
                operand_size: 64
            }
        );
        assert_eq!(InstructionInfo(0).decode(ExitReason::Cpuid), None);
        let s = InstructionInfo((1 << 7) | (3 << 15))
            .decode(ExitReason::IoInstruction)
            .unwrap();
        assert_eq!(
            s,
            InstructionDetail::StringIo {
                address_size: 32,
                segment: SegReg::Ds
            }
        );
    }
}
