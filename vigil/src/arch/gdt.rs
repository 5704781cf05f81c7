//! Vigil's own GDT and TSS, one pair per CPU. VM exits load the host selectors and the TR base
//! from the VMCS host-state area, so these must stay valid for the life of the CPU
//! (SDM Vol. 3C 28.5.2: host segment and descriptor-table registers are loaded on VM exit; VM
//! entry requires a non-null host TR, 27.2.3).

use core::arch::asm;
use core::mem::size_of;

pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_DS: u16 = 0x10;
pub const TSS_SEL: u16 = 0x18;

/// Interrupt-stack-table slot used for #DF, #NMI and #MC, so they run on a known-good stack even
/// when the current one is what failed.
pub const IST_FAULT: u8 = 1;
const FAULT_STACK_SIZE: usize = 16 * 1024;

/// The 64-bit TSS (SDM Vol. 3A 9.7). Packed: the RSP/IST fields are not naturally aligned.
#[repr(C, packed(4))]
#[derive(Default)]
pub struct Tss {
    _reserved0: u32,
    pub rsp: [u64; 3],
    _reserved1: u64,
    pub ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    pub iomap_base: u16,
}

#[repr(C, align(16))]
pub struct CpuTables {
    gdt: [u64; 5],
    pub tss: Tss,
    fault_stack: [u8; FAULT_STACK_SIZE],
}

impl CpuTables {
    pub const fn new() -> Self {
        Self {
            gdt: [0; 5],
            tss: Tss {
                _reserved0: 0,
                rsp: [0; 3],
                _reserved1: 0,
                ist: [0; 7],
                _reserved2: 0,
                _reserved3: 0,
                iomap_base: size_of::<Tss>() as u16,
            },
            fault_stack: [0; FAULT_STACK_SIZE],
        }
    }

    pub fn gdt_base(&self) -> u64 {
        self.gdt.as_ptr() as u64
    }

    pub fn tss_base(&self) -> u64 {
        core::ptr::addr_of!(self.tss) as u64
    }

    /// Builds the descriptors and loads GDTR, the segment registers and TR on this CPU.
    pub fn load(&'static mut self) {
        self.tss.ist[(IST_FAULT - 1) as usize] =
            self.fault_stack.as_ptr() as u64 + FAULT_STACK_SIZE as u64;
        let tss = self.tss_base();
        let limit = (size_of::<Tss>() - 1) as u64;
        // Accessed bits preset: the processor would set them on every load (SDM Vol. 3A
        // 3.4.5.1), so the descriptors never change after this.
        self.gdt[1] = 0x00AF_9B00_0000_FFFF; // 64-bit code, DPL 0
        self.gdt[2] = 0x00CF_9300_0000_FFFF; // data
                                             // 16-byte system descriptor, type 9 (available 64-bit TSS), SDM Vol. 3A 8.2.3.
        self.gdt[3] = (limit & 0xFFFF)
            | ((tss & 0xFF_FFFF) << 16)
            | (0x89 << 40)
            | (((limit >> 16) & 0xF) << 48)
            | (((tss >> 24) & 0xFF) << 56);
        self.gdt[4] = tss >> 32;

        #[repr(C, packed)]
        struct Pointer {
            limit: u16,
            base: u64,
        }
        let ptr = Pointer {
            limit: (size_of::<[u64; 5]>() - 1) as u16,
            base: self.gdt_base(),
        };
        // SAFETY: the GDT is 'static and holds the selectors loaded here; the far return reloads
        // CS with the 64-bit code segment at the same privilege level.
        unsafe {
            asm!(
                "lgdt [{ptr}]",
                "push {cs}",
                "lea {tmp}, [rip + 2f]",
                "push {tmp}",
                "retfq",
                "2:",
                "mov ds, {ds:x}",
                "mov es, {ds:x}",
                "mov ss, {ds:x}",
                "ltr {tr:x}",
                ptr = in(reg) &ptr,
                cs = in(reg) KERNEL_CS as u64,
                tmp = lateout(reg) _,
                ds = in(reg) KERNEL_DS as u64,
                tr = in(reg) TSS_SEL as u64,
            );
        }
    }
}
