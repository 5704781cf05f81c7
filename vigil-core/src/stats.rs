//! Exit statistics: per exit reason, the count, the host ticks spent from VM exit to the next VM
//! entry, and the median of those ticks. Each vCPU keeps its own (no sharing on the exit path);
//! the table at the end of a run adds them up ([`write_tables`]), with a row per vCPU when there
//! are several. Recording is O(1) with no allocation, so it can sit on
//! the exit path; the median comes from a histogram that is exact below `EXACT` ticks and
//! within 1/16 (6 %) above. Histograms (20 KiB each) go to the first `SLOTS` distinct reasons
//! seen — far more than a run meets — so the whole table stays under half a MiB of Vigil's
//! heap; a reason past them is still counted, with no median.

use core::fmt::{self, Write};

/// Basic exit reasons are below 128 (SDM Vol. 3D appendix C lists 0-77 today).
pub const REASONS: usize = 128;
const EXACT: u64 = 4096;
const EXACT_BUCKETS: usize = EXACT as usize;
/// Above EXACT: 16 sub-buckets per power of two, for the powers 2^12 .. 2^63.
const LOG_BUCKETS: usize = 52 * 16;

#[repr(C)]
pub struct Histogram {
    buckets: [u32; EXACT_BUCKETS + LOG_BUCKETS],
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: [0; EXACT_BUCKETS + LOG_BUCKETS],
        }
    }
}

impl Histogram {
    fn bucket(ticks: u64) -> usize {
        if ticks < EXACT {
            return ticks as usize;
        }
        let power = 63 - ticks.leading_zeros() as usize; // >= 12
        let sub = ((ticks >> (power - 4)) & 0xF) as usize;
        EXACT_BUCKETS + (power - 12) * 16 + sub
    }

    /// The smallest value that falls into bucket `b` (the value reported for it).
    fn value(b: usize) -> u64 {
        if b < EXACT_BUCKETS {
            return b as u64;
        }
        let power = (b - EXACT_BUCKETS) / 16 + 12;
        let sub = ((b - EXACT_BUCKETS) % 16) as u64;
        (1u64 << power) | (sub << (power - 4))
    }

    pub fn record(&mut self, ticks: u64) {
        let b = Self::bucket(ticks);
        self.buckets[b] = self.buckets[b].saturating_add(1);
    }

    /// The lower median (the ⌈n/2⌉-th smallest sample), or None when empty.
    pub fn median(&self) -> Option<u64> {
        merged_median(&[self])
    }
}

/// The lower median of the samples of several histograms taken together.
pub fn merged_median(hists: &[&Histogram]) -> Option<u64> {
    let n: u64 = hists
        .iter()
        .flat_map(|h| h.buckets.iter())
        .map(|&c| c as u64)
        .sum();
    if n == 0 {
        return None;
    }
    let target = n.div_ceil(2);
    let mut seen = 0;
    for b in 0..EXACT_BUCKETS + LOG_BUCKETS {
        seen += hists.iter().map(|h| h.buckets[b] as u64).sum::<u64>();
        if seen >= target {
            return Some(Histogram::value(b));
        }
    }
    None
}

/// Distinct exit reasons that get a histogram.
pub const SLOTS: usize = 24;

#[derive(Default)]
#[repr(C)]
pub struct ReasonStats {
    pub count: u64,
    pub total_ticks: u64,
    /// 1 + the index of this reason's histogram; 0 for none yet.
    slot: u8,
}

/// About 470 KiB: allocate it with `Box::new_zeroed` (all-zero is the valid empty state).
#[repr(C)]
pub struct ExitStats {
    reasons: [ReasonStats; REASONS],
    slots_used: u8,
    histograms: [Histogram; SLOTS],
}

impl ExitStats {
    pub fn new_boxed() -> alloc::boxed::Box<ExitStats> {
        // SAFETY: every field is an integer or an array of integers, so all-zero is a valid
        // value (and means "no exits seen").
        unsafe { alloc::boxed::Box::<ExitStats>::new_zeroed().assume_init() }
    }
}

impl ExitStats {
    pub fn record(&mut self, reason: u16, ticks: u64) {
        let s = &mut self.reasons[reason as usize % REASONS];
        s.count += 1;
        s.total_ticks = s.total_ticks.wrapping_add(ticks);
        if s.slot == 0 && (self.slots_used as usize) < SLOTS {
            self.slots_used += 1;
            s.slot = self.slots_used;
        }
        if s.slot != 0 {
            self.histograms[s.slot as usize - 1].record(ticks);
        }
    }

    /// The median ticks of `reason`, if it has a histogram with samples.
    pub fn median(&self, reason: u16) -> Option<u64> {
        self.histogram(reason)?.median()
    }

    fn histogram(&self, reason: u16) -> Option<&Histogram> {
        let s = self.reasons.get(reason as usize)?;
        (s.slot != 0).then(|| &self.histograms[s.slot as usize - 1])
    }

    pub fn get(&self, reason: u16) -> Option<&ReasonStats> {
        self.reasons.get(reason as usize).filter(|s| s.count > 0)
    }

    pub fn total_count(&self) -> u64 {
        self.reasons.iter().map(|s| s.count).sum()
    }

    /// The table printed at the end of a run (one vCPU's: see [`write_tables`]).
    pub fn write_table(
        &self,
        out: &mut dyn Write,
        name: &dyn Fn(u16) -> &'static str,
    ) -> fmt::Result {
        write_tables(&[(0, self)], out, name)
    }
}

/// The tables printed at the end of a run: exits by reason over every vCPU, then — with more
/// than one vCPU — a row per vCPU (its exits, their ticks and median, its most frequent reason)
/// and the total. Columns are separated by at least two spaces so names with spaces ("I/O
/// instruction") stay one column for readers and parsers.
pub fn write_tables(
    vcpus: &[(usize, &ExitStats)],
    out: &mut dyn Write,
    name: &dyn Fn(u16) -> &'static str,
) -> fmt::Result {
    writeln!(out, "exit statistics:")?;
    writeln!(
        out,
        "{:<28}  {:>10}  {:>14}  {:>12}",
        "reason", "count", "total-ticks", "median-ticks"
    )?;
    let (mut count, mut ticks) = (0u64, 0u64);
    for reason in 0..REASONS as u16 {
        let (mut n, mut t) = (0u64, 0u64);
        for (_, s) in vcpus {
            let r = &s.reasons[reason as usize];
            n += r.count;
            t = t.wrapping_add(r.total_ticks);
        }
        if n == 0 {
            continue;
        }
        count += n;
        ticks = ticks.wrapping_add(t);
        let hists: alloc::vec::Vec<&Histogram> = vcpus
            .iter()
            .filter_map(|(_, s)| s.histogram(reason))
            .collect();
        let median = merged_median(&hists).unwrap_or(0);
        writeln!(
            out,
            "{:<28}  {:>10}  {:>14}  {:>12}",
            name(reason),
            n,
            t,
            median
        )?;
    }
    writeln!(
        out,
        "{:<28}  {:>10}  {:>14}  {:>12}",
        "total", count, ticks, "-"
    )?;
    if vcpus.len() < 2 {
        return Ok(());
    }
    writeln!(out, "exit statistics by vCPU:")?;
    writeln!(
        out,
        "{:<6}  {:>10}  {:>14}  {:>12}  most frequent",
        "vcpu", "count", "total-ticks", "median-ticks"
    )?;
    let mut all_hists = alloc::vec::Vec::new();
    for (id, s) in vcpus {
        let hists: alloc::vec::Vec<&Histogram> =
            s.histograms[..s.slots_used as usize].iter().collect();
        all_hists.extend(hists.iter().copied());
        let top = (0..REASONS as u16)
            .filter(|&r| s.reasons[r as usize].count > 0)
            .max_by_key(|&r| s.reasons[r as usize].count)
            .map_or("-", name);
        writeln!(
            out,
            "{:<6}  {:>10}  {:>14}  {:>12}  {top}",
            id,
            s.total_count(),
            s.reasons
                .iter()
                .fold(0u64, |a, r| a.wrapping_add(r.total_ticks)),
            merged_median(&hists).unwrap_or(0)
        )?;
    }
    writeln!(
        out,
        "{:<6}  {:>10}  {:>14}  {:>12}  -",
        "total",
        count,
        ticks,
        merged_median(&all_hists).unwrap_or(0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;
    use alloc::string::String;

    #[test]
    fn exact_median_below_threshold() {
        let mut h = Box::<Histogram>::default();
        for t in [5, 1, 9, 3, 7] {
            h.record(t);
        }
        assert_eq!(h.median(), Some(5));
        h.record(100);
        assert_eq!(h.median(), Some(5), "lower median of 6 samples");
    }

    #[test]
    fn large_values_are_within_a_sixteenth() {
        for v in [4096u64, 5000, 123_456, 9_999_999, u64::MAX / 3] {
            let mut h = Box::<Histogram>::default();
            h.record(v);
            let m = h.median().unwrap();
            assert!(m <= v && v - m <= v / 16, "{v} -> {m}");
        }
    }

    #[test]
    fn empty_has_no_median() {
        assert_eq!(Box::<Histogram>::default().median(), None);
    }

    #[test]
    fn table_lists_only_seen_reasons_with_totals() {
        let mut s = ExitStats::new_boxed();
        s.record(10, 100);
        s.record(10, 300);
        s.record(10, 200);
        s.record(18, 50);
        let mut out = String::new();
        s.write_table(&mut out, &|r| if r == 10 { "CPUID" } else { "VMCALL" })
            .unwrap();
        let rows: alloc::vec::Vec<_> = out.lines().collect();
        assert_eq!(rows.len(), 5, "{out}");
        let cpuid: alloc::vec::Vec<_> = rows[2].split_whitespace().collect();
        assert_eq!(cpuid, ["CPUID", "3", "600", "200"]);
        let total: alloc::vec::Vec<_> = rows[4].split_whitespace().collect();
        assert_eq!(total, ["total", "4", "650", "-"]);
    }

    #[test]
    fn several_vcpus_add_up_with_a_row_each() {
        let mut a = ExitStats::new_boxed();
        let mut b = ExitStats::new_boxed();
        for t in [100, 300, 200] {
            a.record(10, t);
        }
        a.record(18, 50);
        for t in [1000, 2000] {
            b.record(10, t);
        }
        let mut out = String::new();
        write_tables(&[(0, &a), (1, &b)], &mut out, &|r| {
            if r == 10 {
                "CPUID"
            } else {
                "VMCALL"
            }
        })
        .unwrap();
        let rows: alloc::vec::Vec<alloc::vec::Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        // By reason, over both: CPUID 5 samples, median the 3rd smallest (300).
        assert_eq!(rows[2], ["CPUID", "5", "3600", "300"]);
        assert_eq!(rows[4], ["total", "6", "3650", "-"]);
        assert_eq!(rows[5], ["exit", "statistics", "by", "vCPU:"]);
        assert_eq!(rows[7], ["0", "4", "650", "100", "CPUID"]);
        assert_eq!(rows[8], ["1", "2", "3000", "1000", "CPUID"]);
        assert_eq!(rows[9], ["total", "6", "3650", "200", "-"]);
        // One vCPU: the table of old, with no per-vCPU part.
        let mut one = String::new();
        a.write_table(&mut one, &|_| "X").unwrap();
        assert!(!one.contains("by vCPU"));
    }

    #[test]
    fn reasons_past_the_slots_are_counted_without_a_median() {
        let mut s = ExitStats::new_boxed();
        for r in 0..(SLOTS as u16 + 2) {
            s.record(r, 10 + r as u64);
        }
        assert_eq!(s.median(3), Some(13));
        assert_eq!(s.median(SLOTS as u16 + 1), None);
        assert_eq!(s.get(SLOTS as u16 + 1).unwrap().count, 1);
        assert_eq!(s.total_count(), SLOTS as u64 + 2);
        assert!(core::mem::size_of::<ExitStats>() < 512 * 1024);
    }
}
