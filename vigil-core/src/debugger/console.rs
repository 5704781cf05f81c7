//! Vigil's log while gdb is attached: COM2 then carries the GDB protocol, so a log line goes out
//! as a console-output packet (`O` followed by the text in hex; GDB manual, "Stop Reply Packets"),
//! which gdb prints while it waits for the guest to stop. `gdbstub` sends such packets only
//! from inside a `monitor` command, so this one packet is framed here; it is the only protocol
//! text Vigil writes itself.

/// Writes the `O` packet for `text` through `put`: `$O<hex>#<checksum>`. Long text is split into
/// packets of at most `MAX_TEXT` bytes so gdb's packet buffer always holds one.
pub fn o_packets(text: &[u8], put: &mut dyn FnMut(u8)) {
    const MAX_TEXT: usize = 256;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for chunk in text.chunks(MAX_TEXT) {
        put(b'$');
        let mut sum = b'O';
        put(b'O');
        for &b in chunk {
            for digit in [HEX[(b >> 4) as usize], HEX[(b & 15) as usize]] {
                sum = sum.wrapping_add(digit);
                put(digit);
            }
        }
        put(b'#');
        put(HEX[(sum >> 4) as usize]);
        put(HEX[(sum & 15) as usize]);
    }
}

/// Decodes the text of an `O` packet body (`O<hex>`), for tools that show the log.
pub fn decode_o(body: &[u8]) -> Option<alloc::vec::Vec<u8>> {
    let hex = body.strip_prefix(b"O")?;
    if hex.len() % 2 != 0 || hex.is_empty() {
        return None;
    }
    hex.chunks(2)
        .map(|p| {
            let s = core::str::from_utf8(p).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn o_packet_round_trip_and_checksum() {
        let mut out = alloc::vec::Vec::new();
        o_packets(b"hi\n", &mut |b| out.push(b));
        assert_eq!(out, b"$O68690a#bd");
        let body = &out[1..out.len() - 3];
        assert_eq!(decode_o(body).unwrap(), b"hi\n");
        // The checksum is the byte sum of the body modulo 256.
        let sum = body.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        assert_eq!(format!("{sum:02x}").as_bytes(), &out[out.len() - 2..]);
    }

    #[test]
    fn long_text_is_split() {
        let mut out = alloc::vec::Vec::new();
        o_packets(&[b'x'; 600], &mut |b| out.push(b));
        assert_eq!(out.iter().filter(|&&b| b == b'$').count(), 3);
    }
}
