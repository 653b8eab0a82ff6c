//! `rocket-rides`: one binary, one subcommand per process. Parses settings
//! (flags with environment fallbacks), builds the adapters they select, and
//! runs the processes until SIGINT or SIGTERM.

mod processes;
mod settings;
mod simulator;
mod wiring;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::settings::{Cli, Command, LogFormat};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format, cli.command.prints_a_report());
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) if error.is::<wiring::StoppedWhileWaiting>() => {
            info!("{error}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("rocket-rides: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs go to stdout, except for commands whose stdout is a report (keys
/// for review, API keys, dead jobs): there they go to stderr, so the report
/// can be piped on its own.
fn init_tracing(format: LogFormat, report_on_stdout: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = if report_on_stdout {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match (format, report_on_stdout) {
        (LogFormat::Text, false) => builder.init(),
        (LogFormat::Json, false) => builder.json().init(),
        (LogFormat::Text, true) => builder.with_writer(std::io::stderr).init(),
        (LogFormat::Json, true) => builder.json().with_writer(std::io::stderr).init(),
    }
}

/// Cancelled on the first SIGINT or SIGTERM; processes finish what they hold.
fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown signal received; finishing work in hand");
        trigger.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let shutdown = shutdown_token();
    let settings = cli.settings;
    match cli.command {
        Command::Start(simulator) => processes::start(&settings, &simulator, shutdown).await,
        Command::Api => processes::api(&settings, shutdown).await,
        Command::Completer => processes::completer(&settings, shutdown).await,
        Command::Enqueuer => processes::enqueuer(&settings, shutdown).await,
        Command::Worker => processes::worker(&settings, shutdown).await,
        Command::Reaper => processes::reaper(&settings, shutdown).await,
        Command::Simulator(args) => simulator::run(&settings, &args, shutdown).await,
        Command::Up => processes::up(&settings, shutdown).await,
        Command::Review(args) => processes::review(&settings, &args, shutdown).await,
        Command::Resolve(args) => processes::resolve(&settings, &args, shutdown).await,
        Command::Migrate => processes::migrate(&settings, shutdown).await,
        Command::FakeStripe(args) => processes::fake_stripe(&args, shutdown).await,
        Command::DeadJobs(args) => processes::dead_jobs(&settings, &args, shutdown).await,
        Command::Healthcheck(args) => processes::healthcheck(&settings, &args).await,
    }
}
