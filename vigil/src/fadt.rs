//! What the firmware's FADT says about the fixed hardware Vigil owns (ACPI 6.5 5.2.9, Table
//! 5.9): PM1a/PM1b control, the SMI command port with the ACPI enable and disable values, and
//! the reset register (5.2.3.2, Generic Address Structure). Every field is read only if the
//! table is long enough to hold it; the extended (64-bit, X_) blocks win where the table has
//! them and they are in I/O space.

use vigil_core::platform::pci::Bdf;
use vigil_core::platform::{Acpi, ResetRegister};

const SMI_CMD: usize = 48;
const ACPI_ENABLE: usize = 52;
const ACPI_DISABLE: usize = 53;
const PM1A_CNT_BLK: usize = 64;
const PM1B_CNT_BLK: usize = 68;
const FLAGS: usize = 112;
const RESET_REG: usize = 116;
const RESET_VALUE: usize = 128;
const X_PM1A_CNT_BLK: usize = 172;
const X_PM1B_CNT_BLK: usize = 184;
/// Flags bit 10: RESET_REG_SUP.
const RESET_REG_SUP: u32 = 1 << 10;
/// Generic Address Structure address spaces.
const SPACE_MEMORY: u8 = 0;
const SPACE_IO: u8 = 1;
const SPACE_PCI: u8 = 2;

fn u32_at(t: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(t.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(t: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(t.get(at..at + 8)?.try_into().ok()?))
}

/// A port from a 32-bit block field (0 = absent).
fn port(t: &[u8], at: usize) -> Option<u16> {
    u32_at(t, at)
        .filter(|&p| p != 0 && p <= 0xFFFF)
        .map(|p| p as u16)
}

/// A port from an extended Generic Address Structure in I/O space.
fn x_port(t: &[u8], at: usize) -> Option<u16> {
    let space = *t.get(at)?;
    let addr = u64_at(t, at + 4)?;
    (space == SPACE_IO && addr != 0 && addr <= 0xFFFF).then_some(addr as u16)
}

/// The facts of the FADT `table` (its whole bytes, header included).
pub fn parse(t: &[u8]) -> Acpi {
    let mut acpi = Acpi {
        pm1a_control: x_port(t, X_PM1A_CNT_BLK).or_else(|| port(t, PM1A_CNT_BLK)),
        pm1b_control: x_port(t, X_PM1B_CNT_BLK).or_else(|| port(t, PM1B_CNT_BLK)),
        smi_command: port(t, SMI_CMD),
        acpi_enable: t.get(ACPI_ENABLE).copied().unwrap_or(0),
        acpi_disable: t.get(ACPI_DISABLE).copied().unwrap_or(0),
        reset: None,
    };
    let supported = u32_at(t, FLAGS).is_some_and(|f| f & RESET_REG_SUP != 0);
    if let (true, Some(&space), Some(addr), Some(&value)) = (
        supported,
        t.get(RESET_REG),
        u64_at(t, RESET_REG + 4),
        t.get(RESET_VALUE),
    ) {
        acpi.reset = match space {
            SPACE_IO if addr != 0 && addr <= 0xFFFF => Some(ResetRegister::Io {
                port: addr as u16,
                value,
            }),
            // Bus 0 of segment 0: device in bits 47:32, function in 31:16, offset in 15:0.
            SPACE_PCI => Some(ResetRegister::Pci {
                bdf: Bdf::new(0, (addr >> 32) as u8, (addr >> 16) as u8),
                reg: addr as u8,
                value,
            }),
            SPACE_MEMORY if addr != 0 => Some(ResetRegister::Memory {
                address: addr,
                value,
            }),
            _ => None,
        };
    }
    acpi
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FADT of `len` bytes as Bochs' BIOS writes it (revision 1: PM block at 0xB000, SMI
    /// command 0xB2, enable 0xF1, disable 0xF0).
    fn bochs(len: usize) -> Vec<u8> {
        let mut t = vec![0u8; len.max(116)];
        t[..4].copy_from_slice(b"FACP");
        t[SMI_CMD..SMI_CMD + 4].copy_from_slice(&0xB2u32.to_le_bytes());
        t[ACPI_ENABLE] = 0xF1;
        t[ACPI_DISABLE] = 0xF0;
        t[PM1A_CNT_BLK..PM1A_CNT_BLK + 4].copy_from_slice(&0xB004u32.to_le_bytes());
        t.truncate(len);
        t
    }

    #[test]
    fn a_revision_1_table_gives_pm1a_and_the_smi_command() {
        let a = parse(&bochs(116));
        assert_eq!(a.pm1a_control, Some(0xB004));
        assert_eq!(a.pm1b_control, None);
        assert_eq!(a.smi_command, Some(0xB2));
        assert_eq!((a.acpi_enable, a.acpi_disable), (0xF1, 0xF0));
        assert_eq!(a.reset, None);
    }

    #[test]
    fn the_reset_register_in_each_address_space() {
        let mut t = bochs(244);
        t[FLAGS..FLAGS + 4].copy_from_slice(&RESET_REG_SUP.to_le_bytes());
        t[RESET_REG] = SPACE_IO;
        t[RESET_REG + 4..RESET_REG + 12].copy_from_slice(&0xCF9u64.to_le_bytes());
        t[RESET_VALUE] = 0x06;
        assert_eq!(
            parse(&t).reset,
            Some(ResetRegister::Io {
                port: 0xCF9,
                value: 0x06
            })
        );
        t[RESET_REG] = SPACE_PCI;
        t[RESET_REG + 4..RESET_REG + 12].copy_from_slice(&0x1F_0000_004Cu64.to_le_bytes());
        assert_eq!(
            parse(&t).reset,
            Some(ResetRegister::Pci {
                bdf: Bdf::new(0, 0x1F, 0),
                reg: 0x4C,
                value: 0x06
            })
        );
        // Without RESET_REG_SUP the register is not there.
        t[FLAGS..FLAGS + 4].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(parse(&t).reset, None);
    }

    #[test]
    fn extended_blocks_in_io_space_win() {
        let mut t = bochs(244);
        t[X_PM1A_CNT_BLK] = SPACE_IO;
        t[X_PM1A_CNT_BLK + 4..X_PM1A_CNT_BLK + 12].copy_from_slice(&0x1804u64.to_le_bytes());
        t[X_PM1B_CNT_BLK] = SPACE_IO;
        t[X_PM1B_CNT_BLK + 4..X_PM1B_CNT_BLK + 12].copy_from_slice(&0x1844u64.to_le_bytes());
        let a = parse(&t);
        assert_eq!(
            (a.pm1a_control, a.pm1b_control),
            (Some(0x1804), Some(0x1844))
        );
    }

    #[test]
    fn a_truncated_table_gives_what_it_holds() {
        let a = parse(&bochs(60));
        assert_eq!(a.smi_command, Some(0xB2));
        assert_eq!(a.pm1a_control, None);
        assert_eq!(parse(&[]), Acpi::default());
    }
}
