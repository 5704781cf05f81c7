//! 8259 PIC remap and 8254 PIT channel 0, used so a case can `sti; hlt` and be woken by IRQ0.
//!
//! The PIT runs in mode 0 ("interrupt on terminal count", Intel 8254 data sheet): one IRQ0 edge
//! per [`arm_oneshot`], nothing otherwise, so no timer interrupt is left pending to disturb other
//! cases. Only IRQ0 is unmasked.

use crate::cpu::{inb, outb, rdtsc, sti_hlt_cli};
use crate::interrupts::IRQ_BASE;
use core::sync::atomic::{AtomicU64, Ordering};

const PIC1_COMMAND: u16 = 0x20;
const PIC1_DATA: u16 = 0x21;
const PIC2_COMMAND: u16 = 0xA0;
const PIC2_DATA: u16 = 0xA1;
const PIC_EOI: u8 = 0x20;
/// OCW3 "read ISR" (8259A data sheet).
const PIC_READ_ISR: u8 = 0x0B;

const PIT_CHANNEL0: u16 = 0x40;
const PIT_CHANNEL2: u16 = 0x42;
const PIT_COMMAND: u16 = 0x43;
/// System control port B (PC/AT): bit 0 gates PIT channel 2, bit 1 connects its output to the
/// speaker, bit 5 reads channel 2's OUT.
const PORT_B: u16 = 0x61;
const PORT_B_GATE2: u8 = 1 << 0;
const PORT_B_SPEAKER: u8 = 1 << 1;
const PORT_B_OUT2: u8 = 1 << 5;
/// PIT input clock in Hz.
pub const PIT_HZ: u32 = 1_193_182;

static TICKS: AtomicU64 = AtomicU64::new(0);
static SPURIOUS: AtomicU64 = AtomicU64::new(0);

/// Port 0x80 (POST diagnostics) is the conventional I/O delay for old interrupt controllers.
fn io_wait() {
    unsafe { outb(0x80, 0) };
}

/// Stop the BIOS's periodic timer, remap the PICs to vectors 32–47 (the BIOS leaves IRQ0–7 on
/// vectors 8–15, which are exceptions in protected mode), mask everything but IRQ0, and drain
/// any interrupt the BIOS left pending, so that every IRQ0 counted later came from a one-shot.
pub fn init() {
    unsafe {
        // Mode 0 control word without a count: OUT goes low and the counter waits for a count
        // (8254 data sheet, mode 0), so channel 0 stays quiet until `arm_oneshot`.
        outb(PIT_COMMAND, 0x30);
        // ICW1: edge triggered, cascade, ICW4 follows.
        outb(PIC1_COMMAND, 0x11);
        io_wait();
        outb(PIC2_COMMAND, 0x11);
        io_wait();
        // ICW2: vector bases.
        outb(PIC1_DATA, IRQ_BASE);
        io_wait();
        outb(PIC2_DATA, IRQ_BASE + 8);
        io_wait();
        // ICW3: slave on IRQ2 of the master.
        outb(PIC1_DATA, 0x04);
        io_wait();
        outb(PIC2_DATA, 0x02);
        io_wait();
        // ICW4: 8086 mode, normal EOI.
        outb(PIC1_DATA, 0x01);
        io_wait();
        outb(PIC2_DATA, 0x01);
        io_wait();
        // OCW1 masks: only IRQ0.
        outb(PIC1_DATA, 0xFE);
        outb(PIC2_DATA, 0xFF);
        // A pending interrupt is taken after the instruction following STI (SDM Vol. 2B, STI).
        core::arch::asm!("sti", "nop", "cli", options(nomem, nostack));
    }
    TICKS.store(0, Ordering::SeqCst);
    SPURIOUS.store(0, Ordering::SeqCst);
}

/// Start PIT channel 0 counting down from `count` in mode 0; IRQ0 fires once when it reaches 0.
/// Writing the control word drives OUT low, so each call produces a fresh rising edge.
pub fn arm_oneshot(count: u16) {
    unsafe {
        // Channel 0, access lobyte/hibyte, mode 0, binary.
        outb(PIT_COMMAND, 0x30);
        outb(PIT_CHANNEL0, count as u8);
        outb(PIT_CHANNEL0, (count >> 8) as u8);
    }
}

/// PIT counts for roughly `micros` microseconds (at most about 55 ms).
pub fn count_for_micros(micros: u32) -> u16 {
    let count = (u64::from(PIT_HZ) * u64::from(micros) / 1_000_000).clamp(1, 0xFFFF);
    count as u16
}

/// IRQ0 interrupts handled so far.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::SeqCst)
}

/// Spurious IRQ7/IRQ15 seen so far.
pub fn spurious() -> u64 {
    SPURIOUS.load(Ordering::SeqCst)
}

/// What a wait for the timer saw.
#[derive(Clone, Copy, Debug)]
pub struct Wake {
    /// Whether IRQ0 arrived.
    pub woke: bool,
    /// HLT instructions executed until it did.
    pub hlts: u32,
    /// TSC ticks from arming to waking.
    pub tsc_delta: u64,
}

/// Arm a one-shot of `micros` and halt until IRQ0 has been handled, at most `max_hlts` times
/// (another interrupt could end a HLT early; none is unmasked, but a broken hypervisor could
/// inject one).
pub fn hlt_until_tick(micros: u32, max_hlts: u32) -> Wake {
    let before = ticks();
    let start = rdtsc();
    arm_oneshot(count_for_micros(micros));
    let mut hlts = 0;
    while ticks() == before && hlts < max_hlts {
        sti_hlt_cli();
        hlts += 1;
    }
    Wake {
        woke: ticks() != before,
        hlts,
        tsc_delta: rdtsc().wrapping_sub(start),
    }
}

/// Called from the interrupt dispatcher for vectors 32–47.
pub(crate) fn irq(line: u8) {
    // IRQ7 and IRQ15 may be spurious: then the in-service bit is clear and no EOI is owed to that
    // PIC (8259A data sheet; a spurious IRQ15 still owes the master its cascade EOI).
    if line == 7 || line == 15 {
        let command = if line == 7 {
            PIC1_COMMAND
        } else {
            PIC2_COMMAND
        };
        let isr = unsafe {
            outb(command, PIC_READ_ISR);
            inb(command)
        };
        if isr & 0x80 == 0 {
            SPURIOUS.fetch_add(1, Ordering::SeqCst);
            if line == 15 {
                unsafe { outb(PIC1_COMMAND, PIC_EOI) };
            }
            return;
        }
    }
    if line == 0 {
        TICKS.fetch_add(1, Ordering::SeqCst);
    }
    unsafe {
        if line >= 8 {
            outb(PIC2_COMMAND, PIC_EOI);
        }
        outb(PIC1_COMMAND, PIC_EOI);
    }
}

/// One timing of PIT channel 2 against the TSC.
#[derive(Clone, Copy, Debug)]
pub struct Channel2Timing {
    /// TSC ticks from loading the count to seeing OUT2 high.
    pub tsc_delta: u64,
    /// Reads of port 0x61 until then.
    pub polls: u64,
}

/// Count `count` PIT input clocks on channel 2 in mode 0 and time them with the TSC, polling
/// OUT2 through port 0x61 with interrupts left as they are; `None` if OUT2 is still low after
/// `max_polls` reads.
///
/// Channel 2 rather than channel 0: it raises no interrupt and channel 0 stays quiet for the
/// other cases. Polling rather than interrupts: the measurement then takes no VM exit under a
/// hypervisor that does not trap the PIT, so bare and virtualized runs do the same thing. In mode
/// 0 OUT goes low when the control word is written and high when the count reaches 0; with the
/// gate high the count is loaded on the next CLK and counts one per CLK (8254 data sheet,
/// mode 0), so the delta covers `count` (+1 for the load) input clocks.
pub fn time_channel2(count: u16, max_polls: u64) -> Option<Channel2Timing> {
    unsafe {
        let saved = inb(PORT_B);
        // Gate high, speaker off: counting is not paused and nothing is heard.
        outb(PORT_B, (saved & !PORT_B_SPEAKER) | PORT_B_GATE2);
        // Channel 2, access lobyte/hibyte, mode 0, binary.
        outb(PIT_COMMAND, 0xB0);
        outb(PIT_CHANNEL2, count as u8);
        outb(PIT_CHANNEL2, (count >> 8) as u8);
        let start = rdtsc();
        let mut polls = 0;
        let mut high = false;
        while polls < max_polls {
            polls += 1;
            if inb(PORT_B) & PORT_B_OUT2 != 0 {
                high = true;
                break;
            }
        }
        let end = rdtsc();
        // Back to how the firmware left it (only bits 3:0 are writable).
        outb(PORT_B, saved & 0x0F);
        high.then_some(Channel2Timing {
            tsc_delta: end.wrapping_sub(start),
            polls,
        })
    }
}
