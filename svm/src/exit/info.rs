//! EXITINFO1 and EXITINFO2 of the intercepts that carry information (APM Vol. 2 15.7.1 and the
//! section of each intercept). Without decode assists (15.33) the CR, DR and INVLPG intercepts
//! carry none: [`CrInfo::decode`] and friends say so with `None`, and the caller decodes the
//! instruction itself (`crate::decode`).

use core::fmt;

/// The segment a string I/O instruction reads (OUTS) or writes (INS), by the 3-bit encoding
/// (0 = ES ... 5 = GS).
pub type SegEncoding = u8;

/// EXITINFO1 of an I/O intercept (15.10.2, Figure 15-2). EXITINFO2 holds the next RIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoInfo {
    pub port: u16,
    /// 1, 2 or 4 bytes.
    pub size: u8,
    /// IN/INS (TYPE = 1).
    pub input: bool,
    pub string: bool,
    pub rep: bool,
    /// Address size of a string instruction in bytes: 2, 4 or 8.
    pub addr_size: u8,
    /// The effective segment of a string instruction, when decode assists report it (bits
    /// 12:10); `None` without decode assists.
    pub segment: Option<SegEncoding>,
}

impl IoInfo {
    pub const fn decode(info1: u64, decode_assists: bool) -> IoInfo {
        let size = if info1 & (1 << 4) != 0 {
            1
        } else if info1 & (1 << 5) != 0 {
            2
        } else {
            4
        };
        let addr_size = if info1 & (1 << 7) != 0 {
            2
        } else if info1 & (1 << 8) != 0 {
            4
        } else {
            8
        };
        IoInfo {
            port: (info1 >> 16) as u16,
            size,
            input: info1 & 1 != 0,
            string: info1 & (1 << 2) != 0,
            rep: info1 & (1 << 3) != 0,
            addr_size,
            segment: if decode_assists {
                Some(((info1 >> 10) & 7) as u8)
            } else {
                None
            },
        }
    }

    /// The EXITINFO1 a processor writes for this access (for tests and tools).
    pub const fn encode(&self) -> u64 {
        let size = match self.size {
            1 => 1 << 4,
            2 => 1 << 5,
            _ => 1 << 6,
        };
        let asize = match self.addr_size {
            2 => 1 << 7,
            4 => 1 << 8,
            _ => 1 << 9,
        };
        let seg = match self.segment {
            Some(s) => (s as u64 & 7) << 10,
            None => 0,
        };
        ((self.port as u64) << 16)
            | size
            | asize
            | seg
            | self.input as u64
            | (self.string as u64) << 2
            | (self.rep as u64) << 3
    }
}

impl fmt::Display for IoInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{} port {:#x}, {} byte(s)",
            if self.rep { "rep " } else { "" },
            if self.input { "in" } else { "out" },
            if self.string { "s" } else { "" },
            self.port,
            self.size
        )
    }
}

/// EXITINFO1 of a CR access intercept with decode assists (15.33.2): for MOV CRn, bit 63 and
/// the general-purpose register in bits 3:0; zero for CLTS and LMSW (whose operand the
/// intercept does not report).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrInfo {
    /// A MOV to or from CRn with this GPR; `None` for CLTS or LMSW.
    pub mov_gpr: Option<u8>,
}

impl CrInfo {
    /// `None` without decode assists: EXITINFO1 then says nothing.
    pub const fn decode(info1: u64, decode_assists: bool) -> Option<CrInfo> {
        if !decode_assists {
            return None;
        }
        Some(CrInfo {
            mov_gpr: if info1 & (1 << 63) != 0 {
                Some((info1 & 0xF) as u8)
            } else {
                None
            },
        })
    }
}

/// EXITINFO1 of a DR access intercept with decode assists: the GPR in bits 3:0 (15.33.3).
pub const fn dr_gpr(info1: u64, decode_assists: bool) -> Option<u8> {
    if decode_assists {
        Some((info1 & 0xF) as u8)
    } else {
        None
    }
}

/// A nested page fault (15.25.6): EXITINFO1 is a #PF-style error code plus where in the
/// translation the fault happened; EXITINFO2 the guest-physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NpfInfo(pub u64);

impl NpfInfo {
    /// The nested entry was present: a protection violation (P).
    pub const fn present(self) -> bool {
        self.0 & 1 != 0
    }
    /// A write (or read-modify-write) access (RW).
    pub const fn write(self) -> bool {
        self.0 & (1 << 1) != 0
    }
    /// Nested accesses are user accesses, so the processor sets US (bit 2) always.
    pub const fn user(self) -> bool {
        self.0 & (1 << 2) != 0
    }
    /// A reserved bit was set in a nested entry (RSV).
    pub const fn reserved(self) -> bool {
        self.0 & (1 << 3) != 0
    }
    /// An instruction fetch (ID).
    pub const fn fetch(self) -> bool {
        self.0 & (1 << 4) != 0
    }
    /// The fault came while translating the guest's final physical address (bit 32).
    pub const fn final_address(self) -> bool {
        self.0 & (1 << 32) != 0
    }
    /// The fault came while the processor read or updated the guest's own page tables (bit 33).
    pub const fn guest_page_table(self) -> bool {
        self.0 & (1 << 33) != 0
    }
}

impl fmt::Display for NpfInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#x}: {} {}{}{}",
            self.0,
            if self.fetch() {
                "fetch"
            } else if self.write() {
                "write"
            } else {
                "read"
            },
            if self.present() {
                "denied by a present entry"
            } else {
                "of an unmapped page"
            },
            if self.reserved() {
                ", reserved bit set"
            } else {
                ""
            },
            if self.guest_page_table() {
                ", during the guest's page walk"
            } else {
                ""
            }
        )
    }
}

/// A task-switch intercept (15.14.3): EXITINFO1 is the new TSS selector, EXITINFO2 says why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskSwitchInfo {
    pub selector: u16,
    pub source: TaskSwitchSource,
    /// The error code to push on the new task's stack, if any.
    pub error_code: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskSwitchSource {
    Iret,
    Jmp,
    /// CALL or an interrupt or exception through a task gate: the intercept does not tell them
    /// apart (the EXITINTINFO field does: an event was being delivered).
    CallOrGate,
}

impl TaskSwitchInfo {
    pub const fn decode(info1: u64, info2: u64) -> TaskSwitchInfo {
        let source = if info2 & (1 << 36) != 0 {
            TaskSwitchSource::Iret
        } else if info2 & (1 << 38) != 0 {
            TaskSwitchSource::Jmp
        } else {
            TaskSwitchSource::CallOrGate
        };
        TaskSwitchInfo {
            selector: info1 as u16,
            source,
            error_code: if info2 & (1 << 44) != 0 {
                Some(info2 as u32)
            } else {
                None
            },
        }
    }
}

/// EXITINFO1 of an MSR intercept: 0 for RDMSR, 1 for WRMSR (15.11).
pub const fn msr_is_write(info1: u64) -> bool {
    info1 & 1 != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn io_round_trips_and_reads_the_manuals_bits() {
        // `rep outsw` to port 0x3F8 with a 32-bit address size (Figure 15-2).
        let raw = (0x3F8u64 << 16) | (1 << 8) | (1 << 5) | (1 << 3) | (1 << 2);
        let io = IoInfo::decode(raw, false);
        assert_eq!(io.port, 0x3F8);
        assert_eq!((io.size, io.addr_size), (2, 4));
        assert!(io.string && io.rep && !io.input);
        assert_eq!(io.segment, None);
        assert_eq!(io.encode(), raw);
        let inb = IoInfo::decode((0x60 << 16) | (1 << 4) | (1 << 9) | 1, true);
        assert!(inb.input && !inb.string && inb.size == 1 && inb.addr_size == 8);
        assert_eq!(inb.segment, Some(0));
        let with_seg = IoInfo::decode(raw | (3 << 10), true);
        assert_eq!(with_seg.segment, Some(3), "DS");
        assert_eq!(format!("{io}"), "rep outs port 0x3f8, 2 byte(s)");
    }

    #[test]
    fn cr_and_dr_operands_need_decode_assists() {
        assert_eq!(CrInfo::decode((1 << 63) | 5, false), None);
        assert_eq!(
            CrInfo::decode((1 << 63) | 5, true),
            Some(CrInfo { mov_gpr: Some(5) })
        );
        assert_eq!(
            CrInfo::decode(0, true),
            Some(CrInfo { mov_gpr: None }),
            "CLTS or LMSW"
        );
        assert_eq!(dr_gpr(0xB, true), Some(11));
        assert_eq!(dr_gpr(0xB, false), None);
    }

    #[test]
    fn nested_faults_and_task_switches() {
        // Bochs reports a write to a not-present nested page at the final translation:
        // error code W|U plus bit 32.
        let npf = NpfInfo((1 << 32) | (1 << 2) | (1 << 1));
        assert!(npf.write() && !npf.present() && npf.user() && npf.final_address());
        assert!(!npf.fetch() && !npf.guest_page_table());
        let walk = NpfInfo((1 << 33) | 0b111);
        assert!(walk.guest_page_table() && walk.present());
        assert!(format!("{walk}").contains("during the guest's page walk"));
        let ts = TaskSwitchInfo::decode(0x28, (1 << 44) | (1 << 38) | 0x10);
        assert_eq!(ts.selector, 0x28);
        assert_eq!(ts.source, TaskSwitchSource::Jmp);
        assert_eq!(ts.error_code, Some(0x10));
        assert_eq!(
            TaskSwitchInfo::decode(8, 1 << 36).source,
            TaskSwitchSource::Iret
        );
        assert!(msr_is_write(1) && !msr_is_write(0));
    }
}
