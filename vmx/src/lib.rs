//! Intel VT-x architecture knowledge, independent of any hypervisor. `no_std`; tested on the host.
#![no_std]
extern crate alloc;
