//! The initramfs of the Linux guest: busybox-static and an `/init` that reports a few facts in
//! sections between marker lines, then powers the machine off. Packed with `cpio -o -H newc`
//! and `gzip -9n`; rebuilt only when the init script or busybox changed.
//!
//! What `/init` prints on the console (COM1), the contract [`crate::linux`] parses:
//! ```text
//! vigil-linux: initramfs up
//! vigil-linux: begin uname
//! Linux (none) 6.1.0-… #1 SMP PREEMPT_DYNAMIC Debian … x86_64 GNU/Linux
//! vigil-linux: end uname
//! vigil-linux: begin cpuinfo        (the first lines of /proc/cpuinfo and its flags line)
//! vigil-linux: begin free           (busybox free, in KiB)
//! vigil-linux: begin clocksource    (current_clocksource, then available_clocksource)
//! vigil-linux: begin wait           (only with `vigil.wait=N`: `sleep N`, quiet)
//! vigil-linux: begin dmesg-time     (dmesg | grep -iE "tsc|clocksource")
//! vigil-linux: begin smp            (nproc, then dmesg's smp: and smpboot: lines)
//! …
//! vigil-linux: done
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The prefix of every marker line `/init` prints.
pub const MARKER: &str = "vigil-linux:";
/// The first line `/init` prints.
pub const BANNER: &str = "vigil-linux: initramfs up";
/// The last line `/init` prints before it powers off.
pub const DONE: &str = "vigil-linux: done";
/// The sections `/init` prints, in order.
pub const SECTIONS: &[&str] = &[
    "uname",
    "cpuinfo",
    "free",
    "clocksource",
    "dmesg-time",
    "smp",
];

/// `/init`. Kernel messages stop reaching the console once it runs (`dmesg -n 1`), so they do
/// not cut into the sections; the dmesg section comes last to catch everything up to then.
/// Before powering off it waits for the console to drain (`stty` sets the line with
/// TCSADRAIN): `poweroff -f` does not wait, and the end of the output would be lost.
pub const INIT: &str = r#"#!/bin/busybox sh
# /init of the Linux guest, written by cargo xtask (xtask/src/initramfs.rs).
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin
mount -t sysfs sysfs /sys
dmesg -n 1
echo "vigil-linux: initramfs up"
section() {
    name=$1
    shift
    echo "vigil-linux: begin $name"
    "$@" 2>&1
    echo "vigil-linux: end $name"
}
cs=/sys/devices/system/clocksource/clocksource0
section uname uname -a
section cpuinfo sh -c 'head -n 8 /proc/cpuinfo; grep -m 1 "^flags" /proc/cpuinfo'
section free free
# `vigil.wait=N` on the kernel's command line: N seconds of quiet before the last sections,
# so the kernel's clocksource watchdog and its refined TSC calibration run first.
wait=$(sed -n 's/.*vigil\.wait=\([0-9]*\).*/\1/p' /proc/cmdline)
if [ -n "$wait" ]; then
    section wait sleep "$wait"
fi
section clocksource cat $cs/current_clocksource $cs/available_clocksource
section dmesg-time sh -c 'dmesg | grep -iE "tsc|clocksource"'
section smp sh -c 'nproc; dmesg | grep -E "smp: |smpboot: "'
echo "vigil-linux: done"
stty -F /dev/console 115200
poweroff -f
"#;

/// Build (or reuse) `<cache>/initrd.gz` with `busybox` as `/bin/busybox`. Returns its path and
/// whether it was built now.
pub fn build(cache: &Path, busybox: &Path) -> Result<(PathBuf, bool), String> {
    let out = cache.join("initrd.gz");
    let stamp_path = cache.join("initrd.stamp");
    let stamp = stamp(busybox)?;
    if out.is_file() && fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) {
        return Ok((out, false));
    }
    let tree = cache.join("initramfs");
    if tree.exists() {
        fs::remove_dir_all(&tree).map_err(|e| format!("cannot clear {}: {e}", tree.display()))?;
    }
    for dir in ["bin", "proc", "sys", "dev", "tmp"] {
        let d = tree.join(dir);
        fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let bb = tree.join("bin/busybox");
    fs::copy(busybox, &bb).map_err(|e| format!("cannot copy {}: {e}", busybox.display()))?;
    let init = tree.join("init");
    fs::write(&init, INIT).map_err(|e| format!("cannot write {}: {e}", init.display()))?;
    for exe in [&bb, &init] {
        fs::set_permissions(exe, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("cannot chmod {}: {e}", exe.display()))?;
    }
    // Fixed times: the same inputs give the same bytes.
    for rel in file_list(&tree)?.iter().rev() {
        let path = tree.join(rel);
        fs::File::open(&path)
            .and_then(|f| f.set_modified(std::time::UNIX_EPOCH))
            .map_err(|e| format!("cannot set the time of {}: {e}", path.display()))?;
    }
    let cpio = pack(&tree)?;
    let gz = gzip(&cpio)?;
    let tmp = cache.join("initrd.gz.tmp");
    fs::write(&tmp, gz).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    fs::rename(&tmp, &out).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    fs::write(&stamp_path, stamp)
        .map_err(|e| format!("cannot write {}: {e}", stamp_path.display()))?;
    Ok((out, true))
}

/// What the archive was made from: busybox's size and modification time, and the init script.
fn stamp(busybox: &Path) -> Result<String, String> {
    let meta = fs::metadata(busybox).map_err(|e| format!("{}: {e}", busybox.display()))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    Ok(format!("busybox {} {mtime}\n{INIT}", meta.len()))
}

/// The paths of a tree, relative (`.`, `./bin`, `./bin/busybox`, …), sorted: cpio's input.
pub fn file_list(tree: &Path) -> Result<Vec<String>, String> {
    fn walk(root: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), String> {
        let dir = root.join(rel);
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = format!("{rel}/{}", entry.file_name().to_string_lossy());
            out.push(name.clone());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(root, &name, out)?;
            }
        }
        Ok(())
    }
    let mut list = vec![".".to_string()];
    walk(tree, ".", &mut list)?;
    Ok(list)
}

/// `cpio -o -H newc` over the tree, every file owned by root, with reproducible inode numbers.
fn pack(tree: &Path) -> Result<Vec<u8>, String> {
    let list = file_list(tree)?.join("\n") + "\n";
    filter(
        Command::new("cpio")
            .args(["-o", "-H", "newc", "-R", "0:0", "--reproducible", "--quiet"])
            .current_dir(tree),
        list.as_bytes(),
        "cpio (Debian package cpio)",
    )
}

fn gzip(data: &[u8]) -> Result<Vec<u8>, String> {
    filter(Command::new("gzip").args(["-9", "-n", "-c"]), data, "gzip")
}

/// Run a filter program: `input` on its stdin, its stdout returned.
fn filter(cmd: &mut Command, input: &[u8], what: &str) -> Result<Vec<u8>, String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = input.to_vec();
    // Written from a thread: the filter's output would fill its pipe while we still write.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{what}: {e}"))?;
    let written = writer
        .join()
        .map_err(|_| format!("{what}: writer panicked"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    written.map_err(|e| format!("{what}: cannot write its input: {e}"))?;
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_prints_every_section_between_the_banner_and_done() {
        assert!(INIT.starts_with("#!/bin/busybox sh\n"));
        let banner = INIT.find(BANNER).unwrap();
        let done = INIT.find(&format!("echo \"{DONE}\"")).unwrap();
        let mut last = banner;
        for name in SECTIONS {
            let at = INIT
                .find(&format!("section {name} "))
                .unwrap_or_else(|| panic!("no section {name}"));
            assert!(last < at && at < done, "section {name} out of order");
            last = at;
        }
        assert!(INIT.trim_end().ends_with("poweroff -f"));
        assert!(INIT.contains("echo \"vigil-linux: begin $name\""));
        assert!(INIT.contains("echo \"vigil-linux: end $name\""));
    }

    #[test]
    fn the_archive_is_built_once_and_again_when_its_inputs_change() {
        let tmp = std::env::temp_dir().join(format!("xtask-initramfs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).unwrap();
        let busybox = tmp.join("busybox");
        fs::write(&busybox, b"not really busybox").unwrap();
        let (gz, built) = build(&tmp, &busybox).unwrap();
        assert!(built);
        let bytes = fs::read(&gz).unwrap();
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
        let (_, again) = build(&tmp, &busybox).unwrap();
        assert!(!again, "unchanged inputs reuse the archive");
        fs::write(tmp.join("initrd.stamp"), "an older init script").unwrap();
        let (_, rebuilt) = build(&tmp, &busybox).unwrap();
        assert!(rebuilt, "a changed init script rebuilds it");
        assert_eq!(fs::read(&gz).unwrap(), bytes, "the archive is reproducible");

        // The cpio stream holds /init and /bin/busybox, owned by root.
        let list = file_list(&tmp.join("initramfs")).unwrap();
        for want in [".", "./bin", "./bin/busybox", "./init", "./proc", "./sys"] {
            assert!(list.iter().any(|p| p == want), "{want} missing: {list:?}");
        }
        let cpio = pack(&tmp.join("initramfs")).unwrap();
        let text = String::from_utf8_lossy(&cpio);
        assert!(text.starts_with("070701"), "newc magic");
        assert!(text.contains("TRAILER!!!"));
        assert!(text.contains("vigil-linux: initramfs up"));
        fs::remove_dir_all(&tmp).unwrap();
    }
}
