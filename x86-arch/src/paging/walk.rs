//! The walk itself, one function per paging mode's table layout.

use super::PhysRead;
use super::{Access, FaultReason, GuestTranslation, PageFault, PagingMode, PagingRegs};
use crate::regs::{CR0_WP, CR4_PSE, CR4_SMEP};

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PS: u64 = 1 << 7;
const G: u64 = 1 << 8;
const XD: u64 = 1 << 63;

/// Permissions gathered along a walk.
struct Acc {
    writable: bool,
    user: bool,
    executable: bool,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            writable: true,
            user: true,
            executable: true,
        }
    }
    fn add(&mut self, e: u64, nxe: bool) {
        self.writable &= e & RW != 0;
        self.user &= e & US != 0;
        if nxe && e & XD != 0 {
            self.executable = false;
        }
    }
}

/// Translates `gva` as the guest would for `access`.
pub fn translate(
    mem: &dyn PhysRead,
    regs: &PagingRegs,
    gva: u64,
    access: Access,
) -> Result<GuestTranslation, PageFault> {
    let id_applies = regs.nxe() || regs.cr4 & CR4_SMEP != 0;
    let fault = |reason, level, entry| PageFault {
        reason,
        level,
        entry,
        access,
        id_applies,
    };
    match regs.mode() {
        PagingMode::Off => Ok(GuestTranslation {
            gpa: gva & 0xffff_ffff,
            level: 0,
            page_size: 4096,
            writable: true,
            user: true,
            executable: true,
            global: false,
        }),
        PagingMode::Bits32 => walk32(mem, regs, gva & 0xffff_ffff, access, &fault),
        mode => walk_pae_family(mem, regs, mode, gva, access, &fault),
    }
}

type MakeFault<'a> = &'a dyn Fn(FaultReason, u8, u64) -> PageFault;

/// The leaf a walk ended at.
struct Leaf {
    gpa: u64,
    level: u8,
    size: u64,
    entry: u64,
}

/// Checks the permissions of a completed walk (SDM Vol. 3A 4.6).
fn finish(
    regs: &PagingRegs,
    access: Access,
    acc: Acc,
    leaf: Leaf,
    fault: MakeFault,
) -> Result<GuestTranslation, PageFault> {
    let reason = if access.user && !acc.user {
        Some(FaultReason::UserAccessToSupervisor)
    } else if access.write && !acc.writable && (access.user || regs.cr0 & CR0_WP != 0) {
        Some(FaultReason::WriteProtected)
    } else if access.fetch && !acc.executable {
        Some(FaultReason::NoExecute)
    } else if access.fetch && !access.user && acc.user && regs.cr4 & CR4_SMEP != 0 {
        Some(FaultReason::Smep)
    } else {
        None
    };
    if let Some(r) = reason {
        return Err(fault(r, leaf.level, leaf.entry));
    }
    Ok(GuestTranslation {
        gpa: leaf.gpa,
        level: leaf.level,
        page_size: leaf.size,
        writable: acc.writable,
        user: acc.user,
        executable: acc.executable,
        global: leaf.entry & G != 0,
    })
}

/// 32-bit paging (SDM Vol. 3A 4.3): a page directory and page tables of 4-byte entries; with
/// CR4.PSE a PDE may map a 4 MiB page whose address bits 39:32 come from PDE bits 20:13.
fn walk32(
    mem: &dyn PhysRead,
    regs: &PagingRegs,
    gva: u64,
    access: Access,
    fault: MakeFault,
) -> Result<GuestTranslation, PageFault> {
    let read = |gpa: u64| {
        mem.read_u32(gpa)
            .map(u64::from)
            .ok_or(fault(FaultReason::Unreadable { gpa }, 0, 0))
    };
    let mut acc = Acc::new();
    let pde_at = (regs.cr3 & 0xffff_f000) + ((gva >> 22) & 0x3ff) * 4;
    let pde = read(pde_at)?;
    if pde & P == 0 {
        return Err(fault(FaultReason::NotPresent, 2, pde));
    }
    acc.add(pde, false);
    if pde & PS != 0 && regs.cr4 & CR4_PSE != 0 {
        // Bit 21 is reserved, as are the PSE-36 bits beyond MAXPHYADDR (at most 40 bits).
        let high = (pde >> 13) & 0xff;
        let width = regs.phys_addr_width.min(40) as u64;
        if pde & (1 << 21) != 0 || high >> (width - 32) != 0 {
            return Err(fault(FaultReason::ReservedBit, 2, pde));
        }
        let base = (pde & 0xffc0_0000) | (high << 32);
        return finish(
            regs,
            access,
            acc,
            Leaf {
                gpa: base | (gva & 0x3f_ffff),
                level: 2,
                size: 4 << 20,
                entry: pde,
            },
            fault,
        );
    }
    let pte_at = (pde & 0xffff_f000) + ((gva >> 12) & 0x3ff) * 4;
    let pte = read(pte_at)?;
    if pte & P == 0 {
        return Err(fault(FaultReason::NotPresent, 1, pte));
    }
    acc.add(pte, false);
    finish(
        regs,
        access,
        acc,
        Leaf {
            gpa: (pte & 0xffff_f000) | (gva & 0xfff),
            level: 1,
            size: 4096,
            entry: pte,
        },
        fault,
    )
}

/// PAE, 4-level and 5-level paging (SDM Vol. 3A 4.4, 4.5): 8-byte entries, 512 per table.
fn walk_pae_family(
    mem: &dyn PhysRead,
    regs: &PagingRegs,
    mode: PagingMode,
    gva: u64,
    access: Access,
    fault: MakeFault,
) -> Result<GuestTranslation, PageFault> {
    let width = regs.phys_addr_width.min(52) as u32;
    let addr_mask = ((1u64 << width) - 1) & !0xfff;
    let nxe = regs.nxe();
    // Bits 62:MAXPHYADDR, and XD without EFER.NXE, are reserved in every entry.
    let mut reserved = ((1u64 << 63) - 1) & !((1u64 << width) - 1);
    if !nxe {
        reserved |= XD;
    }
    let read = |gpa: u64| {
        mem.read_u64(gpa)
            .ok_or(fault(FaultReason::Unreadable { gpa }, 0, 0))
    };
    let mut acc = Acc::new();

    let (mut table, top) = match mode {
        PagingMode::Pae => {
            // The PDPTE comes from the 32-byte table at CR3[31:5]; its reserved bits are 2:1
            // and 8:5 besides the address bits, and it carries no permissions.
            let gva = gva & 0xffff_ffff;
            let pdpte = read((regs.cr3 & 0xffff_ffe0) + ((gva >> 30) & 3) * 8)?;
            if pdpte & P == 0 {
                return Err(fault(FaultReason::NotPresent, 3, pdpte));
            }
            if pdpte & (0x1e6 | XD | reserved) != 0 {
                return Err(fault(FaultReason::ReservedBit, 3, pdpte));
            }
            (pdpte & addr_mask, 2u8)
        }
        _ => {
            let bits = if mode == PagingMode::Level5 { 57 } else { 48 };
            if !crate::is_canonical(gva, bits) {
                return Err(fault(FaultReason::NonCanonical, 0, 0));
            }
            (
                regs.cr3 & addr_mask,
                if mode == PagingMode::Level5 { 5 } else { 4 },
            )
        }
    };
    let gva = if mode == PagingMode::Pae {
        gva & 0xffff_ffff
    } else {
        gva
    };

    for level in (1..=top).rev() {
        let shift = 12 + 9 * (level as u32 - 1);
        let e = read(table + ((gva >> shift) & 0x1ff) * 8)?;
        if e & P == 0 {
            return Err(fault(FaultReason::NotPresent, level, e));
        }
        let large = level > 1 && e & PS != 0;
        // PS is reserved in PML4Es and PML5Es; a large page's address bits below its size
        // (above bit 12, where PAT sits) are reserved.
        let page_size = 1u64 << shift;
        let bad_ps = large && level >= 4;
        let bad_low = large && level <= 3 && e & addr_mask & (page_size - 1) & !0x1fff != 0;
        if e & reserved != 0 || bad_ps || bad_low {
            return Err(fault(FaultReason::ReservedBit, level, e));
        }
        acc.add(e, nxe);
        if level == 1 || large {
            let base = e & addr_mask & !(page_size - 1);
            return finish(
                regs,
                access,
                acc,
                Leaf {
                    gpa: base | (gva & (page_size - 1)),
                    level,
                    size: page_size,
                    entry: e,
                },
                fault,
            );
        }
        table = e & addr_mask;
    }
    unreachable!("level 1 entries are always leaves")
}
