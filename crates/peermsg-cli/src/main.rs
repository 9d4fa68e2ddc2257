//! `peermsg`: a relay, a listener, a sender, and a demo that runs all three in one process.

mod save;

/// `println!` for every line the program prints: a reader that went away (a closed pipe,
/// `| head`) is no reason to stop a relay or fail a transfer, so what it would have read
/// is dropped instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        crate::printer::print_line(false, &format!($($arg)*))
    }};
}

/// A line on standard error, above any bars.
macro_rules! shout {
    ($($arg:tt)*) => {{
        crate::printer::print_line(true, &format!($($arg)*))
    }};
}

mod args;
mod connect;
mod demo;
mod keys;
mod listen;
mod printer;
mod relay;
mod send;
mod token;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use peermsg_tokio::ServerConfig;

use args::{Cli, Command};
use connect::SEND_WAIT;
use demo::demo;
use listen::listen;
use relay::relay;
use send::send;
use token::token;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not for a log file or a pipe.
        .with_ansi(std::io::stderr().is_terminal() && !cli.log_json);
    if cli.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    // One thread for the tasks: the relay's state is one task's, a client's one task's, and
    // their readers and writers only feed them, so more threads would only add wake-ups
    // across them (file reads and writes go to the blocking pool's threads as before;
    // measured in docs/PERFORMANCE.md, a TLS relay's included). A relay may take more
    // (`--threads`): its readers decrypt TLS on them.
    let threads = match &cli.command {
        Command::Relay { threads, .. } => *threads,
        _ => 1,
    };
    let runtime = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(usize::from(n));
            builder
        }
    }
    .enable_all()
    .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Relay {
                listen,
                auth,
                max_connections,
                max_connections_per_ip,
                max_held_mib,
                metrics,
                tls,
                web,
                cluster,
                node,
                threads: _,
            } => {
                // A relay's connections are open files: use all the system allows.
                if let Err(e) = peermsg_tokio::raise_open_file_limit() {
                    tracing::warn!("cannot raise the open-file limit: {e}");
                }
                let mut config = ServerConfig {
                    max_connections_per_ip,
                    ..ServerConfig::default()
                };
                config.relay.max_held_bytes = max_held_mib << 20;
                if let Some(max) = max_connections {
                    config.max_connections = max;
                }
                let cluster = cluster.map(|urls| (urls, node));
                relay(
                    &listen,
                    &auth,
                    &tls,
                    &web,
                    config,
                    metrics.as_deref(),
                    cluster,
                )
                .await
            }
            Command::Listen {
                login,
                dir,
                choice,
                json,
            } => listen(&login, &dir, &choice, json).await,
            Command::Send {
                login,
                to,
                what,
                name,
                wait,
                limit_rate,
                json,
            } => {
                let window = wait.or(login.reconnect_window).unwrap_or(SEND_WAIT);
                send(
                    &login,
                    &to,
                    &what,
                    name.as_deref(),
                    window,
                    limit_rate,
                    json,
                )
                .await
            }
            Command::Demo => demo().await,
            Command::Token {
                user,
                ttl,
                secret_file,
                private_key,
                audience,
            } => token(&user, &ttl, secret_file, private_key, audience.as_deref()),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
