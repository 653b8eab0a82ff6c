//! `rocket-rides`: one binary, one subcommand per process. Parses settings
//! (flags with environment fallbacks), builds the adapters they select, and
//! runs the processes until SIGINT or SIGTERM.

mod background;
mod operator;
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
    match cli.command {
        Command::Start(args) => processes::start(*args, shutdown).await,
        Command::Api(args) => processes::api(*args, shutdown).await,
        Command::Completer(args) => processes::completer(*args, shutdown).await,
        Command::Enqueuer(args) => processes::enqueuer(args, shutdown).await,
        Command::Worker(args) => processes::worker(args, shutdown).await,
        Command::Reaper(args) => processes::reaper(args, shutdown).await,
        Command::Simulator(args) => simulator::run(&args.simulator, args.api_port, shutdown).await,
        Command::Up(args) => operator::up(&args, shutdown).await,
        Command::Review(args) => operator::review(&args, shutdown).await,
        Command::Resolve(args) => operator::resolve(&args, shutdown).await,
        Command::Migrate(args) => operator::migrate(&args, shutdown).await,
        Command::FakeStripe(args) => operator::fake_stripe(&args, shutdown).await,
        Command::DeadJobs(args) => operator::dead_jobs(&args, shutdown).await,
        Command::Healthcheck(args) => operator::healthcheck(&args).await,
        Command::SettingsTable => {
            print!("{}", settings::settings_table());
            Ok(())
        }
    }
}
