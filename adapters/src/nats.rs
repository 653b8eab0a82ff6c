//! The job queue on NATS JetStream (async-nats).
//!
//! Jobs go to a file-backed work-queue stream; each message's `Nats-Msg-Id`
//! is the staged job's id, so a job the enqueuer publishes again (it crashed
//! between publish and delete) is dropped by the stream's duplicate window,
//! which must be longer than the enqueuer's retry horizon. Workers share
//! one durable pull consumer with explicit acks: a job is redelivered until
//! acknowledged (`ack_wait` after a worker died, or after the delay a
//! failed worker asked for), and after `max_deliver` deliveries it is moved
//! to a dead-letter stream a person can list (`rocket-rides dead-jobs`).
//!
//! Staged job ids restart with their database, so the streams and subjects
//! are named after the store's deployment id: a reset database, or a second
//! environment on the same NATS server, gets queues of its own instead of
//! having its jobs dropped as repeats of another database's, or worked
//! against the wrong rides.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use application::ports::{DeadJob, DeadLetters, Delivery, JobQueue, QueueError};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, Context, Message, consumer, stream};
use async_trait::async_trait;
use domain::charge::{ReceiptJob, ReceiptKind};
use domain::{RideId, StagedJob, UserId};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::connect::{ConnectError, redact_url};

#[derive(Clone)]
pub struct NatsSettings {
    /// One server's URL, or several comma-separated (the nodes of a
    /// cluster: the client connects to one and fails over to the others,
    /// and to those the cluster tells it of).
    pub url: String,
    /// Copies JetStream keeps of each stream (1 on a single server, 3 on
    /// a three-node cluster). Applied when the streams are created.
    pub replicas: usize,
    pub stream: String,
    pub subject: String,
    pub dead_letter_stream: String,
    pub dead_letter_subject: String,
    pub consumer: String,
    /// How long the stream remembers a message id: longer than an enqueuer
    /// may take to publish a claimed job again after a crash.
    pub duplicate_window: Duration,
    /// Redelivery of a job nobody acknowledged.
    pub ack_wait: Duration,
    /// Deliveries before a job goes to the dead-letter stream.
    pub max_deliver: u32,
    /// How the client proves itself to the server.
    pub auth: NatsAuth,
}

/// NATS credentials: a user and password, or a token, from the URL
/// (`nats://user:password@host`, `nats://token@host`) or from settings; or
/// a credentials file (a user JWT and its NKEY seed) for a server in
/// operator mode. The client library does not read them from a URL by
/// itself.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    #[default]
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    /// The path of a `.creds` file, read at each connect.
    CredentialsFile(std::path::PathBuf),
}

/// Credentials never show in a log line.
impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::UserPassword { user, .. } => write!(f, "UserPassword({user}, ***)"),
            NatsAuth::Token(_) => f.write_str("Token(***)"),
            NatsAuth::CredentialsFile(path) => write!(f, "CredentialsFile({})", path.display()),
        }
    }
}

impl NatsAuth {
    /// The credentials in `url`'s user part, and the URL without them.
    pub fn split_url(url: &str) -> (Self, String) {
        let Some(mut parsed) = url::Url::parse(url).ok().filter(url::Url::has_host) else {
            return (NatsAuth::None, url.to_owned());
        };
        let user = percent_decoded(parsed.username());
        let auth = match parsed.password() {
            Some(password) => NatsAuth::UserPassword {
                user,
                password: percent_decoded(password),
            },
            None if !user.is_empty() => NatsAuth::Token(user),
            None => return (NatsAuth::None, url.to_owned()),
        };
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        (auth, parsed.to_string())
    }

    /// The options with these credentials; a credentials file that cannot
    /// be read or parsed is a configuration error naming its path, never
    /// its content.
    fn apply(
        &self,
        options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, ConnectError> {
        Ok(match self {
            NatsAuth::None => options,
            NatsAuth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
            NatsAuth::Token(token) => options.token(token.clone()),
            NatsAuth::CredentialsFile(path) => {
                let unusable = |why: String| {
                    ConnectError::Configuration(anyhow::anyhow!(
                        "NATS_CREDS {}: {why}",
                        path.display()
                    ))
                };
                let text = std::fs::read_to_string(path)
                    .map_err(|error| unusable(format!("cannot be read ({})", error.kind())))?;
                options.credentials(&text).map_err(|_| {
                    unusable("is not a credentials file (a user JWT and its NKEY seed)".into())
                })?
            }
        })
    }
}

/// Each of comma-separated URLs, redacted.
pub fn redact_urls(text: &str) -> String {
    text.split(',')
        .map(|part| redact_url(part.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

/// `%XX` escapes decoded (a user part of a URL keeps `+` as it is).
fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// The URL may carry credentials: `Debug` shows it redacted.
impl std::fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &redact_urls(&self.url))
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .field("duplicate_window", &self.duplicate_window)
            .field("ack_wait", &self.ack_wait)
            .field("max_deliver", &self.max_deliver)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl NatsSettings {
    pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(2 * 3600);
    pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
    pub const DEFAULT_MAX_DELIVER: u32 = 8;

    /// The queue of the store whose deployment id is `deployment` (letters,
    /// digits, `-` and `_` only: it names streams and subject tokens), with
    /// the credentials `url` carries, if any (comma-separated URLs: those
    /// of the first that carries any; every URL loses its own).
    pub fn new(url: impl Into<String>, deployment: &str) -> Self {
        let mut auth = NatsAuth::None;
        let urls: Vec<String> = url
            .into()
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                let (found, stripped) = NatsAuth::split_url(part);
                if auth == NatsAuth::None {
                    auth = found;
                }
                stripped
            })
            .collect();
        Self {
            url: urls.join(","),
            replicas: 1,
            auth,
            stream: format!("ROCKET_RIDES_JOBS_{deployment}"),
            subject: format!("rocket-rides.{deployment}.jobs.send_ride_receipt"),
            dead_letter_stream: format!("ROCKET_RIDES_DEAD_{deployment}"),
            dead_letter_subject: format!("rocket-rides.{deployment}.dead.send_ride_receipt"),
            consumer: "workers".into(),
            duplicate_window: Self::DEFAULT_DUPLICATE_WINDOW,
            ack_wait: Self::DEFAULT_ACK_WAIT,
            max_deliver: Self::DEFAULT_MAX_DELIVER,
        }
    }
}

/// A job as it travels through NATS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct JobMessage {
    id: i64,
    job: String,
    ride_id: i64,
    user_id: i64,
    amount: i64,
    currency: String,
}

impl From<&StagedJob> for JobMessage {
    fn from(job: &StagedJob) -> Self {
        Self {
            id: job.id,
            job: job.job.kind.job_name().to_owned(),
            ride_id: job.job.ride_id.0,
            user_id: job.job.user_id.0,
            amount: job.job.amount_cents,
            currency: job.job.currency.clone(),
        }
    }
}

impl JobMessage {
    /// A message's payload as a job: JSON of this shape naming a job this
    /// service works; the reason otherwise.
    fn parse(payload: &[u8]) -> Result<StagedJob, String> {
        let message: JobMessage = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        let kind = ReceiptKind::of_job_name(&message.job)
            .ok_or_else(|| format!("unknown job {:?}", message.job))?;
        Ok(StagedJob {
            id: message.id,
            job: ReceiptJob {
                ride_id: RideId(message.ride_id),
                user_id: UserId(message.user_id),
                amount_cents: message.amount,
                currency: message.currency,
                kind,
            },
        })
    }
}

pub struct NatsQueue {
    jetstream: Context,
    consumer: consumer::PullConsumer,
    settings: NatsSettings,
    in_flight: Mutex<HashMap<u64, Message>>,
    next_tag: AtomicU64,
}

/// How long past a pull's own expiry the client waits for the server's
/// answer. A pull lost with a connection or a consumer leader that died
/// is never answered: without a bound here a worker would wait on it
/// forever while jobs pile up. Past it the pull counts as having received
/// nothing (a job delivered to it comes back after `ack_wait`), and the
/// worker pulls again; a slow answer is never an error.
const PULL_GRACE: Duration = Duration::from_secs(5);

/// The stream `config` names, created if missing; one that exists with
/// other settings is updated to `config`, or refused as a configuration
/// error naming what differs when NATS will not change them.
async fn ensure_stream(
    jetstream: &Context,
    config: stream::Config,
    what: &str,
) -> Result<stream::Stream, ConnectError> {
    let name = config.name.clone();
    let stream = jetstream
        .get_or_create_stream(config.clone())
        .await
        .with_context(|| format!("creating the {what} stream {name}"))
        .map_err(ConnectError::Transient)?;
    let differs = stream_differences(&stream.cached_info().config, &config);
    if differs.is_empty() {
        return Ok(stream);
    }
    warn!(stream = %name, %differs, "the {what} stream exists with other settings: updating it");
    let refused = |differs: &str| {
        format!(
            "the {what} stream {name} exists with other settings ({differs}) and NATS refused to change them: set them back, or remove the stream if nothing in it is needed"
        )
    };
    jetstream
        .update_stream(config.clone())
        .await
        .map_err(|error| {
            ConnectError::Configuration(anyhow::Error::new(error).context(refused(&differs)))
        })?;
    let stream = jetstream
        .get_stream(&name)
        .await
        .with_context(|| format!("reading the {what} stream {name}"))
        .map_err(ConnectError::Transient)?;
    // A server that takes an update but keeps a setting: refused all the
    // same, rather than run on settings other than ours.
    let kept = stream_differences(&stream.cached_info().config, &config);
    if !kept.is_empty() {
        return Err(ConnectError::Configuration(anyhow::anyhow!(refused(&kept))));
    }
    Ok(stream)
}

/// What of ours differs in an existing stream's settings, as `setting
/// theirs -> ours, …`; empty when nothing does.
fn stream_differences(theirs: &stream::Config, ours: &stream::Config) -> String {
    let mut differs = Vec::new();
    if theirs.subjects != ours.subjects {
        differs.push(format!(
            "subjects {:?} -> {:?}",
            theirs.subjects, ours.subjects
        ));
    }
    // No window of ours: the server's default, whatever it is.
    if !ours.duplicate_window.is_zero() && theirs.duplicate_window != ours.duplicate_window {
        differs.push(format!(
            "duplicate_window {:?} -> {:?}",
            theirs.duplicate_window, ours.duplicate_window
        ));
    }
    if theirs.num_replicas != ours.num_replicas {
        differs.push(format!(
            "num_replicas {} -> {}",
            theirs.num_replicas, ours.num_replicas
        ));
    }
    if theirs.retention != ours.retention {
        differs.push(format!(
            "retention {:?} -> {:?}",
            theirs.retention, ours.retention
        ));
    }
    if theirs.storage != ours.storage {
        differs.push(format!(
            "storage {:?} -> {:?}",
            theirs.storage, ours.storage
        ));
    }
    differs.join(", ")
}

fn queue_error(error: impl std::fmt::Display) -> QueueError {
    QueueError(anyhow::anyhow!("{error}"))
}

impl NatsQueue {
    /// Connects and creates the streams and the consumer if missing. A
    /// server that is down or restarting is a transient failure (call again
    /// later); a malformed URL or refused credentials are not. Once
    /// connected, the client reconnects by itself after a server restart.
    pub async fn connect(settings: NatsSettings) -> Result<Self, ConnectError> {
        let url = redact_urls(&settings.url);
        let servers = settings
            .url
            .split(',')
            .map(|part| part.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| {
                ConnectError::Configuration(
                    anyhow::Error::new(error).context(format!("NATS_URL {url} is not a NATS URL")),
                )
            })?;
        let options = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5));
        let client = settings
            .auth
            .apply(options)?
            .connect(servers)
            .await
            .map_err(|error| {
                use async_nats::ConnectErrorKind as Kind;
                let permanent = matches!(
                    error.kind(),
                    Kind::ServerParse
                        | Kind::Authentication
                        | Kind::AuthorizationViolation
                        | Kind::Tls
                );
                let error =
                    anyhow::Error::new(error).context(format!("connecting to NATS at {url}"));
                if permanent {
                    ConnectError::Configuration(error)
                } else {
                    ConnectError::Transient(error)
                }
            })?;
        Self::attach(client, settings).await
    }

    /// The streams and the consumer, created if missing and brought to
    /// `settings` if they exist with others (a changed
    /// `NATS_DUPLICATE_WINDOW`, `NATS_ACK_WAIT` or `NATS_STREAM_REPLICAS`
    /// takes effect on the next start, logged); a change NATS refuses
    /// (replicas beyond the servers there are, another retention) stops
    /// the process with what differs, as a configuration error.
    async fn attach(
        client: async_nats::Client,
        settings: NatsSettings,
    ) -> Result<Self, ConnectError> {
        let jetstream = jetstream::new(client);
        let jobs = ensure_stream(
            &jetstream,
            stream::Config {
                name: settings.stream.clone(),
                subjects: vec![settings.subject.clone()],
                storage: stream::StorageType::File,
                // An acknowledged job leaves the stream.
                retention: stream::RetentionPolicy::WorkQueue,
                duplicate_window: settings.duplicate_window,
                num_replicas: settings.replicas,
                ..Default::default()
            },
            "jobs",
        )
        .await?;
        ensure_stream(
            &jetstream,
            stream::Config {
                name: settings.dead_letter_stream.clone(),
                subjects: vec![settings.dead_letter_subject.clone()],
                storage: stream::StorageType::File,
                num_replicas: settings.replicas,
                ..Default::default()
            },
            "dead-letter",
        )
        .await?;
        let config = consumer::pull::Config {
            durable_name: Some(settings.consumer.clone()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: settings.ack_wait,
            ..Default::default()
        };
        let mut consumer: consumer::PullConsumer = jobs
            .get_or_create_consumer(&settings.consumer, config.clone())
            .await
            .context("creating the workers' consumer")
            .map_err(ConnectError::Transient)?;
        let had = consumer.cached_info().config.ack_wait;
        if had != config.ack_wait {
            warn!(consumer = %settings.consumer, from = ?had, to = ?config.ack_wait, "the workers' consumer has another ack_wait: updating it");
            // A durable consumer created again under its name takes the
            // editable settings it is given.
            consumer = jobs.create_consumer(config).await.map_err(|error| {
                ConnectError::Configuration(anyhow::Error::new(error).context(format!(
                    "the workers' consumer {} has ack_wait {had:?} and NATS refused to change it to {:?}",
                    settings.consumer, settings.ack_wait
                )))
            })?;
        }
        info!(url = %redact_urls(&settings.url), stream = %settings.stream, replicas = settings.replicas, "job queue: NATS JetStream");
        Ok(Self {
            jetstream,
            consumer,
            settings,
            in_flight: Mutex::default(),
            next_tag: AtomicU64::new(1),
        })
    }

    /// The name of the server this client is connected to now (a
    /// cluster's node), for logs and tests.
    pub fn server_name(&self) -> String {
        self.jetstream.client().server_info().server_name
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Message>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, tag: u64) -> Result<Message, QueueError> {
        self.in_flight()
            .remove(&tag)
            .ok_or_else(|| queue_error(format!("no delivery {tag} in hand")))
    }

    /// Moves a job to the dead-letter stream and stops its redelivery.
    /// A delivered message as a job in hand, or `None` when it had to go
    /// to the dead letters (unreadable, or delivered too often).
    async fn accept(&self, message: Message) -> Result<Option<Delivery>, QueueError> {
        let attempt = message
            .info()
            .map(|info| u32::try_from(info.delivered).unwrap_or(u32::MAX))
            .map_err(queue_error)?;
        let job = match JobMessage::parse(&message.payload) {
            Ok(job) => job,
            Err(cause) => {
                error!(%cause, "unreadable job message; moving it to the dead-letter stream");
                self.bury(&message, &format!("unreadable: {cause}")).await?;
                return Ok(None);
            }
        };
        if attempt > self.settings.max_deliver {
            warn!(
                job_id = job.id,
                attempt,
                "job delivered too often; moving it to the dead-letter stream (see `rocket-rides dead-jobs`)"
            );
            self.bury(&message, &format!("delivered {attempt} times"))
                .await?;
            return Ok(None);
        }
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        self.in_flight().insert(tag, message);
        Ok(Some(Delivery { job, tag, attempt }))
    }

    async fn bury(&self, message: &Message, reason: &str) -> Result<(), QueueError> {
        let mut headers = HeaderMap::new();
        headers.insert("Rocket-Rides-Reason", reason);
        self.jetstream
            .publish_with_headers(
                self.settings.dead_letter_subject.clone(),
                headers,
                message.payload.clone(),
            )
            .await
            .map_err(queue_error)?
            .await
            .map_err(queue_error)?;
        message.ack_with(AckKind::Term).await.map_err(queue_error)?;
        Ok(())
    }

    /// Puts up to `limit` dead jobs back in the job queue, oldest first, and
    /// removes each from the dead-letter stream once the queue accepted it.
    /// The message id is new (the job's own id is still in the duplicate
    /// window, and the stream would drop it); the worker's receipt claim
    /// keeps a ride to one receipt whatever happened before.
    pub async fn requeue_dead_jobs(&self, limit: usize) -> anyhow::Result<Vec<DeadJob>> {
        let dead = self.dead_jobs(limit).await?;
        let stream = self
            .jetstream
            .get_stream(&self.settings.dead_letter_stream)
            .await?;
        let dead: Vec<DeadJob> = dead.into_iter().filter(|dead| dead.job.is_some()).collect();
        for dead in &dead {
            let Some(job) = &dead.job else { continue };
            let payload = serde_json::to_vec(&JobMessage::from(job))?;
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Msg-Id",
                format!("{}-requeued-{}", job.id, dead.sequence).as_str(),
            );
            self.jetstream
                .publish_with_headers(self.settings.subject.clone(), headers, payload.into())
                .await?
                .await?;
            stream.delete_message(dead.sequence).await?;
            info!(
                job_id = job.id,
                sequence = dead.sequence,
                "dead job requeued"
            );
        }
        Ok(dead)
    }

    /// Deletes one message of the dead-letter stream; whether it was there.
    pub async fn delete_dead_job(&self, sequence: u64) -> anyhow::Result<bool> {
        let stream = self
            .jetstream
            .get_stream(&self.settings.dead_letter_stream)
            .await?;
        let deleted = stream.delete_message(sequence).await.is_ok();
        if deleted {
            info!(sequence, "dead letter deleted");
        }
        Ok(deleted)
    }

    /// How many jobs the dead-letter stream holds.
    pub async fn dead_job_count(&self) -> anyhow::Result<u64> {
        let mut stream = self
            .jetstream
            .get_stream(&self.settings.dead_letter_stream)
            .await?;
        Ok(stream.info().await?.state.messages)
    }

    /// The jobs in the dead-letter stream, oldest first.
    pub async fn dead_jobs(&self, limit: usize) -> anyhow::Result<Vec<DeadJob>> {
        let mut stream = self
            .jetstream
            .get_stream(&self.settings.dead_letter_stream)
            .await?;
        let info = stream.info().await?.state.clone();
        let mut dead = Vec::new();
        if info.messages == 0 {
            return Ok(dead);
        }
        for sequence in info.first_sequence..=info.last_sequence {
            if dead.len() >= limit {
                break;
            }
            let Ok(message) = stream.get_raw_message(sequence).await else {
                continue; // deleted
            };
            // A message that is not a job is listed as it is, never an
            // error: one bad message must not hide the others.
            let job = JobMessage::parse(&message.payload).ok();
            let reason = message
                .headers
                .get("Rocket-Rides-Reason")
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            dead.push(DeadJob {
                sequence,
                job,
                payload: readable(&message.payload),
                reason,
            });
        }
        Ok(dead)
    }
}

#[async_trait]
impl JobQueue for NatsQueue {
    async fn publish(&self, job: &StagedJob) -> Result<(), QueueError> {
        self.publish_batch(std::slice::from_ref(job))
            .await
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Sends every job, then awaits the acknowledgements: one round trip's
    /// wait for the batch instead of one per job.
    async fn publish_batch(&self, jobs: &[StagedJob]) -> Vec<Result<(), QueueError>> {
        let mut pending = Vec::with_capacity(jobs.len());
        for job in jobs {
            let sent = async {
                let payload = serde_json::to_vec(&JobMessage::from(job)).map_err(queue_error)?;
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Msg-Id", job.id.to_string().as_str());
                self.jetstream
                    .publish_with_headers(self.settings.subject.clone(), headers, payload.into())
                    .await
                    .map_err(queue_error)
            };
            pending.push(sent.await);
        }
        let mut results = Vec::with_capacity(jobs.len());
        for (job, sent) in jobs.iter().zip(pending) {
            results.push(match sent {
                Ok(ack) => ack.await.map_err(queue_error).map(|ack| {
                    if ack.duplicate {
                        info!(
                            job_id = job.id,
                            "job was published before; the stream dropped the repeat"
                        );
                    }
                }),
                Err(error) => Err(error),
            });
        }
        results
    }

    async fn receive(&self, max_wait: Duration) -> Result<Option<Delivery>, QueueError> {
        loop {
            let mut batch = self
                .consumer
                .batch()
                .max_messages(1)
                .expires(max_wait)
                .messages()
                .await
                .map_err(queue_error)?;
            let Ok(next) = tokio::time::timeout(max_wait + PULL_GRACE, batch.next()).await else {
                warn!(
                    "a pull went unanswered (its connection lost?); nothing received, pulling again"
                );
                return Ok(None);
            };
            let Some(next) = next else {
                return Ok(None);
            };
            if let Some(delivery) = self.accept(next.map_err(queue_error)?).await? {
                return Ok(Some(delivery));
            }
        }
    }

    /// Whatever is waiting now, up to `max`, in one pull that does not
    /// wait; when nothing is, the first job within `max_wait`.
    async fn receive_batch(
        &self,
        max: usize,
        max_wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let mut waiting = self
            .consumer
            .fetch()
            .max_messages(max.max(1))
            .messages()
            .await
            .map_err(queue_error)?;
        let mut deliveries = Vec::new();
        loop {
            let next = match tokio::time::timeout(PULL_GRACE, waiting.next()).await {
                Ok(Some(next)) => next,
                Ok(None) => break,
                // Unanswered: what arrived is worked (the rest comes back
                // after ack_wait), and with nothing the waiting pull below
                // asks again.
                Err(_) => break,
            };
            if let Some(delivery) = self.accept(next.map_err(queue_error)?).await? {
                deliveries.push(delivery);
            }
        }
        if deliveries.is_empty() {
            deliveries.extend(self.receive(max_wait).await?);
        }
        Ok(deliveries)
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let message = self.take(delivery.tag)?;
        // Wait for the server to confirm: an ack lost on the way would mean
        // a redelivery (harmless, but avoidable).
        message.double_ack().await.map_err(queue_error)
    }

    async fn retry_later(&self, delivery: &Delivery, delay: Duration) -> Result<(), QueueError> {
        let message = self.take(delivery.tag)?;
        if delivery.attempt >= self.settings.max_deliver {
            warn!(
                job_id = delivery.job.id,
                attempt = delivery.attempt,
                "job failed on its last delivery; moving it to the dead-letter stream (see `rocket-rides dead-jobs`)"
            );
            return self
                .bury(&message, &format!("failed {} times", delivery.attempt))
                .await;
        }
        message
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(queue_error)
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError> {
        let message = self.take(delivery.tag)?;
        warn!(
            job_id = delivery.job.id,
            reason, "job cannot be worked; moving it to the dead-letter stream"
        );
        self.bury(&message, reason).await
    }

    async fn postpone(&self, delivery: &Delivery, delay: Duration) -> Result<(), QueueError> {
        // Taken out of hand first: if the nak is lost with the server, the
        // job comes back after `ack_wait` anyway.
        let message = self.take(delivery.tag)?;
        message
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(queue_error)
    }
}

#[async_trait]
impl DeadLetters for NatsQueue {
    async fn dead_jobs(&self, limit: usize) -> Result<Vec<DeadJob>, QueueError> {
        Ok(NatsQueue::dead_jobs(self, limit).await?)
    }

    async fn requeue_dead_jobs(&self, limit: usize) -> Result<Vec<DeadJob>, QueueError> {
        Ok(NatsQueue::requeue_dead_jobs(self, limit).await?)
    }

    async fn dead_job_count(&self) -> Result<u64, QueueError> {
        Ok(NatsQueue::dead_job_count(self).await?)
    }

    async fn delete_dead_job(&self, sequence: u64) -> Result<bool, QueueError> {
        Ok(NatsQueue::delete_dead_job(self, sequence).await?)
    }
}

/// A message's bytes for a person: UTF-8 where they are, escaped where not,
/// at most 1 KiB of it.
fn readable(payload: &[u8]) -> String {
    let shown = &payload[..payload.len().min(1024)];
    let text: String = shown.utf8_chunks().fold(String::new(), |mut text, chunk| {
        text.extend(chunk.valid().chars().flat_map(char::escape_debug));
        for byte in chunk.invalid() {
            text.push_str(&format!("\\x{byte:02x}"));
        }
        text
    });
    if payload.len() > shown.len() {
        format!("{text}…")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_become_the_clients_and_leave_the_url() {
        let (auth, url) = NatsAuth::split_url("nats://rides:p%40s+s@nats:4222");
        assert_eq!(
            auth,
            NatsAuth::UserPassword {
                user: "rides".into(),
                password: "p@s+s".into()
            }
        );
        assert_eq!(url, "nats://nats:4222");
        let (auth, url) = NatsAuth::split_url("nats://s3cret-token@127.0.0.1:4222");
        assert_eq!(auth, NatsAuth::Token("s3cret-token".into()));
        assert_eq!(url, "nats://127.0.0.1:4222");
        let (auth, url) = NatsAuth::split_url("nats://127.0.0.1:4222");
        assert_eq!(
            (auth, url.as_str()),
            (NatsAuth::None, "nats://127.0.0.1:4222")
        );
        let settings = NatsSettings::new("nats://rides:s3cret@nats:4222", "d");
        let shown = format!("{settings:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn a_cluster_is_several_urls_every_one_stripped_of_credentials() {
        let settings = NatsSettings::new(
            "nats://rides:s3cret@nats1:4222, nats://rides:s3cret@nats2:4222,nats://nats3:4222",
            "d",
        );
        assert_eq!(
            settings.url,
            "nats://nats1:4222,nats://nats2:4222,nats://nats3:4222"
        );
        assert_eq!(
            settings.auth,
            NatsAuth::UserPassword {
                user: "rides".into(),
                password: "s3cret".into()
            }
        );
        let shown = redact_urls("nats://a:s3cret@n1:4222,nats://tok@n2:4222");
        assert!(
            !shown.contains("s3cret") && !shown.contains("tok@"),
            "{shown}"
        );
        assert_eq!(shown.matches("***").count(), 2, "{shown}");
    }
}
