//! PCI configuration space through 0xCF8/0xCFC: the chipset's SMRAM register and the I/O
//! decoders a guest could move over a port Vigil keeps.
//!
//! What the attacker expects: when it found memory it cannot reach (Vigil's ranges), the
//! platform must be locked down — SMRAM locked (i440FX register 0x72 D_LCK, so D_OPEN cannot be
//! set) and no decoder movable onto a port the BIOS listed but that no longer answers (Vigil's
//! COM2). Bare, with nothing found, the writes take effect: that is the reference.

use super::io::*;
use guest_kit::{fail, pass, Outcome};

const SMRAM: u8 = 0x72;
const D_OPEN: u8 = 1 << 6;
const D_LCK: u8 = 1 << 4;

#[derive(Clone, Copy)]
pub enum Width {
    Byte,
    Word,
    Dword,
}

/// Set D_OPEN in the SMRAM register with an access of `width` (reaching register 0x72 as byte 2
/// of the dword at 0x70), read it back and restore it.
pub fn smram_open(width: Width) -> Outcome {
    let defended = !find_targets().is_empty();
    let dword = pci_read32(HOST_BRIDGE, 0x70);
    let old = pci_read8(HOST_BRIDGE, SMRAM);
    let new = old | D_OPEN;
    match width {
        Width::Byte => pci_write8(HOST_BRIDGE, SMRAM, new),
        Width::Word => pci_write16(
            HOST_BRIDGE,
            SMRAM,
            u16::from(new) | (u16::from(pci_read8(HOST_BRIDGE, 0x73)) << 8),
        ),
        Width::Dword => pci_write32(
            HOST_BRIDGE,
            0x70,
            (dword & !0x00FF_0000) | (u32::from(new) << 16),
        ),
    }
    let now = pci_read8(HOST_BRIDGE, SMRAM);
    pci_write8(HOST_BRIDGE, SMRAM, old & !D_OPEN);
    let opened = now & D_OPEN != 0;
    match (defended, opened) {
        (true, true) => fail!("smram-opened reg72={:#x} locked={}", now, old & D_LCK != 0),
        (false, false) if old & D_LCK == 0 => {
            fail!("smram-unlocked-but-not-opened reg72={:#x}", now)
        }
        _ => pass!("defended={} opened={} reg72={:#x}", defended, opened, now),
    }
}

/// Move an I/O decoder (a BAR or base register of `dev` at `reg`, `size` ports) onto every port
/// the attacker believes Vigil took, read it back, put it back.
pub fn move_decoder(dev: Bdf, reg: u8, size: u16, name: &str) -> Outcome {
    let (taken, n) = taken_uarts();
    let old = pci_read32(dev, reg);
    // A free range for the control move.
    let control = 0xD000u32 | 1;
    pci_write32(dev, reg, control);
    let control_now = pci_read32(dev, reg) & 0xFFFC;
    pci_write32(dev, reg, old);
    if control_now != 0xD000 {
        return fail!(
            "control-move-refused decoder={} read={:#x}",
            name,
            control_now
        );
    }
    for &port in &taken[..n] {
        let base = u32::from(port & !(size - 1));
        pci_write32(dev, reg, base | 1);
        let now = pci_read32(dev, reg) & 0xFFFC;
        pci_write32(dev, reg, old);
        if now == base {
            return fail!(
                "decoder-moved-over-vigil-port decoder={} port={:#x} base={:#x}",
                name,
                port,
                base
            );
        }
    }
    pass!("decoder={} taken-ports={} control=moved", name, n)
}
