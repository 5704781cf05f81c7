//! The end of a run: statistics, the closing line, and powering the machine off.

use crate::arch::port::outb;
use crate::println;

/// How a run ended.
pub enum Outcome<'a> {
    Ok,
    Failed(&'a str),
}

/// Prints the closing line and turns the machine off. Never returns.
pub fn end_run(outcome: Outcome) -> ! {
    match outcome {
        Outcome::Ok => println!("run ended: ok"),
        Outcome::Failed(why) => println!("run ended: failed: {why}"),
    }
    power_off()
}

pub fn power_off() -> ! {
    // Bochs' and QEMU's debug shutdown port: the bytes of "Shutdown" end the emulator.
    for b in b"Shutdown" {
        outb(0x8900, *b);
    }
    loop {
        // SAFETY: halting with interrupts off stops this CPU for good.
        unsafe { core::arch::asm!("cli", "hlt") };
    }
}
