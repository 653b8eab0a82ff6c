//! NATS for the suites: a JetStream server per test (testcontainers, image
//! from `TEST_NATS_IMAGE` when set), on a fixed host port so a restarted
//! server is found at the same address. Every server requires a user and
//! password, as compose's does: a server left open would let anyone who
//! reaches it purge the stream or forge a job; the suites' URLs carry the
//! credentials (`nats://user:password@host`).

use testcontainers::core::IntoContainerPort;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ImageExt};
use testcontainers_modules::nats::{Nats, NatsServerCmd};

use crate::postgres::{CONTAINER_LABEL, image_from_env};

use crate::postgres::free_port;

pub struct NatsServer {
    pub container: ContainerAsync<Nats>,
    pub url: String,
}

pub async fn start_nats() -> NatsServer {
    start_nats_on(free_port()).await
}

/// NATS with JetStream that admits only `user` with `password`; `url`
/// carries no credentials.
pub async fn start_nats_with_user(user: &str, password: &str) -> NatsServer {
    let cmd = NatsServerCmd::default()
        .with_jetstream()
        .with_user(user)
        .with_password(password);
    start(free_port(), cmd).await
}

/// The user and password every suite's NATS requires.
pub const USER: &str = "rocket-rides";
pub const PASSWORD: &str = "nats-test-password";

/// NATS with JetStream on a given host port (one that processes may
/// already be trying to reach), admitting only `USER` with `PASSWORD`;
/// `url` carries them.
pub async fn start_nats_on(port: u16) -> NatsServer {
    let cmd = NatsServerCmd::default()
        .with_jetstream()
        .with_user(USER)
        .with_password(PASSWORD);
    let mut server = start(port, cmd).await;
    server.url = format!("nats://{USER}:{PASSWORD}@127.0.0.1:{port}");
    server
}

async fn start(port: u16, cmd: NatsServerCmd) -> NatsServer {
    let (name, tag) = image_from_env("TEST_NATS_IMAGE", "nats", "2.10.14");
    let container = Nats::default()
        .with_cmd(&cmd)
        .with_name(name.clone())
        .with_tag(tag.clone())
        .with_mapped_port(port, 4222.tcp())
        .with_label(CONTAINER_LABEL, "true")
        .start()
        .await
        .unwrap_or_else(|error| {
            panic!(
                "could not start NATS ({name}:{tag}) with testcontainers: {error}. \
                 These suites need a Docker engine and the image: on a machine with no \
                 registry, run `eval \"$(../shared/ci/offline-images)\"` first, or use ./scripts/test."
            )
        });
    NatsServer {
        container,
        url: format!("nats://127.0.0.1:{port}"),
    }
}
