//! From GRUB's modules to a guest ready to launch: find the guest image (and an initrd, and a
//! multiboot guest's own modules), tell a Linux bzImage from a multiboot kernel, load it with the
//! matching boot protocol and write the boot data it expects. The backend then builds its
//! nested page tables over the guest's memory (EPT or NPT), without [`Loaded::absent`].
//!
//! Modules (docs/architecture.md): `module2 PATH guest [COMMAND LINE]` is the kernel,
//! `module2 PATH initrd` an initial ramdisk for a Linux kernel, `module2 PATH module [STRING]` a
//! module of a multiboot kernel's own (it finds them in its multiboot information, with their
//! strings, as GRUB's `module` command gives them).

use crate::{acpi, guest_mem, mem};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use vigil::loader::multiboot1::InfoModule;
use vigil::loader::{linux, multiboot1, relocate_sources, EntryState, GuestMemory, LoadError};
use vigil::memmap::MemoryMap;

/// Guest-physical place for a Linux guest's boot data: the boot GDT, then the command line at
/// 0x8200 and the zero page at 0x9000, in conventional memory the boot protocol leaves to the
/// loader. A multiboot guest's boot data (GDT, then its multiboot information) goes there too
/// unless its image does ([`multiboot1::boot_data_at`]).
const LINUX_BOOT_DATA: u64 = 0x8000;
const BOOT_DATA_SIZE: u64 = multiboot1::BOOT_DATA_SIZE;
/// Where, in the boot data, calibration runs a CPUID before the guest starts (after the GDT).
const CALIBRATION_OFFSET: u64 = 0x80;
pub const MAX_MODULES: usize = 8;

/// Where this guest's boot data is (set by [`load`]).
static BOOT_DATA: AtomicU64 = AtomicU64::new(0);

/// A few bytes of guest RAM, in this guest's boot data after the GDT, that nothing else uses:
/// calibration and the debugger's MTF probe run an instruction or two there before the guest
/// starts.
pub fn calibration_scratch() -> u64 {
    BOOT_DATA.load(Ordering::Relaxed) + CALIBRATION_OFFSET
}

#[derive(Clone, Copy)]
struct Module<'a> {
    start: u64,
    end: u64,
    args: &'a str,
}

impl Module<'_> {
    fn range(&self) -> (u64, u64) {
        (self.start, self.end)
    }
}

/// The bytes of a module at `range`.
fn bytes(range: (u64, u64)) -> &'static [u8] {
    // SAFETY: modules lie in RAM GRUB reported, which Vigil's memory avoided; they are only
    // read, and only before the guest runs, while nothing writes over them (`relocate_sources`
    // keeps every write clear of them).
    unsafe { core::slice::from_raw_parts(range.0 as *const u8, (range.1 - range.0) as usize) }
}

/// The modules GRUB loaded, by role. Built before the heap exists: no allocation.
pub struct Modules<'a> {
    all: [(u64, u64); MAX_MODULES],
    count: usize,
    guest: Option<Module<'a>>,
    initrd: Option<Module<'a>>,
    /// A multiboot guest's own modules, in GRUB's order.
    own: [Option<Module<'a>>; MAX_MODULES],
}

impl<'a> Modules<'a> {
    pub fn from_boot_info(mbi: &'a multiboot2::BootInformation) -> Modules<'a> {
        let mut m = Modules {
            all: [(0, 0); MAX_MODULES],
            count: 0,
            guest: None,
            initrd: None,
            own: [None; MAX_MODULES],
        };
        let mut own = 0;
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
                "module" => {
                    m.own[own] = Some(module);
                    own += 1;
                }
                _ => log::warn!("ignoring boot module [{start:#x}-{end:#x}) \"{line}\": role is not guest, initrd or module"),
            }
        }
        m
    }

    /// Every module's range, for keeping Vigil's pool off them.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.all[..self.count].iter().copied()
    }

    fn own(&self) -> impl Iterator<Item = Module<'a>> + '_ {
        self.own.iter().flatten().copied()
    }
}

/// Moves each module from `from[i]` to `to[i]` where they differ (guest RAM to guest RAM, with
/// memmove semantics; no destination overlaps any module, so the order does not matter).
fn move_modules(
    from: &[(u64, u64)],
    to: &[(u64, u64)],
    memory: &mut guest_mem::Loader,
) -> Result<(), String> {
    for (&f, &t) in from.iter().zip(to) {
        if f != t {
            log::debug!(
                "boot module [{:#x}-{:#x}) is in the way: moved to [{:#x}-{:#x})",
                f.0,
                f.1,
                t.0,
                t.1
            );
            memory
                .write(t.0, bytes(f))
                .map_err(|e| format!("moving a boot module aside: {e}"))?;
        }
    }
    Ok(())
}

/// Flat 32-bit code (0x10) and data (0x18) descriptors: the selectors both boot protocols
/// start with (multiboot spec 3.2; Linux boot.rst, __BOOT_CS and __BOOT_DS).
fn write_gdt(memory: &mut guest_mem::Loader, at: u64) -> Result<(), String> {
    let gdt: [u64; 4] = [0, 0, 0x00CF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];
    let gdt_bytes: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();
    memory
        .write(at, &gdt_bytes)
        .map_err(|e| format!("boot data: {e}"))
}

/// A loaded guest: where it starts, the firmware facts found on the way, and what its nested
/// page tables must leave out.
pub struct Loaded {
    pub entry: EntryState,
    /// Guest-physical address of a GDT with flat 32-bit code (0x10) and data (0x18) segments,
    /// for the protected-mode entry.
    pub gdt: u64,
    pub acpi: vigil_core::platform::acpi::Acpi,
    /// Physical ranges absent from the guest's nested page tables: Vigil's memory, and the PCI
    /// Express configuration windows whose writes would bypass Vigil's mediation of
    /// configuration space.
    pub absent: Vec<(u64, u64)>,
}

/// Loads the guest and finds what the vCPU needs to start it.
pub fn load(
    modules: &Modules,
    map: &MemoryMap,
    rsdt: Option<u64>,
    xsdt: Option<u64>,
) -> Result<Loaded, String> {
    let guest = modules
        .guest
        .ok_or("no guest module: GRUB must load one with `module2 PATH guest [ARGS]`")?;
    // Command lines live in GRUB's boot information, which is guest RAM like any other and may
    // lie where the guest loads: keep copies before writing a byte of guest memory.
    let args = String::from(guest.args);
    let mut memory = guest_mem::Loader;
    let (entry, boot_data) = if linux::is_bzimage(bytes(guest.range())) {
        if modules.own().next().is_some() {
            log::warn!("`module` modules are for multiboot guests; a Linux guest takes one initrd: ignored");
        }
        load_linux(&guest, &args, modules, map, &mut memory)?
    } else {
        if modules.initrd.is_some() {
            log::warn!("an initrd module was given, but the guest is not a Linux kernel: ignored");
        }
        load_multiboot(&guest, &args, modules, map, &mut memory)?
    };
    BOOT_DATA.store(boot_data, Ordering::Relaxed);
    let acpi = acpi::fadt_facts(rsdt, xsdt).unwrap_or_else(|| {
        log::warn!("no ACPI FADT found: only the shutdown port ends the guest");
        Default::default()
    });
    if let Some(p) = acpi.pm1a_control {
        log::info!("ACPI PM1a control port {p:#x}: trapped to see the guest power off");
    }
    let mut absent = alloc::vec![mem::image_range(), mem::pool_range()];
    absent.extend(acpi::take_mmconfig(rsdt, xsdt));
    Ok(Loaded {
        entry,
        gdt: boot_data,
        acpi,
        absent,
    })
}

fn load_linux(
    guest: &Module,
    args: &str,
    modules: &Modules,
    map: &MemoryMap,
    memory: &mut guest_mem::Loader,
) -> Result<(EntryState, u64), String> {
    let err = |e: LoadError| format!("Linux kernel: {e}");
    let bz = linux::BzImage::parse(bytes(guest.range())).map_err(err)?;
    let boot = (LINUX_BOOT_DATA, LINUX_BOOT_DATA + BOOT_DATA_SIZE);
    let mut sources = alloc::vec![guest.range()];
    sources.extend(modules.initrd.map(|m| m.range()));
    let initrd_len = modules.initrd.map(|m| m.end - m.start);
    let mut avoid = sources.clone();
    avoid.push(boot);
    let at = linux::place(&bz, initrd_len, args.len() as u64, map, &avoid).map_err(err)?;
    // A non-relocatable kernel goes to its fixed address whatever GRUB put there: modules in
    // the way (its own image, the initrd) move aside first, and load from there.
    let mut keep = alloc::vec![boot, (at.kernel, at.kernel + bz.footprint())];
    if let (Some(a), Some(len)) = (at.initrd, initrd_len) {
        keep.push((a, a + len));
    }
    let moved = relocate_sources(&sources, &keep, map).map_err(err)?;
    move_modules(&sources, &moved, memory)?;
    let bz = linux::BzImage::parse(bytes(moved[0])).map_err(err)?;
    let initrd = moved.get(1).map(|&r| bytes(r));
    write_gdt(memory, boot.0)?;
    let entry = linux::write(&bz, &at, initrd, args, map, None, memory).map_err(err)?;
    let version = bz.header.version;
    log::info!(
        "guest: Linux kernel at {:#x} ({} KiB, boot protocol {}.{:02}, {}), command line \"{}\"",
        at.kernel,
        (guest.end - guest.start) / 1024,
        version >> 8,
        version & 0xFF,
        if bz.header.relocatable {
            "relocatable"
        } else {
            "not relocatable"
        },
        args
    );
    if let (Some(addr), Some(len)) = (at.initrd, initrd_len) {
        log::info!(
            "guest: initrd at [{:#x}-{:#x}) ({} KiB)",
            addr,
            addr + len,
            len / 1024
        );
    }
    Ok((entry, boot.0))
}

fn load_multiboot(
    guest: &Module,
    args: &str,
    modules: &Modules,
    map: &MemoryMap,
    memory: &mut guest_mem::Loader,
) -> Result<(EntryState, u64), String> {
    let err = |e: LoadError| {
        format!("guest image (not a Linux bzImage, so read as a multiboot kernel): {e}")
    };
    let extent = multiboot1::extent(bytes(guest.range())).map_err(err)?;
    let own: Vec<Module> = modules.own().collect();
    let strings: Vec<String> = own.iter().map(|m| String::from(m.args)).collect();
    let mut sources = alloc::vec![guest.range()];
    sources.extend(own.iter().map(Module::range));
    let mut avoid = sources.clone();
    avoid.push(extent);
    let boot = multiboot1::boot_data_at(map, &avoid).ok_or_else(|| {
        format!(
            "no room in the guest's RAM for its boot data ({BOOT_DATA_SIZE} bytes) clear of its \
             image [{:#x}-{:#x}) and its modules",
            extent.0, extent.1
        )
    })?;
    // The image and its modules stay clear of where the image loads and of the boot data:
    // GRUB may have put the guest's own module where it loads, for one.
    let keep = [extent, (boot, boot + BOOT_DATA_SIZE)];
    let moved = relocate_sources(&sources, &keep, map).map_err(err)?;
    move_modules(&sources, &moved, memory)?;
    write_gdt(memory, boot)?;
    let loaded = multiboot1::load(bytes(moved[0]), memory).map_err(err)?;
    let info_modules: Vec<InfoModule> = moved[1..]
        .iter()
        .zip(&strings)
        .map(|(&(start, end), string)| InfoModule { start, end, string })
        .collect();
    let info_at = boot + 0x100;
    let info = multiboot1::build_info(info_at as u32, args, map, &info_modules);
    if info.len() as u64 > BOOT_DATA_SIZE - 0x100 {
        return Err(
            "guest command line, module strings and memory map do not fit the boot data".into(),
        );
    }
    memory.write(info_at, &info).map_err(err)?;
    log::info!(
        "guest: multiboot kernel [{:#x}-{:#x}), entry {:#x}, command line \"{}\", {} module(s), boot data at {:#x}",
        loaded.start,
        loaded.end,
        loaded.entry,
        args,
        info_modules.len(),
        boot
    );
    for m in &info_modules {
        log::debug!(
            "guest module [{:#x}-{:#x}) \"{}\"",
            m.start,
            m.end,
            m.string
        );
    }
    Ok((multiboot1::entry_state(&loaded, info_at as u32), boot))
}
