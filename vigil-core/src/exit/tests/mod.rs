//! Handler tests against the fake vCPU (`crate::testing`): at least one per handler, and the
//! edge cases where a thin hypervisor most easily parts from bare metal.

mod complete;
mod cpuid;
mod cr;
mod events;
mod hypercall;
mod instructions;
mod io;
mod io_string;
mod loop_and_debugger;
mod mov_dr;
mod msr;
mod startup;
mod task_switch;
