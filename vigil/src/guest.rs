//! From GRUB's modules to a guest ready to launch: find the guest image (and an initrd), tell a
//! Linux bzImage from a multiboot kernel, load it with the matching boot protocol, write the
//! boot data it expects, and build its EPT.
//!
//! Modules (docs/architecture.md): `module2 PATH guest [COMMAND LINE]` is the kernel,
//! `module2 PATH initrd` an initial ramdisk for a Linux kernel.

use crate::{acpi, guest_mem, intel, mem};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use vigil::loader::{linux, multiboot1, EntryState, GuestMemory, LoadError};
use vigil::memmap::MemoryMap;

/// Guest-physical page where Vigil writes the boot GDT and the boot protocol's data (multiboot
/// information, Linux command line), in conventional memory that boot protocols leave to the
/// loader. The Linux zero page follows at 0x9000.
const BOOT_DATA: u64 = 0x8000;
const BOOT_DATA_SIZE: u64 = 0x2000;
/// Two bytes in the boot data page, after the GDT, where calibration runs a CPUID before the
/// guest starts.
pub const CALIBRATION_SCRATCH: u64 = BOOT_DATA + 0x80;
pub const MAX_MODULES: usize = 8;

#[derive(Clone, Copy)]
struct Module<'a> {
    start: u64,
    end: u64,
    args: &'a str,
}

impl Module<'_> {
    fn bytes(&self) -> &'static [u8] {
        // SAFETY: modules lie in RAM GRUB reported, which Vigil's pool avoided; they are only
        // read, and only before the guest runs.
        unsafe {
            core::slice::from_raw_parts(self.start as *const u8, (self.end - self.start) as usize)
        }
    }
}

/// The modules GRUB loaded, by role. Built before the heap exists: no allocation.
pub struct Modules<'a> {
    all: [(u64, u64); MAX_MODULES],
    count: usize,
    guest: Option<Module<'a>>,
    initrd: Option<Module<'a>>,
}

impl<'a> Modules<'a> {
    pub fn from_boot_info(mbi: &'a multiboot2::BootInformation) -> Modules<'a> {
        let mut m = Modules {
            all: [(0, 0); MAX_MODULES],
            count: 0,
            guest: None,
            initrd: None,
        };
        for tag in mbi.module_tags().take(MAX_MODULES) {
            let (start, end) = (tag.start_address() as u64, tag.end_address() as u64);
            m.all[m.count] = (start, end);
            m.count += 1;
            let line = tag.cmdline().unwrap_or("");
            let (role, args) = line.split_once(' ').unwrap_or((line, ""));
            let module = Module { start, end, args };
            match role {
                "guest" if m.guest.is_none() => m.guest = Some(module),
                "initrd" if m.initrd.is_none() => m.initrd = Some(module),
                _ => log::warn!("ignoring boot module [{start:#x}-{end:#x}) \"{line}\": role is not guest or initrd"),
            }
        }
        m
    }

    /// Every module's range, for keeping Vigil's pool off them.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.all[..self.count].iter().copied()
    }
}

/// Loads the guest and builds what the vCPU needs to start it.
pub fn load(
    modules: &Modules,
    map: &MemoryMap,
    rsdt: Option<u64>,
    xsdt: Option<u64>,
    caps: &vmx::caps::VmxCaps,
) -> Result<intel::setup::GuestSetup, String> {
    let guest = modules
        .guest
        .ok_or("no guest module: GRUB must load one with `module2 PATH guest [ARGS]`")?;
    // The command line lives in GRUB's boot information, which is guest RAM like any other and
    // may lie where the guest loads: keep a copy before writing a byte of guest memory.
    let args = String::from(guest.args);
    let guest = Module {
        args: &args,
        ..guest
    };
    let mut memory = guest_mem::Loader;
    // Flat 32-bit code (0x10) and data (0x18) descriptors: the selectors both boot protocols
    // start with (multiboot spec 3.2; Linux boot.rst, __BOOT_CS and __BOOT_DS).
    let gdt: [u64; 4] = [0, 0, 0x00CF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];
    let gdt_bytes: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();
    memory
        .write(BOOT_DATA, &gdt_bytes)
        .map_err(|e| format!("boot data: {e}"))?;

    let entry = if linux::is_bzimage(guest.bytes()) {
        load_linux(&guest, modules, map, &mut memory)?
    } else {
        if modules.initrd.is_some() {
            log::warn!("an initrd module was given, but the guest is not a Linux kernel: ignored");
        }
        load_multiboot(&guest, map, &mut memory)?
    };
    let pm1a_control = acpi::pm1a_control_port(rsdt, xsdt);
    match pm1a_control {
        Some(p) => log::info!("ACPI PM1a control port {p:#x}: trapped to see the guest power off"),
        None => log::warn!("no ACPI FADT found: only the shutdown port ends the guest"),
    }
    let vigil_ranges = [mem::image_range(), mem::pool_range()];
    let eptp = intel::ept::build(map, &vigil_ranges, caps)?;
    Ok(intel::setup::GuestSetup {
        entry,
        gdt: BOOT_DATA,
        eptp,
        pm1a_control,
    })
}

fn load_linux(
    guest: &Module,
    modules: &Modules,
    map: &MemoryMap,
    memory: &mut guest_mem::Loader,
) -> Result<EntryState, String> {
    let err = |e: LoadError| format!("Linux kernel: {e}");
    let initrd = modules.initrd.map(|m| m.bytes());
    // Module sources must survive until everything is copied; the boot data page is Vigil's.
    let mut avoid: Vec<(u64, u64)> = modules.ranges().collect();
    avoid.push((BOOT_DATA, BOOT_DATA + BOOT_DATA_SIZE));
    let (at, entry) =
        linux::load(guest.bytes(), initrd, guest.args, map, &avoid, None, memory).map_err(err)?;
    log::info!(
        "guest: Linux kernel at {:#x} ({} KiB, boot protocol {}.{:02}), command line \"{}\"",
        at.kernel,
        guest.bytes().len() / 1024,
        read_version(guest.bytes()) >> 8,
        read_version(guest.bytes()) & 0xFF,
        guest.args
    );
    if let (Some(addr), Some(data)) = (at.initrd, initrd) {
        log::info!(
            "guest: initrd at [{:#x}-{:#x}) ({} KiB)",
            addr,
            addr + data.len() as u64,
            data.len() / 1024
        );
    }
    Ok(entry)
}

fn read_version(image: &[u8]) -> u16 {
    image
        .get(0x206..0x208)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .unwrap_or(0)
}

fn load_multiboot(
    guest: &Module,
    map: &MemoryMap,
    memory: &mut guest_mem::Loader,
) -> Result<EntryState, String> {
    let err = |e: LoadError| {
        format!("guest image (not a Linux bzImage, so read as a multiboot kernel): {e}")
    };
    let image = guest.bytes();
    // GRUB may have put the module where the image loads: then load from a copy.
    let (start, end) = multiboot1::extent(image).map_err(err)?;
    let copy;
    let image = if start < guest.end && guest.start < end {
        let mut v = Vec::new();
        v.try_reserve_exact(image.len()).map_err(|_| {
            format!(
                "guest image: it loads to [{start:#x}-{end:#x}), over its own module at [{:#x}-{:#x}), \
                 which is too large ({} bytes) to copy aside",
                guest.start,
                guest.end,
                image.len()
            )
        })?;
        v.extend_from_slice(image);
        log::debug!("guest module overlaps its load range: loading from a copy");
        copy = v;
        &copy[..]
    } else {
        image
    };
    if start < BOOT_DATA + BOOT_DATA_SIZE && BOOT_DATA < end {
        return Err(format!(
            "guest image: it loads over Vigil's boot data at {BOOT_DATA:#x}"
        ));
    }
    let loaded = multiboot1::load(image, memory).map_err(err)?;
    let info_at = BOOT_DATA + 0x100;
    let info = multiboot1::build_info(info_at as u32, guest.args, map);
    if info.len() as u64 > BOOT_DATA_SIZE - 0x100 {
        return Err("guest command line and memory map do not fit the boot data page".into());
    }
    memory.write(info_at, &info).map_err(err)?;
    log::info!(
        "guest: multiboot kernel [{:#x}-{:#x}), entry {:#x}, command line \"{}\"",
        loaded.start,
        loaded.end,
        loaded.entry,
        guest.args
    );
    Ok(multiboot1::entry_state(&loaded, info_at as u32))
}
