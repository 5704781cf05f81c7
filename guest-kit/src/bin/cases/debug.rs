//! The single-step trap (RFLAGS.TF) across instructions a hypervisor may emulate: the #DB must
//! come right after the instruction, with DR6.BS set, as bare metal delivers it (SDM Vol. 3B
//! 18.3.1.4) — also when the instruction follows MOV SS, whose shadow holds the trap of MOV SS
//! back until after the next instruction (SDM Vol. 3A 6.8.3).

use core::arch::{asm, global_asm};
use guest_kit::interrupts;
use guest_kit::{fail, pass, Outcome};

// The case's own #DB handler: it records where the trap came from and DR6, clears TF in the
// interrupted RFLAGS (so the trap is taken once) and DR6's sticky bits, and returns.
global_asm!(
    r#"
    .global cases_db_stub
cases_db_stub:
    push rax
    mov rax, dr6
    mov [rip + CASES_DB_DR6], rax
    mov rax, [rsp + 8]
    mov [rip + CASES_DB_RIP], rax
    and qword ptr [rsp + 24], ~0x100
    mov eax, 0xffff0ff0
    mov dr6, rax
    inc qword ptr [rip + CASES_DB_COUNT]
    pop rax
    iretq
"#
);

unsafe extern "C" {
    fn cases_db_stub();
}

#[unsafe(no_mangle)]
static mut CASES_DB_DR6: u64 = 0;
#[unsafe(no_mangle)]
static mut CASES_DB_RIP: u64 = 0;
#[unsafe(no_mangle)]
static mut CASES_DB_COUNT: u64 = 0;

const DR6_BS: u64 = 1 << 14;

/// What one traced instruction produced: (#DB count, RIP of the #DB, DR6, the expected RIP).
fn traced(which: u8) -> (u64, u64, u64, u64) {
    let expected: u64;
    // SAFETY: the case runs alone on one CPU; the statics are only read and written here and
    // in the stub, which runs synchronously inside the traced sequence.
    unsafe {
        CASES_DB_COUNT = 0;
        CASES_DB_RIP = 0;
        CASES_DB_DR6 = 0;
        match which {
            // POPF sets TF: the trap comes after the instruction that follows it (CPUID).
            // (RBX is LLVM's: CPUID's result in it is thrown away.)
            0 => asm!(
                "mov {save}, rbx",
                "lea {exp}, [rip + 2f]",
                "pushfq",
                "or qword ptr [rsp], 0x100",
                "popfq",
                "cpuid",
                "2:",
                "nop",
                "mov rbx, {save}",
                save = out(reg) _,
                exp = out(reg) expected,
                inout("eax") 0 => _, out("ecx") _, out("edx") _,
            ),
            // MOV SS holds its own trap back until after CPUID: one #DB, after CPUID.
            1 => asm!(
                "mov {save}, rbx",
                "mov {ss:e}, ss",
                "lea {exp}, [rip + 2f]",
                "pushfq",
                "or qword ptr [rsp], 0x100",
                "popfq",
                "mov ss, {ss:e}",
                "cpuid",
                "2:",
                "nop",
                "mov rbx, {save}",
                save = out(reg) _,
                ss = out(reg) _,
                exp = out(reg) expected,
                inout("eax") 0 => _, out("ecx") _, out("edx") _,
            ),
            // OUT to port 0x80 (trapped in some scenarios).
            _ => asm!(
                "lea {exp}, [rip + 2f]",
                "pushfq",
                "or qword ptr [rsp], 0x100",
                "popfq",
                "out 0x80, al",
                "2:",
                "nop",
                exp = out(reg) expected,
                in("al") 0x5Au8,
            ),
        }
        (CASES_DB_COUNT, CASES_DB_RIP, CASES_DB_DR6, expected)
    }
}

pub(super) fn single_step() -> Outcome {
    let previous = interrupts::handler(1);
    interrupts::set_handler(1, cases_db_stub as *const () as u64);
    let mut results = [(0, 0, 0, 0); 3];
    for (i, r) in results.iter_mut().enumerate() {
        *r = traced(i as u8);
    }
    interrupts::set_handler(1, previous);
    for (name, (count, rip, dr6, expected)) in ["cpuid", "mov-ss-cpuid", "out"].iter().zip(results)
    {
        if count != 1 || rip != expected || dr6 & DR6_BS == 0 {
            return fail!("{name} traps={count} rip={rip:#x} expected={expected:#x} dr6={dr6:#x}");
        }
    }
    pass!(
        "traps after cpuid, mov-ss+cpuid and out, each once with DR6.BS (dr6={:#x})",
        results[0].2
    )
}
