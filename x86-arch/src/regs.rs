//! Architectural register bits (SDM Vol. 3A 2.5 for CR0/CR4, 2.2.1 for EFER, 2.3 for RFLAGS,
//! Vol. 3B 18.2 for the debug registers).

pub const CR0_PE: u64 = 1 << 0;
pub const CR0_MP: u64 = 1 << 1;
pub const CR0_EM: u64 = 1 << 2;
pub const CR0_TS: u64 = 1 << 3;
pub const CR0_ET: u64 = 1 << 4;
pub const CR0_NE: u64 = 1 << 5;
pub const CR0_WP: u64 = 1 << 16;
pub const CR0_AM: u64 = 1 << 18;
pub const CR0_NW: u64 = 1 << 29;
pub const CR0_CD: u64 = 1 << 30;
pub const CR0_PG: u64 = 1 << 31;

pub const CR4_VME: u64 = 1 << 0;
pub const CR4_PVI: u64 = 1 << 1;
pub const CR4_TSD: u64 = 1 << 2;
pub const CR4_DE: u64 = 1 << 3;
pub const CR4_PSE: u64 = 1 << 4;
pub const CR4_PAE: u64 = 1 << 5;
pub const CR4_MCE: u64 = 1 << 6;
pub const CR4_PGE: u64 = 1 << 7;
pub const CR4_PCE: u64 = 1 << 8;
pub const CR4_OSFXSR: u64 = 1 << 9;
pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
pub const CR4_UMIP: u64 = 1 << 11;
pub const CR4_LA57: u64 = 1 << 12;
pub const CR4_VMXE: u64 = 1 << 13;
pub const CR4_SMXE: u64 = 1 << 14;
pub const CR4_FSGSBASE: u64 = 1 << 16;
pub const CR4_PCIDE: u64 = 1 << 17;
pub const CR4_OSXSAVE: u64 = 1 << 18;
pub const CR4_SMEP: u64 = 1 << 20;
pub const CR4_SMAP: u64 = 1 << 21;
pub const CR4_PKE: u64 = 1 << 22;
pub const CR4_CET: u64 = 1 << 23;
pub const CR4_PKS: u64 = 1 << 24;

pub const EFER_SCE: u64 = 1 << 0;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;
pub const EFER_NXE: u64 = 1 << 11;

pub const RFLAGS_CF: u64 = 1 << 0;
/// Bit 1 of RFLAGS always reads 1.
pub const RFLAGS_FIXED1: u64 = 1 << 1;
pub const RFLAGS_TF: u64 = 1 << 8;
pub const RFLAGS_IF: u64 = 1 << 9;
pub const RFLAGS_DF: u64 = 1 << 10;
/// Nested task: the current task was entered by CALL or an event through a task gate, and IRET
/// returns to the task in the TSS's back link (SDM Vol. 3A 9.4).
pub const RFLAGS_NT: u64 = 1 << 14;
pub const RFLAGS_RF: u64 = 1 << 16;
pub const RFLAGS_VM: u64 = 1 << 17;
/// Bits 63:22 and 15, 5, 3 of RFLAGS are reserved and must be 0.
pub const RFLAGS_RESERVED: u64 = !0x3f_ffff | (1 << 15) | (1 << 5) | (1 << 3);

/// DR7 bits 63:32 are reserved (SDM Vol. 3B 18.2.4).
pub const DR7_RESERVED_HIGH: u64 = 0xffff_ffff_0000_0000;

/// DR6 B0-B3: which breakpoint condition matched (SDM Vol. 3B 18.2.3).
pub const DR6_B0_B3: u64 = 0xf;
/// DR6.BD: the next instruction accesses a debug register while DR7.GD is set.
pub const DR6_BD: u64 = 1 << 13;
/// DR6.BS: single step (RFLAGS.TF).
pub const DR6_BS: u64 = 1 << 14;
/// DR6.BT: task switch to a TSS with the T flag.
pub const DR6_BT: u64 = 1 << 15;
/// DR6 bits that read as 1 on processors without RTM or bus-lock detection: 31:16 and 11:4
/// (SDM Vol. 3B 18.2.3).
pub const DR6_FIXED1: u64 = 0xffff_0ff0;
/// DR7 bit 10 reads as 1 (SDM Vol. 3B 18.2.4).
pub const DR7_FIXED1: u64 = 1 << 10;
/// DR7.GD: general detect, a #DB before any MOV DR (SDM Vol. 3B 18.2.4).
pub const DR7_GD: u64 = 1 << 13;

/// IA32_DEBUGCTL bits with no defined meaning: 5:3 and 63:16 (bit 2 is bus-lock detection on
/// recent processors and is allowed; SDM Vol. 3B 18.4.1, Vol. 3C 27.3.1.1).
pub const DEBUGCTL_RESERVED: u64 = !0xffff | 0b11_1000;
/// IA32_DEBUGCTL.BTF: single-step on branches only (SDM Vol. 3B 18.4.3).
pub const DEBUGCTL_BTF: u64 = 1 << 1;

/// Every byte of an IA32_PAT value is a valid memory type: 0, 1, 4, 5, 6 or 7
/// (SDM Vol. 3A 12.12.2); WRMSR raises #GP for any other.
pub fn pat_is_valid(pat: u64) -> bool {
    pat.to_le_bytes()
        .iter()
        .all(|b| matches!(b, 0 | 1 | 4 | 5 | 6 | 7))
}
