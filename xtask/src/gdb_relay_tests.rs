//! The relay's demultiplexing and the debug-run helpers, without Bochs.

use super::*;

#[test]
fn log_text_and_packets_are_separated() {
    let mut d = Demux::new();
    let s = d.push(b"vigil: tsc-offset +1\r\n+$T05thread:01;#07");
    assert_eq!(s.log, b"vigil: tsc-offset +1\r\n");
    assert_eq!(s.to_gdb, b"+$T05thread:01;#07");
}

#[test]
fn console_output_packets_go_to_both() {
    let mut d = Demux::new();
    // "hi\n" as an O packet, split across two reads.
    let a = d.push(b"$O686");
    let b = d.push(b"90a#bd");
    assert!(a.to_gdb.is_empty() && a.log.is_empty());
    assert_eq!(b.log, b"hi\n");
    assert_eq!(b.to_gdb, b"$O68690a#bd");
    // OK is a reply, not console output.
    assert!(d.push(b"$OK#9a").log.is_empty());
}

#[test]
fn debug_flags_add_vigil_options_once() {
    let mut o = String::from("log=info gdb=com2");
    DebugArgs {
        gdb_port: Some(1234),
        gdb_wait: true,
        debug_vigil: false,
    }
    .add_vigil_options(&mut o);
    assert_eq!(o, "log=info gdb=com2 gdb-wait=on");
    let mut empty = String::new();
    DebugArgs::default().add_vigil_options(&mut empty);
    assert_eq!(empty, "");
}

#[test]
fn bochs_symbols_from_nm() {
    let nm = "0000000004000000 T vigil_entry\n0000000004001000 t core::fmt::write\n\
              0000000004010000 B STACK\n                 U undefined\n";
    let (syms, entry) = symbol_file(nm, 0x400_0000);
    assert_eq!(
        syms,
        "4000000 vigil_entry\n4001000 core::fmt::write\n4010000 STACK\n"
    );
    assert_eq!(entry, 0x400_0000);
    let cmds = debug_vigil_commands(Path::new("/r/vigil.sym"), entry);
    assert_eq!(
        cmds,
        "ldsym global \"/r/vigil.sym\"\nlb 0x4000000\ncontinue\n"
    );
}

#[test]
fn relay_carries_bytes_both_ways() {
    // A stand-in for Bochs' COM2 socket server.
    let bochs = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = bochs.local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("xtask-relay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let com2 = dir.join("com2.txt");
    let _ = std::fs::remove_file(&com2);
    let relay = Relay::start(port, 0, &com2, None).unwrap();
    let (mut vigil, _) = bochs.accept().unwrap();
    vigil.write_all(b"booting\n").unwrap();
    let mut gdb = TcpStream::connect(("127.0.0.1", relay.gdb_port)).unwrap();
    gdb.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    thread::sleep(Duration::from_millis(200));
    gdb.write_all(b"$g#67").unwrap();
    let mut got = [0u8; 5];
    vigil
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    vigil.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"$g#67");
    vigil.write_all(b"+$00#60").unwrap();
    let mut reply = [0u8; 7];
    gdb.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"+$00#60");
    thread::sleep(Duration::from_millis(200));
    assert_eq!(std::fs::read(&com2).unwrap(), b"booting\n");
    relay.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}
