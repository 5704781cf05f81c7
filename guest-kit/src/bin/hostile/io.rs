//! What every attack needs: port I/O of every width, PCI configuration through 0xCF8/0xCFC,
//! the keyboard controller and CMOS, physical memory access, and Vigil's ranges as an attacker
//! finds them — holes in the multiboot memory map that a probe confirms — with no hypercall.

use core::arch::asm;
use guest_kit::fault;

pub const PAGE: u64 = 4096;
pub const MIB: u64 = 1 << 20;

pub unsafe fn outb(port: u16, v: u8) {
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    }
}
pub unsafe fn outw(port: u16, v: u16) {
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") v, options(nomem, nostack, preserves_flags))
    }
}
pub unsafe fn outl(port: u16, v: u32) {
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags))
    }
}
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    };
    v
}
pub unsafe fn inw(port: u16) -> u16 {
    let v: u16;
    unsafe {
        asm!("in ax, dx", in("dx") port, out("ax") v, options(nomem, nostack, preserves_flags))
    };
    v
}
pub unsafe fn inl(port: u16) -> u32 {
    let v: u32;
    unsafe {
        asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// A PCI function by bus/device/function.
#[derive(Clone, Copy)]
pub struct Bdf(pub u8, pub u8, pub u8);

/// The i440FX host bridge, the PIIX3 PCI-to-ISA bridge, its IDE function and the PIIX4 power
/// management function of Bochs' default machine.
pub const HOST_BRIDGE: Bdf = Bdf(0, 0, 0);
pub const IDE: Bdf = Bdf(0, 1, 1);
pub const PM: Bdf = Bdf(0, 1, 3);

fn address(f: Bdf, reg: u8) -> u32 {
    0x8000_0000
        | (u32::from(f.0) << 16)
        | (u32::from(f.1) << 11)
        | (u32::from(f.2) << 8)
        | u32::from(reg & 0xFC)
}

/// Configuration mechanism #1 (PCI Local Bus Specification 3.0, 3.2.2.3.2): the dword address
/// at 0xCF8, the data at 0xCFC + (register & 3) with the access's own width.
pub fn pci_read32(f: Bdf, reg: u8) -> u32 {
    unsafe {
        outl(0xCF8, address(f, reg));
        inl(0xCFC)
    }
}
pub fn pci_read8(f: Bdf, reg: u8) -> u8 {
    unsafe {
        outl(0xCF8, address(f, reg));
        inb(0xCFC + u16::from(reg & 3))
    }
}
pub fn pci_write32(f: Bdf, reg: u8, v: u32) {
    unsafe {
        outl(0xCF8, address(f, reg));
        outl(0xCFC, v);
    }
}
pub fn pci_write16(f: Bdf, reg: u8, v: u16) {
    unsafe {
        outl(0xCF8, address(f, reg));
        outw(0xCFC + u16::from(reg & 2), v);
    }
}
pub fn pci_write8(f: Bdf, reg: u8, v: u8) {
    unsafe {
        outl(0xCF8, address(f, reg));
        outb(0xCFC + u16::from(reg & 3), v);
    }
}

/// The 8042's input buffer is empty: the next command or data byte may be written.
pub fn kbc_wait_input() {
    for _ in 0..100_000 {
        if unsafe { inb(0x64) } & 2 == 0 {
            return;
        }
    }
}
/// The 8042's output buffer is full: port 0x60 has a byte.
pub fn kbc_wait_output() -> bool {
    for _ in 0..100_000 {
        if unsafe { inb(0x64) } & 1 != 0 {
            return true;
        }
    }
    false
}
pub fn kbc_command(cmd: u8) {
    kbc_wait_input();
    unsafe { outb(0x64, cmd) };
}
pub fn kbc_data(v: u8) {
    kbc_wait_input();
    unsafe { outb(0x60, v) };
}
/// Command 0xD0: read the controller's output port (bit 0: reset line, bit 1: A20 gate).
pub fn kbc_read_output_port() -> Option<u8> {
    kbc_command(0xD0);
    kbc_wait_output().then(|| unsafe { inb(0x60) })
}

pub fn cmos_write(reg: u8, v: u8) {
    unsafe {
        outb(0x70, reg | 0x80);
        outb(0x71, v);
    }
}
pub fn read64(a: u64) -> u64 {
    unsafe { (a as *const u64).read_volatile() }
}
pub fn write64(a: u64, v: u64) {
    unsafe { (a as *mut u64).write_volatile(v) }
}
pub fn read32(a: u64) -> u32 {
    unsafe { (a as *const u32).read_volatile() }
}
pub fn write32(a: u64, v: u32) {
    unsafe { (a as *mut u32).write_volatile(v) }
}

/// Ranges of physical memory the attacker believes are the hypervisor's.
pub struct Targets {
    ranges: [(u64, u64); 8],
    count: usize,
    /// Usable RAM regions above 1 MiB (for "is X guest RAM").
    ram: [(u64, u64); 16],
    ram_count: usize,
}

impl Targets {
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges[..self.count]
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether [a, a+len) lies in RAM the memory map offers.
    pub fn is_ram(&self, a: u64, len: u64) -> bool {
        self.ram[..self.ram_count]
            .iter()
            .any(|&(s, e)| s <= a && a + len <= e)
    }
}

/// The most pages probed per reserved region: firmware reserves large windows (the BIOS ROM at
/// the top of 4 GiB) that read fine anyway.
const MAX_PROBED_PAGES: u64 = 16 * 1024;

/// Vigil's ranges as the guest can find them: memory its map does not offer as usable (a gap
/// between two usable regions, or a reserved region) above 1 MiB and below 4 GiB, where a read
/// faults — firmware-reserved memory reads, so only memory taken away from the guest faults.
/// Each maximal run of faulting pages is one range.
pub fn find_targets() -> Targets {
    let mut t = Targets {
        ranges: [(0, 0); 8],
        count: 0,
        ram: [(0, 0); 16],
        ram_count: 0,
    };
    let Some(map) = guest_kit::boot_info().and_then(|b| b.memory_map()) else {
        return t;
    };
    let mut candidates = [(0u64, 0u64); 16];
    let mut n = 0;
    for r in map {
        if r.available() {
            if r.end() > MIB && t.ram_count < t.ram.len() {
                t.ram[t.ram_count] = (r.base.max(MIB), r.end());
                t.ram_count += 1;
            }
        } else if r.end() > MIB && r.base < 1 << 32 && n < candidates.len() {
            candidates[n] = (r.base.max(MIB), r.end().min(1 << 32));
            n += 1;
        }
    }
    let ram = &mut t.ram[..t.ram_count];
    ram.sort_unstable();
    // Gaps between usable regions count as unlisted memory.
    for i in 1..t.ram_count {
        let (gap_start, gap_end) = (t.ram[i - 1].1, t.ram[i].0);
        if gap_end > gap_start && n < candidates.len() {
            candidates[n] = (gap_start, gap_end);
            n += 1;
        }
    }
    for &(start, end) in &candidates[..n] {
        let first = (start + PAGE - 1) & !(PAGE - 1);
        let last = (end & !(PAGE - 1)).min(first + MAX_PROBED_PAGES * PAGE);
        let mut run: Option<u64> = None;
        let mut page = first;
        while page <= last {
            let faults = page < last && fault::try_read_u64(page).is_err();
            match (faults, run) {
                (true, None) => run = Some(page),
                (false, Some(s)) => {
                    if t.count < t.ranges.len() && !t.ranges().iter().any(|r| r.0 == s) {
                        t.ranges[t.count] = (s, page);
                        t.count += 1;
                    }
                    run = None;
                }
                _ => {}
            }
            page += PAGE;
        }
    }
    t.ranges[..t.count].sort_unstable();
    t
}

/// Serial ports the BIOS found at power-on (the BIOS data area's COM table, 0x400) that no
/// longer answer: a UART whose scratch register does not keep a value is not the guest's.
/// These are the ports the attacker concludes the hypervisor took.
pub fn taken_uarts() -> ([u16; 4], usize) {
    let mut out = [0u16; 4];
    let mut n = 0;
    for i in 0..4u64 {
        let base = unsafe { ((0x400 + 2 * i) as *const u16).read_volatile() };
        if base == 0 || base == guest_kit::serial::COM1 {
            continue;
        }
        let answers = unsafe {
            outb(base + 7, 0xA5);
            let a = inb(base + 7) == 0xA5;
            outb(base + 7, 0x5A);
            a && inb(base + 7) == 0x5A
        };
        if !answers {
            out[n] = base;
            n += 1;
        }
    }
    (out, n)
}

/// The ACPI tables the firmware left: the RSDP in the BIOS area, the RSDT, and the table with
/// `signature` (ACPI 6.4, 5.2.5 and 5.2.7).
pub fn acpi_table(signature: &[u8; 4]) -> Option<u64> {
    let mut rsdp = None;
    let mut a = 0xE0000u64;
    while a < 0x100000 {
        if unsafe { core::slice::from_raw_parts(a as *const u8, 8) } == b"RSD PTR " {
            rsdp = Some(a);
            break;
        }
        a += 16;
    }
    let rsdt = u64::from(read32(rsdp? + 16));
    let len = read32(rsdt + 4);
    let entries = (len.saturating_sub(36)) / 4;
    (0..u64::from(entries))
        .map(|i| u64::from(read32(rsdt + 36 + 4 * i)))
        .find(|&t| unsafe { core::slice::from_raw_parts(t as *const u8, 4) } == signature)
}
