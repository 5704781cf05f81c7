//! DMA: bus masters write physical memory without the CPU, EPT or the hypervisor seeing it.
//! Bochs has no IOMMU, so a device is as good as its driver's physical addresses.
//!
//! The IDE bus master (PIIX3 00:01.1, its registers in BAR4; Intel 290562 5.2) moves data
//! between the drive and the regions its PRD table names. The boot CD is the primary master:
//! an ATAPI READ(10) of LBA 16 with DMA brings in the ISO 9660 primary volume descriptor
//! ("\x01CD001"). The attacks:
//! - `dma-prd-into-vigil`: a PRD entry naming Vigil's first page;
//! - `dma-prd-changed-after-start`: a table naming the guest's buffer A, rewritten to name
//!   Vigil (bare: buffer B) right after the engine starts — Bochs reads PRD entries as it goes;
//! - `dma-prd-table-in-vigil`: the table itself placed in Vigil's memory;
//! - `dma-bus-master-enable`: bus mastering turned on for every PCI function;
//! - `dma-uhci-schedule`: the USB host controller (UHCI, 00:01.2) run on a schedule in the
//!   guest's memory (Bochs walks it and writes transfer descriptors back whatever the
//!   bus-master enable says).
//!
//! Every IDE attack first reads the CD into the guest's own buffer (the control: mediated DMA
//! must still work under Vigil). Bare (no target) each attack aims at the guest's own memory and
//! must succeed: that proves the mechanism. Under Vigil the transfer aimed at Vigil must not
//! happen; the oracle compares Vigil's code with its ELF afterwards.

use super::io::*;
use guest_kit::{cpu, fail, pass, Outcome};

const TABLE: u64 = 0x80_0000;
const TABLE_B: u64 = 0x80_1000;
const BUF_A: u64 = 0x81_0000;
const BUF_B: u64 = 0x82_0000;
const FRAME_LIST: u64 = 0x83_0000;
const TD: u64 = 0x84_0000;
const SECTOR: u32 = 2048;
/// ISO 9660: the primary volume descriptor is at logical sector 16.
const PVD_LBA: u32 = 16;
const EOT: u32 = 1 << 31;

/// The primary channel's command block and control (the boot CD is its master).
const ATA_DATA: u16 = 0x1F0;
const ATA_FEATURES: u16 = 0x1F1;
const ATA_COUNT: u16 = 0x1F2;
const ATA_LBA_MID: u16 = 0x1F4;
const ATA_LBA_HIGH: u16 = 0x1F5;
const ATA_DEVICE: u16 = 0x1F6;
const ATA_COMMAND: u16 = 0x1F7;
const ATA_CONTROL: u16 = 0x3F6;
const BSY: u8 = 0x80;
const DRQ: u8 = 0x08;

fn ide() -> Option<(Bdf, u16)> {
    let f = IDE;
    if pci_read32(f, 0) & 0xFFFF != 0x8086 || pci_read32(f, 8) >> 16 != 0x0101 {
        return None;
    }
    let bar = pci_read32(f, 0x20);
    // I/O decoding and bus mastering on.
    let cmd = pci_read32(f, 4) & 0xFFFF;
    pci_write16(f, 4, (cmd | 5) as u16);
    (bar & 1 == 1).then_some((f, (bar & 0xFFF0) as u16))
}

fn tsc() -> u64 {
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Waits until `done(alternate status)` or `ticks` pass; the alternate status is not a port a
/// hypervisor needs, so polling it is cheap.
fn wait(ticks: u64, done: impl Fn(u8) -> bool) -> bool {
    let start = tsc();
    while tsc() - start < ticks {
        if done(unsafe { inb(ATA_CONTROL) }) {
            return true;
        }
    }
    false
}

/// A software reset of the primary channel (SRST), with its interrupt kept off (nIEN): after a
/// transfer that never ran, the drive waits for DMA until reset.
fn reset_channel() {
    unsafe {
        outb(ATA_CONTROL, 0x06);
        for _ in 0..1000 {
            inb(ATA_CONTROL);
        }
        outb(ATA_CONTROL, 0x02);
    }
    wait(50_000_000, |s| s & BSY == 0);
}

fn put_prd(table: u64, entries: &[(u64, u32)]) {
    for (i, &(addr, count)) in entries.iter().enumerate() {
        let eot = if i + 1 == entries.len() { EOT } else { 0 };
        write32(table + 8 * i as u64, addr as u32);
        write32(table + 8 * i as u64 + 4, count | eot);
    }
}

fn is_pvd(a: u64) -> bool {
    let bytes = unsafe { core::slice::from_raw_parts(a as *const u8, 6) };
    bytes == b"\x01CD001"
}

fn clear(a: u64) {
    unsafe { core::ptr::write_bytes(a as *mut u8, 0, SECTOR as usize) };
}

/// An ATAPI READ(10) of `lba` with DMA on the table at `table`; `between` runs right after the
/// engine starts. True if the command completed.
fn read_dma(bm: u16, table: u64, lba: u32, between: impl FnOnce()) -> bool {
    unsafe {
        outb(ATA_CONTROL, 0x02);
        if !wait(50_000_000, |s| s & BSY == 0) {
            reset_channel();
        }
        outb(ATA_DEVICE, 0xA0);
        for _ in 0..4 {
            inb(ATA_CONTROL);
        }
        // Bus master: stop, clear interrupt and error, table, direction (to memory).
        outb(bm, 0x00);
        outb(bm + 2, 0x06);
        outl(bm + 4, table as u32);
        outb(bm, 0x08);
        outb(ATA_FEATURES, 0x01);
        outb(ATA_COUNT, 0);
        outb(ATA_LBA_MID, (SECTOR & 0xFF) as u8);
        outb(ATA_LBA_HIGH, (SECTOR >> 8) as u8);
        outb(ATA_COMMAND, 0xA0);
        if !wait(50_000_000, |s| s & (BSY | DRQ) == DRQ) {
            reset_channel();
            return false;
        }
        let packet: [u8; 12] = [
            0x28,
            0,
            (lba >> 24) as u8,
            (lba >> 16) as u8,
            (lba >> 8) as u8,
            lba as u8,
            0,
            0,
            1,
            0,
            0,
            0,
        ];
        for w in packet.chunks(2) {
            outw(ATA_DATA, u16::from(w[0]) | u16::from(w[1]) << 8);
        }
        outb(bm, 0x09);
        between();
        let done = wait(200_000_000, |s| s & (BSY | DRQ) == 0);
        outb(bm, 0x08);
        outb(bm + 2, 0x06);
        if !done {
            reset_channel();
        }
        done
    }
}

/// The control: the CD's descriptor into the guest's own buffer, as any driver would; the
/// failure to report if it did not arrive.
fn control(bm: u16) -> Option<Outcome> {
    clear(BUF_A);
    put_prd(TABLE, &[(BUF_A, SECTOR)]);
    if !read_dma(bm, TABLE, PVD_LBA, || {}) || !is_pvd(BUF_A) {
        return Some(fail!("control-dma-failed buffer={:#x}", read32(BUF_A)));
    }
    None
}

pub fn prd_into_vigil() -> Outcome {
    let Some((_, bm)) = ide() else {
        return fail!("no-ide");
    };
    if let Some(o) = control(bm) {
        return o;
    }
    let t = find_targets();
    let mut refused = 0;
    for &(start, _) in t.ranges() {
        put_prd(TABLE, &[(BUF_B, 512), (start, SECTOR - 512)]);
        if read_dma(bm, TABLE, PVD_LBA, || {}) {
            return fail!("dma-completed-into-vigil target={:#x}", start);
        }
        refused += 1;
    }
    // Mediation did not break the device: the control again.
    if let Some(o) = control(bm) {
        return o;
    }
    pass!(
        "control=ok targets={} refused={}",
        t.ranges().len(),
        refused
    )
}

pub fn prd_changed_after_start() -> Outcome {
    let Some((_, bm)) = ide() else {
        return fail!("no-ide");
    };
    if let Some(o) = control(bm) {
        return o;
    }
    let t = find_targets();
    // Bare the rewritten entry names the guest's buffer B; under Vigil, Vigil's first page.
    let (target, defended) = match t.ranges().first() {
        Some(&(s, _)) => (s, true),
        None => (BUF_B, false),
    };
    clear(BUF_A);
    clear(BUF_B);
    put_prd(TABLE, &[(BUF_A, SECTOR)]);
    let done = read_dma(bm, TABLE, PVD_LBA, || put_prd(TABLE, &[(target, SECTOR)]));
    let (a, b) = (is_pvd(BUF_A), is_pvd(BUF_B));
    match (defended, done, a, b) {
        (true, true, true, false) => pass!("engine-used-the-checked-table=1 target={:#x}", target),
        (true, ..) => fail!(
            "changed-table-took-effect done={} buffer-a={} target={:#x}",
            done,
            a,
            target
        ),
        (false, true, false, true) => pass!("bare-engine-read-the-changed-table=1"),
        (false, ..) => fail!("bare-reference done={} a={} b={}", done, a, b),
    }
}

pub fn prd_table_in_vigil() -> Outcome {
    let Some((_, bm)) = ide() else {
        return fail!("no-ide");
    };
    if let Some(o) = control(bm) {
        return o;
    }
    let t = find_targets();
    let mut refused = 0;
    for &(start, _) in t.ranges() {
        // The table inside Vigil's first page: whatever Vigil's bytes say, as entries.
        if read_dma(bm, start + 0x100, PVD_LBA, || {}) {
            return fail!("dma-ran-on-a-table-in-vigil table={:#x}", start + 0x100);
        }
        refused += 1;
    }
    if t.is_empty() {
        // Bare: a table elsewhere in the guest's memory works as well.
        clear(BUF_B);
        put_prd(TABLE_B, &[(BUF_B, SECTOR)]);
        if !read_dma(bm, TABLE_B, PVD_LBA, || {}) || !is_pvd(BUF_B) {
            return fail!("bare-second-table-failed");
        }
    }
    pass!("targets={} refused={}", t.ranges().len(), refused)
}

/// Every function on bus 0: bus-master enable set, read back, put back. Under Vigil only the
/// IDE function (whose DMA is mediated) may keep it.
pub fn bus_master_enable() -> Outcome {
    let defended = !find_targets().is_empty();
    let mut took = [(0u8, 0u8); 16];
    let mut n = 0;
    let mut tried = 0;
    for dev in 0..32u8 {
        for func in 0..8u8 {
            let f = Bdf(0, dev, func);
            if pci_read32(f, 0) & 0xFFFF == 0xFFFF {
                if func == 0 {
                    break;
                }
                continue;
            }
            tried += 1;
            let cmd = (pci_read32(f, 4) & 0xFFFF) as u16;
            if cmd & 4 != 0 {
                continue;
            }
            pci_write16(f, 4, cmd | 4);
            let now = (pci_read32(f, 4) & 0xFFFF) as u16;
            pci_write16(f, 4, cmd);
            let is_ide = pci_read32(f, 8) >> 16 == 0x0101;
            if now & 4 != 0 && n < took.len() {
                took[n] = (dev, func);
                n += 1;
                if defended && !is_ide {
                    return fail!("bus-master-enabled dev={} func={}", dev, func);
                }
            }
        }
    }
    pass!(
        "functions={} bus-master-enable-took={} defended={}",
        tried,
        n,
        defended
    )
}

/// The UHCI host controller: a frame list whose every entry names one transfer descriptor in
/// the guest's memory, active. A controller that runs processes it and writes its status back
/// (active cleared); under Vigil its DMA is not mediated, so it must not run.
pub fn uhci_schedule() -> Outcome {
    let f = Bdf(0, 1, 2);
    if pci_read32(f, 0) != 0x7020_8086 {
        return pass!("no-uhci");
    }
    let defended = !find_targets().is_empty();
    let base = (pci_read32(f, 0x20) & 0xFFE0) as u16;
    let cmd = (pci_read32(f, 4) & 0xFFFF) as u16;
    pci_write16(f, 4, cmd | 5);
    // TD: link terminate; status active, 3 errors allowed; token IN to device 0 endpoint 0,
    // 8 bytes; buffer in the guest's memory (UHCI 1.1, 3.2).
    write32(TD, 1);
    write32(TD + 4, (1 << 23) | (3 << 27));
    write32(TD + 8, 0x69 | (7 << 21));
    write32(TD + 12, BUF_B as u32);
    for i in 0..1024 {
        write32(FRAME_LIST + 4 * i, TD as u32);
    }
    unsafe {
        outw(base, 0x0000);
        outl(base + 8, FRAME_LIST as u32);
        outw(base + 6, 0);
        outw(base, 0x0001);
    }
    let start = tsc();
    while tsc() - start < 100_000_000 && read32(TD + 4) & (1 << 23) != 0 {
        core::hint::spin_loop();
    }
    let running = unsafe { inw(base) } & 1 != 0;
    unsafe { outw(base, 0x0000) };
    pci_write16(f, 4, cmd);
    let processed = read32(TD + 4) & (1 << 23) == 0;
    let _ = cpu::cpuid(0, 0);
    match (defended, processed) {
        (true, false) => pass!("uhci-held=1 running={}", running),
        (true, true) => fail!("uhci-ran td-status={:#x}", read32(TD + 4)),
        (false, true) => pass!("bare-uhci-wrote-td status={:#x}", read32(TD + 4)),
        (false, false) => fail!("bare-uhci-did-not-run"),
    }
}
