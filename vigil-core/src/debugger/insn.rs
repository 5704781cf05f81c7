//! Just enough x86 decoding for read watchpoints: whether an instruction that wrote memory read
//! its destination first.
//!
//! An EPT violation caused by a read-modify-write instruction sets the "data write" bit of the
//! exit qualification; whether it also sets "data read" is implementation-specific (SDM Vol. 3C
//! 28.2.1, Table 28-7 and the text before it; Bochs sets only "data write"). A write alone thus
//! does not say whether the instruction read the watched bytes, which a read watchpoint must
//! know: `add [x], 1` reads `x`, `mov [x], eax` does not. The instruction's opcode says it.
//!
//! The decoding and the operand access information come from `iced-x86`: an instruction counts
//! when one of its memory operands is read and written (or read and conditionally written, as
//! CMPXCHG does). Anything that does not decode counts as a plain store.

use iced_x86::{Decoder, DecoderOptions, InstructionInfoFactory, OpAccess};

/// The longest x86 instruction (SDM Vol. 2A 2.3.11).
pub const MAX_LEN: usize = 15;

/// Whether the instruction in `bytes` (from its first byte) reads the memory it writes: ALU
/// operations with a memory destination, INC/DEC, NOT/NEG, shifts and rotates, XCHG, CMPXCHG,
/// XADD, BTS/BTR/BTC and the like. `long_mode` picks 64-bit decoding (0x40-0x4F are REX
/// prefixes) over 32-bit (they are INC/DEC of a register).
pub fn reads_destination(bytes: &[u8], long_mode: bool) -> bool {
    let bytes = &bytes[..bytes.len().min(MAX_LEN)];
    let mut decoder = Decoder::new(if long_mode { 64 } else { 32 }, bytes, DecoderOptions::NONE);
    let instruction = decoder.decode();
    if instruction.is_invalid() {
        return false;
    }
    let mut factory = InstructionInfoFactory::new();
    factory
        .info(&instruction)
        .used_memory()
        .iter()
        .any(|m| matches!(m.access(), OpAccess::ReadWrite | OpAccess::ReadCondWrite))
}

#[cfg(test)]
mod tests {
    use super::reads_destination;

    #[test]
    fn read_modify_write_instructions() {
        for bytes in [
            &[0x48, 0x83, 0x05, 0, 0, 0, 0, 1][..], // add qword [rip+0], 1
            &[0x01, 0x03],                          // add [rbx], eax
            &[0x31, 0x03],                          // xor [rbx], eax
            &[0xF0, 0x48, 0x0F, 0xC1, 0x03],        // lock xadd [rbx], rax
            &[0xF0, 0x0F, 0xB1, 0x0B],              // lock cmpxchg [rbx], ecx
            &[0x48, 0xFF, 0x03],                    // inc qword [rbx]
            &[0xFE, 0x0B],                          // dec byte [rbx]
            &[0xF7, 0x13],                          // not dword [rbx]
            &[0xF7, 0x1B],                          // neg dword [rbx]
            &[0xD1, 0x23],                          // shl dword [rbx], 1
            &[0x87, 0x03],                          // xchg [rbx], eax
            &[0x0F, 0xAB, 0x03],                    // bts [rbx], eax
            &[0x0F, 0xBA, 0x33, 3],                 // btr dword [rbx], 3
            &[0x66, 0x81, 0x03, 1, 0],              // add word [rbx], 1
            &[0x0F, 0xC7, 0x0B],                    // cmpxchg8b [rbx]
        ] {
            assert!(reads_destination(bytes, true), "{bytes:02x?}");
        }
    }

    #[test]
    fn plain_stores_and_reads() {
        for bytes in [
            &[0x48, 0x89, 0x05, 0, 0, 0, 0][..], // mov [rip+0], rax
            &[0xC7, 0x03, 1, 0, 0, 0],           // mov dword [rbx], 1
            &[0x88, 0x03],                       // mov [rbx], al
            &[0xAB],                             // stosd
            &[0xF3, 0x48, 0xA5],                 // rep movsq
            &[0x50],                             // push rax
            &[0xFF, 0x33],                       // push qword [rbx]
            &[0x0F, 0x11, 0x03],                 // movups [rbx], xmm0
            &[0x0F, 0x94, 0x03],                 // sete [rbx]
            &[0x39, 0x03],                       // cmp [rbx], eax
            &[0x83, 0x3B, 1],                    // cmp dword [rbx], 1
            &[0xF7, 0x03, 1, 0, 0, 0],           // test dword [rbx], 1
            &[0x0F, 0xC7, 0x33],                 // vmptrld-style group 9 /6
            &[],
            &[0x66, 0x66],
        ] {
            assert!(!reads_destination(bytes, true), "{bytes:02x?}");
        }
    }

    #[test]
    fn rex_only_in_64_bit_mode() {
        // 0x48 0x01 0x03: `add [rbx], rax` in 64-bit mode; `dec eax` then another instruction
        // outside it.
        assert!(reads_destination(&[0x48, 0x01, 0x03], true));
        assert!(!reads_destination(&[0x48, 0x01, 0x03], false));
        assert!(reads_destination(&[0x01, 0x03], false));
    }
}
