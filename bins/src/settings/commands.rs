//! The subcommands' settings: each command the groups it reads, and its
//! own flags.

use clap::Args;

use super::*;

#[derive(Debug, Args)]
pub struct StartCommand {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub stripe: StripeArgs,
    #[command(flatten)]
    pub replay_cache: ReplayCacheArgs,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
    #[command(flatten)]
    pub console: ConsoleArgs,
    #[command(flatten)]
    pub poll: PollArgs,
    #[command(flatten)]
    pub batch: BatchArgs,
    #[command(flatten)]
    pub completer: CompleterArgs,
    #[command(flatten)]
    pub enqueuer: EnqueuerArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(flatten)]
    pub reaper: ReaperArgs,
    #[command(flatten)]
    pub simulator: SimulatorArgs,
}

#[derive(Debug, Args)]
pub struct ApiCommand {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Read only for the console's dead letters.
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub stripe: StripeArgs,
    #[command(flatten)]
    pub replay_cache: ReplayCacheArgs,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
    #[command(flatten)]
    pub console: ConsoleArgs,
    #[command(flatten)]
    pub poll: PollArgs,
}

#[derive(Debug, Args)]
pub struct CompleterCommand {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub stripe: StripeArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
    #[command(flatten)]
    pub poll: PollArgs,
    #[command(flatten)]
    pub batch: BatchArgs,
    #[command(flatten)]
    pub completer: CompleterArgs,
}

#[derive(Debug, Args)]
pub struct EnqueuerCommand {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(flatten)]
    pub poll: PollArgs,
    #[command(flatten)]
    pub batch: BatchArgs,
    #[command(flatten)]
    pub enqueuer: EnqueuerArgs,
}

#[derive(Debug, Args)]
pub struct WorkerCommand {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(flatten)]
    pub poll: PollArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

#[derive(Debug, Args)]
pub struct ReaperCommand {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(flatten)]
    pub poll: PollArgs,
    #[command(flatten)]
    pub batch: BatchArgs,
    #[command(flatten)]
    pub reaper: ReaperArgs,
}

#[derive(Debug, Args)]
pub struct SimulatorCommand {
    #[command(flatten)]
    pub simulator: SimulatorArgs,
    /// The API's port on this machine, where rides go unless
    /// SIMULATOR_API_URL says otherwise.
    #[arg(long, env = "API_PORT", default_value_t = DEFAULT_API_PORT, help_heading = "Simulator")]
    pub api_port: u16,
}

#[derive(Debug, Args)]
pub struct UpCommand {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub stripe: StripeArgs,
    /// Also write each demo user's new API key to a file named by the
    /// user's email in this folder, as the `Authorization` value
    /// (`Bearer <key>`, readable by the owner only), for a simulator or a
    /// script to read (`SIMULATOR_AUTHORIZATION_FILE`).
    #[arg(long, env = "UP_API_KEYS_DIR")]
    pub api_keys_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReviewCommand {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub stripe: StripeArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Most keys to list.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("finding").required(true).multiple(false).args([
    "from_stripe", "charge_id", "not_charged", "refund_id", "intent_cancelled", "not_refunded",
])))]
pub struct ResolveCommand {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub stripe: StripeArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// The key's id, as `rocket-rides review` lists it (`key_id=`);
    /// with `--from-stripe` and no id, every key awaiting review.
    #[arg(required_unless_present = "from_stripe")]
    pub key_id: Option<i64>,
    /// Ask the payment processor (search by the key's metadata, then
    /// retrieve) and settle each key it answers definitively: the charge
    /// exists (booked, 201) or it confirms none (ended, 502). Keys it
    /// cannot answer for stay listed, with the reason.
    #[arg(long)]
    pub from_stripe: bool,
    /// Most keys to settle with `--from-stripe` and no key id.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// The charge exists at Stripe (found by the key's downstream_key):
    /// record it on the ride and book it (201, receipt staged).
    #[arg(long)]
    pub charge_id: Option<String>,
    /// With --charge-id: the PaymentIntent that charge paid (on
    /// PaymentIntents), recorded on the ride with it.
    #[arg(long, requires = "charge_id")]
    pub payment_intent_id: Option<String>,
    /// No charge exists at Stripe: end the request without one (502).
    #[arg(long)]
    pub not_charged: bool,
    /// A cancel key: the refund exists at Stripe (listed under the ride's
    /// PaymentIntent with the key's downstream_key in its metadata):
    /// record it and finish the cancel (200, receipt staged).
    #[arg(long)]
    pub refund_id: Option<String>,
    /// With --refund-id: the refund's status at Stripe.
    #[arg(long, requires = "refund_id", default_value = "succeeded")]
    pub refund_status: String,
    /// A cancel key: its PaymentIntent is cancelled at Stripe (no refund
    /// was due): finish the cancel (200).
    #[arg(long)]
    pub intent_cancelled: bool,
    /// A cancel key: no refund was made at Stripe: end the cancel with a
    /// 502, its ride `refund_failed` for a person to refund by hand.
    #[arg(long)]
    pub not_refunded: bool,
}

#[derive(Debug, Args)]
pub struct MigrateCommand {
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct DeadJobsCommand {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
    /// Most jobs to list (or requeue).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Put the listed jobs back in the job queue and remove them from the
    /// dead-letter stream (after fixing what made them fail). A ride whose
    /// receipt went out meanwhile gets no second one. Messages that are not
    /// jobs stay.
    #[arg(long, conflicts_with = "delete")]
    pub requeue: bool,
    /// Delete the dead letter with this sequence (one that is not a job,
    /// as listed, or a job decided against).
    #[arg(long)]
    pub delete: Option<u64>,
}

#[derive(Debug, Args)]
pub struct HealthcheckCommand {
    #[command(flatten)]
    pub ops: OpsArgs,
    /// The URL to ask; by default /readyz on METRICS_ADDR's port at 127.0.0.1.
    #[arg(long)]
    pub url: Option<String>,
}
