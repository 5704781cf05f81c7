//! Links every guest binary with `link.ld`: multiboot1 images are loaded by physical address, so
//! the layout (header first, image at 1 MiB) is fixed by the script, not by the linker's defaults.

use std::env;
use std::path::PathBuf;

fn main() {
    let dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let script = dir.join("link.ld");
    // Only the bare-metal target is linked with the script; a host `cargo check` must not try.
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    }
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=build.rs");
}
