//! When Vigil itself fails: a CPU exception in Vigil's code, or a Rust panic. Both print what
//! happened, a backtrace (frame-pointer walk; Vigil is built with frame pointers, and
//! `cargo xtask` symbolizes the addresses), and — if a guest is loaded — the guest's state and
//! the VMCS or VMCB. Then the run ends as failed. Nothing here may take a lock another path
//! could hold.

use crate::arch::idt::{TrapFrame, EXCEPTION_NAMES};
use crate::serial::emergency_print;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The guest's VMCB under SVM (0: none), so a fault report can include it.
static VMCB: AtomicU64 = AtomicU64::new(0);

/// Names the VMCB a fault report shows.
pub fn set_vmcb(address: u64) {
    VMCB.store(address, Ordering::Relaxed);
}

static IN_FAULT: AtomicBool = AtomicBool::new(false);

macro_rules! eprintln {
    ($($arg:tt)*) => (emergency_print(format_args!("{}\n", format_args!($($arg)*))));
}

fn backtrace(mut rbp: u64, rip: u64) {
    eprintln!("backtrace:");
    eprintln!("  0: {rip:#018x}");
    // Stacks are in the image's .bss (at its virtual addresses) or in the pool (identity-mapped).
    let (lo, hi) = crate::arch::boot::image_virt();
    for depth in 1..32 {
        // Frames live on Vigil's stacks, inside its image (.bss) or pool.
        let (plo, phi) = crate::mem::pool_range();
        let valid = |a: u64| {
            a.is_multiple_of(8) && ((a >= lo && a + 16 <= hi) || (a >= plo && a + 16 <= phi))
        };
        if rbp == 0 || !valid(rbp) {
            break;
        }
        // SAFETY: rbp points into Vigil's own memory (checked above), where each frame stores
        // the caller's rbp and the return address.
        let (next, ret) = unsafe { (*(rbp as *const u64), *((rbp + 8) as *const u64)) };
        if ret == 0 {
            break;
        }
        eprintln!("  {depth}: {ret:#018x}");
        rbp = next;
    }
    eprintln!(
        "(symbolize with: addr2line -f -C -e target/x86_64-unknown-none/release/vigil ADDRESS...)"
    );
}

fn guest_state() {
    struct Out;
    impl Write for Out {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            emergency_print(format_args!("{s}"));
            Ok(())
        }
    }
    let vmcb = VMCB.load(Ordering::Relaxed);
    if vmcb != 0 {
        eprintln!("guest state (VMCB):");
        // SAFETY: the address is the guest's VMCB in Vigil's pool, only read here.
        let v = unsafe { svm::vmcb::VmcbPtr::new(vmcb as *mut u8) };
        let _ = svm::vmcb::dump(&v, &mut Out);
        return;
    }
    // Only a CPU with a current VMCS can read one (before VMXON, VMREAD is #UD).
    if !crate::percpu::current().is_some_and(|c| c.vmcs_loaded.load(Ordering::Relaxed)) {
        return;
    }
    eprintln!("guest state (current VMCS):");
    let _ = vmx::vmcs::dump(&vmx::vmcs::RealVmcs, &mut Out);
}

fn enter_fault() -> bool {
    !IN_FAULT.swap(true, Ordering::SeqCst)
}

pub fn vigil_exception(f: &TrapFrame) -> ! {
    if enter_fault() {
        let cr2: u64;
        // SAFETY: reading CR2 has no side effects.
        unsafe { core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
        let name = EXCEPTION_NAMES
            .get(f.vector as usize)
            .copied()
            .unwrap_or("?");
        let cpu = crate::percpu::current().map_or(u32::MAX, |c| c.id);
        eprintln!(
            "==== Vigil fault on CPU {cpu}: exception {} ({name}), error code {:#x}",
            f.vector, f.error_code
        );
        eprintln!(
            "  rip={:#018x} cs={:#x} rflags={:#x} rsp={:#018x} ss={:#x} cr2={cr2:#x}",
            f.rip, f.cs, f.rflags, f.rsp, f.ss
        );
        eprintln!(
            "  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}",
            f.rax, f.rbx, f.rcx, f.rdx
        );
        eprintln!(
            "  rsi={:#018x} rdi={:#018x} rbp={:#018x} r8 ={:#018x}",
            f.rsi, f.rdi, f.rbp, f.r8
        );
        eprintln!(
            "  r9 ={:#018x} r10={:#018x} r11={:#018x} r12={:#018x}",
            f.r9, f.r10, f.r11, f.r12
        );
        eprintln!(
            "  r13={:#018x} r14={:#018x} r15={:#018x}",
            f.r13, f.r14, f.r15
        );
        backtrace(f.rbp, f.rip);
        guest_state();
    }
    eprintln!("run ended: failed: Vigil fault (exception {})", f.vector);
    crate::power::power_off()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    if enter_fault() {
        eprintln!("==== Vigil panic: {info}");
        let rbp: u64;
        // SAFETY: reading the frame pointer.
        unsafe { core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack)) };
        backtrace(rbp, panic as *const () as u64);
        guest_state();
    }
    eprintln!("run ended: failed: Vigil panic");
    crate::power::power_off()
}
