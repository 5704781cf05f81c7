//! Just enough x86 decoding for read watchpoints: whether an instruction that wrote memory read
//! its destination first.
//!
//! An EPT violation caused by a read-modify-write instruction sets the "data write" bit of the
//! exit qualification; whether it also sets "data read" is implementation-specific (SDM Vol. 3C
//! 28.2.1, Table 28-7 and the text before it; Bochs sets only "data write"). A write alone thus
//! does not say whether the instruction read the watched bytes, which a read watchpoint must
//! know: `add [x], 1` reads `x`, `mov [x], eax` does not. The instruction's opcode says it.
//!
//! Only instructions whose memory operand is both read and written are recognised (the SDM
//! Vol. 2 opcode tables); anything else that wrote memory counts as a plain store, so an
//! unusual read-modify-write instruction can at worst be missed, as before, never reported
//! for a plain store.

/// The longest x86 instruction (SDM Vol. 2A 2.3.11).
pub const MAX_LEN: usize = 15;

/// Whether the instruction in `bytes` (from its first byte) reads the memory it writes: ALU
/// operations with a memory destination, INC/DEC, NOT/NEG, shifts and rotates, XCHG, CMPXCHG,
/// XADD, BTS/BTR/BTC and SHLD/SHRD. `long_mode` decides whether 0x40-0x4F are REX prefixes
/// (64-bit mode) or INC/DEC of a register.
pub fn reads_destination(bytes: &[u8], long_mode: bool) -> bool {
    let mut i = 0;
    // Legacy prefixes in any order (SDM Vol. 2A 2.1.1), then REX in 64-bit mode (2.2.1).
    while let Some(&b) = bytes.get(i) {
        let prefix = matches!(
            b,
            0xF0 | 0xF2 | 0xF3 | 0x2E | 0x36 | 0x3E | 0x26 | 0x64 | 0x65 | 0x66 | 0x67
        ) || (long_mode && (0x40..=0x4F).contains(&b));
        if !prefix || i >= MAX_LEN {
            break;
        }
        i += 1;
    }
    let Some(&op) = bytes.get(i) else {
        return false;
    };
    // ModRM.reg selects the operation in the group opcodes.
    let reg = |at: usize| bytes.get(at).map(|m| (m >> 3) & 7);
    match op {
        // ADD, OR, ADC, SBB, AND, SUB, XOR r/m, r (CMP, 0x38/0x39, does not write).
        0x00..=0x31 if op & 0x06 == 0 => true,
        // Group 1: ADD..XOR r/m, imm (/7 is CMP); 0x82 is 0x80 outside 64-bit mode.
        0x80..=0x83 => reg(i + 1).is_some_and(|r| r != 7),
        // XCHG r/m, r.
        0x86 | 0x87 => true,
        // Group 2: rotates and shifts of r/m.
        0xC0 | 0xC1 | 0xD0..=0xD3 => true,
        // Group 3: NOT (/2), NEG (/3).
        0xF6 | 0xF7 => reg(i + 1).is_some_and(|r| r == 2 || r == 3),
        // Groups 4 and 5: INC (/0), DEC (/1).
        0xFE | 0xFF => reg(i + 1).is_some_and(|r| r <= 1),
        0x0F => match bytes.get(i + 1) {
            // SHLD, BTS, SHRD, CMPXCHG, BTR, BTC, XADD.
            Some(0xA4 | 0xA5 | 0xAB | 0xAC | 0xAD | 0xB0 | 0xB1 | 0xB3 | 0xBB | 0xC0 | 0xC1) => {
                true
            }
            // Group 8: BTS (/5), BTR (/6), BTC (/7) r/m, imm8.
            Some(0xBA) => reg(i + 2).is_some_and(|r| r >= 5),
            // Group 9: CMPXCHG8B/CMPXCHG16B (/1).
            Some(0xC7) => reg(i + 2) == Some(1),
            _ => false,
        },
        _ => false,
    }
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
