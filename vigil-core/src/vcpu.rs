//! The seam between the exit layer and a virtualization backend: [`Vcpu`] is one virtual CPU's
//! architectural state as the guest sees it, and [`Host`] is what the physical processor does on
//! the guest's behalf. The VMX backend implements `Vcpu` over the VMCS and the saved registers;
//! an SVM backend implements it over the VMCB; the tests implement it over plain fields
//! (`crate::testing`).
//!
//! Everything here speaks architecture, not vendor: "CR0 as the guest reads it", "the event whose
//! delivery the exit interrupted", "raise the single-step trap the processor owes". Where a
//! vendor keeps state in its control block (VMCS fields, read shadows, PDPTE copies, the
//! "IA-32e mode guest" control), the backend keeps it in step behind these methods.
//!
//! The exit path is generic over `V: Vcpu` and monomorphized: no dynamic dispatch, and reads
//! stay lazy (a handler that needs CR4 reads CR4; nothing is read up front).

use crate::cpu::Exited;
use crate::exit::Stop;
use crate::nested::Perms;
use crate::time::EntryTime;
use core::fmt;
use x86_arch::cpuid::Features;
use x86_arch::event::Event;
use x86_arch::paging::{self, Access, GuestTranslation, PageFault, PagingRegs};

/// General-purpose register numbers, in the architectural order instruction encodings use.
pub mod gpr {
    pub const RAX: u8 = 0;
    pub const RCX: u8 = 1;
    pub const RDX: u8 = 2;
    pub const RBX: u8 = 3;
    pub const RSP: u8 = 4;
    pub const RBP: u8 = 5;
    pub const RSI: u8 = 6;
    pub const RDI: u8 = 7;
}

/// Segment registers, numbered as instruction encodings (and both vendors' exit information)
/// number them: ES, CS, SS, DS, FS, GS; then the system segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Seg {
    Es,
    Cs,
    Ss,
    Ds,
    Fs,
    Gs,
    Ldtr,
    Tr,
}

impl Seg {
    /// From the 3-bit segment-register encoding (0 = ES ... 5 = GS).
    pub const fn from_encoding(n: u8) -> Option<Seg> {
        Some(match n {
            0 => Seg::Es,
            1 => Seg::Cs,
            2 => Seg::Ss,
            3 => Seg::Ds,
            4 => Seg::Fs,
            5 => Seg::Gs,
            _ => return None,
        })
    }
}

/// A segment register with its hidden part (SDM Vol. 3A 3.4.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub selector: u16,
    pub base: u64,
    /// The limit in bytes (already scaled by the granularity bit).
    pub limit: u32,
    pub attrs: SegAttrs,
}

/// A segment descriptor's attributes (SDM Vol. 3A 3.4.5), with the "unusable" flag VMX adds for
/// a null selector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegAttrs {
    /// The type field (bits 3:0 of the access byte).
    pub typ: u8,
    /// S: code or data (not system).
    pub s: bool,
    pub dpl: u8,
    pub present: bool,
    pub avl: bool,
    /// L: 64-bit code segment.
    pub long: bool,
    /// D/B: 32-bit default operand size.
    pub db: bool,
    pub granularity: bool,
    pub unusable: bool,
}

/// A descriptor-table register: GDTR or IDTR (SDM Vol. 3A 2.4.1, 2.4.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableReg {
    pub base: u64,
    /// The limit in bytes: the last valid byte offset.
    pub limit: u16,
}

/// The processor mode the guest executes in (SDM Vol. 3A 2.2, 10.8.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Real,
    Virtual8086,
    /// Protected mode (or compatibility mode) with a 16-bit code segment.
    Protected16,
    /// Protected mode (or compatibility mode) with a 32-bit code segment.
    Protected32,
    /// IA-32e mode with a 64-bit code segment.
    Long64,
}

impl Mode {
    /// The default operand and address size of code, in bits.
    pub const fn code_bits(self) -> u8 {
        match self {
            Mode::Real | Mode::Virtual8086 | Mode::Protected16 => 16,
            Mode::Protected32 => 32,
            Mode::Long64 => 64,
        }
    }
}

/// What blocks events for one instruction, and NMI blocking (SDM Vol. 3C 25.4.2; APM Vol. 2
/// 15.21.5 for the interrupt shadow).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interruptibility {
    /// Blocking by STI: the instruction after STI runs before interrupts are recognized.
    pub sti: bool,
    /// Blocking by MOV SS / POP SS: interrupts and debug traps wait one instruction.
    pub mov_ss: bool,
    /// NMIs are blocked until the next IRET.
    pub nmi: bool,
}

/// The activity state (SDM Vol. 3C 25.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    Active,
    /// Halted: the next interrupt, NMI or debug trap resumes the guest.
    Halt,
    Shutdown,
    /// An application processor waiting for its start-up IPI.
    WaitForSipi,
}

/// The descriptor-table registers (SDM Vol. 3A 2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescriptorTable {
    Gdtr,
    Idtr,
}

/// The event windows a backend can report as exits: the first moment the guest can take a
/// maskable interrupt (RFLAGS.IF = 1 and no STI/MOV SS blocking) or an NMI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    Interrupt,
    Nmi,
}

/// Cached linear translations to drop, as the instruction being emulated drops them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// One linear address (INVLPG; INVPCID type 0).
    Address(u64),
    /// Every translation of this vCPU, global ones included.
    All,
    /// Every translation except global ones (a CR3 load; INVPCID types 1 and 3). Backends may
    /// drop more than asked: architecturally a TLB may always forget.
    NonGlobal,
}

/// Model-specific registers a processor may switch on VM entry and exit. Which of them a backend
/// keeps in its control block differs by vendor (VMX switches EFER, PAT, SYSENTER, DEBUGCTL and
/// the FS/GS bases; SVM also the SYSCALL MSRs and KERNEL_GS_BASE): [`Vcpu::msr`] answers `None`
/// for one the backend does not hold, which is then live on the host.
pub mod msr {
    pub const IA32_SYSENTER_CS: u32 = 0x174;
    pub const IA32_SYSENTER_ESP: u32 = 0x175;
    pub const IA32_SYSENTER_EIP: u32 = 0x176;
    pub const IA32_DEBUGCTL: u32 = 0x1D9;
    pub const IA32_PAT: u32 = 0x277;
    pub const IA32_EFER: u32 = 0xC000_0080;
    pub const IA32_STAR: u32 = 0xC000_0081;
    pub const IA32_LSTAR: u32 = 0xC000_0082;
    pub const IA32_CSTAR: u32 = 0xC000_0083;
    pub const IA32_FMASK: u32 = 0xC000_0084;
    pub const IA32_FS_BASE: u32 = 0xC000_0100;
    pub const IA32_GS_BASE: u32 = 0xC000_0101;
    pub const IA32_KERNEL_GS_BASE: u32 = 0xC000_0102;

    /// The MSRs some processor switches for its guests.
    pub const SWITCHED: [u32; 13] = [
        IA32_SYSENTER_CS,
        IA32_SYSENTER_ESP,
        IA32_SYSENTER_EIP,
        IA32_DEBUGCTL,
        IA32_PAT,
        IA32_EFER,
        IA32_STAR,
        IA32_LSTAR,
        IA32_CSTAR,
        IA32_FMASK,
        IA32_FS_BASE,
        IA32_GS_BASE,
        IA32_KERNEL_GS_BASE,
    ];

    pub fn is_switched(msr: u32) -> bool {
        SWITCHED.contains(&msr)
    }
}

/// One virtual CPU, as the exit handlers see it.
pub trait Vcpu {
    /// The processor the guest runs on.
    type Host: Host;

    fn host(&mut self) -> &mut Self::Host;

    /// Enters the guest and runs it until its next exit, doing the time bookkeeping `time` asks
    /// for in the world switch. An entry that fails has been reported (the backend explains it
    /// with its own checks); the answer is then why the run stops.
    fn run(&mut self, time: &EntryTime) -> Result<Exited, Stop>;

    // --- Registers -----------------------------------------------------------------------

    /// General-purpose register by number ([`gpr`]: 0 = RAX ... 15 = R15), all 64 bits.
    fn gpr(&self, n: u8) -> u64;
    fn set_gpr(&mut self, n: u8, value: u64);
    fn rip(&self) -> u64;
    fn set_rip(&mut self, rip: u64);
    /// The length of the instruction that caused this exit (instruction exits only).
    fn instruction_len(&self) -> u64;
    fn rflags(&self) -> u64;
    fn set_rflags(&mut self, rflags: u64);

    /// CR0 as the guest reads it (bits the backend pins come from the guest's view, not the
    /// real register).
    fn cr0(&self) -> u64;
    /// Sets CR0 as the guest asked; the backend keeps the real register valid for itself.
    fn set_cr0(&mut self, value: u64);
    fn cr2(&self) -> u64;
    fn set_cr2(&mut self, value: u64);
    fn cr3(&self) -> u64;
    fn set_cr3(&mut self, value: u64);
    /// CR4 as the guest reads it.
    fn cr4(&self) -> u64;
    fn set_cr4(&mut self, value: u64);
    /// The CR4 bits this guest may set: the processor's, less features hidden from the guest.
    fn cr4_allowed(&self) -> u64;
    /// Features whose instructions this backend cannot let the guest use (VMX: a control that
    /// enables them is missing or refused): CPUID hides them, so the guest never meets a #UD
    /// its CPUID does not explain.
    fn hidden_features(&self) -> Features {
        Features::NONE
    }
    /// The four PAE page-directory-pointer entries, just loaded from the guest's memory and
    /// checked (SDM Vol. 3A 4.4.1): a backend that keeps copies (VMX with EPT, SDM Vol. 3C
    /// 27.3.2.4) takes them; others read them from memory themselves.
    fn set_pdptes(&mut self, _pdptes: [u64; 4]) {}
    fn efer(&self) -> u64;
    /// Sets EFER (LMA included: the backend keeps its IA-32e mode state in step with it).
    fn set_efer(&mut self, value: u64);

    /// The current privilege level (SS.DPL, SDM Vol. 3A 5.5).
    fn cpl(&self) -> u8;
    fn mode(&self) -> Mode;
    /// Whether the guest runs 64-bit code; backends answer this more cheaply than `mode()`.
    fn long_mode_64(&self) -> bool {
        self.mode() == Mode::Long64
    }
    fn segment(&self, seg: Seg) -> Segment;
    fn set_segment(&mut self, seg: Seg, value: &Segment);
    /// GDTR or IDTR: base and limit.
    fn dtable(&self, table: DescriptorTable) -> (u64, u32);
    fn set_dtable(&mut self, table: DescriptorTable, base: u64, limit: u32);

    /// The guest's GDTR (hardware task switches read and write descriptors through it).
    fn gdtr(&self) -> TableReg {
        let (base, limit) = self.dtable(DescriptorTable::Gdtr);
        TableReg {
            base,
            limit: limit as u16,
        }
    }

    /// Debug register 0-3, 6 or 7 as the guest sees it.
    fn dr(&self, n: u8) -> u64;
    fn set_dr(&mut self, n: u8, value: u64);

    /// An MSR the processor switches (see [`msr`]) if this backend holds it; `None` means the
    /// MSR is live on the host (the host's register is the guest's).
    fn msr(&self, msr: u32) -> Option<u64>;
    /// Writes one the backend holds; false if it does not hold it. The value has been checked.
    fn set_msr(&mut self, msr: u32, value: u64) -> bool;

    // --- Events --------------------------------------------------------------------------

    fn interruptibility(&self) -> Interruptibility;
    fn set_interruptibility(&mut self, value: Interruptibility);
    /// Delivers `event` on the next entry (through the guest's IDT, as hardware delivers it).
    /// Only the backend's part: the exit layer has already adjusted RFLAGS.RF, the error code
    /// and the debug registers as the processor would (`crate::exit::complete`).
    fn inject(&mut self, event: &Event);
    /// Raises, after the next entry, the single-step debug trap the processor owes for the
    /// instruction just emulated with RFLAGS.TF set (it updates DR6.BS and honours MOV SS
    /// blocking as a real trap would; SDM Vol. 3B 18.3.1.4).
    fn single_step_trap(&mut self);
    /// Asks for an exit at the next window of `kind` (or stops asking); false if the backend
    /// cannot report that window, in which case the exit layer tries again at every exit.
    fn request_window(&mut self, kind: Window, on: bool) -> bool;
    fn activity(&self) -> Activity;
    fn set_activity(&mut self, state: Activity);

    // --- Memory --------------------------------------------------------------------------

    /// Drops cached linear translations of this vCPU.
    fn flush(&mut self, what: Flush);
    /// Drops what this vCPU's processor cached from the nested page tables, which another vCPU
    /// changed (VMX: INVEPT of this vCPU's EPT pointer; SDM Vol. 3C 29.4.3.4).
    fn invalidate_nested(&mut self);
    /// Copies guest RAM into `buf`; false (nothing read) if any byte is not guest RAM.
    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool;
    /// Copies `bytes` into guest RAM; false (nothing written) if any byte is not guest RAM.
    fn write_phys(&mut self, gpa: u64, bytes: &[u8]) -> bool;
    /// A data access the guest makes to memory that is not RAM — device memory such as the
    /// VGA window, a ROM, a device's registers — done on its behalf as one access of
    /// `buf.len()` bytes (1, 2, 4 or 8) at the same physical address, so the device sees
    /// what the guest's own access would have given it. False where the guest's access would
    /// fault: Vigil's memory, or addresses the backend cannot reach. The default reaches none.
    fn read_mmio(&mut self, _gpa: u64, _buf: &mut [u8]) -> bool {
        false
    }
    /// The same for a write (a ROM ignores it, as it would the guest's own).
    fn write_mmio(&mut self, _gpa: u64, _bytes: &[u8]) -> bool {
        false
    }
    /// Physical-address width of the guest (MAXPHYADDR).
    fn phys_addr_bits(&self) -> u8;

    /// The registers a guest page walk depends on, as the guest sees them.
    fn paging_regs(&self) -> PagingRegs {
        PagingRegs {
            cr0: self.cr0(),
            cr3: self.cr3(),
            cr4: self.cr4(),
            efer: self.efer(),
            phys_addr_width: self.phys_addr_bits(),
        }
    }

    /// Guest-linear to guest-physical, as the guest's own access would translate, through its
    /// page tables in guest RAM.
    fn translate(&self, linear: u64, access: Access) -> Result<GuestTranslation, PageFault> {
        let read = |gpa: u64| {
            let mut b = [0u8; 8];
            self.read_phys(gpa, &mut b).then(|| u64::from_le_bytes(b))
        };
        paging::translate(&read, &self.paging_regs(), linear, access)
    }

    // --- The platform ------------------------------------------------------------------

    /// Opens or closes the guest's A20 gate (`crate::platform`): with it closed, a
    /// guest-physical address with bit 20 set, in the range the backend emulates, reaches the
    /// page one megabyte lower — never Vigil's memory, and never by masking a host-physical
    /// address. False if the backend cannot emulate a closed gate.
    fn set_a20(&mut self, _open: bool) -> bool {
        false
    }
    /// Makes the backend's I/O filter agree with `table` for `ports` again (a decoder Vigil
    /// follows moved, so its ports' rules changed).
    fn refresh_io_traps(
        &mut self,
        _table: &crate::owners::PortTable,
        _ports: core::ops::RangeInclusive<u16>,
    ) {
    }

    // --- Nested paging (the debugger's breakpoints and watchpoints) ------------------------

    /// Sets the nested-paging permissions of the 4-KiB guest-physical page at `page`
    /// (splitting a larger mapping); false if the page is not mapped.
    fn set_page_perms(&mut self, page: u64, perms: Perms) -> bool;
    /// Whether a page may be mapped execute-only.
    fn exec_only_pages(&self) -> bool;

    // --- Time ----------------------------------------------------------------------------

    /// Sets the offset the processor adds to the TSC the guest reads (SDM Vol. 3C 26.3).
    fn set_tsc_offset(&mut self, offset: u64);
    /// Whether RDTSC and RDTSCP exit.
    fn rdtsc_exits(&self) -> bool;

    // --- The debugger's controls -----------------------------------------------------------

    /// Whether the backend can stop the guest after each instruction without touching its
    /// RFLAGS (VMX's monitor trap flag); otherwise the debugger steps with RFLAGS.TF.
    fn has_step_trap(&self) -> bool {
        false
    }
    /// Arms or disarms that per-instruction exit.
    fn set_step_trap(&mut self, _on: bool) {}
    /// Makes exceptions with `vector` exit (or stop exiting, unless the user asked for them).
    fn intercept_exception(&mut self, vector: u8, on: bool);
    /// Makes the guest exit after about `ticks` host ticks of execution, at every entry (the
    /// debugger's COM2 poll); false if the backend has no such timer.
    fn set_poll_timer(&mut self, ticks: Option<u64>) -> bool;

    // --- Reports -------------------------------------------------------------------------

    /// Prints a report of the current exit for a human: what happened, the exit as the backend
    /// decoded it, the guest's registers and the backend's whole control block.
    fn report(&mut self, what: &str);
    /// Writes the backend's control block (`monitor vmcs`).
    fn dump(&self, out: &mut dyn fmt::Write) -> fmt::Result;
    /// Writes how `gpa` translates through the nested tables (`monitor translate`).
    fn describe_gpa(&self, gpa: u64, out: &mut dyn fmt::Write) -> fmt::Result;
}

/// What the physical processor does on the guest's behalf: instructions the guest's exit asked
/// for, executed so that a value the processor rejects comes back as an error rather than a
/// fault in Vigil.
pub trait Host {
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// RDMSR; `None` where the processor raises #GP.
    fn rdmsr(&mut self, msr: u32) -> Option<u64>;
    /// WRMSR; false where the processor raises #GP.
    fn wrmsr(&mut self, msr: u32, value: u64) -> bool;
    /// XSETBV; false where the processor raises #GP.
    fn xsetbv(&mut self, xcr: u32, value: u64) -> bool;
    /// RDPMC; `None` where the processor raises #GP.
    fn rdpmc(&mut self, counter: u32) -> Option<u64>;
    /// IN of `size` bytes (1, 2 or 4).
    fn port_in(&mut self, port: u16, size: u8) -> u32;
    /// OUT of `size` bytes (1, 2 or 4).
    fn port_out(&mut self, port: u16, size: u8, value: u32);
    /// WBINVD.
    fn write_back_caches(&mut self);
    /// The host's time-stamp counter now.
    fn rdtsc(&mut self) -> u64;
    /// Resets this processor's local APIC as an INIT signal would (SDM Vol. 3A 11.4.7.3) when
    /// the INIT itself never reached it (it was caught on the way: a VM exit, a trapped ICR).
    fn init_local_apic(&mut self);
    /// Vigil's own memory: 0 = its image, 1 = its memory pool (`[start, end)`).
    fn vigil_range(&self, index: u32) -> Option<(u64, u64)>;
    /// A checksum of Vigil's code, read-only data, nested tables and bitmaps.
    fn vigil_checksum(&mut self) -> u64;
}
