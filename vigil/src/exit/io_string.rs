//! INS and OUTS (with or without REP) on trapped ports (exit reason 30, string flag set).
//!
//! The exit gives the linear address of the first element (guest-linear-address field, SDM
//! Vol. 3C 28.2.1/28.3.1) and, through the instruction information, the address size (28.2.5).
//! Each element is translated through the guest's page tables, checked against its RAM, and
//! moved through the same port logic as IN/OUT. RSI/RDI and RCX advance as the processor
//! advances them; a page fault part-way stops with the registers describing the elements done,
//! exactly as a REP string instruction is restartable (SDM Vol. 2B REP). Long REPs are done in
//! slices: after `SLICE` elements the instruction is re-entered rather than skipped, so one exit
//! never holds the guest for long.

use super::io::{port_access, size_mask};
use super::{Action, Fault};
use crate::vmm::{guest_mem, Vcpu};
use vmx::exit::IoQualification;
use vmx::vmcs::{Field, VmcsAccess};
use x86_arch::paging::Access;

const SLICE: u64 = 4096;
const RFLAGS_DF: u64 = 1 << 10;

pub fn handle(vcpu: &mut Vcpu, q: IoQualification) -> Action {
    // Instruction information bits 9:7: address size 0 = 16, 1 = 32, 2 = 64 bits.
    let addr_mask: u64 = match (vcpu.vmcs.read(Field::VmExitInstructionInfo) >> 7) & 7 {
        0 => 0xFFFF,
        1 => 0xFFFF_FFFF,
        _ => u64::MAX,
    };
    let size = q.size as u64;
    let step = if vcpu.rflags() & RFLAGS_DF != 0 {
        size.wrapping_neg()
    } else {
        size
    };
    let count = if q.rep { vcpu.regs.rcx & addr_mask } else { 1 };
    let index_reg = if q.input { 7 } else { 6 }; // RDI for INS, RSI for OUTS
    let mut linear = vcpu.vmcs.read(Field::GuestLinearAddress);
    let mut done = 0;
    let mut outcome = Action::Advance;
    while done < count.min(SLICE) {
        let access = Access {
            write: q.input,
            user: vcpu.cpl() == 3,
            fetch: false,
        };
        let gpa = match vcpu.translate(linear, access) {
            Ok(t) => t.gpa,
            Err(fault) if fault.is_page_fault() => {
                vcpu.set_cr2(linear);
                outcome = Action::Inject(Fault {
                    vector: 14,
                    error_code: Some(fault.error_code()),
                });
                break;
            }
            Err(_) => {
                outcome = Action::Inject(Fault::GP0);
                break;
            }
        };
        let mut bytes = [0u8; 4];
        let n = size as usize;
        let result = if q.input {
            match port_access(vcpu, q.port, q.size, None) {
                Ok(v) => {
                    bytes.copy_from_slice(&(v.unwrap_or(0) as u32).to_le_bytes());
                    // Memory outside the guest's RAM is Vigil's or no one's: #GP, as for any
                    // access there (exit/ept_violation.rs).
                    if !guest_mem::write(gpa, &bytes[..n]) {
                        outcome = Action::Inject(Fault::GP0);
                        break;
                    }
                    Ok(())
                }
                Err(stop) => Err(stop),
            }
        } else {
            if !guest_mem::read(gpa, &mut bytes[..n]) {
                outcome = Action::Inject(Fault::GP0);
                break;
            }
            let value = u32::from_le_bytes(bytes) as u64 & size_mask(q.size);
            port_access(vcpu, q.port, q.size, Some(value)).map(|_| ())
        };
        done += 1;
        linear = linear.wrapping_add(step);
        if let Err(stop) = result {
            outcome = Action::Stop(stop);
            break;
        }
    }
    // Registers reflect the elements moved, whatever ended the loop.
    let index = vcpu.gpr(index_reg);
    let moved = step.wrapping_mul(done);
    vcpu.set_gpr(
        index_reg,
        (index & !addr_mask) | (index.wrapping_add(moved) & addr_mask),
    );
    if q.rep {
        let rcx = vcpu.regs.rcx;
        vcpu.regs.rcx = (rcx & !addr_mask) | ((rcx.wrapping_sub(done)) & addr_mask);
        if outcome == Action::Advance && done < count {
            // More to do: run the instruction again from where it stands.
            outcome = Action::Resume;
        }
    }
    outcome
}
