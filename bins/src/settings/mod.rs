//! Settings: every one a flag with an environment fallback, grouped by what
//! reads it. Each subcommand flattens only the groups it uses, so `--help`
//! lists exactly the settings that command reads, each group under its own
//! heading. A default is written once: here, or in the adapter's constant
//! named here.

mod commands;
mod groups;
mod table;

use std::fmt;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

pub use commands::*;
pub use groups::*;
pub use table::settings_table;

/// A duration setting: parsed and shown like `90s`, `5m`, `72h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

/// Written without spaces (`1m30s`), so a default reads as one word in
/// `--help` and parses back as given.
impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = humantime::format_duration(self.0).to_string();
        f.write_str(&text.replace(' ', ""))
    }
}

pub(crate) fn duration(text: &str) -> Result<Dur, String> {
    humantime::parse_duration(text)
        .map(Dur)
        .map_err(|error| format!("{error} (write durations like 90s, 5m, 72h)"))
}

pub(crate) fn console_token(text: &str) -> Result<Secret, String> {
    if text.chars().count() < 16 || text.chars().any(|c| !c.is_ascii_graphic()) {
        return Err("CONSOLE_TOKEN must be at least 16 visible ASCII characters".to_owned());
    }
    Ok(Secret(text.to_owned()))
}

pub(crate) fn session_ttl(text: &str) -> Result<Dur, String> {
    let ttl = duration(text)?;
    if ttl.0 < Duration::from_secs(60) {
        return Err(format!(
            "{text} is shorter than 1m: an operator would be signed out between two refreshes"
        ));
    }
    Ok(ttl)
}

pub(crate) fn replay_ttl(text: &str) -> Result<Dur, String> {
    let ttl = duration(text)?;
    if ttl.0 > application::ReplayCacheLimits::MAX_TTL {
        return Err(format!(
            "{text} is longer than {}: a replayed answer must never outlive its key (REAPER_MAX_AGE)",
            human(application::ReplayCacheLimits::MAX_TTL)
        ));
    }
    Ok(ttl)
}

pub(crate) fn payments_api(text: &str) -> Result<domain::PaymentsApi, String> {
    [
        domain::PaymentsApi::PaymentIntents,
        domain::PaymentsApi::Charges,
    ]
    .into_iter()
    .find(|api| api.as_str() == text)
    .ok_or_else(|| format!("{text} is neither payment_intents nor charges"))
}

pub(crate) fn webhook_secrets(text: &str) -> Result<domain::WebhookSecrets, String> {
    domain::WebhookSecrets::parse(text)
}

pub(crate) fn secret(text: &str) -> Result<Secret, String> {
    Ok(Secret(text.to_owned()))
}

/// A setting that holds a credential (a key, a URL with a password): its
/// `Debug` never shows it, so neither can a log line that prints settings.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

pub(crate) fn rate(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text} is not a number"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{text} is not between 0 and 1"))
    }
}

pub(crate) fn human(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[derive(Debug, Parser)]
#[command(
    name = "rocket-rides",
    version,
    about = "Book rides, charge cards, never twice."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How log lines are written (`RUST_LOG` filters them).
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process: api, completer, enqueuer, worker, reaper, simulator.
    Start(Box<StartCommand>),
    /// The HTTP API.
    Api(Box<ApiCommand>),
    /// Finishes requests left unfinished.
    Completer(Box<CompleterCommand>),
    /// Moves staged jobs into the job queue.
    Enqueuer(EnqueuerCommand),
    /// Works queued jobs (sends ride receipts).
    Worker(WorkerCommand),
    /// Deletes old idempotency keys.
    Reaper(ReaperCommand),
    /// Sends traffic to the API.
    Simulator(SimulatorCommand),
    /// Creates the demo users and their Stripe customers (safe to re-run).
    Up(UpCommand),
    /// Lists keys the completer will not charge again: a person must decide.
    Review(ReviewCommand),
    /// Finishes a key awaiting review with what a person found at Stripe.
    Resolve(ResolveCommand),
    /// Applies schema.sql to DATABASE_URL (safe to re-run).
    Migrate(MigrateCommand),
    /// A local stand-in for Stripe's API, with fault injection.
    FakeStripe(FakeStripeArgs),
    /// Lists jobs in the dead-letter stream (NATS only), or puts them back
    /// in the job queue with --requeue.
    DeadJobs(DeadJobsCommand),
    /// Asks this process's own health endpoint (METRICS_ADDR, or --url)
    /// whether it is ready; exits 0 when it is. For container healthchecks,
    /// where no curl is installed.
    Healthcheck(HealthcheckCommand),
    /// Prints the README's settings table, generated from these definitions.
    #[command(hide = true)]
    SettingsTable,
}

impl Command {
    /// One-shot commands whose standard output is what they report.
    pub fn prints_a_report(&self) -> bool {
        matches!(
            self,
            Command::Up(_)
                | Command::Review(_)
                | Command::Resolve(_)
                | Command::Migrate(_)
                | Command::DeadJobs(_)
                | Command::Healthcheck(_)
                | Command::SettingsTable
        )
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_charge_longer_than_the_lock_is_refused() {
        let cli = Cli::parse_from(["rocket-rides", "completer", "--lock-timeout", "10s"]);
        let Command::Completer(completer) = cli.command else {
            panic!("parsed another command");
        };
        let mut stripe = completer.stripe.clone();
        stripe.stripe_api_key = Some(Secret("sk_test".to_owned()));
        let error = completer.keys.check(&stripe).expect_err("refused");
        assert!(error.contains("LOCK_TIMEOUT"), "{error}");
        assert!(completer.keys.check(&completer.stripe).is_ok());
    }
}
