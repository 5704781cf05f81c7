//! Turning a #VMEXIT into the exit layer's `Exit` (APM Vol. 2 15.7 for the exit information,
//! Appendix C for the codes). What an intercept does not report without decode assists (the
//! operands of MOV CR, MOV DR and INVLPG, the segment of OUTS) or without NRIP save (the
//! instruction's length) is decoded from the instruction's bytes at CS:RIP, fetched through
//! the guest's page tables (`svm::decode`).
//!
//! EXITINTINFO (the event whose delivery the intercept interrupted, 15.7.2) is read for the
//! exits that can happen during event delivery: exceptions, nested page faults, task switches
//! and shutdown.

use super::SvmVcpu;
use svm::decode::{Decoded, Op, Source16};
use svm::exit::{EventInfo, ExitCode, IoInfo, NpfInfo, TaskSwitchInfo};
use svm::vmcb::{Field, VmcbAccess};
use vigil_core::exit::{CrAccess, CrOp, DrAccess, Exit, IoAccess, NestedFault, TaskSwitchSource};
use vigil_core::nested::Perms;
use vigil_core::vcpu::{Seg, Vcpu};
use x86_arch::event::{exception_has_error_code, Event, DB, PF};
use x86_arch::paging::Access;
use x86_arch::regs::{DR6_B0_B3, DR6_BD, DR6_BS, DR6_BT, RFLAGS_TF};

/// The paging entries a walk may read: five levels at most.
const WALK_READS: usize = 5;

/// The translation of the page the last decoded instruction was fetched from, with the paging
/// registers and every paging entry (address, value) the walk read. Without NRIP save every
/// intercepted instruction is fetched, nearly always from the page of the one before; a walk
/// through the guest's tables costs more than the rest of the exit. The translation is a
/// function of the paging registers and of the entries read (each entry's address comes from
/// the one before), so when all are unchanged it is the same and is reused; re-reading the
/// entries costs a few loads. Nothing else can change it.
#[derive(Clone, Copy, Debug, Default)]
pub struct FetchCache {
    valid: bool,
    /// CR0, CR3, CR4, EFER.
    regs: [u64; 4],
    user: bool,
    /// Linear page number, and the guest-physical page it translated to.
    page: u64,
    gpa_page: u64,
    /// The guest-physical page is guest RAM, all of it (checked once).
    ram: bool,
    reads: [(u64, u64); WALK_READS],
    n: usize,
}

impl FetchCache {
    /// The cached translation of `linear`, if it still holds, and whether its page is RAM.
    fn lookup(&self, regs: &[u64; 4], user: bool, linear: u64) -> Option<(u64, bool)> {
        if !self.valid || self.regs != *regs || self.user != user || self.page != linear >> 12 {
            return None;
        }
        let same = self.reads[..self.n].iter().all(|&(at, value)| {
            // SAFETY: `at` passed the guest-RAM check when the walk read it, and the guest's
            // memory map never changes: still guest RAM, identity-mapped, only read here.
            unsafe { core::ptr::read_volatile(at as *const u64) == value }
        });
        same.then_some((self.gpa_page | (linear & 0xFFF), self.ram))
    }
}

/// A page-table reader that keeps what it read, for [`FetchCache`].
struct Recording<'a> {
    vcpu: &'a SvmVcpu,
    reads: core::cell::Cell<([(u64, u64); WALK_READS], usize)>,
}

impl x86_arch::PhysRead for Recording<'_> {
    fn read_u64(&self, phys: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        if !self.vcpu.read_phys(phys, &mut b) {
            return None;
        }
        let value = u64::from_le_bytes(b);
        let (mut reads, n) = self.reads.get();
        if n < WALK_READS {
            reads[n] = (phys, value);
        }
        self.reads.set((reads, n + 1));
        Some(value)
    }
}

/// Translates the address of an instruction fetch, through [`FetchCache`]: the guest-physical
/// address, and whether its whole page is guest RAM.
fn translate_fetch(vcpu: &SvmVcpu, linear: u64, access: Access) -> Option<(u64, bool)> {
    let regs = [vcpu.cr0(), vcpu.cr3(), vcpu.cr4(), vcpu.efer()];
    let cache = vcpu.fetch_cache.get();
    if let Some(hit) = cache.lookup(&regs, access.user, linear) {
        return Some(hit);
    }
    let p = vcpu.paging_regs();
    let rec = Recording {
        vcpu,
        reads: core::cell::Cell::new(([(0, 0); WALK_READS], 0)),
    };
    let gpa = x86_arch::paging::translate(&rec, &p, linear, access)
        .ok()?
        .gpa;
    let (reads, n) = rec.reads.get();
    // The whole page in the guest's RAM, and its last byte within Vigil's identity map (which
    // ends on a page boundary), so the page can be read directly while the cache holds.
    let page = gpa & !0xFFF;
    let ram = crate::guest_mem::map().is_ram(page, page + 4096)
        && vcpu.read_phys(page | 0xFFF, &mut [0u8; 1]);
    vcpu.fetch_cache.set(FetchCache {
        valid: n <= WALK_READS,
        regs,
        user: access.user,
        page: linear >> 12,
        gpa_page: gpa & !0xFFF,
        ram,
        reads,
        n: n.min(WALK_READS),
    });
    Some((gpa, ram))
}

/// Reads guest-linear memory for Vigil's own use (instruction bytes, LMSW's operand): through
/// the guest's page tables, guest RAM only. `None` if any byte cannot be read.
fn read_linear(vcpu: &SvmVcpu, linear: u64, buf: &mut [u8], fetch: bool) -> Option<()> {
    let access = Access {
        write: false,
        user: vcpu.cpl() == 3,
        fetch,
    };
    let mut done = 0;
    while done < buf.len() {
        let at = linear.wrapping_add(done as u64);
        let n = (4096 - (at & 0xFFF) as usize).min(buf.len() - done);
        let gpa = if fetch {
            let (gpa, ram) = translate_fetch(vcpu, at, access)?;
            if ram {
                // SAFETY: the page is guest RAM (checked when it was cached; the guest's memory
                // map never changes), identity-mapped, and `n` bytes stay within it.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        gpa as *const u8,
                        buf[done..done + n].as_mut_ptr(),
                        n,
                    )
                };
                done += n;
                continue;
            }
            gpa
        } else {
            vcpu.translate(at, access).ok()?.gpa
        };
        if !vcpu.read_phys(gpa, &mut buf[done..done + n]) {
            return None;
        }
        done += n;
    }
    Some(())
}

/// The linear address of `offset` in segment `seg` (the base is ignored in 64-bit mode except
/// for FS and GS; addresses wrap at 4 GiB outside it).
fn linear(vcpu: &SvmVcpu, seg: Seg, offset: u64) -> u64 {
    let long = vcpu.long_mode_64();
    let base = if long && !matches!(seg, Seg::Fs | Seg::Gs) {
        0
    } else {
        vcpu.segment(seg).base
    };
    let l = base.wrapping_add(offset);
    if long {
        l
    } else {
        l & 0xFFFF_FFFF
    }
}

/// Decodes the instruction at the guest's CS:RIP. Up to 15 bytes are read, fewer where the
/// next page cannot be read (the instruction then ends before it).
pub fn fetch_decode(vcpu: &SvmVcpu) -> Option<Decoded> {
    let rip = vcpu.rip();
    let at = linear(vcpu, Seg::Cs, rip);
    let mut bytes = [0u8; 15];
    let first = (4096 - (at & 0xFFF) as usize).min(15);
    read_linear(vcpu, at, &mut bytes[..first], true)?;
    let len = if read_linear(vcpu, at + first as u64, &mut bytes[first..], true).is_some() {
        15
    } else {
        first
    };
    svm::decode::decode(&bytes[..len], vcpu.mode().code_bits(), rip)
}

/// Whether the guest's bytes at CS:RIP are exactly `bytes`.
fn bytes_at_rip(vcpu: &SvmVcpu, bytes: &[u8]) -> bool {
    let mut buf = [0u8; 3];
    let buf = &mut buf[..bytes.len().min(3)];
    let at = linear(vcpu, Seg::Cs, vcpu.rip());
    read_linear(vcpu, at, buf, true).is_some() && buf == bytes
}

/// The length of the intercepted instruction when it is its exit's one encoding without
/// prefixes (`svm::decode::plain_encoding`): two or three bytes fetched, nothing decoded.
pub fn plain_len(vcpu: &SvmVcpu) -> Option<u8> {
    let bytes =
        svm::decode::plain_encoding(vcpu.exit.code, svm::exit::msr_is_write(vcpu.exit.info1))?;
    bytes_at_rip(vcpu, bytes).then_some(bytes.len() as u8)
}

// The exit codes as integers, for one `match` the compiler turns into a jump table.
const CPUID: u64 = ExitCode::CPUID.0;
const RDTSC: u64 = ExitCode::RDTSC.0;
const RDTSCP: u64 = ExitCode::RDTSCP.0;
const RDPMC: u64 = ExitCode::RDPMC.0;
const MSR: u64 = ExitCode::MSR.0;
const IOIO: u64 = ExitCode::IOIO.0;
const HLT: u64 = ExitCode::HLT.0;
const VMMCALL: u64 = ExitCode::VMMCALL.0;
const XSETBV: u64 = ExitCode::XSETBV.0;
const INVD: u64 = ExitCode::INVD.0;
const INVLPG: u64 = ExitCode::INVLPG.0;
const VINTR: u64 = ExitCode::VINTR.0;
const PAUSE: u64 = ExitCode::PAUSE.0;
const INIT: u64 = ExitCode::INIT.0;
const SHUTDOWN: u64 = ExitCode::SHUTDOWN.0;
const NPF: u64 = ExitCode::NPF.0;
const TASK_SWITCH: u64 = ExitCode::TASK_SWITCH.0;
const VMRUN: u64 = ExitCode::VMRUN.0;
const VMLOAD: u64 = ExitCode::VMLOAD.0;
const SKINIT: u64 = ExitCode::SKINIT.0;
const INVLPGA: u64 = ExitCode::INVLPGA.0;

/// RDTSC, or RDTSCP reported with RDTSC's exit code: QEMU's TCG checks the RDTSC intercept for
/// both instructions (and never RDTSCP's own). Unprefixed RDTSC is two bytes (0F 31) and RDTSCP
/// three (0F 01 F9), so with NRIP save a two-byte instruction needs no look at its bytes, and
/// without it the plain encodings are compared first; anything else is decoded (once: the
/// length is kept for the RIP advance).
fn rdtsc(vcpu: &SvmVcpu) -> Exit {
    if vcpu.exit.next_rip.is_some() {
        if vcpu.intercepted_len() == Some(2) {
            return Exit::Rdtsc;
        }
    } else {
        if bytes_at_rip(vcpu, &[0x0F, 0x31]) {
            vcpu.len.set(Some(2));
            return Exit::Rdtsc;
        }
        if bytes_at_rip(vcpu, &[0x0F, 0x01, 0xF9]) {
            vcpu.len.set(Some(3));
            return Exit::Rdtscp;
        }
    }
    match fetch_decode(vcpu) {
        Some(d) => {
            vcpu.len.set(Some(d.len));
            if d.op == Op::Rdtscp {
                Exit::Rdtscp
            } else {
                Exit::Rdtsc
            }
        }
        None => Exit::Rdtsc,
    }
}

fn seg_from(n: u8) -> Seg {
    Seg::from_encoding(n).unwrap_or(Seg::Ds)
}

/// The exit the current #VMEXIT is, and the event it interrupted.
pub fn decode(vcpu: &mut SvmVcpu, code: ExitCode) -> (Exit, Option<Event>) {
    let info1 = vcpu.vmcb.read(Field::ExitInfo1);
    let info2 = vcpu.vmcb.read(Field::ExitInfo2);
    vcpu.exit.code = code;
    vcpu.exit.info1 = info1;
    vcpu.exit.info2 = info2;
    vcpu.exit.next_rip = if vcpu.use_nrips {
        Some(vcpu.vmcb.read(Field::NextRip))
    } else {
        None
    };
    // One integer match: a jump table for the common instruction exits.
    const CR_FIRST: u64 = 0x00;
    const CR_LAST: u64 = 0x1F;
    const DR_FIRST: u64 = 0x20;
    const DR_LAST: u64 = 0x3F;
    const EXC_FIRST: u64 = 0x40;
    const EXC_LAST: u64 = 0x5F;
    let exit = match code.0 {
        CR_FIRST..=CR_LAST => {
            let write = code.cr_write().is_some();
            let n = (code.0 & 0xF) as u8;
            return (cr_access(vcpu, n, write), None);
        }
        DR_FIRST..=DR_LAST => {
            let (n, read) = ((code.0 & 0xF) as u8, code.dr_read().is_some());
            let exit = match fetch_decode(vcpu).map(|d| d.op) {
                Some(Op::MovFromDr { gpr, .. }) if read => Exit::Dr(DrAccess { dr: n, read, gpr }),
                Some(Op::MovToDr { gpr, .. }) if !read => Exit::Dr(DrAccess { dr: n, read, gpr }),
                _ => Exit::Unhandled {
                    reason: "MOV DR intercept whose instruction could not be decoded",
                },
            };
            return (exit, None);
        }
        EXC_FIRST..=EXC_LAST => return exception(vcpu, (code.0 - EXC_FIRST) as u8, info1, info2),
        CPUID => Exit::Cpuid,
        RDTSC => rdtsc(vcpu),
        RDTSCP => Exit::Rdtscp,
        RDPMC => Exit::Rdpmc,
        MSR => {
            if svm::exit::msr_is_write(info1) {
                Exit::Wrmsr
            } else {
                Exit::Rdmsr
            }
        }
        IOIO => {
            // EXITINFO2 holds the next RIP whatever the features (15.10.2).
            vcpu.exit.next_rip = Some(info2);
            Exit::Io(io(vcpu, info1))
        }
        HLT => Exit::Hlt,
        VMMCALL => Exit::Hypercall,
        XSETBV => Exit::Xsetbv,
        INVD => Exit::Invd,
        INVLPG => invlpg(vcpu, info1),
        VINTR => Exit::InterruptWindow,
        // Intercepted only for the debugger, whose periodic poll it stands in for.
        PAUSE => Exit::Timer,
        INIT => Exit::Init,
        SHUTDOWN => {
            let interrupted = interrupted(vcpu);
            return (Exit::TripleFault, interrupted);
        }
        NPF => {
            let f = nested_fault(vcpu, info1, info2);
            let interrupted = interrupted(vcpu);
            return (f, interrupted);
        }
        TASK_SWITCH => {
            let t = TaskSwitchInfo::decode(info1, info2);
            let interrupted = interrupted(vcpu);
            let source = match t.source {
                svm::exit::TaskSwitchSource::Iret => TaskSwitchSource::Iret,
                svm::exit::TaskSwitchSource::Jmp => TaskSwitchSource::Jmp,
                svm::exit::TaskSwitchSource::CallOrGate if interrupted.is_some() => {
                    TaskSwitchSource::Gate
                }
                svm::exit::TaskSwitchSource::CallOrGate => TaskSwitchSource::Call,
            };
            let exit = Exit::TaskSwitch {
                selector: t.selector,
                source,
            };
            return (exit, interrupted);
        }
        VMRUN | VMLOAD..=SKINIT | INVLPGA => Exit::Undefined {
            mnemonic: mnemonic(code),
        },
        _ => Exit::Unhandled {
            reason: code.name(),
        },
    };
    (exit, None)
}

fn mnemonic(c: ExitCode) -> &'static str {
    match c {
        ExitCode::VMRUN => "vmrun",
        ExitCode::VMLOAD => "vmload",
        ExitCode::VMSAVE => "vmsave",
        ExitCode::STGI => "stgi",
        ExitCode::CLGI => "clgi",
        ExitCode::SKINIT => "skinit",
        _ => "invlpga",
    }
}

/// The event this exit interrupted (EXITINTINFO), with the length of the instruction that
/// raised it when an instruction did (INTn, INT3, INTO): its delivery restarts past it.
fn interrupted(vcpu: &SvmVcpu) -> Option<Event> {
    let info = EventInfo(vcpu.vmcb.read(Field::ExitIntInfo));
    if !info.valid() {
        return None;
    }
    let len = match info.kind() {
        svm::exit::event_kind::SOFTWARE_INTERRUPT => vcpu.intercepted_len().unwrap_or(2),
        svm::exit::event_kind::EXCEPTION if matches!(info.vector(), 3 | 4) => {
            vcpu.intercepted_len().unwrap_or(1)
        }
        _ => 0,
    };
    info.event(len)
}

fn cr_access(vcpu: &mut SvmVcpu, cr: u8, write: bool) -> Exit {
    let op = match fetch_decode(vcpu).map(|d| d.op) {
        Some(Op::MovToCr { gpr, .. }) if write => CrOp::Write(gpr),
        Some(Op::MovFromCr { gpr, .. }) if !write => CrOp::Read(gpr),
        Some(Op::Clts) if write && cr == 0 => CrOp::Clts,
        Some(Op::Lmsw(src)) if write && cr == 0 => match lmsw_source(vcpu, src) {
            Some(v) => CrOp::Lmsw(v),
            None => {
                return Exit::Unhandled {
                    reason: "LMSW whose memory operand could not be read",
                }
            }
        },
        _ => {
            return Exit::Unhandled {
                reason: "CR access intercept whose instruction could not be decoded",
            }
        }
    };
    Exit::Cr(CrAccess { cr, op })
}

fn lmsw_source(vcpu: &SvmVcpu, src: Source16) -> Option<u16> {
    match src {
        Source16::Gpr(n) => Some(vcpu.gpr(n) as u16),
        Source16::Mem(m) => {
            let off = m.offset(&|n| vcpu.gpr(n));
            let at = linear(vcpu, seg_from(m.segment), off);
            let mut b = [0u8; 2];
            read_linear(vcpu, at, &mut b, false)?;
            Some(u16::from_le_bytes(b))
        }
    }
}

fn invlpg(vcpu: &SvmVcpu, info1: u64) -> Exit {
    if vcpu.caps.has(svm::caps::Features::DECODE_ASSISTS) {
        return Exit::Invlpg { linear: info1 };
    }
    match fetch_decode(vcpu).map(|d| d.op) {
        Some(Op::Invlpg(m)) => {
            let off = m.offset(&|n| vcpu.gpr(n));
            Exit::Invlpg {
                linear: if m.rip_relative {
                    off
                } else {
                    linear(vcpu, seg_from(m.segment), off)
                },
            }
        }
        _ => Exit::Unhandled {
            reason: "INVLPG intercept whose instruction could not be decoded",
        },
    }
}

fn io(vcpu: &SvmVcpu, info1: u64) -> IoAccess {
    let assists = vcpu.caps.has(svm::caps::Features::DECODE_ASSISTS);
    let info = IoInfo::decode(info1, assists);
    // INS always writes ES; OUTS reads DS unless overridden, which only the bytes say without
    // decode assists.
    let segment = if !info.string || info.input {
        if info.input {
            Seg::Es
        } else {
            Seg::Ds
        }
    } else if let Some(s) = info.segment {
        seg_from(s)
    } else {
        match fetch_decode(vcpu).map(|d| d.op) {
            Some(Op::Outs { segment }) => seg_from(segment),
            _ => Seg::Ds,
        }
    };
    IoAccess {
        port: info.port,
        size: info.size,
        input: info.input,
        string: info.string,
        rep: info.rep,
        addr_size: info.addr_size,
        segment,
    }
}

/// An intercepted exception, before its delivery: EXITINFO1 is the error code, EXITINFO2 the
/// faulting address of a #PF (15.12).
fn exception(vcpu: &mut SvmVcpu, vector: u8, info1: u64, info2: u64) -> (Exit, Option<Event>) {
    let interrupted = interrupted(vcpu);
    let event = match vector {
        // Only INT3 and INTO raise #BP and #OF; their delivery pushes the address after them.
        3 | 4 => Event {
            vector,
            kind: x86_arch::event::EventKind::SoftwareException,
            error_code: None,
            instruction_len: vcpu.intercepted_len().unwrap_or(1),
        },
        v if exception_has_error_code(v) => Event::fault(v, info1 as u32),
        v => Event::exception(v),
    };
    let info = match vector {
        PF => info2,
        DB => debug_causes(vcpu),
        _ => 0,
    };
    (Exit::Exception { event, info }, interrupted)
}

/// What caused an intercepted #DB: the processor writes DR6 before the intercept (the VMCB's
/// DR6 then holds the causes). Bochs commits DR6 only after its intercept check, so there the
/// VMCB's DR6 is the old value: then the causes are worked out as the processor would have
/// found them — a single step when RFLAGS.TF was set as the guest entered (the instruction
/// that traps may itself have cleared TF: IRET, POPF) or is set now, an instruction breakpoint in
/// DR0-DR3 armed for execution at CS:RIP (docs/platform.md).
fn debug_causes(vcpu: &SvmVcpu) -> u64 {
    let causes = vcpu.vmcb.read(Field::Dr6) & (DR6_B0_B3 | DR6_BD | DR6_BS | DR6_BT);
    if causes != 0 {
        return causes;
    }
    let mut inferred = 0;
    if vcpu.entered_with_tf || vcpu.rflags() & RFLAGS_TF != 0 {
        inferred |= DR6_BS;
    }
    let dr7 = vcpu.dr(7);
    let here = linear(vcpu, Seg::Cs, vcpu.rip());
    for i in 0..4u8 {
        let enabled = dr7 & (3 << (2 * i)) != 0;
        let execute = (dr7 >> (16 + 4 * i)) & 0xF == 0;
        if enabled && execute && vcpu.dr(i) == here {
            inferred |= 1 << i;
        }
    }
    inferred
}

/// A nested page fault: the access from EXITINFO1, the address from EXITINFO2, and what the
/// nested entry allows from Vigil's own tables (the processor does not report it).
fn nested_fault(vcpu: &SvmVcpu, info1: u64, info2: u64) -> Exit {
    let npf = NpfInfo(info1);
    let allowed = match svm::npt::walk(&super::npt::TablesRead, vcpu.ncr3, info2, vcpu.phys_bits) {
        Ok(t) => Perms {
            read: t.perms.read,
            write: t.perms.write,
            exec: t.perms.exec,
        },
        Err(_) => Perms::NONE,
    };
    Exit::NestedFault(NestedFault {
        gpa: info2,
        linear: None,
        read: !npf.write() && !npf.fetch(),
        write: npf.write(),
        fetch: npf.fetch(),
        allowed,
    })
}
