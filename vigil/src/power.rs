//! The end of a run: statistics, the closing line, and turning the machine off — or, when the
//! guest asked for a reset, resetting it with Vigil's memory scrubbed first.

use crate::arch::port::outb;
use crate::println;

/// How a run ended.
pub enum Outcome<'a> {
    Ok,
    /// The guest asked for a reset (or a sleep state Vigil cannot resume from): the run ends,
    /// and on real hardware the machine resets with Vigil's memory scrubbed.
    Reset,
    Failed(&'a str),
}

/// What the machine does after the closing line.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    PowerOff,
    Reset,
}

/// Prints the closing line and turns the machine off (or resets it). Never returns.
pub fn end_run(outcome: Outcome) -> ! {
    match outcome {
        Outcome::Ok | Outcome::Reset => println!("run ended: ok"),
        Outcome::Failed(why) => println!("run ended: failed: {why}"),
    }
    finish(if matches!(outcome, Outcome::Reset) {
        End::Reset
    } else {
        End::PowerOff
    })
}

pub fn power_off() -> ! {
    finish(End::PowerOff)
}

/// The one way every run Vigil ends itself leaves: in an emulator the shutdown port ends it
/// (the emulator-side oracle breaks here); on real hardware, where nothing answers that port,
/// the machine halts, or resets with Vigil's memory scrubbed.
#[inline(never)]
pub fn finish(end: End) -> ! {
    // Bochs' and QEMU's debug shutdown port: the bytes of "Shutdown" end the emulator.
    for b in b"Shutdown" {
        outb(0x8900, *b);
    }
    if end == End::Reset {
        // SAFETY: the run is over; nothing of Vigil is used again.
        unsafe { scrub_and_reset() }
    }
    loop {
        // SAFETY: halting with interrupts off stops this CPU for good.
        unsafe { core::arch::asm!("cli", "hlt") };
    }
}

/// Ends VMX operation: VMCLEAR of the current VMCS, then VMXOFF.
///
/// # Safety
/// In VMX operation, at the end of the run.
unsafe fn leave_vmx() {
    // SAFETY: the caller's.
    unsafe {
        let mut current = u64::MAX;
        core::arch::asm!("vmptrst [{}]", in(reg) &mut current, options(nostack));
        if current != u64::MAX {
            let _ = crate::intel::instr::vmclear(current);
        }
        core::arch::asm!("vmxoff", options(nostack));
    }
}

/// Where the scrub routine runs: conventional memory, guest RAM that no one needs any more (the
/// guest's run is over): the routine's copy at 0x7000, its page tables from 0x10000.
const SCRUB_AT: u64 = 0x7000;
const SCRUB_TABLES: u64 = 0x1_0000;

/// Zeroes all of Vigil's memory — image and pool: code, data, stacks, heap, VMCS and VMXON
/// regions, EPT tables, bitmaps, its own page tables — and resets the machine through the reset
/// control register (0xCF9, hard reset): firmware and the next OS then find no byte of Vigil.
/// The VMCS is cleared and VMX left first (under SVM, SVM turned off), so the processor writes
/// nothing back afterwards. The
/// routine runs from a copy outside Vigil's memory, on page tables outside it (an identity map
/// of the first 4 GiB), since it erases the code and tables it would otherwise run on, and it
/// uses registers only.
///
/// # Safety
/// The end of the run, after VMXON (or SVM's `amd::enable`): nothing of Vigil may be used
/// afterwards; no other CPU runs.
unsafe fn scrub_and_reset() -> ! {
    let (image, pool) = (crate::mem::image_range(), crate::mem::pool_range());
    if crate::amd::active() {
        // Under SVM the processor writes nothing back outside VMRUN and #VMEXIT: clearing
        // EFER.SVME is all that leaving takes (APM Vol. 2 15.4).
        crate::amd::disable();
    } else {
        // SAFETY: VMPTRST, VMCLEAR of the current VMCS and VMXOFF end VMX operation (SDM Vol.
        // 3C 25.11.3, 31.3); Vigil is in VMX operation whenever a guest could ask for a reset.
        unsafe { leave_vmx() };
    }
    let start = scrub_routine as *const () as usize;
    let len = scrub_routine_end as *const () as usize - start;
    // SAFETY: the identity map covers conventional memory, which is RAM no one uses now; the
    // new tables map the first 4 GiB with 2 MiB pages (present, writable, SDM Vol. 3A 5.5).
    unsafe {
        core::ptr::copy_nonoverlapping(start as *const u8, SCRUB_AT as *mut u8, len);
        let t = SCRUB_TABLES as *mut u64;
        core::ptr::write_bytes(t, 0, 6 * 512);
        t.write(SCRUB_TABLES + 0x1000 + 3);
        for i in 0..4u64 {
            t.add(512 + i as usize)
                .write(SCRUB_TABLES + 0x2000 + i * 0x1000 + 3);
        }
        for i in 0..2048u64 {
            t.add(1024 + i as usize).write((i << 21) | 0x83);
        }
        core::arch::asm!(
            "jmp {at}",
            at = in(reg) SCRUB_AT,
            in("r8") SCRUB_TABLES,
            in("rdi") image.0,
            in("rcx") image.1 - image.0,
            in("rsi") pool.0,
            in("rdx") pool.1 - pool.0,
            options(noreturn),
        )
    }
}

core::arch::global_asm!(
    ".section .text",
    ".global scrub_routine",
    ".global scrub_routine_end",
    // r8 = page tables outside Vigil's memory, rdi = image, rcx = its length, rsi = pool,
    // rdx = its length. The copy runs at an address both sets of tables map the same.
    "scrub_routine:",
    "    cli",
    "    mov cr3, r8",
    "    cld",
    "    xor eax, eax",
    "    rep stosb",
    "    mov rdi, rsi",
    "    mov rcx, rdx",
    "    rep stosb",
    "    wbinvd",
    // Reset control register: set the hard-reset type, then the reset bit (Intel 82801 and
    // PIIX datasheets, RST_CNT).
    "    mov dx, 0xCF9",
    "    mov al, 0x02",
    "    out dx, al",
    "    mov al, 0x06",
    "    out dx, al",
    "scrub_routine_halt:",
    "    hlt",
    "    jmp scrub_routine_halt",
    "scrub_routine_end:",
);

extern "C" {
    fn scrub_routine();
    fn scrub_routine_end();
}
