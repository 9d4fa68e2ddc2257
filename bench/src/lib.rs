//! What the benchmark programs share: one table format (so `benchall` can gather every
//! program's rows into one table), CPU time of processes from /proc, and a nats-server
//! started for a run.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One line of a results table: a figure, the baseline it is compared with in the same run,
/// and the target the performance issue sets for the ratio.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// What was measured.
    pub figure: String,
    /// The median, in `unit`.
    pub value: f64,
    /// The unit of `value` and `baseline`.
    pub unit: String,
    /// min-max of the runs, as text.
    pub spread: String,
    /// The baseline's median, if the figure has one.
    pub baseline: Option<f64>,
    /// What the baseline is (its figure).
    pub baseline_name: String,
    /// The target, as text (`≥ 1.0×`, `≤ 2 ms`), if one is set.
    pub target: String,
}

impl Row {
    /// A row from the runs' values (median and spread), with no baseline.
    pub fn of(figure: impl Into<String>, unit: &str, mut runs: Vec<f64>) -> Row {
        runs.sort_by(f64::total_cmp);
        let (value, spread) = match runs.as_slice() {
            [] => (f64::NAN, String::new()),
            [one] => (*one, String::new()),
            [first, .., last] => (
                runs[runs.len() / 2],
                format!("{}-{}", num(*first), num(*last)),
            ),
        };
        Row {
            figure: figure.into(),
            value,
            unit: unit.to_string(),
            spread,
            baseline: None,
            baseline_name: String::new(),
            target: String::new(),
        }
    }

    /// This row against `baseline`'s median.
    pub fn against(mut self, baseline: &Row) -> Row {
        self.baseline = Some(baseline.value);
        self.baseline_name = baseline.figure.clone();
        self
    }

    /// The target the issue sets for this figure.
    pub fn target(mut self, target: &str) -> Row {
        self.target = target.to_string();
        self
    }

    /// `value / baseline`.
    pub fn ratio(&self) -> Option<f64> {
        self.baseline.map(|b| self.value / b)
    }

    /// One tab-separated line, for another program to read back with [`Row::parse`].
    pub fn line(&self) -> String {
        format!(
            "row\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            self.figure,
            self.value,
            self.unit,
            self.spread,
            self.baseline.map(|b| b.to_string()).unwrap_or_default(),
            self.baseline_name,
            self.target
        )
    }

    /// A row from a line [`Row::line`] wrote; `None` for any other line.
    pub fn parse(line: &str) -> Option<Row> {
        let mut f = line.strip_prefix("row\t")?.split('\t');
        Some(Row {
            figure: f.next()?.to_string(),
            value: f.next()?.parse().ok()?,
            unit: f.next()?.to_string(),
            spread: f.next()?.to_string(),
            baseline: f.next().and_then(|b| b.parse().ok()),
            baseline_name: f.next()?.to_string(),
            target: f.next().unwrap_or_default().to_string(),
        })
    }
}

/// Prints rows as one markdown table (figure, median, spread, baseline, ratio, target).
pub fn print_table(rows: &[Row]) {
    println!("| figure | median | min-max | baseline | ratio | target |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for r in rows {
        println!(
            "| {} | {} {} | {} | {} | {} | {} |",
            r.figure,
            num(r.value),
            r.unit,
            r.spread,
            r.baseline
                .map(|b| format!("{}: {}", r.baseline_name, num(b)))
                .unwrap_or_default(),
            r.ratio().map(|x| format!("{x:.2}")).unwrap_or_default(),
            r.target
        );
    }
}

/// A figure as text: whole numbers from 1000 up, else three decimals.
fn num(x: f64) -> String {
    if x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

/// Prints rows as a table, or as lines for `benchall` when the program was started with
/// `--rows`.
pub fn report(rows: &[Row]) {
    if std::env::args().any(|a| a == "--rows") {
        for r in rows {
            println!("{}", r.line());
        }
    } else {
        println!();
        print_table(rows);
    }
}

/// CPU seconds a live process has used so far (user and system), from /proc.
pub fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    cpu_fields(&stat, 14)
}

/// CPU seconds this process's waited-for children have used (cutime and cstime).
pub fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    cpu_fields(&stat, 16)
}

/// The two tick counts from field `at` on (numbered as in proc(5): utime is 14, cutime 16)
/// of a /proc stat line, in seconds.
fn cpu_fields(stat: &str, at: usize) -> f64 {
    // Fields after the command name start at 3 (state).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let index = at - 3;
    let ticks =
        fields.get(index).copied().unwrap_or(0) + fields.get(index + 1).copied().unwrap_or(0);
    ticks as f64 / clock_ticks()
}

/// Clock ticks per second (`getconf CLK_TCK`).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A loopback port free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A child process killed and reaped when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `child` prints a line containing `word` on stdout, then drains the rest.
pub fn wait_for(child: &mut Child, word: &str) {
    let out = child.stdout.take().expect("stdout piped");
    let mut lines = BufReader::new(out).lines();
    for line in lines.by_ref() {
        if line.map(|l| l.contains(word)).unwrap_or(false) {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
}

/// What to print when nats-server is missing.
pub const NATS_MISSING: &str =
    "nats-server not found: the NATS figures are skipped (install it: apt-get install nats-server)";

pub mod nats_file;
pub mod peers;

// Shared with the program's cluster tests (crates/peermsg-cli/tests/common).
mod nats_program;
pub use nats_program::nats_server_program;

/// A nats-server on a loopback port, stopped when dropped.
pub struct NatsServer {
    /// The server process.
    pub process: Killed,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
}

impl NatsServer {
    /// Starts one with its defaults (1 MiB `max_payload`) and waits until it takes
    /// connections; `None` if nats-server is not installed.
    pub fn start() -> Option<NatsServer> {
        let program = nats_server_program()?;
        let port = free_port();
        let child = Command::new(program)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let process = Killed(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(NatsServer {
            process,
            url: format!("nats://127.0.0.1:{port}"),
        })
    }
}

/// The median of `xs` (NaN for none).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_reads_back_from_its_line() {
        let base = Row::of("copy", "s", vec![2.0, 1.0, 3.0]);
        let row = Row::of("peermsg", "s", vec![4.0, 5.0, 3.0])
            .against(&base)
            .target("≤ 1.25×");
        assert_eq!(row.value, 4.0);
        assert_eq!(row.spread, "3.000-5.000");
        assert_eq!(row.ratio(), Some(2.0));
        assert_eq!(Row::parse(&row.line()), Some(row));
        assert_eq!(Row::parse("round 1: 2 s"), None);
    }

    #[test]
    fn proc_fields_are_counted_as_proc5_numbers_them() {
        // pid (comm with ) inside) state ppid ... utime=14 stime=15 cutime=16 cstime=17
        let line = "7 (a) b) S 1 2 3 4 5 6 7 8 9 10 100 200 300 400 0";
        let ticks = clock_ticks();
        assert_eq!(cpu_fields(line, 14), 300.0 / ticks);
        assert_eq!(cpu_fields(line, 16), 700.0 / ticks);
    }
}
