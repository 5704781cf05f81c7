//! The transparency suite: every case passes bare and under Vigil; Vigil-specific cases skip
//! when bare. Select cases with `case=NAME[,NAME...]` on the command line (default: all).
//!
//! To add a case, write a `fn() -> Outcome` and add a line to [`CASES`].

#![no_std]
#![no_main]

use core::arch::asm;
use guest_kit::cpu::{self, IA32_TSC, IA32_TSC_AUX};
use guest_kit::fault::{self, Caught};
use guest_kit::hypercall::{self, Regs, TscMode, VigilRange};
use guest_kit::serial::{COM1, SCRATCH};
use guest_kit::{fail, harness, multiboot, pass, skip, timer, BootInfo, Case, Outcome};

guest_kit::entry!(main);

mod debug;
mod features;
mod memory;
mod realmode;
mod tasks;
mod time;

use debug::*;
use features::*;
use memory::*;
use realmode::*;
use tasks::*;
use time::*;

static CASES: &[Case] = &[
    Case::new("cpuid-basic", cpuid_basic),
    Case::new("cpuid-features", cpuid_features),
    Case::new("tsc-monotonic", tsc_monotonic),
    Case::new("rdtscp-aux", rdtscp_aux),
    Case::new("msr-tsc", msr_tsc),
    Case::new("hlt-wakes", hlt_wakes),
    Case::new("io-scratch", io_scratch),
    Case::new("io-string", io_string),
    Case::new("io-string-devices", io_string_devices),
    Case::new("single-step", single_step),
    Case::new("task-switch", task_switches),
    Case::new("multiboot-mmap", multiboot_mmap),
    Case::new("vmcall-ud", vmcall_ud),
    Case::new("tsc-offset", tsc_offset),
    Case::new("tsc-monotonic-exits", tsc_monotonic_exits),
    Case::new("pafish", pafish),
    Case::new("tsc-rate", tsc_rate),
    Case::new("tsc-hold", tsc_hold),
    Case::new("tsc-offset-exact", tsc_offset_exact),
    Case::new("tsc-deadline", tsc_deadline),
    Case::new("tsc-deadline-past", tsc_deadline_past),
    Case::new("tsc-adjust", tsc_adjust),
    Case::new("isolation", isolation),
    Case::new("modules", modules),
    Case::new("high-mmio", high_mmio),
    Case::explicit("real-mode", real_mode),
];

fn main(boot: &'static BootInfo) -> ! {
    harness::run(CASES, boot)
}

/// CPUID leaf 0 names a vendor and a maximum leaf >= 1, and leaf 1 reads the same twice.
fn cpuid_basic() -> Outcome {
    let leaf0 = cpu::cpuid(0, 0);
    let vendor = cpu::vendor(&leaf0);
    let Ok(vendor) = core::str::from_utf8(&vendor) else {
        return fail!(
            "vendor-not-ascii ebx={:#x} edx={:#x} ecx={:#x}",
            leaf0.ebx,
            leaf0.edx,
            leaf0.ecx
        );
    };
    if vendor.trim_matches('\0').trim().is_empty()
        || !vendor.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return fail!(
            "vendor-invalid ebx={:#x} edx={:#x} ecx={:#x}",
            leaf0.ebx,
            leaf0.edx,
            leaf0.ecx
        );
    }
    if leaf0.eax < 1 {
        return fail!("no-leaf-1 max_leaf={:#x}", leaf0.eax);
    }
    let first = cpu::cpuid(1, 0);
    let second = cpu::cpuid(1, 0);
    if first != second {
        return fail!(
            "leaf1-differs first={:#x}/{:#x}/{:#x}/{:#x} second={:#x}/{:#x}/{:#x}/{:#x}",
            first.eax,
            first.ebx,
            first.ecx,
            first.edx,
            second.eax,
            second.ebx,
            second.ecx,
            second.edx
        );
    }
    pass!(
        "vendor={} max_leaf={:#x} leaf1_eax={:#x}",
        vendor,
        leaf0.eax,
        first.eax
    )
}

/// A one-shot PIT interrupt wakes `sti; hlt`. Bare, one HLT is enough; `hlts` shows a
/// hypervisor whose HLT returns before the interrupt (the bound only keeps such a one from
/// looping forever; one whose HLT never returns shows up as a run timeout).
fn hlt_wakes() -> Outcome {
    let wake = timer::hlt_until_tick(1000, 100_000);
    if !wake.woke {
        return fail!(
            "no-timer-interrupt hlts={} tsc_delta={}",
            wake.hlts,
            wake.tsc_delta
        );
    }
    pass!("hlts={} tsc_delta={}", wake.hlts, wake.tsc_delta)
}

/// Port 0x80 accepts a write, and COM1's scratch register keeps what was written to it.
fn io_scratch() -> Outcome {
    let port = COM1 + SCRATCH;
    unsafe {
        cpu::outb(0x80, 0x42);
        let original = cpu::inb(port);
        for pattern in [0x5A_u8, 0xA5, 0x00, 0xFF] {
            cpu::outb(port, pattern);
            let read = cpu::inb(port);
            if read != pattern {
                cpu::outb(port, original);
                return fail!(
                    "scratch-mismatch port={:#x} wrote={:#x} read={:#x}",
                    port,
                    pattern,
                    read
                );
            }
        }
        cpu::outb(port, original);
    }
    pass!("port={:#x} patterns=4", port)
}

/// REP OUTSB and REP INSB through COM1's scratch register (SDM Vol. 2B OUTS/INS): the register
/// keeps the last byte written, so after `rep outsb` of a buffer it holds the buffer's last
/// byte, and `rep insb` of it fills memory with that byte. Also run backwards (DF = 1), where
/// RSI/RDI walk down. RSI, RDI and RCX must end where the instructions leave them.
fn io_string() -> Outcome {
    let port = COM1 + SCRATCH;
    let out: [u8; 5] = [0x11, 0x22, 0x33, 0x44, 0x5A];
    let mut back = [0u8; 8];
    let (rsi, rdi, rcx_out, rcx_in): (u64, u64, u64, u64);
    // SAFETY: the buffers are this function's; the port is COM1's scratch register.
    unsafe {
        let original = cpu::inb(port);
        core::arch::asm!(
            "cld",
            "rep outsb",
            "mov {rcx_out}, rcx",
            "mov rcx, 8",
            "rep insb",
            rcx_out = out(reg) rcx_out,
            inout("rsi") out.as_ptr() => rsi,
            inout("rdi") back.as_mut_ptr() => rdi,
            inout("rcx") out.len() => rcx_in,
            in("dx") port,
            options(nostack)
        );
        cpu::outb(port, original);
    }
    let ends_ok = rsi == out.as_ptr() as u64 + 5 && rdi == back.as_ptr() as u64 + 8;
    if !ends_ok || rcx_out != 0 || rcx_in != 0 || back != [0x5A; 8] {
        return fail!(
            "string-io rsi_off={} rdi_off={} rcx={}/{} back={:02x?}",
            rsi.wrapping_sub(out.as_ptr() as u64),
            rdi.wrapping_sub(back.as_ptr() as u64),
            rcx_out,
            rcx_in,
            back
        );
    }
    // Backwards: OUTSB from the last element down leaves the first element in the register.
    let mut back2 = [0u8; 3];
    let (rsi2, rdi2): (u64, u64);
    // SAFETY: as above; DF is cleared again before the block ends.
    unsafe {
        let original = cpu::inb(port);
        core::arch::asm!(
            "std",
            "mov rcx, 5",
            "rep outsb",
            "mov rcx, 3",
            "rep insb",
            "cld",
            inout("rsi") out.as_ptr().add(4) => rsi2,
            inout("rdi") back2.as_mut_ptr().add(2) => rdi2,
            out("rcx") _,
            in("dx") port,
            options(nostack)
        );
        cpu::outb(port, original);
    }
    if back2 != [0x11; 3]
        || rsi2 != (out.as_ptr() as u64).wrapping_sub(1)
        || rdi2 != (back2.as_ptr() as u64).wrapping_sub(1)
    {
        return fail!("string-io-backwards back={:02x?}", back2);
    }
    pass!("port={:#x} out=5 in=8 backwards=3", port)
}

/// REP INSB and REP OUTSB whose buffers are device memory, not RAM: the VGA window and the
/// VGA BIOS ROM. The processor moves the bytes to and from the device as for any memory (SDM
/// Vol. 2B INS/OUTS), so a hypervisor that emulates the instruction (a trapped port) must too.
/// INSB of COM1's scratch register into VGA memory must land there; OUTSB of the ROM's first
/// two bytes must send its 0x55, 0xAA signature (the last byte stays in the register); INSB
/// into the ROM must not fault, and the ROM keeps or takes the byte as a direct write would.
fn io_string_devices() -> Outcome {
    const PORT: u16 = COM1 + SCRATCH;
    // Off-screen text memory in the VGA window, and the VGA BIOS ROM.
    const VGA: u64 = 0xB_9000;
    const ROM: u64 = 0xC_0000;
    let rom_signature = unsafe { core::ptr::read_volatile(ROM as *const [u8; 2]) };
    if rom_signature != [0x55, 0xAA] {
        return skip!("no-vga-rom signature={:02x?}", rom_signature);
    }
    let original = unsafe { cpu::inb(PORT) };
    let vga_before = unsafe { core::ptr::read_volatile(VGA as *const [u8; 4]) };
    // SAFETY: the port is COM1's scratch register; the buffers are device memory the kit's
    // page tables map; everything is put back below.
    unsafe {
        cpu::outb(PORT, 0xC3);
        asm!("cld", "rep insb", inout("rdi") VGA => _, inout("rcx") 4u64 => _, in("dx") PORT, options(nostack));
    }
    let vga = unsafe { core::ptr::read_volatile(VGA as *const [u8; 4]) };
    unsafe { core::ptr::write_volatile(VGA as *mut [u8; 4], vga_before) };
    unsafe {
        asm!("cld", "rep outsb", inout("rsi") ROM => _, inout("rcx") 2u64 => _, in("dx") PORT, options(nostack));
    }
    let sent = unsafe { cpu::inb(PORT) };
    // INSB into the ROM's last byte (a checksum byte no one reads now), then a direct write of
    // the same value to the next-to-last: the two must fare alike.
    let rom_end = ROM + 0x7FFF;
    let (before, twin_before) = unsafe {
        (
            core::ptr::read_volatile(rom_end as *const u8),
            core::ptr::read_volatile((rom_end - 1) as *const u8),
        )
    };
    unsafe {
        cpu::outb(PORT, !before);
        asm!("insb", inout("rdi") rom_end => _, in("dx") PORT, options(nostack));
        core::ptr::write_volatile((rom_end - 1) as *mut u8, !twin_before);
    }
    let (after, twin_after) = unsafe {
        (
            core::ptr::read_volatile(rom_end as *const u8),
            core::ptr::read_volatile((rom_end - 1) as *const u8),
        )
    };
    unsafe {
        core::ptr::write_volatile(rom_end as *mut u8, before);
        core::ptr::write_volatile((rom_end - 1) as *mut u8, twin_before);
        cpu::outb(PORT, original);
    }
    if vga != [0xC3; 4] {
        return fail!("vga-insb read={:02x?}", vga);
    }
    if sent != 0xAA {
        return fail!("rom-outsb register={:#x}", sent);
    }
    let ins_kept = after != before;
    let direct_kept = twin_after != twin_before;
    if ins_kept != direct_kept {
        return fail!("rom-insb ins_kept={} direct_kept={}", ins_kept, direct_kept);
    }
    pass!(
        "vga=insb rom=outsb rom_write={}",
        if ins_kept { "kept" } else { "ignored" }
    )
}

unsafe extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// The loader's memory map exists and says the memory holding this image is available RAM.
fn multiboot_mmap() -> Outcome {
    let Some(boot) = guest_kit::boot_info() else {
        return fail!("no-boot-info");
    };
    let Some(map) = boot.memory_map() else {
        return fail!("no-memory-map flags={:#x}", boot.flags);
    };
    let start = core::ptr::addr_of!(__image_start) as u64;
    let end = core::ptr::addr_of!(__image_end) as u64;
    let (mut regions, mut available_kib, mut covered) = (0u32, 0u64, false);
    for region in map {
        regions += 1;
        if region.kind == multiboot::MEMORY_AVAILABLE {
            available_kib += region.length / 1024;
            covered |= region.base <= start && end <= region.end();
        }
    }
    if regions == 0 {
        return fail!("empty-memory-map");
    }
    if !covered {
        return fail!(
            "image-not-in-available-ram image={:#x}-{:#x} regions={}",
            start,
            end,
            regions
        );
    }
    pass!(
        "regions={} available_kib={} image={:#x}-{:#x}",
        regions,
        available_kib,
        start,
        end
    )
}

/// A VMCALL that is not a Vigil hypercall raises #UD, exactly as without a hypervisor (docs/
/// architecture.md, "Hypercall ABI"; SDM Vol. 3C, VMCALL: outside VMX operation it is #UD).
fn vmcall_ud() -> Outcome {
    match hypercall::vmcall(Regs {
        rax: 0,
        rbx: 0,
        rcx: 0,
        rdx: 0,
    }) {
        Err(Caught { vector, rip, .. }) if vector == fault::UD => pass!("rip={:#x}", rip),
        Err(c) => fail!("wrong-exception vector={}", c.vector),
        Ok(r) => fail!(
            "vmcall-returned rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x}",
            r.rax,
            r.rbx,
            r.rcx,
            r.rdx
        ),
    }
}
