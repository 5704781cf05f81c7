//! The packet path end to end with a fake vCPU: what gdb sends, what it gets back, and what
//! happened to the guest.

use super::arch::Layout;
use super::fake::{Collect, FakeCpu};
use super::framing::packet;
use super::session::{Event, Session};
use super::{ResumeKind, StopKind};
use crate::nested::Perms;
use alloc::string::String;
use alloc::vec::Vec;
use gdbstub::target::ext::breakpoints::WatchKind;

type S = Session<FakeCpu, Collect>;

fn session(layout: Layout) -> (S, Collect) {
    let port = Collect::default();
    let mut cpu = FakeCpu::new();
    cpu.regs.gpr[0] = 0x1122_3344_5566_7788;
    cpu.regs.rip = 0x1000;
    cpu.mem[0x1000..0x1004].copy_from_slice(&[0x55, 0x48, 0x89, 0xE5]);
    (Session::new(cpu, layout, port.clone()), port)
}

/// Sends one packet as gdb does, after acknowledging what came before it; returns the last
/// event and the reply bodies (acks stripped).
fn send<C: super::threads::Threads>(
    s: &mut Session<C, Collect>,
    port: &Collect,
    body: &str,
) -> (Event, Vec<String>) {
    let mut bytes = alloc::vec![b'+'];
    packet(body.as_bytes(), &mut |b| bytes.push(b));
    let mut last = Event::None;
    for b in bytes {
        let e = s.feed(b);
        if e != Event::None {
            last = e;
        }
    }
    (last, replies(&port.take()))
}

fn replies(out: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(out);
    text.split('$')
        .skip(1)
        .filter_map(|p| p.split_once('#').map(|(body, _)| unrle(body)))
        .collect()
}

/// Undoes the protocol's run-length encoding: `X*n` is X repeated n - 29 more times.
fn unrle(body: &str) -> String {
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '*' {
            let n = chars.next().map_or(0, |n| n as usize - 29);
            let last = out.chars().last().unwrap_or('0');
            out.extend(core::iter::repeat_n(last, n));
        } else {
            out.push(c);
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| alloc::format!("{b:02x}")).collect()
}

fn attached() -> (S, Collect) {
    let (mut s, port) = session(Layout::X86_64);
    let (e, r) = send(&mut s, &port, "qSupported:swbreak+;hwbreak+");
    assert_eq!(e, Event::Hold(StopKind::Attach));
    assert!(r[0].contains("PacketSize="), "{r:?}");
    (s, port)
}

#[test]
fn registers_read_in_the_x86_64_layout() {
    let (mut s, port) = attached();
    let (_, r) = send(&mut s, &port, "g");
    // RAX first, little-endian; RIP after the 16 GPRs.
    assert!(r[0].starts_with("8877665544332211"), "{}", r[0]);
    assert_eq!(&r[0][16 * 16..16 * 16 + 16], "0010000000000000");
    assert_eq!(r[0].len(), 0x218 * 2);
}

#[test]
fn registers_in_the_i386_layout_and_written_back() {
    let (mut s, port) = session(Layout::I386);
    send(&mut s, &port, "qSupported");
    let (_, r) = send(&mut s, &port, "g");
    assert_eq!(r[0].len(), 0x134 * 2);
    assert!(r[0].starts_with("88776655"), "EAX is the low half of RAX");
    // Write EAX = 5 through G with the same layout.
    let mut regs = r[0].clone();
    regs.replace_range(0..8, "05000000");
    let (_, r) = send(&mut s, &port, &alloc::format!("G{regs}"));
    assert_eq!(r, ["OK"]);
    assert_eq!(s.target.cpu.regs.gpr[0], 5);
    // A G packet in the other layout is refused, not misread.
    let (_, r) = send(&mut s, &port, &alloc::format!("G{}", "00".repeat(0x218)));
    assert!(r[0].starts_with('E'), "{r:?}");
}

#[test]
fn target_xml_names_the_layout() {
    let (mut s, port) = attached();
    let (_, r) = send(&mut s, &port, "qXfer:features:read:target.xml:0,fff");
    assert!(r[0].contains("i386:x86-64"), "{r:?}");
}

#[test]
fn memory_reads_hide_software_breakpoints_and_unmapped_is_an_error() {
    let (mut s, port) = attached();
    let (_, r) = send(&mut s, &port, "Z0,1001,1");
    assert_eq!(r, ["OK"]);
    assert_eq!(s.target.cpu.mem[0x1001], 0xCC, "INT3 in guest memory");
    assert_eq!(
        s.target.cpu.perms_of(0x1000),
        Perms::from_bits(4),
        "the page is execute-only"
    );
    let (_, r) = send(&mut s, &port, "m1000,4");
    assert_eq!(r, [hex(&[0x55, 0x48, 0x89, 0xE5])]);
    // A write through gdb over the breakpoint changes the original, not the INT3.
    let (_, r) = send(&mut s, &port, "M1001,1:90");
    assert_eq!(r, ["OK"]);
    assert_eq!(s.target.cpu.mem[0x1001], 0xCC);
    let (_, r) = send(&mut s, &port, "m1001,1");
    assert_eq!(r, ["90"]);
    let (_, r) = send(&mut s, &port, "z0,1001,1");
    assert_eq!(r, ["OK"]);
    assert_eq!(s.target.cpu.mem[0x1001], 0x90);
    assert_eq!(s.target.cpu.perms_of(0x1000), Perms::RWX);
    let (_, r) = send(&mut s, &port, "m200000,8");
    assert_eq!(r, ["E0e"]);
    let (_, r) = send(&mut s, &port, "M200000,1:00");
    assert_eq!(r, ["E0e"]);
    let (_, r) = send(&mut s, &port, "Z0,300000,1");
    assert_eq!(r, ["E0e"]);
}

#[test]
fn guest_reads_of_a_breakpoint_page_see_original_bytes() {
    let (mut s, port) = attached();
    send(&mut s, &port, "Z0,1001,1");
    let t = &mut s.target;
    let so = t.state.begin_step_over(&mut t.cpu, 0x1001, true, false);
    assert_eq!(
        t.cpu.mem[0x1001], 0x48,
        "original byte while the guest reads"
    );
    assert_eq!(t.cpu.perms_of(0x1000), Perms::RWX);
    assert_eq!(t.state.finish_step_over(&mut t.cpu, &so), None);
    assert_eq!(t.cpu.mem[0x1001], 0xCC, "breakpoint back after the step");
    assert_eq!(t.cpu.perms_of(0x1000), Perms::from_bits(4));
}

#[test]
fn watchpoints_protect_the_page_and_match_the_exact_range() {
    let (mut s, port) = attached();
    let (_, r) = send(&mut s, &port, "Z2,5008,8");
    assert_eq!(r, ["OK"]);
    assert_eq!(
        s.target.cpu.perms_of(0x5000),
        Perms::R.and(Perms::RWX).or_exec()
    );
    let t = &mut s.target;
    // A write next to the range, changing nothing in it: no hit.
    let so = t.state.begin_step_over(&mut t.cpu, 0x5000, false, true);
    t.cpu.mem[0x5000] = 1;
    assert_eq!(t.state.finish_step_over(&mut t.cpu, &so), None);
    // A write into the range: a hit, and the page is protected again.
    let so = t.state.begin_step_over(&mut t.cpu, 0x5008, false, true);
    t.cpu.mem[0x5008] = 7;
    let hit = t.state.finish_step_over(&mut t.cpu, &so).unwrap();
    assert_eq!((hit.kind, hit.gva), (WatchKind::Write, 0x5008));
    assert!(!t.cpu.perms_of(0x5000).write);
    // Read and access watchpoints take the read permission too.
    let (_, r) = send(&mut s, &port, "Z4,6000,4");
    assert_eq!(r, ["OK"]);
    let p = s.target.cpu.perms_of(0x6000);
    assert!(!p.read && !p.write && p.exec);
    // A range crossing a page is refused.
    let (_, r) = send(&mut s, &port, "Z2,6ffc,8");
    assert!(r[0].is_empty() || r[0].starts_with('E'), "{r:?}");
}

#[test]
fn read_watchpoints_see_read_modify_write_instructions() {
    let (mut s, port) = attached();
    let (_, r) = send(&mut s, &port, "Z3,6000,8");
    assert_eq!(r, ["OK"]);
    let t = &mut s.target;
    // One write-only EPT violation at the watched word, as Bochs reports every store; what the
    // instruction at RIP is decides whether it also read.
    let write_at = |t: &mut super::target::DebugTarget<FakeCpu>, code: &[u8]| {
        t.cpu.mem[0x2000..0x2000 + code.len()].copy_from_slice(code);
        t.cpu.regs.rip = 0x2000;
        let so = t.state.begin_step_over(&mut t.cpu, 0x6000, false, true);
        t.cpu.mem[0x6000] = t.cpu.mem[0x6000].wrapping_add(1);
        t.state.finish_step_over(&mut t.cpu, &so)
    };
    // mov [rip+disp], rax: a plain store is no read.
    assert_eq!(write_at(t, &[0x48, 0x89, 0x05, 0, 0, 0, 0]), None);
    // add qword [rip+disp], 1: read, then written.
    let hit = write_at(t, &[0x48, 0x83, 0x05, 0, 0, 0, 0, 1]).unwrap();
    assert_eq!((hit.kind, hit.gva), (WatchKind::Read, 0x6000));
    assert!(!t.cpu.perms_of(0x6000).read, "the page is closed again");
    // A processor that sets both bits for the same instruction: a read whatever the bytes.
    let so = t.state.begin_step_over(&mut t.cpu, 0x6000, true, true);
    assert!(t.state.finish_step_over(&mut t.cpu, &so).is_some());
    // Outside 64-bit mode the instruction is at CS.base + EIP, and 0x48 is `dec eax`.
    t.cpu.long_mode = false;
    t.cpu.regs.cs_base = 0x1000;
    t.cpu.mem[0x3000..0x3002].copy_from_slice(&[0x01, 0x05]); // add [disp32], eax
    t.cpu.regs.rip = 0x2000;
    let so = t.state.begin_step_over(&mut t.cpu, 0x6000, false, true);
    assert!(t.state.finish_step_over(&mut t.cpu, &so).is_some());
    t.cpu.regs.cs_base = 0;
    assert_eq!(write_at(t, &[0x48, 0x01, 0x05]), None);
}

trait OrExec {
    fn or_exec(self) -> Perms;
}
impl OrExec for Perms {
    fn or_exec(self) -> Perms {
        Perms::from_bits(self.bits() | 4)
    }
}

#[test]
fn continue_step_and_stop_replies() {
    let (mut s, port) = attached();
    send(&mut s, &port, "Z0,1001,1");
    let (e, r) = send(&mut s, &port, "c");
    assert_eq!(e, Event::Resume(ResumeKind::Continue));
    assert!(r.is_empty());
    assert!(s.gdb_waits_for_stop());
    assert!(s.report_stop(StopKind::SwBreak));
    let r = replies(&port.take());
    assert!(r[0].starts_with("T05") && r[0].contains("swbreak"), "{r:?}");
    let (e, _) = send(&mut s, &port, "s");
    assert_eq!(e, Event::Resume(ResumeKind::Step(0)));
    s.report_stop(StopKind::Step);
    let r = replies(&port.take());
    assert!(r[0].starts_with("S05") || r[0].starts_with("T05"), "{r:?}");
    let (e, _) = send(&mut s, &port, "c");
    assert_eq!(e, Event::Resume(ResumeKind::Continue));
    s.report_stop(StopKind::Watch {
        kind: WatchKind::Write,
        addr: 0x5008,
    });
    assert!(replies(&port.take())[0].contains("watch:5008"));
}

#[test]
fn ctrl_c_while_running_stops_with_sigint() {
    let (mut s, port) = attached();
    send(&mut s, &port, "c");
    assert_eq!(s.feed(0x03), Event::Hold(StopKind::Interrupt));
    let r = replies(&port.take());
    assert!(r[0].starts_with("T02") || r[0].starts_with("S02"), "{r:?}");
    // Ctrl-C while stopped does nothing.
    assert_eq!(s.feed(0x03), Event::None);
}

#[test]
fn detach_removes_breakpoints_and_a_new_client_can_attach() {
    let (mut s, port) = attached();
    send(&mut s, &port, "Z0,1001,1");
    send(&mut s, &port, "Z2,5008,8");
    let (e, r) = send(&mut s, &port, "D");
    assert_eq!(e, Event::Detach);
    assert_eq!(r, ["OK"]);
    assert_eq!(s.target.cpu.mem[0x1001], 0x48);
    assert_eq!(s.target.cpu.perms_of(0x1000), Perms::RWX);
    assert_eq!(s.target.cpu.perms_of(0x5000), Perms::RWX);
    assert!(!s.attached);
    let (e, _) = send(&mut s, &port, "qSupported");
    assert_eq!(e, Event::Hold(StopKind::Attach));
}

/// Sends one packet without acknowledging anything first: a retransmission, when gdb's
/// remote timeout expired before the stub's `+` reached it.
fn resend(s: &mut S, port: &Collect, body: &str) -> Vec<String> {
    let mut bytes = Vec::new();
    packet(body.as_bytes(), &mut |b| bytes.push(b));
    for b in bytes {
        s.feed(b);
    }
    replies(&port.take())
}

#[test]
fn a_retransmitted_packet_is_acknowledged_but_answered_once() {
    // gdb sent qSupported, timed out waiting for the `+`, and sent it again before it read
    // anything: one reply, so gdb's next packet gets its own answer.
    let (mut s, port) = session(Layout::X86_64);
    let (_, r) = send(&mut s, &port, "qSupported:swbreak+");
    assert_eq!(r.len(), 1);
    let mut out = Vec::new();
    packet(b"qSupported:swbreak+", &mut |b| out.push(b));
    for b in out {
        s.feed(b);
    }
    assert_eq!(port.take(), b"+", "acknowledged, not answered");
    assert_eq!(s.target.retransmissions, 1);
    let (_, r) = send(&mut s, &port, "vMustReplyEmpty");
    assert_eq!(r, [""], "the empty reply vMustReplyEmpty asks for");
    // The same for a register read, twice in a row.
    let (_, first) = send(&mut s, &port, "g");
    assert!(resend(&mut s, &port, "g").is_empty());
    let (_, second) = send(&mut s, &port, "m1000,4");
    assert_eq!((first.len(), second), (1, alloc::vec!["554889e5".into()]));
    assert_eq!(s.target.retransmissions, 2);
}

#[test]
fn a_packet_repeated_after_gdbs_ack_is_answered_again() {
    let (mut s, port) = attached();
    let (_, a) = send(&mut s, &port, "m1000,2");
    let (_, b) = send(&mut s, &port, "m1000,2");
    assert_eq!(
        (a, b),
        (alloc::vec!["5548".into()], alloc::vec!["5548".into()])
    );
    // Stepping twice: the second `s` follows gdb's ack of the first stop reply.
    let (e, _) = send(&mut s, &port, "s");
    assert_eq!(e, Event::Resume(ResumeKind::Step(0)));
    s.report_stop(StopKind::Step);
    port.take();
    let (e, _) = send(&mut s, &port, "s");
    assert_eq!(e, Event::Resume(ResumeKind::Step(0)));
    assert_eq!(s.target.retransmissions, 0);
}

#[test]
fn without_acknowledgements_every_packet_is_answered() {
    // In no-ack mode gdb does not retransmit, and sends no `+` to tell the two apart.
    let (mut s, port) = attached();
    let (_, r) = send(&mut s, &port, "QStartNoAckMode");
    assert_eq!(r, ["OK"]);
    assert_eq!(resend(&mut s, &port, "m1000,2"), ["5548"]);
    assert_eq!(resend(&mut s, &port, "m1000,2"), ["5548"]);
    assert_eq!(s.target.retransmissions, 0);
}

#[test]
fn kill_is_reported() {
    let (mut s, port) = attached();
    let (e, _) = send(&mut s, &port, "vKill;1");
    assert_eq!(e, Event::Kill);
}

#[test]
fn monitor_commands_answer_as_console_output() {
    let (mut s, port) = attached();
    let cmd = |c: &str| alloc::format!("qRcmd,{}", hex(c.as_bytes()));
    let text = |r: &[String]| -> String {
        r.iter()
            .filter_map(|p| super::console::decode_o(p.as_bytes()))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect()
    };
    let (_, r) = send(&mut s, &port, &cmd("msr 0x10"));
    assert!(text(&r).contains("info Msr(16)"), "{r:?}");
    assert_eq!(r.last().unwrap(), "OK");
    let (_, r) = send(&mut s, &port, &cmd("translate 0x1000"));
    assert!(text(&r).contains("Translate(4096)"));
    s.target.cpu.mem[0x2000] = 0xAB;
    let (_, r) = send(&mut s, &port, &cmd("phys 0x2000 2"));
    assert!(text(&r).contains("0x0000002000: ab 00"), "{}", text(&r));
    let (_, r) = send(&mut s, &port, &cmd("phys-write 0x2001 cdef"));
    assert!(text(&r).contains("wrote 2 bytes"));
    assert_eq!(&s.target.cpu.mem[0x2001..0x2003], &[0xCD, 0xEF]);
    let (_, r) = send(&mut s, &port, &cmd("phys 0x7fffffff"));
    assert!(text(&r).contains("not guest RAM"));
    let (_, r) = send(&mut s, &port, &cmd("frobnicate"));
    assert!(text(&r).contains("unknown command"));
}

#[test]
fn malformed_input_gets_answers_and_the_session_survives() {
    let (mut s, port) = attached();
    // Bad checksum: NAK (ack mode), nothing executed.
    for b in b"$m1000,4#00" {
        s.feed(*b);
    }
    assert_eq!(port.take(), b"-");
    // Overlong: ack, then an error reply.
    let mut long = Vec::from(&b"$M1000,1:"[..]);
    long.extend(core::iter::repeat_n(b'0', 5000));
    long.extend_from_slice(b"#00");
    for b in long {
        s.feed(b);
    }
    assert_eq!(replies(&port.take()), ["E01"]);
    // A well-framed packet the protocol engine cannot parse: an error reply, then business as
    // usual, in no-ack mode too.
    send(&mut s, &port, "QStartNoAckMode");
    let (_, r) = send(&mut s, &port, "m1000");
    assert!(r.iter().any(|p| p.starts_with('E')), "{r:?}");
    let (_, r) = send(&mut s, &port, "m1000,2");
    assert_eq!(r, ["5548"]);
    assert!(!port.take().contains(&b'+'), "no acks in no-ack mode");
}

/// Random bytes, random packets with good and bad checksums, and fragments of real commands:
/// the session never panics and still answers a good packet afterwards.
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    static EXECUTIONS: AtomicU64 = AtomicU64::new(0);

    const WORDS: &[&str] = &[
        "g",
        "G",
        "m",
        "M",
        "X",
        "c",
        "s",
        "?",
        "D",
        "k",
        "vKill;1",
        "Z0,",
        "z0,",
        "Z1,",
        "Z2,",
        "Z3,",
        "Z4,",
        "qRcmd,",
        "qSupported",
        "QStartNoAckMode",
        "qXfer:features:read:target.xml:",
        "vCont;c",
        "vCont;s",
        "vCont?",
        "H",
        "T",
        "p",
        "P",
        "qC",
        "qAttached",
        "1000",
        ",",
        ":",
        "ffffffffffffffff",
        "-1",
        "0",
        "zz",
    ];

    fn input() -> impl Strategy<Value = Vec<u8>> {
        let garbage = proptest::collection::vec(any::<u8>(), 0..64);
        let word_packet = (
            proptest::collection::vec(0..WORDS.len(), 1..5),
            any::<bool>(),
        )
            .prop_map(|(idx, good)| {
                let body: String = idx.iter().map(|&i| WORDS[i]).collect();
                let mut out = Vec::new();
                packet(body.as_bytes(), &mut |b| out.push(b));
                if !good {
                    let n = out.len();
                    out[n - 1] ^= 1;
                }
                out
            });
        let piece = prop_oneof![garbage, word_packet, Just(alloc::vec![0x03u8])];
        proptest::collection::vec(piece, 1..24).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
        #[test]
        fn packet_path_never_crashes(bytes in input()) {
            EXECUTIONS.fetch_add(1, Ordering::Relaxed);
            let (mut s, port) = session(Layout::X86_64);
            for &b in &bytes {
                let _ = s.feed(b);
                // A stop may come at any time the guest runs.
                if s.gdb_waits_for_stop() && b % 7 == 0 {
                    s.report_stop(StopKind::Step);
                }
            }
            port.take();
            // Close any half-received packet, then a good one must be answered.
            for &b in b"#00" {
                s.feed(b);
            }
            if s.gdb_waits_for_stop() {
                s.feed(0x03);
            }
            port.take();
            let (_, r) = send(&mut s, &port, "m1000,2");
            prop_assert!(r.iter().any(|p| p == "5548"), "no answer after {:?}: {:?}", bytes, r);
        }
    }

    /// A long stream mixing random bytes, well-formed packets made of command fragments (with
    /// good and bad checksums) and overlong packets, many more than the structured cases.
    #[test]
    fn random_streams_never_crash() {
        let (mut s, port) = attached();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut inputs, mut bytes) = (0u64, 0u64);
        while inputs < 200_000 {
            inputs += 1;
            let r = next();
            let mut piece = Vec::new();
            match r % 4 {
                0 => piece.extend((0..r % 40).map(|_| next() as u8)),
                1 | 2 => {
                    let body: String = (0..1 + (r >> 8) % 4)
                        .map(|_| WORDS[next() as usize % WORDS.len()])
                        .collect();
                    packet(body.as_bytes(), &mut |b| piece.push(b));
                    if r % 4 == 2 {
                        let n = piece.len();
                        piece[n - 1] ^= 1;
                    }
                }
                _ => {
                    piece.push(b'$');
                    piece.extend(core::iter::repeat_n(
                        b'a',
                        super::super::framing::MAX_BODY + 1 + (r >> 8) as usize % 64,
                    ));
                    piece.extend_from_slice(b"#00");
                }
            }
            bytes += piece.len() as u64;
            for b in piece {
                let _ = s.feed(b);
                if s.gdb_waits_for_stop() && next().is_multiple_of(3) {
                    s.report_stop(StopKind::SwBreak);
                }
            }
            if inputs.is_multiple_of(256) {
                port.take();
            }
        }
        for &b in b"#00" {
            s.feed(b);
        }
        if s.gdb_waits_for_stop() {
            s.feed(0x03);
        }
        port.take();
        let (_, r) = send(&mut s, &port, "m1000,2");
        assert!(r.iter().any(|p| p == "5548"), "{r:?}");
        let (p, rejected, dropped) = s.counts();
        std::eprintln!(
            "fuzz: {inputs} inputs, {bytes} bytes: {p} packets parsed, {rejected} rejected, \
             {dropped} bytes dropped, {} state-machine rebuilds",
            s.restarts
        );
    }
}

/// Two vCPUs: vCPU 1 stopped (the current one), vCPU 0 parked or waiting.
struct Two {
    cpus: [FakeCpu; 2],
    current: usize,
    waiting: [bool; 2],
    hw_changes: u32,
}

impl super::threads::Threads for Two {
    fn count(&self) -> usize {
        2
    }
    fn current_index(&self) -> usize {
        self.current
    }
    fn thread(&mut self, i: usize) -> Option<&mut dyn super::GuestCpu> {
        self.cpus.get_mut(i).map(|c| c as &mut dyn super::GuestCpu)
    }
    fn writable(&self, i: usize) -> bool {
        !self.waiting[i]
    }
    fn describe(&self, i: usize) -> &'static str {
        if self.waiting[i] {
            "waiting"
        } else {
            "vCPU"
        }
    }
    fn hw_changed(&mut self, _slots: &[Option<u64>; 4]) {
        self.hw_changes += 1;
    }
}

fn two() -> (Session<Two, Collect>, Collect) {
    let port = Collect::default();
    let mut cpus = [FakeCpu::new(), FakeCpu::new()];
    for (i, c) in cpus.iter_mut().enumerate() {
        c.regs.gpr[0] = 0xA0 + i as u64;
        c.regs.rip = 0x1000 + 0x100 * i as u64;
    }
    let machine = Two {
        cpus,
        current: 1,
        waiting: [false; 2],
        hw_changes: 0,
    };
    let mut s = Session::new(machine, Layout::X86_64, port.clone());
    let (e, _) = send(&mut s, &port, "qSupported:swbreak+;hwbreak+");
    assert_eq!(e, Event::Hold(StopKind::Attach));
    (s, port)
}

#[test]
fn one_thread_per_vcpu_each_with_its_registers() {
    let (mut s, port) = two();
    let (_, r) = send(&mut s, &port, "qfThreadInfo");
    assert!(
        r[0].starts_with('m') && r[0].contains('1') && r[0].contains('2'),
        "{r:?}"
    );
    let (_, r) = send(&mut s, &port, "qsThreadInfo");
    assert_eq!(r, ["l"]);
    for (thread, rax) in [("1", "a000000000000000"), ("2", "a100000000000000")] {
        let (_, r) = send(&mut s, &port, &alloc::format!("Hg{thread}"));
        assert_eq!(r, ["OK"]);
        let (_, r) = send(&mut s, &port, "g");
        assert!(r[0].starts_with(rax), "thread {thread}: {}", &r[0][..16]);
    }
    // A register write goes to the thread gdb selected.
    let (_, r) = send(&mut s, &port, "Hg1");
    assert_eq!(r, ["OK"]);
    let (_, g) = send(&mut s, &port, "g");
    let mut regs = g[0].clone();
    regs.replace_range(0..16, "0500000000000000");
    let (_, r) = send(&mut s, &port, &alloc::format!("G{regs}"));
    assert_eq!(r, ["OK"]);
    assert_eq!(s.target.cpu.cpus[0].regs.gpr[0], 5);
    assert_eq!(s.target.cpu.cpus[1].regs.gpr[0], 0xA1);
    // Not while that vCPU waits for a start-up IPI.
    s.target.cpu.waiting[0] = true;
    let (_, r) = send(&mut s, &port, &alloc::format!("G{regs}"));
    assert!(r[0].starts_with('E'), "{r:?}");
    let (_, r) = send(&mut s, &port, "qThreadExtraInfo,1");
    assert_eq!(r, [hex(b"waiting")]);
}

#[test]
fn a_step_is_one_vcpus_and_stops_name_their_vcpu() {
    let (mut s, port) = two();
    // gdb's stepi on thread 2 while the others may continue: vCPU 1 steps alone.
    let (e, _) = send(&mut s, &port, "vCont;s:2;c");
    assert_eq!(e, Event::Resume(ResumeKind::Step(1)));
    assert!(s.report_stop(StopKind::Step));
    let r = replies(&port.take());
    assert!(
        r[0].starts_with("T05") && r[0].contains("thread:02;"),
        "{r:?}"
    );
    // With scheduler locking (no default action).
    let (e, _) = send(&mut s, &port, "vCont;s:1");
    assert_eq!(e, Event::Resume(ResumeKind::Step(0)));
    s.report_stop(StopKind::Step);
    port.take();
    let (e, r0) = send(&mut s, &port, "vCont;c");
    assert_eq!(e, Event::Resume(ResumeKind::Continue), "{r0:?}");
    s.report_stop(StopKind::SwBreak);
    let r = replies(&port.take());
    assert!(
        r[0].contains("thread:02;") && r[0].contains("swbreak"),
        "the current vCPU (1) is thread 2: {r:?}"
    );
}

#[test]
fn breakpoints_act_through_the_vcpu_that_stopped_and_reach_every_vcpu() {
    let (mut s, port) = two();
    let (_, r) = send(&mut s, &port, "Z0,1001,1");
    assert_eq!(r, ["OK"]);
    // Memory is the machine's: the fakes have a copy each, the current vCPU's took the INT3.
    assert_eq!(s.target.cpu.cpus[1].mem[0x1001], 0xCC);
    // Hardware breakpoints are announced for every vCPU.
    let (_, r) = send(&mut s, &port, "Z1,2000,1");
    assert_eq!(r, ["OK"]);
    assert_eq!(s.target.cpu.hw_changes, 1);
    assert!(s.target.cpu.cpus[1].slots[0].is_some());
    let (_, r) = send(&mut s, &port, "z1,2000,1");
    assert_eq!(r, ["OK"]);
    assert_eq!(s.target.cpu.hw_changes, 2);
    // Memory reads name their thread (here both translate the same way).
    let (_, r) = send(&mut s, &port, "Hg1");
    assert_eq!(r, ["OK"]);
    let (_, r) = send(&mut s, &port, "m1000,1");
    assert_eq!(r.len(), 1);
}
