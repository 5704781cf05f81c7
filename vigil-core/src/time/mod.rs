//! Time as the guest sees it: the one home for virtual time.

pub mod tsc;
