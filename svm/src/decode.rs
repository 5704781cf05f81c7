//! What an intercept does not say, read from the instruction itself.
//!
//! Without NRIP save (15.7.1) a #VMEXIT gives no next RIP, so the length of the intercepted
//! instruction must come from its bytes; without decode assists (15.33) the CR, DR and INVLPG
//! intercepts carry no operands, and a string I/O intercept no segment. Both are optional
//! features (QEMU's TCG has neither; Bochs' `ryzen` has NRIP save but no decode assists), so a
//! backend decodes the bytes at the guest's CS:RIP: this module turns them into what the exit
//! layer needs, with iced-x86's decoder (the same one the debugger uses).

use crate::exit::ExitCode;
use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

/// The bytes of an intercepted instruction that has one encoding with no operand in its bytes,
/// written without prefixes (`msr_write`: an MSR intercept's EXITINFO1 bit 0, WRMSR rather
/// than RDMSR). When the guest's bytes at RIP are exactly these, the instruction is that long
/// — RIP points at an instruction's first byte, prefixes included — and nothing needs
/// decoding; with a prefix in front the full decoder runs. The common exits without NRIP save
/// then cost a fetch of two or three bytes instead of a decode (a guest timing CPUID notices
/// the difference).
pub fn plain_encoding(code: ExitCode, msr_write: bool) -> Option<&'static [u8]> {
    Some(match code {
        ExitCode::CPUID => &[0x0F, 0xA2],
        ExitCode::RDTSC => &[0x0F, 0x31],
        ExitCode::RDTSCP => &[0x0F, 0x01, 0xF9],
        ExitCode::RDPMC => &[0x0F, 0x33],
        ExitCode::MSR if msr_write => &[0x0F, 0x30],
        ExitCode::MSR => &[0x0F, 0x32],
        ExitCode::HLT => &[0xF4],
        ExitCode::PAUSE => &[0xF3, 0x90],
        ExitCode::INVD => &[0x0F, 0x08],
        ExitCode::WBINVD => &[0x0F, 0x09],
        ExitCode::XSETBV => &[0x0F, 0x01, 0xD1],
        ExitCode::VMMCALL => &[0x0F, 0x01, 0xD9],
        ExitCode::VMRUN => &[0x0F, 0x01, 0xD8],
        ExitCode::VMLOAD => &[0x0F, 0x01, 0xDA],
        ExitCode::VMSAVE => &[0x0F, 0x01, 0xDB],
        ExitCode::STGI => &[0x0F, 0x01, 0xDC],
        ExitCode::CLGI => &[0x0F, 0x01, 0xDD],
        ExitCode::SKINIT => &[0x0F, 0x01, 0xDE],
        ExitCode::INVLPGA => &[0x0F, 0x01, 0xDF],
        ExitCode::MONITOR => &[0x0F, 0x01, 0xC8],
        ExitCode::MWAIT => &[0x0F, 0x01, 0xC9],
        _ => return None,
    })
}

/// A memory operand: offset = base + index × scale + displacement, at the address size, in
/// `segment` (or absolute for RIP-relative addressing, whose displacement iced resolves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemOperand {
    /// Segment register encoding (0 = ES ... 5 = GS), after any override.
    pub segment: u8,
    pub base: Option<u8>,
    pub index: Option<u8>,
    pub scale: u8,
    pub displacement: u64,
    /// Address size in bits: 16, 32 or 64.
    pub address_size: u8,
    /// RIP-relative: `displacement` is the whole offset already.
    pub rip_relative: bool,
}

impl MemOperand {
    /// The operand's offset in its segment, with `gpr(n)` giving register n's value.
    pub fn offset(&self, gpr: &dyn Fn(u8) -> u64) -> u64 {
        if self.rip_relative {
            return self.displacement;
        }
        let mut off = self.displacement;
        if let Some(b) = self.base {
            off = off.wrapping_add(gpr(b));
        }
        if let Some(i) = self.index {
            off = off.wrapping_add(gpr(i).wrapping_mul(self.scale as u64));
        }
        match self.address_size {
            16 => off & 0xFFFF,
            32 => off & 0xFFFF_FFFF,
            _ => off,
        }
    }
}

/// LMSW's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source16 {
    /// The low 16 bits of this general-purpose register.
    Gpr(u8),
    Mem(MemOperand),
}

/// The intercepted instructions whose operands matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    MovToCr {
        cr: u8,
        gpr: u8,
    },
    MovFromCr {
        cr: u8,
        gpr: u8,
    },
    Clts,
    Lmsw(Source16),
    /// SMSW (a CR0 read).
    Smsw,
    MovToDr {
        dr: u8,
        gpr: u8,
    },
    MovFromDr {
        dr: u8,
        gpr: u8,
    },
    Invlpg(MemOperand),
    /// OUTS reads from this segment (DS or an override).
    Outs {
        segment: u8,
    },
    /// INS always writes to ES.
    Ins,
    /// RDTSCP, which QEMU's TCG reports with RDTSC's exit code.
    Rdtscp,
    /// Any other instruction (only its length is of use).
    Other,
}

/// One decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// 1 to 15 bytes.
    pub len: u8,
    pub op: Op,
}

/// A general-purpose register's architectural number (0 = RAX ... 15 = R15), for registers of
/// any width but the legacy high bytes.
fn gpr(r: Register) -> Option<u8> {
    if r.is_gpr() && !matches!(r, Register::AH | Register::CH | Register::DH | Register::BH) {
        Some(r.full_register().number() as u8)
    } else {
        None
    }
}

/// The address size of the instruction: the mode's, toggled by an 67h prefix (Vol. 3 1.2.3).
fn address_size(bytes: &[u8], code_bits: u8) -> u8 {
    let mut toggled = false;
    for &b in bytes {
        match b {
            0x67 => toggled = true,
            0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x66 | 0xF0 | 0xF2 | 0xF3 => {}
            0x40..=0x4F if code_bits == 64 => {}
            _ => break,
        }
    }
    match (code_bits, toggled) {
        (64, false) => 64,
        (64, true) | (32, false) | (16, true) => 32,
        _ => 16,
    }
}

fn mem_operand(i: &Instruction, bytes: &[u8], code_bits: u8) -> MemOperand {
    let seg = i.memory_segment();
    MemOperand {
        segment: if seg == Register::None {
            3
        } else {
            seg.number() as u8
        },
        base: gpr(i.memory_base()),
        index: gpr(i.memory_index()),
        scale: i.memory_index_scale() as u8,
        displacement: i.memory_displacement64(),
        address_size: address_size(bytes, code_bits),
        rip_relative: i.is_ip_rel_memory_operand(),
    }
}

/// Decodes the instruction at the start of `bytes` (up to 15 of them), fetched at `rip` in code
/// of `code_bits` (16, 32 or 64). `None` if the bytes do not hold a whole valid instruction.
pub fn decode(bytes: &[u8], code_bits: u8, rip: u64) -> Option<Decoded> {
    let bitness = match code_bits {
        16 | 32 | 64 => code_bits as u32,
        _ => return None,
    };
    let mut d = Decoder::with_ip(bitness, bytes, rip, DecoderOptions::NONE);
    let i = d.decode();
    if i.is_invalid() || i.len() == 0 || i.len() > 15 {
        return None;
    }
    let op = match i.mnemonic() {
        Mnemonic::Mov if i.op0_register().is_cr() => Op::MovToCr {
            cr: i.op0_register().number() as u8,
            gpr: gpr(i.op1_register())?,
        },
        Mnemonic::Mov if i.op1_register().is_cr() => Op::MovFromCr {
            cr: i.op1_register().number() as u8,
            gpr: gpr(i.op0_register())?,
        },
        Mnemonic::Mov if i.op0_register().is_dr() => Op::MovToDr {
            dr: i.op0_register().number() as u8,
            gpr: gpr(i.op1_register())?,
        },
        Mnemonic::Mov if i.op1_register().is_dr() => Op::MovFromDr {
            dr: i.op1_register().number() as u8,
            gpr: gpr(i.op0_register())?,
        },
        Mnemonic::Clts => Op::Clts,
        Mnemonic::Smsw => Op::Smsw,
        Mnemonic::Lmsw => Op::Lmsw(match i.op0_kind() {
            OpKind::Register => Source16::Gpr(gpr(i.op0_register())?),
            _ => Source16::Mem(mem_operand(&i, bytes, code_bits)),
        }),
        Mnemonic::Invlpg => Op::Invlpg(mem_operand(&i, bytes, code_bits)),
        Mnemonic::Outsb | Mnemonic::Outsw | Mnemonic::Outsd => {
            let seg = i.memory_segment();
            Op::Outs {
                segment: if seg == Register::None {
                    3
                } else {
                    seg.number() as u8
                },
            }
        }
        Mnemonic::Insb | Mnemonic::Insw | Mnemonic::Insd => Op::Ins,
        Mnemonic::Rdtscp => Op::Rdtscp,
        _ if i.code() == Code::INVALID => return None,
        _ => Op::Other,
    };
    Some(Decoded {
        len: i.len() as u8,
        op,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(bytes: &[u8], bits: u8) -> Op {
        decode(bytes, bits, 0x1000).unwrap().op
    }

    #[test]
    fn lengths_of_the_instructions_that_exit() {
        for (bytes, bits, len) in [
            (&[0x0F, 0xA2][..], 32, 2),   // cpuid
            (&[0x66, 0x0F, 0xA2], 16, 3), // cpuid with a redundant prefix
            (&[0x0F, 0x31], 64, 2),       // rdtsc
            (&[0x0F, 0x01, 0xF9], 64, 3), // rdtscp
            (&[0x0F, 0x01, 0xD9], 32, 3), // vmmcall
            (&[0xF4], 16, 1),             // hlt
            (&[0xEE], 32, 1),             // out dx, al
            (&[0xE6, 0x80], 32, 2),       // out 0x80, al
            (&[0xF3, 0x6F], 32, 2),       // rep outsd
            (&[0x0F, 0x32], 64, 2),       // rdmsr
            (&[0x0F, 0x08], 32, 2),       // invd
            (&[0x0F, 0x01, 0xD8], 64, 3), // vmrun
            (&[0x0F, 0x01, 0xDE], 64, 3), // skinit
        ] {
            let d = decode(bytes, bits, 0).unwrap_or_else(|| panic!("{bytes:x?}"));
            assert_eq!(d.len, len, "{bytes:x?}");
        }
        // RDTSCP is told from RDTSC by its bytes (QEMU reports both with RDTSC's code).
        assert_eq!(op(&[0x0F, 0x01, 0xF9], 32), Op::Rdtscp);
        assert_eq!(op(&[0x0F, 0x31], 64), Op::Other);
        assert_eq!(decode(&[0x0F], 32, 0), None, "truncated");
        assert_eq!(decode(&[0x0F, 0xFF], 32, 0), None, "invalid");
    }

    #[test]
    fn plain_encodings_are_what_the_decoder_says() {
        let codes = [
            ExitCode::CPUID,
            ExitCode::RDTSC,
            ExitCode::RDTSCP,
            ExitCode::RDPMC,
            ExitCode::MSR,
            ExitCode::HLT,
            ExitCode::PAUSE,
            ExitCode::INVD,
            ExitCode::WBINVD,
            ExitCode::XSETBV,
            ExitCode::VMMCALL,
            ExitCode::VMRUN,
            ExitCode::VMLOAD,
            ExitCode::VMSAVE,
            ExitCode::STGI,
            ExitCode::CLGI,
            ExitCode::SKINIT,
            ExitCode::INVLPGA,
            ExitCode::MONITOR,
            ExitCode::MWAIT,
        ];
        for code in codes {
            for write in [false, true] {
                let bytes = plain_encoding(code, write).unwrap();
                for bits in [16, 32, 64] {
                    let d = decode(bytes, bits, 0).unwrap_or_else(|| panic!("{code}"));
                    assert_eq!(d.len as usize, bytes.len(), "{code} in {bits}-bit code");
                }
            }
        }
        let mnemonic = |b: &[u8]| {
            Decoder::new(64, b, DecoderOptions::NONE)
                .decode()
                .mnemonic()
        };
        assert_eq!(
            mnemonic(plain_encoding(ExitCode::MSR, true).unwrap()),
            Mnemonic::Wrmsr
        );
        assert_eq!(
            mnemonic(plain_encoding(ExitCode::MSR, false).unwrap()),
            Mnemonic::Rdmsr
        );
        assert_eq!(
            mnemonic(plain_encoding(ExitCode::CPUID, false).unwrap()),
            Mnemonic::Cpuid
        );
        assert_eq!(
            mnemonic(plain_encoding(ExitCode::PAUSE, false).unwrap()),
            Mnemonic::Pause
        );
        // Instructions with operands in their bytes always go through the decoder.
        assert_eq!(plain_encoding(ExitCode::IOIO, false), None);
        assert_eq!(plain_encoding(ExitCode::INVLPG, false), None);
        assert_eq!(plain_encoding(ExitCode(0x00), false), None, "CR reads");
    }

    #[test]
    fn control_and_debug_register_moves_name_their_register() {
        // mov cr3, rax / mov rbx, cr4 / mov cr8, r9 (REX.B) / mov eax, cr0 in 32-bit code.
        assert_eq!(op(&[0x0F, 0x22, 0xD8], 64), Op::MovToCr { cr: 3, gpr: 0 });
        assert_eq!(op(&[0x0F, 0x20, 0xE3], 64), Op::MovFromCr { cr: 4, gpr: 3 });
        assert_eq!(
            op(&[0x44, 0x0F, 0x22, 0xC1], 64),
            Op::MovToCr { cr: 8, gpr: 1 }
        );
        assert_eq!(
            op(&[0x41, 0x0F, 0x22, 0xC1], 64),
            Op::MovToCr { cr: 0, gpr: 9 }
        );
        assert_eq!(op(&[0x0F, 0x20, 0xC0], 32), Op::MovFromCr { cr: 0, gpr: 0 });
        assert_eq!(op(&[0x0F, 0x23, 0xFE], 32), Op::MovToDr { dr: 7, gpr: 6 });
        assert_eq!(op(&[0x0F, 0x21, 0xF1], 64), Op::MovFromDr { dr: 6, gpr: 1 });
        assert_eq!(op(&[0x0F, 0x06], 16), Op::Clts);
        assert_eq!(op(&[0x0F, 0x01, 0xF0], 16), Op::Lmsw(Source16::Gpr(0)));
        assert_eq!(op(&[0x0F, 0x01, 0xE0], 32), Op::Smsw);
    }

    #[test]
    fn memory_operands_compute_their_offset() {
        // invlpg [rbx + rsi*4 + 0x10]
        let Op::Invlpg(m) = op(&[0x0F, 0x01, 0x7C, 0xB3, 0x10], 64) else {
            panic!()
        };
        assert_eq!(
            (m.base, m.index, m.scale, m.segment),
            (Some(3), Some(6), 4, 3)
        );
        let regs = |n: u8| match n {
            3 => 0x1000,
            6 => 0x20,
            _ => 0,
        };
        assert_eq!(m.offset(&regs), 0x1000 + 0x80 + 0x10);
        // invlpg fs:[eax] in 32-bit code with a 16-bit address size (67h): wraps at 64 KiB.
        let Op::Invlpg(m) = op(&[0x64, 0x67, 0x0F, 0x01, 0x3E, 0xFF, 0xFF], 32) else {
            panic!()
        };
        assert_eq!((m.segment, m.address_size), (4, 16));
        assert_eq!(m.offset(&|_| 0), 0xFFFF);
        // invlpg [rip + 0x100] at 0x1000: the next instruction is at 0x1007.
        let Op::Invlpg(m) = op(&[0x0F, 0x01, 0x3D, 0x00, 0x01, 0x00, 0x00], 64) else {
            panic!()
        };
        assert!(m.rip_relative);
        assert_eq!(m.offset(&|_| 0), 0x1107);
        // lmsw [bx] in 16-bit code.
        let Op::Lmsw(Source16::Mem(m)) = op(&[0x0F, 0x01, 0x37], 16) else {
            panic!()
        };
        assert_eq!((m.base, m.address_size), (Some(3), 16));
    }

    #[test]
    fn string_io_names_its_segment() {
        assert_eq!(op(&[0xF3, 0x6E], 32), Op::Outs { segment: 3 }, "rep outsb");
        assert_eq!(op(&[0x26, 0x6F], 32), Op::Outs { segment: 0 }, "es outsd");
        assert_eq!(
            op(&[0x65, 0x66, 0x6F], 64),
            Op::Outs { segment: 5 },
            "gs outsw"
        );
        assert_eq!(op(&[0xF3, 0x6D], 32), Op::Ins);
        assert_eq!(op(&[0x0F, 0xA2], 32), Op::Other);
    }
}
