//! The machine as Vigil itself uses it: boot, descriptor tables, ports, control registers.

pub mod ap_boot;
pub mod boot;
pub mod gdt;
pub mod idt;
pub mod lapic;
pub mod port;
pub mod regs;
pub mod safe;
