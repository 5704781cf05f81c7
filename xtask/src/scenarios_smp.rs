//! Scenarios with several processors. Each names its processor count (`-2cpu-`, `-4cpu-`);
//! every other scenario gets the suite's count (`cargo xtask test --cpus N`, default 1).

use std::sync::atomic::{AtomicU32, Ordering};

use crate::scenarios::Scenario;

/// The processors of scenarios that do not name their own (`cargo xtask test --cpus N`).
static DEFAULT_CPUS: AtomicU32 = AtomicU32::new(crate::bochs::DEFAULT_CPUS);

pub fn set_default_cpus(n: u32) {
    DEFAULT_CPUS.store(n, Ordering::Relaxed);
}

/// The processors of scenario `name`: `N` from a `-Ncpu` part of its name, else the suite's.
pub fn cpus(name: &str) -> u32 {
    name.split('-')
        .find_map(|part| part.strip_suffix("cpu")?.parse().ok())
        .filter(|n| (1..=crate::bochs::MAX_CPUS).contains(n))
        .unwrap_or_else(|| DEFAULT_CPUS.load(Ordering::Relaxed))
}

pub fn all() -> Vec<Scenario> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processors_come_from_the_name() {
        assert_eq!(cpus("smp-2cpu-vigil"), 2);
        assert_eq!(cpus("linux-4cpu-bare"), 4);
        assert_eq!(cpus("cases-vigil"), crate::bochs::DEFAULT_CPUS);
        assert_eq!(cpus("odd-99cpu-vigil"), crate::bochs::DEFAULT_CPUS);
    }
}
