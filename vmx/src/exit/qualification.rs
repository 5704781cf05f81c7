//! Exit-qualification decoders (SDM Vol. 3C 28.2.1).

use core::fmt;

/// A general-purpose register as exit information numbers them (SDM Vol. 3C 28.2.1, Table 28-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Gpr {
    Rax,
    Rcx,
    Rdx,
    Rbx,
    Rsp,
    Rbp,
    Rsi,
    Rdi,
    R8,
    R9,
    R10,
    R11,
    R12,
    R13,
    R14,
    R15,
}

impl Gpr {
    /// From the 4-bit register number; only the low 4 bits are looked at.
    pub const fn from_index(n: u32) -> Gpr {
        const ALL: [Gpr; 16] = [
            Gpr::Rax,
            Gpr::Rcx,
            Gpr::Rdx,
            Gpr::Rbx,
            Gpr::Rsp,
            Gpr::Rbp,
            Gpr::Rsi,
            Gpr::Rdi,
            Gpr::R8,
            Gpr::R9,
            Gpr::R10,
            Gpr::R11,
            Gpr::R12,
            Gpr::R13,
            Gpr::R14,
            Gpr::R15,
        ];
        ALL[(n & 0xf) as usize]
    }

    pub const fn index(self) -> u8 {
        self as u8
    }

    pub const fn name(self) -> &'static str {
        match self {
            Gpr::Rax => "rax",
            Gpr::Rcx => "rcx",
            Gpr::Rdx => "rdx",
            Gpr::Rbx => "rbx",
            Gpr::Rsp => "rsp",
            Gpr::Rbp => "rbp",
            Gpr::Rsi => "rsi",
            Gpr::Rdi => "rdi",
            Gpr::R8 => "r8",
            Gpr::R9 => "r9",
            Gpr::R10 => "r10",
            Gpr::R11 => "r11",
            Gpr::R12 => "r12",
            Gpr::R13 => "r13",
            Gpr::R14 => "r14",
            Gpr::R15 => "r15",
        }
    }
}

impl fmt::Display for Gpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a control-register access did (SDM Vol. 3C 28.2.1, Table 28-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrAccessType {
    MovToCr(Gpr),
    MovFromCr(Gpr),
    Clts,
    /// LMSW with its 16-bit source; `memory` says whether the operand was in memory (the guest
    /// linear address is then in the guest-linear-address field).
    Lmsw {
        source: u16,
        memory: bool,
    },
}

/// Exit qualification for control-register accesses (reason 28).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrAccess {
    /// Bits 3:0: the control register (0, 3, 4 or 8; LMSW and CLTS report 0).
    pub cr: u8,
    pub access: CrAccessType,
}

impl CrAccess {
    pub const fn decode(q: u64) -> CrAccess {
        let gpr = Gpr::from_index((q >> 8) as u32);
        let access = match (q >> 4) & 3 {
            0 => CrAccessType::MovToCr(gpr),
            1 => CrAccessType::MovFromCr(gpr),
            2 => CrAccessType::Clts,
            _ => CrAccessType::Lmsw {
                source: (q >> 16) as u16,
                memory: q & (1 << 6) != 0,
            },
        };
        CrAccess {
            cr: (q & 0xf) as u8,
            access,
        }
    }
}

impl fmt::Display for CrAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.access {
            CrAccessType::MovToCr(r) => write!(f, "mov cr{}, {r}", self.cr),
            CrAccessType::MovFromCr(r) => write!(f, "mov {r}, cr{}", self.cr),
            CrAccessType::Clts => f.write_str("clts"),
            CrAccessType::Lmsw { source, memory } => {
                write!(
                    f,
                    "lmsw {source:#06x} (from {})",
                    if memory { "memory" } else { "a register" }
                )
            }
        }
    }
}

/// Exit qualification for MOV DR (reason 29; SDM Vol. 3C 28.2.1, Table 28-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrAccess {
    pub dr: u8,
    /// True for MOV from DR (a read), false for MOV to DR.
    pub from_dr: bool,
    pub gpr: Gpr,
}

impl DrAccess {
    pub const fn decode(q: u64) -> DrAccess {
        DrAccess {
            dr: (q & 7) as u8,
            from_dr: q & (1 << 4) != 0,
            gpr: Gpr::from_index((q >> 8) as u32),
        }
    }
}

impl fmt::Display for DrAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.from_dr {
            write!(f, "mov {}, dr{}", self.gpr, self.dr)
        } else {
            write!(f, "mov dr{}, {}", self.dr, self.gpr)
        }
    }
}

/// Exit qualification for I/O instructions (reason 30; SDM Vol. 3C 28.2.1, Table 28-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoQualification {
    /// Access size in bytes: 1, 2 or 4.
    pub size: u8,
    /// True for IN/INS, false for OUT/OUTS.
    pub input: bool,
    /// INS/OUTS.
    pub string: bool,
    pub rep: bool,
    /// The port came from an immediate operand rather than DX.
    pub immediate: bool,
    pub port: u16,
}

impl IoQualification {
    pub const fn decode(q: u64) -> IoQualification {
        IoQualification {
            size: (q & 7) as u8 + 1,
            input: q & (1 << 3) != 0,
            string: q & (1 << 4) != 0,
            rep: q & (1 << 5) != 0,
            immediate: q & (1 << 6) != 0,
            port: (q >> 16) as u16,
        }
    }
}

impl fmt::Display for IoQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suffix = match self.size {
            1 => 'b',
            2 => 'w',
            _ => 'd',
        };
        let rep = if self.rep { "rep " } else { "" };
        match (self.input, self.string) {
            (true, true) => write!(f, "{rep}ins{suffix} port {:#x}", self.port),
            (false, true) => write!(f, "{rep}outs{suffix} port {:#x}", self.port),
            (true, false) => write!(f, "in{suffix} port {:#x}", self.port),
            (false, false) => write!(f, "out{suffix} port {:#x}", self.port),
        }
    }
}

/// Exit qualification for EPT violations (reason 48; SDM Vol. 3C 28.2.1, Table 28-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptViolation(pub u64);

impl EptViolation {
    const fn bit(self, n: u32) -> bool {
        self.0 & (1 << n) != 0
    }
    pub const fn read(self) -> bool {
        self.bit(0)
    }
    pub const fn write(self) -> bool {
        self.bit(1)
    }
    pub const fn fetch(self) -> bool {
        self.bit(2)
    }
    /// Bits 5:3: the permissions the walked EPT entries granted (the AND over the walk).
    pub const fn readable(self) -> bool {
        self.bit(3)
    }
    pub const fn writable(self) -> bool {
        self.bit(4)
    }
    pub const fn executable(self) -> bool {
        self.bit(5)
    }
    /// Bit 6: user-mode executable (mode-based execute control).
    pub const fn user_executable(self) -> bool {
        self.bit(6)
    }
    /// Bit 7: the guest-linear-address field is valid.
    pub const fn linear_address_valid(self) -> bool {
        self.bit(7)
    }
    /// Bit 8 (meaningful when bit 7 is set): the access was to the translated linear address,
    /// not to a guest paging-structure entry during the walk.
    pub const fn translated_access(self) -> bool {
        self.linear_address_valid() && self.bit(8)
    }
    /// Bit 12: NMI unblocking due to IRET; the hypervisor must re-block NMIs before resuming.
    pub const fn nmi_unblocking(self) -> bool {
        self.bit(12)
    }
    /// Bit 13: a shadow-stack access.
    pub const fn shadow_stack(self) -> bool {
        self.bit(13)
    }
    /// Bit 16: the access was asynchronous to instruction execution (e.g. a PT trace write).
    pub const fn asynchronous(self) -> bool {
        self.bit(16)
    }
}

impl fmt::Display for EptViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let access = if self.fetch() {
            "instruction fetch"
        } else if self.write() {
            "write"
        } else {
            "read"
        };
        let flag = |on, c| if on { c } else { '-' };
        write!(
            f,
            "{access}; EPT allowed {}{}{}",
            flag(self.readable(), 'r'),
            flag(self.writable(), 'w'),
            flag(self.executable(), 'x')
        )?;
        if !self.linear_address_valid() {
            f.write_str("; no guest-linear address")?;
        } else if self.translated_access() {
            f.write_str("; to the translated linear address")?;
        } else {
            f.write_str("; during the guest page walk")?;
        }
        if self.nmi_unblocking() {
            f.write_str("; NMI unblocked by IRET")?;
        }
        Ok(())
    }
}

/// How a task switch started (SDM Vol. 3C 28.2.1, Table 28-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskSwitchSource {
    Call,
    Iret,
    Jmp,
    TaskGate,
}

/// Exit qualification for task switches (reason 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskSwitch {
    pub selector: u16,
    pub source: TaskSwitchSource,
}

impl TaskSwitch {
    pub const fn decode(q: u64) -> TaskSwitch {
        let source = match (q >> 30) & 3 {
            0 => TaskSwitchSource::Call,
            1 => TaskSwitchSource::Iret,
            2 => TaskSwitchSource::Jmp,
            _ => TaskSwitchSource::TaskGate,
        };
        TaskSwitch {
            selector: q as u16,
            source,
        }
    }
}

impl fmt::Display for TaskSwitch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.source {
            TaskSwitchSource::Call => "CALL",
            TaskSwitchSource::Iret => "IRET",
            TaskSwitchSource::Jmp => "JMP",
            TaskSwitchSource::TaskGate => "task gate in the IDT",
        };
        write!(
            f,
            "task switch to TSS selector {:#06x} by {how}",
            self.selector
        )
    }
}

/// Exit qualification for INVLPG (reason 14) and INVPCID-less page invalidations: the linear
/// address operand itself (SDM Vol. 3C 28.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvlpgQualification(pub u64);

impl InvlpgQualification {
    pub const fn address(self) -> u64 {
        self.0
    }
}

impl fmt::Display for InvlpgQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invlpg {:#x}", self.0)
    }
}

/// Exit qualification for debug exceptions (#DB exits) and the pending-debug-exceptions field
/// share a layout (SDM Vol. 3C 28.2.1, Table 28-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugQualification(pub u64);

impl DebugQualification {
    /// Bits 3:0: which of DR0-DR3 matched.
    pub const fn breakpoints(self) -> u8 {
        (self.0 & 0xf) as u8
    }
    /// Bit 13: debug-register access detected (BD).
    pub const fn bd(self) -> bool {
        self.0 & (1 << 13) != 0
    }
    /// Bit 14: single step (BS).
    pub const fn bs(self) -> bool {
        self.0 & (1 << 14) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn cr_access() {
        // mov cr3, r9
        let q = CrAccess::decode(0x0903);
        assert_eq!(
            q,
            CrAccess {
                cr: 3,
                access: CrAccessType::MovToCr(Gpr::R9)
            }
        );
        assert_eq!(format!("{q}"), "mov cr3, r9");
        // mov rbx, cr4 (type 1)
        assert_eq!(format!("{}", CrAccess::decode(0x0314)), "mov rbx, cr4");
        assert_eq!(CrAccess::decode(0x20).access, CrAccessType::Clts);
        // lmsw from memory with source 0x0011
        let l = CrAccess::decode((0x11 << 16) | (1 << 6) | (3 << 4));
        assert_eq!(
            l.access,
            CrAccessType::Lmsw {
                source: 0x11,
                memory: true
            }
        );
        assert_eq!(format!("{l}"), "lmsw 0x0011 (from memory)");
    }

    #[test]
    fn dr_access() {
        let d = DrAccess::decode((2 << 8) | (1 << 4) | 7);
        assert_eq!(
            d,
            DrAccess {
                dr: 7,
                from_dr: true,
                gpr: Gpr::Rdx
            }
        );
        assert_eq!(format!("{d}"), "mov rdx, dr7");
        assert_eq!(format!("{}", DrAccess::decode(0x0f01)), "mov dr1, r15");
    }

    #[test]
    fn io() {
        // out 0x8900, al via dx
        let o = IoQualification::decode(0x8900 << 16);
        assert_eq!(o.size, 1);
        assert!(!o.input && !o.string && !o.immediate);
        assert_eq!(format!("{o}"), "outb port 0x8900");
        // rep insd from dx=0x1f0
        let i = IoQualification::decode((0x1f0 << 16) | (1 << 5) | (1 << 4) | (1 << 3) | 3);
        assert_eq!(i.size, 4);
        assert_eq!(format!("{i}"), "rep insd port 0x1f0");
        // in ax, 0x60 (immediate)
        let w = IoQualification::decode((0x60 << 16) | (1 << 6) | (1 << 3) | 1);
        assert!(w.immediate);
        assert_eq!(format!("{w}"), "inw port 0x60");
    }

    #[test]
    fn ept_violation() {
        // Write to a read-only page, linear address valid, translated access.
        let v = EptViolation(0b1_1000_1010);
        assert!(v.write() && !v.read() && v.readable() && !v.writable());
        assert!(v.linear_address_valid() && v.translated_access());
        assert_eq!(
            format!("{v}"),
            "write; EPT allowed r--; to the translated linear address"
        );
        // Fetch from a non-present page during a page walk.
        let w = EptViolation((1 << 7) | 4);
        assert!(!w.translated_access());
        assert_eq!(
            format!("{w}"),
            "instruction fetch; EPT allowed ---; during the guest page walk"
        );
        // Bit 8 without bit 7 means nothing.
        assert!(!EptViolation(1 << 8).translated_access());
        assert!(EptViolation(1 << 12).nmi_unblocking());
    }

    #[test]
    fn task_switch_and_invlpg() {
        let t = TaskSwitch::decode((3 << 30) | 0x28);
        assert_eq!(t.source, TaskSwitchSource::TaskGate);
        assert_eq!(
            format!("{t}"),
            "task switch to TSS selector 0x0028 by task gate in the IDT"
        );
        assert_eq!(TaskSwitch::decode(1 << 30).source, TaskSwitchSource::Iret);
        assert_eq!(
            format!("{}", InvlpgQualification(0xffff_8000_0000_1000)),
            "invlpg 0xffff800000001000"
        );
        let d = DebugQualification((1 << 14) | 0b0101);
        assert!(d.bs() && !d.bd());
        assert_eq!(d.breakpoints(), 0b0101);
    }
}
