use super::*;
use alloc::collections::BTreeMap;
use core::cell::RefCell;

/// Sparse guest-physical memory of 64 MiB; reads beyond it fail.
#[derive(Default)]
struct Mem(RefCell<BTreeMap<u64, u64>>);

impl Mem {
    fn w64(&self, gpa: u64, v: u64) {
        self.0.borrow_mut().insert(gpa, v);
    }
    fn w32(&self, gpa: u64, v: u32) {
        let q = self.read_u64(gpa & !7).unwrap_or(0);
        let shift = (gpa & 4) * 8;
        self.w64(
            gpa & !7,
            (q & !(0xffff_ffff << shift)) | ((v as u64) << shift),
        );
    }
}

impl PhysRead for Mem {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        (gpa < 64 << 20).then(|| self.0.borrow().get(&gpa).copied().unwrap_or(0))
    }
}

const P: u64 = 1;
const W: u64 = 2;
const U: u64 = 4;
const PS: u64 = 1 << 7;
const XD: u64 = 1 << 63;

fn regs(cr0: u64, cr4: u64, efer: u64, cr3: u64) -> PagingRegs {
    PagingRegs {
        cr0,
        cr3,
        cr4,
        efer,
        phys_addr_width: 40,
    }
}

const PG_PE_WP: u64 = CR0_PG | CR0_PE | CR0_WP;

#[test]
fn modes_follow_the_registers() {
    assert_eq!(regs(CR0_PE, 0, 0, 0).mode(), PagingMode::Off);
    assert_eq!(regs(PG_PE_WP, 0, 0, 0).mode(), PagingMode::Bits32);
    assert_eq!(regs(PG_PE_WP, CR4_PAE, 0, 0).mode(), PagingMode::Pae);
    assert_eq!(
        regs(PG_PE_WP, CR4_PAE, EFER_LME | EFER_LMA, 0).mode(),
        PagingMode::Level4
    );
    assert_eq!(
        regs(PG_PE_WP, CR4_PAE | CR4_LA57, EFER_LME | EFER_LMA, 0).mode(),
        PagingMode::Level5
    );
    let t = translate(
        &Mem::default(),
        &regs(CR0_PE, 0, 0, 0),
        0x1_2345_6789,
        Access::WRITE,
    )
    .unwrap();
    assert_eq!((t.gpa, t.level), (0x2345_6789, 0));
}

#[test]
fn bits32_4k_and_4m_pages() {
    let m = Mem::default();
    // PD at 0x1000; PDE 0 -> PT at 0x2000; PTE 5 -> 0x7000 (user, read-only).
    m.w32(0x1000, (0x2000 | P | W | U) as u32);
    m.w32(0x2000 + 5 * 4, (0x7000 | P | U) as u32);
    // PDE 1: 4 MiB page at 0x0040_0000 with PSE-36 bits 35:32 = 0x3; supervisor, writable.
    m.w32(0x1004, (0x0040_0000 | (3 << 13) | P | W | PS) as u32);
    let r = regs(PG_PE_WP, CR4_PSE, 0, 0x1000);

    let t = translate(&m, &r, 0x5abc, Access::READ.user()).unwrap();
    assert_eq!(
        (t.gpa, t.level, t.writable, t.user),
        (0x7abc, 1, false, true)
    );
    let t = translate(&m, &r, 0x41_2345, Access::WRITE).unwrap();
    assert_eq!((t.gpa, t.level, t.page_size), (0x3_0041_2345, 2, 4 << 20));

    // Without CR4.PSE the PS bit is ignored and the PDE points to a page table.
    let no_pse = regs(PG_PE_WP, 0, 0, 0x1000);
    let f = translate(&m, &no_pse, 0x41_2345, Access::READ).unwrap_err();
    assert_eq!(f.reason, FaultReason::NotPresent);

    // Supervisor write to a read-only page: allowed with CR0.WP clear, a fault with it set.
    let no_wp = regs(CR0_PG | CR0_PE, CR4_PSE, 0, 0x1000);
    assert!(translate(&m, &no_wp, 0x5000, Access::WRITE).is_ok());
    let f = translate(&m, &r, 0x5000, Access::WRITE).unwrap_err();
    assert_eq!(
        (f.reason, f.error_code()),
        (FaultReason::WriteProtected, 0b011)
    );
    // User access to the supervisor 4 MiB page.
    let f = translate(&m, &r, 0x40_0000, Access::READ.user()).unwrap_err();
    assert_eq!(
        (f.reason, f.error_code()),
        (FaultReason::UserAccessToSupervisor, 0b101)
    );
    // Not present: P clear in the error code.
    let f = translate(&m, &r, 0x6000, Access::WRITE.user()).unwrap_err();
    assert_eq!(
        (f.reason, f.level, f.error_code()),
        (FaultReason::NotPresent, 1, 0b110)
    );
    // Bit 21 of a 4 MiB PDE is reserved.
    m.w32(0x1008, (0x0080_0000 | (1 << 21) | P | PS) as u32);
    let f = translate(&m, &r, 0x80_0000, Access::READ).unwrap_err();
    assert_eq!(
        (f.reason, f.error_code()),
        (FaultReason::ReservedBit, 0b1001)
    );
}

#[test]
fn pae_with_nx() {
    let m = Mem::default();
    // PDPT at 0x1020 (32-byte aligned); PDPTE 1 -> PD at 0x3000.
    m.w64(0x1028, 0x3000 | P);
    // PDE 0 of PD: 2 MiB page at 0x60_0000, NX.
    m.w64(0x3000, 0x60_0000 | P | W | PS | XD);
    // PDE 1: PT at 0x4000, PTE 3 -> 0x9000.
    m.w64(0x3008, 0x4000 | P | W);
    m.w64(0x4018, 0x9000 | P | W);
    let r = regs(PG_PE_WP, CR4_PAE, EFER_NXE, 0x1020);

    let t = translate(&m, &r, 0x4000_1234, Access::READ).unwrap();
    assert_eq!((t.gpa, t.level, t.executable), (0x60_1234, 2, false));
    let f = translate(&m, &r, 0x4000_1234, Access::FETCH).unwrap_err();
    assert_eq!(
        (f.reason, f.error_code()),
        (FaultReason::NoExecute, 0b10001)
    );
    let t = translate(&m, &r, 0x4020_3456, Access::FETCH).unwrap();
    assert_eq!((t.gpa, t.level), (0x9456, 1));

    // Without EFER.NXE bit 63 is reserved.
    let r_no_nx = regs(PG_PE_WP, CR4_PAE, 0, 0x1020);
    let f = translate(&m, &r_no_nx, 0x4000_1234, Access::READ).unwrap_err();
    assert_eq!((f.reason, f.level), (FaultReason::ReservedBit, 2));
    // PDPTE reserved bits 2:1.
    m.w64(0x1028, 0x3000 | P | W);
    let f = translate(&m, &r, 0x4020_3456, Access::READ).unwrap_err();
    assert_eq!((f.reason, f.level), (FaultReason::ReservedBit, 3));
    // Missing PDPTE.
    let f = translate(&m, &r, 0x8000_0000, Access::READ).unwrap_err();
    assert_eq!((f.reason, f.level), (FaultReason::NotPresent, 3));
}

/// A 4-level hierarchy: PML4 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000.
fn four_level() -> Mem {
    let m = Mem::default();
    m.w64(0x1000 + 511 * 8, 0x2000 | P | W | U);
    // PDPTE 2: 1 GiB page at 0x4000_0000 (kernel text: supervisor, executable).
    m.w64(0x2000 + 2 * 8, 0x4000_0000 | P | PS);
    // PDPTE 0 -> PD; PDE 1: 2 MiB user page; PDE 2 -> PT.
    m.w64(0x2000, 0x3000 | P | W | U);
    m.w64(0x3008, 0x80_0000 | P | W | U | PS);
    m.w64(0x3010, 0x4000 | P | W | U);
    m.w64(0x4000, 0xa000 | P | U | (1 << 8));
    m
}

#[test]
fn level4_pages_of_every_size() {
    let m = four_level();
    let r = regs(PG_PE_WP, CR4_PAE, EFER_LME | EFER_LMA | EFER_NXE, 0x1000);
    let top = 0xffff_ff80_0000_0000u64;
    let t = translate(&m, &r, top + 0x8012_3456, Access::FETCH).unwrap();
    assert_eq!((t.gpa, t.level, t.writable), (0x4012_3456, 3, false));
    let t = translate(&m, &r, top + 0x20_1234, Access::WRITE.user()).unwrap();
    assert_eq!((t.gpa, t.level), (0x80_1234, 2));
    let t = translate(&m, &r, top + 0x40_0042, Access::READ.user()).unwrap();
    assert_eq!((t.gpa, t.level, t.global), (0xa042, 1, true));
    let f = translate(&m, &r, top + 0x40_0042, Access::WRITE.user()).unwrap_err();
    assert_eq!(f.reason, FaultReason::WriteProtected);
    assert_eq!(
        alloc::format!("{f}"),
        "#PF(0x7): write to a read-only page at level 1 (entry 0xa105)"
    );

    // Non-canonical addresses are #GP, not #PF.
    let f = translate(&m, &r, 0x0000_8000_0000_0000, Access::READ).unwrap_err();
    assert!(f.reason == FaultReason::NonCanonical && !f.is_page_fault());
    // Address bits beyond MAXPHYADDR (40 here) are reserved.
    m.w64(0x3018, (1 << 45) | 0x5000 | P);
    let f = translate(&m, &r, top + 0x60_0000, Access::READ).unwrap_err();
    assert_eq!((f.reason, f.level), (FaultReason::ReservedBit, 2));
    // PS in a PML4E is reserved.
    m.w64(0x1000, 0x2000 | P | PS);
    let f = translate(&m, &r, 0x1000, Access::READ).unwrap_err();
    assert_eq!((f.reason, f.level), (FaultReason::ReservedBit, 4));
    // A 1 GiB page with address bits below 1 GiB set.
    m.w64(0x2000 + 3 * 8, 0x4020_0000 | P | PS);
    let f = translate(&m, &r, top + 0xc000_0000, Access::READ).unwrap_err();
    assert_eq!((f.reason, f.level), (FaultReason::ReservedBit, 3));
}

#[test]
fn smep_and_unreadable_tables() {
    let m = four_level();
    let r = regs(PG_PE_WP, CR4_PAE | CR4_SMEP, EFER_LME | EFER_LMA, 0x1000);
    let user_page = 0xffff_ff80_0040_0000u64;
    let f = translate(&m, &r, user_page, Access::FETCH).unwrap_err();
    // SMEP alone makes the fetch bit appear in the error code.
    assert_eq!((f.reason, f.error_code()), (FaultReason::Smep, 0b10001));
    assert!(translate(&m, &r, user_page, Access::FETCH.user()).is_ok());

    let far = regs(PG_PE_WP, CR4_PAE, EFER_LME | EFER_LMA, 1 << 30);
    let f = translate(&m, &far, 0, Access::READ).unwrap_err();
    assert_eq!(f.reason, FaultReason::Unreadable { gpa: 1 << 30 });
    assert!(!f.is_page_fault());
}

#[test]
fn level5_uses_the_pml5() {
    let m = four_level();
    // PML5 at 0x5000, entry 1 -> the PML4 at 0x1000.
    m.w64(0x5008, 0x1000 | P | W);
    let r = regs(PG_PE_WP, CR4_PAE | CR4_LA57, EFER_LME | EFER_LMA, 0x5000);
    let gva = (1u64 << 48) | 0x0000_ff80_0040_0042;
    let t = translate(&m, &r, gva, Access::READ).unwrap();
    assert_eq!(t.gpa, 0xa042);
    // 48-bit canonical but not reachable through PML5 entry 0.
    let f = translate(&m, &r, 0x1000, Access::READ).unwrap_err();
    assert_eq!((f.reason, f.level), (FaultReason::NotPresent, 5));
    // Bit 57 set without the rest: non-canonical under 5-level paging.
    let f = translate(&m, &r, 1 << 57, Access::READ).unwrap_err();
    assert_eq!(f.reason, FaultReason::NonCanonical);
}
