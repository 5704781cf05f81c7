//! Parsers for what the guests and Vigil print (the line formats in docs/architecture.md):
//! guest-kit case lines and summary, Vigil's exit statistics table, hypercall and exit reports.

use std::collections::BTreeMap;

/// `guest-kit: N passed, N failed, N skipped`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub line: String,
}

pub fn summary_line(line: &str) -> Option<Summary> {
    let rest = line.trim().strip_prefix("guest-kit:")?;
    let (mut passed, mut failed, mut skipped) = (None, None, None);
    for part in rest.split(',') {
        let mut words = part.split_whitespace();
        let n = words.next()?.parse::<u64>().ok()?;
        let slot = match words.next()? {
            "passed" => &mut passed,
            "failed" => &mut failed,
            "skipped" => &mut skipped,
            _ => return None,
        };
        *slot = Some(n);
    }
    Some(Summary {
        passed: passed?,
        failed: failed?,
        skipped: skipped.unwrap_or(0),
        line: line.trim().to_string(),
    })
}

/// The last summary line among `lines`.
pub fn summary<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<Summary> {
    lines.into_iter().filter_map(summary_line).last()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

/// `PASS <case> [key=value ...]`, `FAIL <case> <why> [key=value ...]`, `SKIP <case> <why>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseLine {
    pub status: Status,
    pub name: String,
    /// The words that are not `key=value`.
    pub why: String,
    pub fields: BTreeMap<String, String>,
}

impl CaseLine {
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }
}

pub fn case_line(line: &str) -> Option<CaseLine> {
    let mut words = line.split_whitespace();
    let status = match words.next()? {
        "PASS" => Status::Pass,
        "FAIL" => Status::Fail,
        "SKIP" => Status::Skip,
        _ => return None,
    };
    let name = words.next()?.to_string();
    let mut why = Vec::new();
    let mut fields = BTreeMap::new();
    for word in words {
        match word.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                fields.insert(k.to_string(), v.to_string());
            }
            _ => why.push(word),
        }
    }
    Some(CaseLine {
        status,
        name,
        why: why.join(" "),
        fields,
    })
}

pub fn cases<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<CaseLine> {
    lines.into_iter().filter_map(case_line).collect()
}

/// A decimal number, or hexadecimal with `0x`; `_` separators allowed.
pub fn parse_u64(text: &str) -> Option<u64> {
    let text = text.trim().replace('_', "");
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Hexadecimal with a mandatory `0x`.
pub fn parse_hex(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.starts_with("0x") || text.starts_with("0X") {
        parse_u64(text)
    } else {
        None
    }
}

/// One row of Vigil's exit statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatRow {
    pub count: u64,
    pub total_ticks: u64,
    /// `-` in the total row.
    pub median_ticks: Option<u64>,
}

/// Vigil's exit statistics table (contract):
/// ```text
/// exit statistics:
/// reason  count  total-ticks  median-ticks
/// CPUID  42  123456  2900
/// I/O instruction  3  900  300
/// total  45  124356  -
/// ```
/// Columns are separated by two or more spaces; reason names may contain single spaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitStats {
    pub rows: BTreeMap<String, StatRow>,
    pub total: StatRow,
}

impl ExitStats {
    pub fn count(&self, reason: &str) -> u64 {
        self.rows.get(reason).map_or(0, |r| r.count)
    }
}

/// Split a table line into columns at runs of two or more spaces (or tabs).
pub fn columns(line: &str) -> Vec<String> {
    line.replace('\t', "  ")
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parse the last exit statistics table among `lines`.
pub fn exit_stats(lines: &[&str]) -> Result<ExitStats, String> {
    let start = lines
        .iter()
        .rposition(|l| l.trim() == "exit statistics:")
        .ok_or("no `exit statistics:` table")?;
    let mut rest = lines[start + 1..].iter();
    let header = rest
        .next()
        .ok_or("the statistics table has no header row")?;
    if columns(header) != ["reason", "count", "total-ticks", "median-ticks"] {
        return Err(format!("unexpected statistics header row {header:?}"));
    }
    let mut rows = BTreeMap::new();
    for line in rest {
        let cols = columns(line);
        let row = |cols: &[String], median_dash: bool| -> Option<StatRow> {
            let median = match cols[3].as_str() {
                "-" if median_dash => None,
                m => Some(parse_u64(m)?),
            };
            Some(StatRow {
                count: parse_u64(&cols[1])?,
                total_ticks: parse_u64(&cols[2])?,
                median_ticks: median,
            })
        };
        if cols.len() != 4 {
            return Err(format!("statistics row {line:?} does not have 4 columns"));
        }
        if cols[0] == "total" {
            let total = row(&cols, true).ok_or(format!("cannot parse total row {line:?}"))?;
            return Ok(ExitStats { rows, total });
        }
        let parsed = row(&cols, false).ok_or(format!("cannot parse statistics row {line:?}"))?;
        if rows.insert(cols[0].clone(), parsed).is_some() {
            return Err(format!("exit reason {:?} appears twice", cols[0]));
        }
    }
    Err("the statistics table has no `total` row".to_string())
}

/// Values from `hypercall: confirm-tsc 0x<value> matches` lines (other outcomes are ignored).
pub fn confirmed_tsc_values<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<u64> {
    let mut values = Vec::new();
    for line in lines {
        if let Some(at) = line.find("hypercall: confirm-tsc ") {
            let mut words = line[at + "hypercall: confirm-tsc ".len()..].split_whitespace();
            if let (Some(value), Some("matches")) = (words.next(), words.next()) {
                if let Some(v) = parse_hex(value) {
                    values.push(v);
                }
            }
        }
    }
    values
}

/// One of Vigil's exit reports (the exit that ended the guest):
/// ```text
/// ==== exit report: the guest triple-faulted (shutdown)
/// exit reason 2 (triple fault), qualification 0x0, instruction length 0
/// ...
/// ==== end of exit report
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitReport {
    /// What the header line says happened.
    pub what: String,
    /// The basic exit reason number.
    pub number: u32,
    /// Its name, from the parentheses.
    pub reason: String,
}

pub fn exit_reports(lines: &[&str]) -> Vec<ExitReport> {
    let mut reports = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(what) = line.trim().strip_prefix("==== exit report:") else {
            continue;
        };
        let body = lines[i + 1..]
            .iter()
            .take_while(|l| !l.trim().starts_with("===="));
        for l in body {
            if let Some((number, reason)) = exit_reason_line(l) {
                reports.push(ExitReport {
                    what: what.trim().to_string(),
                    number,
                    reason,
                });
                break;
            }
        }
    }
    reports
}

/// `exit reason 2 (triple fault), qualification …` → (2, "triple fault"). The name may itself
/// hold parentheses.
fn exit_reason_line(line: &str) -> Option<(u32, String)> {
    let rest = line.trim().strip_prefix("exit reason ")?;
    let (number, rest) = rest.split_once(' ')?;
    let number = parse_u64(number)? as u32;
    let inner = rest.strip_prefix('(')?;
    let mut depth = 1;
    for (i, c) in inner.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some((number, inner[..i].to_string()));
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_parses_counts() {
        let s = summary_line("guest-kit: 12 passed, 0 failed, 3 skipped").unwrap();
        assert_eq!((s.passed, s.failed, s.skipped), (12, 0, 3));
        assert!(summary_line("guest-kit: starting").is_none());
        assert!(summary_line("guest-kit: x passed, 0 failed").is_none());
        let last = summary([
            "guest-kit: 1 passed, 1 failed, 0 skipped",
            "guest-kit: 2 passed, 0 failed, 0 skipped",
        ]);
        assert_eq!(last.unwrap().passed, 2);
    }

    #[test]
    fn case_lines_split_name_reason_and_fields() {
        let c = case_line("PASS tsc-offset observed=0x100000001234 offset=0x100000000000").unwrap();
        assert_eq!(c.status, Status::Pass);
        assert_eq!(c.name, "tsc-offset");
        assert_eq!(c.field("offset"), Some("0x100000000000"));
        let f = case_line("FAIL cpuid-leaf0 vendor mismatch got=Genu want=Auth").unwrap();
        assert_eq!(
            (f.status, f.why.as_str()),
            (Status::Fail, "vendor mismatch")
        );
        let s = case_line("SKIP vmcall not under Vigil").unwrap();
        assert_eq!(
            (s.status, s.why.as_str()),
            (Status::Skip, "not under Vigil")
        );
        assert!(case_line("PASSWORD x").is_none());
        assert!(case_line("PASS").is_none());
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64("42"), Some(42));
        assert_eq!(parse_u64("0x1_0000"), Some(0x10000));
        assert_eq!(parse_hex("0x100000000000"), Some(0x1000_0000_0000));
        assert_eq!(parse_hex("100"), None);
        assert_eq!(parse_hex("0xzz"), None);
    }

    const TABLE: &[&str] = &[
        "vigil: guest stopped",
        "exit statistics:",
        "reason           count  total-ticks  median-ticks",
        "CPUID               42       123456          2900",
        "I/O instruction      3          900           300",
        "triple fault  1  10  10",
        "total  46  124366  -",
        "run ended: ok",
    ];

    #[test]
    fn exit_stats_table() {
        let stats = exit_stats(TABLE).unwrap();
        assert_eq!(stats.count("CPUID"), 42);
        assert_eq!(
            stats.rows["I/O instruction"],
            StatRow {
                count: 3,
                total_ticks: 900,
                median_ticks: Some(300)
            }
        );
        assert_eq!(stats.count("triple fault"), 1);
        assert_eq!(stats.count("RDTSC"), 0);
        assert_eq!(
            stats.total,
            StatRow {
                count: 46,
                total_ticks: 124366,
                median_ticks: None
            }
        );
    }

    #[test]
    fn exit_stats_errors() {
        assert!(exit_stats(&["nothing here"])
            .unwrap_err()
            .contains("no `exit statistics:`"));
        let bad = ["exit statistics:", "reason  count", "total  1  1  -"];
        assert!(exit_stats(&bad).unwrap_err().contains("header"));
        let bad = [
            "exit statistics:",
            "reason  count  total-ticks  median-ticks",
            "CPUID 4 5 6",
        ];
        assert!(exit_stats(&bad).unwrap_err().contains("4 columns"));
        let bad = [
            "exit statistics:",
            "reason  count  total-ticks  median-ticks",
            "CPUID  x  5  6",
        ];
        assert!(exit_stats(&bad).unwrap_err().contains("cannot parse"));
        let open = [
            "exit statistics:",
            "reason  count  total-ticks  median-ticks",
            "CPUID  1  5  6",
        ];
        assert!(exit_stats(&open).unwrap_err().contains("no `total` row"));
    }

    #[test]
    fn columns_keep_single_spaces() {
        assert_eq!(
            columns("I/O instruction  3\t9  -"),
            vec!["I/O instruction", "3", "9", "-"]
        );
    }

    #[test]
    fn confirm_tsc() {
        let lines = [
            "hypercall: confirm-tsc 0x100000001234 matches",
            "vigil: hypercall: confirm-tsc 0x5 mismatch last=0x6",
            "[info] hypercall: confirm-tsc 0x7 matches",
        ];
        assert_eq!(confirmed_tsc_values(lines), vec![0x1000_0000_1234, 7]);
    }

    #[test]
    fn exit_reports_are_parsed_from_their_block() {
        let lines = [
            "launching guest at 0x10000c",
            "==== exit report: the guest triple-faulted (shutdown)",
            "exit reason 2 (triple fault), qualification 0x0, instruction length 0",
            "  exit reason                4402 = 0x00000002  (triple fault (2))",
            "==== end of exit report",
            "==== exit report: odd",
            "exit reason 48 (EPT violation (read)), qualification 0x181",
            "==== end of exit report",
            "==== exit report: truncated",
            "exit statistics:",
            "reason  count  total-ticks  median-ticks",
        ];
        let reports = exit_reports(&lines);
        assert_eq!(
            reports,
            vec![
                ExitReport {
                    what: "the guest triple-faulted (shutdown)".into(),
                    number: 2,
                    reason: "triple fault".into()
                },
                ExitReport {
                    what: "odd".into(),
                    number: 48,
                    reason: "EPT violation (read)".into()
                },
            ]
        );
    }
}
