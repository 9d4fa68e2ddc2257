//! The whole set in one command, one table:
//!
//! ```sh
//! cargo build --release -p peermsg-cli -p peermsg-bench && target/release/benchall
//! target/release/benchall quick      # smaller sizes and fewer rounds
//! ```
//!
//! It runs `pathbench` (the library's whole path in one process, against raw TCP, a
//! `LengthDelimitedCodec` relay, memory and nats-server), `progbench` (the program as
//! three processes against copy relays, nats-server, magic-wormhole and sendme) and
//! `capbench` (one relay's capacity under many users, against nats-server), all from
//! beside itself, and prints their figures, baselines, ratios and targets as one table. The codec's own
//! comparison is a criterion benchmark: `cargo bench --bench codec`.

use std::process::{Command, Stdio};

use peermsg_bench::{print_table, Row};

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let me = std::env::current_exe().expect("this program's path");
    let runs: [(&str, Vec<&str>); 3] = [
        ("pathbench", if quick { vec!["quick"] } else { vec![] }),
        (
            "progbench",
            if quick {
                vec!["256", "3"]
            } else {
                vec!["1024", "5"]
            },
        ),
        ("capbench", if quick { vec!["quick"] } else { vec![] }),
    ];
    let mut rows = Vec::new();
    for (program, args) in runs {
        let path = me.with_file_name(program);
        eprintln!("==> {program} {}", args.join(" "));
        let out = Command::new(&path)
            .args(&args)
            .arg("--rows")
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (build with `cargo build --release -p peermsg-cli -p peermsg-bench`)",
                    path.display()
                )
            });
        assert!(out.status.success(), "{program} failed");
        let text = String::from_utf8_lossy(&out.stdout);
        rows.extend(text.lines().filter_map(Row::parse));
    }
    println!();
    print_table(&rows);
}
