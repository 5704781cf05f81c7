//! Tests of the Linux guest's pieces (`linux`, `linux_material`, `linux_checks`), with output
//! from real runs (trimmed).

use super::*;
use crate::linux_checks::*;
use crate::linux_material::{parse_depends, user_file};
use crate::outcome::End;
use crate::scenarios::Check;
use crate::stream::{Capture, Port};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// COM1 of a bare boot of Debian's 6.1 cloud kernel in Bochs (corei7_skylake_x), trimmed.
const BARE_COM1: &str = "\
[    0.000000] Linux version 6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org)
[    1.266419] NMI watchdog: Perf NMI watchdog permanently disabled
[    6.398422] clocksource: Switched to clocksource tsc-early
[    6.723557] Run /init as init process
vigil-linux: initramfs up
vigil-linux: begin uname
Linux (none) 6.1.0-56-cloud-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16) x86_64 GNU/Linux
vigil-linux: end uname
vigil-linux: begin cpuinfo
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 85
model name\t: Intel(R) Core(TM) i7-7800X CPU @ 3.50GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic vmx ssse3 fma cx16 xsave avx
vigil-linux: end cpuinfo
vigil-linux: begin free
              total        used        free      shared  buff/cache   available
Mem:         223696       16336      196424        1940       10936      199576
Swap:             0           0           0
vigil-linux: end free
vigil-linux: begin clocksource
tsc-early
tsc-early hpet acpi_pm 
vigil-linux: end clocksource
vigil-linux: begin dmesg-time
[    0.000000] tsc: Detected 3500.000 MHz processor
[    0.000000] tsc: Detected 3499.912 MHz TSC
[    0.030262] clocksource: tsc-early: mask: 0xffffffffffffffff max_cycles: 0x3272fd97217, max_idle_ns: 440795241220 ns
[    6.398422] clocksource: Switched to clocksource tsc-early
[    6.418942] clocksource: acpi_pm: mask: 0xffffff max_cycles: 0xffffff, max_idle_ns: 2085701024 ns
vigil-linux: end dmesg-time
vigil-linux: begin smp
1
[    0.005663] smpboot: Allowing 1 CPUs, 0 hotplug CPUs
[    1.663043] smpboot: CPU0: Intel(R) Core(TM) i7-7800X CPU @ 3.50GHz (family: 0x6, model: 0x55, stepping: 0x4)
[    1.811009] smp: Bringing up secondary CPUs ...
[    1.811063] smp: Brought up 1 node, 1 CPU
[    1.815040] smpboot: Max logical packages: 1
vigil-linux: end smp
vigil-linux: done
[    6.730380] reboot: Power down";

const VIGIL_COM2: &str = "\
Vigil 0.1.0 — Intel VT-x hypervisor
vigil memory: image [0xfdf3000-0xfebd000), pool [0xfebd000-0xfff0000) — absent from the guest (2036 KiB in all)
guest requested ACPI sleep (PM1a_CNT at port 0xb004 <- 0x2001: SLP_TYP 0): powering off
exit statistics:
reason                             count     total-ticks  median-ticks
CPUID                                898          237225           264
control-register access                1             538           538
I/O instruction                       12          265646           262
RDMSR                                  2             499           240
XSETBV                                 1             279           279
total                                914          504187             -
run ended: ok";

fn outcome(mode: Mode, com1: &str, com2: &str, exited: bool) -> Outcome {
    let mut capture = Capture::default();
    for line in com1.lines() {
        capture.lines.push((Port::Guest, line.to_string()));
    }
    for line in com2.lines() {
        capture.lines.push((Port::Vigil, line.to_string()));
    }
    Outcome {
        mode,
        capture,
        end: if exited {
            End::Exited(ExitStatus::from_raw(1 << 8))
        } else {
            End::TimedOut
        },
        elapsed: Duration::from_secs(30),
        first_byte: Some(Duration::from_secs(1)),
        timeout: DEFAULT_TIMEOUT,
        bochs_problems: Vec::new(),
        dir: PathBuf::from("/tmp/x"),
    }
}

/// COM1 under Vigil: Vigil's pool is missing from the guest's memory.
fn vigil_com1() -> String {
    BARE_COM1
        .replace("Mem:         223696", "Mem:         221680")
        .replace(" vmx ssse3", " ssse3")
}

fn scenario(name: &'static str, mode: Mode, check: fn(&Check) -> Result<(), String>) -> Scenario {
    Scenario {
        name,
        guest: GUEST,
        guest_args: "",
        mode,
        vigil_options: "",
        cpu_model: crate::bochs::DEFAULT_CPU_MODEL,
        timeout_secs: 600,
        baseline: None,
        check,
    }
}

fn run_check(s: &Scenario, o: &Outcome, baseline: Option<&Outcome>) -> Result<(), String> {
    (s.check)(&Check {
        scenario: s,
        outcome: o,
        baseline,
    })
}

#[test]
fn the_init_report_parses_sections_and_values() {
    let init = InitReport::parse(BARE_COM1.lines());
    assert!(init.banner && init.done);
    assert_eq!(
        init.sections.keys().collect::<Vec<_>>(),
        vec![
            "clocksource",
            "cpuinfo",
            "dmesg-time",
            "free",
            "smp",
            "uname"
        ]
    );
    let (kernel, release, machine) = init.uname().unwrap();
    assert_eq!(
        (kernel.as_str(), release.as_str(), machine.as_str()),
        ("Linux", "6.1.0-56-cloud-amd64", "x86_64")
    );
    assert_eq!(init.cpuinfo("vendor_id").unwrap(), "GenuineIntel");
    assert_eq!(init.cpuinfo("model").unwrap(), "85");
    assert!(init.cpuinfo("flags").unwrap().contains(" vmx "));
    assert!(init.cpuinfo("bogomips").is_err());
    assert_eq!(init.mem_total_kib().unwrap(), 223696);
    let (current, available) = init.clocksource().unwrap();
    assert_eq!(current, "tsc-early");
    assert_eq!(available, vec!["tsc-early", "hpet", "acpi_pm"]);
    assert_eq!(init.section("dmesg-time").unwrap().len(), 5);
    // Kernel lines before /init are in no section.
    assert!(!init
        .sections
        .values()
        .flatten()
        .any(|l| l.contains("Run /init")));
    assert_eq!(
        clocksource_switches(BARE_COM1.lines()),
        vec!["tsc-early", "tsc-early"]
    );
    assert!(
        tsc_trouble(BARE_COM1.lines()).is_empty(),
        "the NMI watchdog is no TSC trouble"
    );
    assert_eq!(
        tsc_trouble(["[ 9.1] tsc: Marking TSC unstable due to clocksource watchdog"]).len(),
        1
    );
    assert_eq!(init.processors().unwrap(), (1, 1));
}

#[test]
fn processors_and_tsc_trouble_between_them() {
    let four = BARE_COM1
        .replace("vigil-linux: begin smp\n1\n", "vigil-linux: begin smp\n4\n")
        .replace("Brought up 1 node, 1 CPU", "Brought up 1 node, 4 CPUs");
    assert_eq!(
        InitReport::parse(four.lines()).processors().unwrap(),
        (4, 4)
    );
    let none = BARE_COM1.replace("[    1.811063] smp: Brought up 1 node, 1 CPU\n", "");
    assert!(InitReport::parse(none.lines())
        .processors()
        .unwrap_err()
        .contains("Brought up"));
    // arch/x86/kernel/tsc_sync.c's complaints.
    for line in [
        "[    1.9] TSC synchronization [CPU#0 -> CPU#1]:",
        "[    1.9] Measured 2718 cycles TSC warp between CPUs, turning off TSC clock.",
        "[    1.9] [Firmware Bug]: TSC ADJUST differs: CPU1 0 --> 1000. Restoring",
    ] {
        assert_eq!(tsc_trouble([line]).len(), 1, "{line}");
    }
}

#[test]
fn verdicts() {
    let bare = outcome(Mode::Bare, BARE_COM1, "", true);
    assert_eq!(
        verdict(&bare, true).unwrap(),
        "vigil-linux: done; Bochs exited"
    );
    let hung = outcome(Mode::Bare, BARE_COM1, "", false);
    assert!(verdict(&hung, true).unwrap_err().contains("timed out"));
    let cut = BARE_COM1.replace("vigil-linux: done", "");
    let cut = outcome(Mode::Bare, &cut, "", true);
    assert!(verdict(&cut, true).unwrap_err().contains("last line"));
    // The user's own initrd prints no markers: Bochs' exit is enough bare.
    let theirs = outcome(Mode::Bare, "[ 1.0] hello", "", true);
    assert!(verdict(&theirs, false).is_ok());
    assert!(verdict(&theirs, true)
        .unwrap_err()
        .contains("never started"));
    let vigil = outcome(Mode::Vigil, &vigil_com1(), VIGIL_COM2, true);
    assert_eq!(
        verdict(&vigil, true).unwrap(),
        "vigil-linux: done; run ended: ok"
    );
    let failed = VIGIL_COM2.replace("run ended: ok", "run ended: failed: EPT violation");
    let failed = outcome(Mode::Vigil, &vigil_com1(), &failed, true);
    assert!(verdict(&failed, true)
        .unwrap_err()
        .contains("EPT violation"));
}

#[test]
fn linux_scenario_checks() {
    let bare_s = scenario("linux-bare", Mode::Bare, check_bare);
    let bare = outcome(Mode::Bare, BARE_COM1, "", true);
    run_check(&bare_s, &bare, None).unwrap();
    let noisy = outcome(Mode::Bare, BARE_COM1, "hello", true);
    assert!(run_check(&bare_s, &noisy, None)
        .unwrap_err()
        .contains("silent"));

    let vigil_s = scenario("linux-vigil", Mode::Vigil, check_vigil);
    let vigil = outcome(Mode::Vigil, &vigil_com1(), VIGIL_COM2, true);
    run_check(&vigil_s, &vigil, Some(&bare)).unwrap();
    run_check(&vigil_s, &vigil, None).unwrap();
    // All of the machine's memory under Vigil: its pool was not taken away.
    let leaky = BARE_COM1.replace(" vmx ssse3", " ssse3");
    let leaky = outcome(Mode::Vigil, &leaky, VIGIL_COM2, true);
    assert!(run_check(&vigil_s, &leaky, Some(&bare))
        .unwrap_err()
        .contains("pool"));
    let no_cpuid = VIGIL_COM2
        .replace(
            "CPUID                                898          237225           264\n",
            "",
        )
        .replace(
            "total                                914",
            "total                                 16",
        );
    let no_cpuid = outcome(Mode::Vigil, &vigil_com1(), &no_cpuid, true);
    assert!(run_check(&vigil_s, &no_cpuid, None)
        .unwrap_err()
        .contains("no CPUID"));
    let bad_sum = VIGIL_COM2.replace(
        "total                                914",
        "total                                915",
    );
    let bad_sum = outcome(Mode::Vigil, &vigil_com1(), &bad_sum, true);
    assert!(run_check(&vigil_s, &bad_sum, None)
        .unwrap_err()
        .contains("add up"));
    let amd = vigil_com1().replace("GenuineIntel", "AuthenticAMD");
    let amd = outcome(Mode::Vigil, &amd, VIGIL_COM2, true);
    assert!(run_check(&vigil_s, &amd, None)
        .unwrap_err()
        .contains("vendor_id"));
    // VMX shown to the guest under Vigil, or missing bare.
    let shown = outcome(Mode::Vigil, BARE_COM1, VIGIL_COM2, true);
    assert!(run_check(&vigil_s, &shown, None)
        .unwrap_err()
        .contains("flags show vmx"));
    let hidden_bare = outcome(Mode::Bare, &vigil_com1(), "", true);
    assert!(run_check(&bare_s, &hidden_bare, None)
        .unwrap_err()
        .contains("lack `vmx`"));
    // On an AMD model the vendor and the flag are AMD's.
    let ryzen_s = Scenario {
        cpu_model: "ryzen",
        ..scenario("linux-vigil-ryzen", Mode::Vigil, check_vigil)
    };
    let ryzen = vigil_com1().replace("GenuineIntel", "AuthenticAMD");
    run_check(
        &ryzen_s,
        &outcome(Mode::Vigil, &ryzen, VIGIL_COM2, true),
        None,
    )
    .unwrap();
    let ryzen_svm = ryzen.replace(" ssse3", " svm ssse3");
    assert!(run_check(
        &ryzen_s,
        &outcome(Mode::Vigil, &ryzen_svm, VIGIL_COM2, true),
        None
    )
    .unwrap_err()
    .contains("flags show svm"));
    let no_free = vigil_com1().replace("Mem:", "Nope:");
    let no_free = outcome(Mode::Vigil, &no_free, VIGIL_COM2, true);
    assert!(run_check(&vigil_s, &no_free, None)
        .unwrap_err()
        .contains("Mem:"));
}

#[test]
fn time_checks_compare_with_bare() {
    let bare = outcome(Mode::Bare, BARE_COM1, "", true);
    let time_s = scenario("linux-hide", Mode::Vigil, check_time);
    let same = outcome(Mode::Vigil, &vigil_com1(), VIGIL_COM2, true);
    run_check(&time_s, &same, Some(&bare)).unwrap();
    assert!(run_check(&time_s, &same, None)
        .unwrap_err()
        .contains("linux-bare"));
    // tsc-early refined into tsc: still the TSC.
    let refined = vigil_com1().replace(
        "[    6.418942] clocksource: acpi_pm",
        "[    6.500000] clocksource: Switched to clocksource tsc\n[    6.418942] clocksource: acpi_pm",
    );
    let refined = refined.replacen("tsc-early\ntsc-early hpet", "tsc\ntsc hpet", 1);
    let refined = outcome(Mode::Vigil, &refined, VIGIL_COM2, true);
    run_check(&time_s, &refined, Some(&bare)).unwrap();
    // A switch away from the TSC.
    let hpet = vigil_com1().replace(
        "[    6.418942] clocksource: acpi_pm",
        "[    6.500000] clocksource: Switched to clocksource hpet\n[    6.418942] clocksource: acpi_pm",
    );
    let hpet = outcome(Mode::Vigil, &hpet, VIGIL_COM2, true);
    assert!(run_check(&time_s, &hpet, Some(&bare))
        .unwrap_err()
        .contains("switched to clocksource hpet"));
    let current = vigil_com1().replacen("tsc-early\ntsc-early hpet", "acpi_pm\ntsc-early hpet", 1);
    let current = outcome(Mode::Vigil, &current, VIGIL_COM2, true);
    assert!(run_check(&time_s, &current, Some(&bare))
        .unwrap_err()
        .contains("clocksource is acpi_pm"));
    // Instability anywhere on the console, even outside the dmesg section.
    let unstable = format!(
        "[    3.0] clocksource: timekeeping watchdog on CPU0: Marking clocksource 'tsc-early' as unstable because the skew is too large\n{}",
        vigil_com1()
    );
    let unstable = outcome(Mode::Vigil, &unstable, VIGIL_COM2, true);
    assert!(run_check(&time_s, &unstable, Some(&bare))
        .unwrap_err()
        .contains("unstable"));
}

#[test]
fn command_lines_and_grub_entries() {
    let args = LinuxArgs {
        append: " loglevel=4  quiet ".into(),
        ..LinuxArgs::default()
    };
    assert_eq!(args.cmdline(), format!("{BASE_CMDLINE} loglevel=4 quiet"));
    assert!(BASE_CMDLINE.contains("clearcpuid=580"));
    // Linux reads one `clearcpuid=`: an appended one joins the base's.
    let more = LinuxArgs {
        append: "clearcpuid=289 vigil.wait=4".into(),
        ..LinuxArgs::default()
    };
    assert_eq!(
        more.cmdline(),
        "console=ttyS0,115200 panic=-1 clearcpuid=580,289 vigil.wait=4"
    );
    let vigil = grub_cfg(Some("tsc=hide"), &args.cmdline());
    assert!(vigil.contains("    multiboot2 /boot/vigil tsc=hide\n"));
    assert!(vigil.contains(&format!(
        "    module2 /boot/vmlinuz guest {BASE_CMDLINE} loglevel=4 quiet\n"
    )));
    assert!(vigil.contains("    module2 --nounzip /boot/initrd.gz initrd\n"));
    assert!(!vigil.contains("    linux "));
    let bare = grub_cfg(None, BASE_CMDLINE);
    assert!(bare.contains(&format!("    linux /boot/vmlinuz {BASE_CMDLINE}\n")));
    assert!(bare.contains("    initrd /boot/initrd.gz\n"));
    assert!(!bare.contains("multiboot"));
    assert!(bare.contains("        if initrd /boot/initrd.gz; then\n            boot\n"));
}

#[test]
fn apt_cache_depends_names_the_kernel_package() {
    let text = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
    assert_eq!(
        parse_depends(text).as_deref(),
        Some("linux-image-6.1.0-56-cloud-amd64")
    );
    assert_eq!(parse_depends("linux-image-cloud-amd64\n"), None);
    assert_eq!(
        parse_depends("  Depends: <linux-image-cloud-amd64>\n"),
        None
    );
}

#[test]
fn user_files_are_checked() {
    let dir = std::env::temp_dir().join(format!("xtask-linux-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty");
    fs::write(&empty, b"").unwrap();
    let full = dir.join("bzImage");
    fs::write(&full, b"MZ").unwrap();
    assert_eq!(user_file(&full, "--kernel").unwrap(), full);
    assert!(user_file(&empty, "--kernel").unwrap_err().contains("empty"));
    assert!(user_file(&dir, "--initrd")
        .unwrap_err()
        .contains("not a regular file"));
    let missing = user_file(&dir.join("nope"), "--initrd").unwrap_err();
    assert!(missing.starts_with("--initrd ") && missing.contains("No such file"));
    fs::remove_dir_all(&dir).unwrap();
}
