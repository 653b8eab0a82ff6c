//! NATS for the suites: a JetStream server per test (testcontainers, image
//! from `TEST_NATS_IMAGE` when set), on a fixed host port so a restarted
//! server is found at the same address. Every server requires a user and
//! password, as compose's does: a server left open would let anyone who
//! reaches it purge the stream or forge a job; the suites' URLs carry the
//! credentials (`nats://user:password@host`).

use testcontainers::core::{CopyDataSource, IntoContainerPort};
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
    start(free_port(), &cmd).await
}

/// NATS with JetStream that admits only clients giving `token`; `url`
/// carries no credentials.
pub async fn start_nats_with_token(token: &str) -> NatsServer {
    start(free_port(), ["--jetstream", "--auth", token]).await
}

/// The user and password every suite's NATS requires.
pub const USER: &str = "rocket-rides";

/// A JetStream client of the test's own on `url`, signed in as the suites'
/// NATS user (the client library takes credentials from options, not from
/// a URL): a forger, or a test reading what the queue made.
pub async fn jetstream_as_user(url: &str) -> async_nats::jetstream::Context {
    let client = async_nats::ConnectOptions::with_user_and_password(USER.into(), PASSWORD.into())
        .connect(url)
        .await
        .expect("client");
    async_nats::jetstream::new(client)
}
pub const PASSWORD: &str = "nats-test-password";

/// NATS with JetStream on a given host port (one that processes may
/// already be trying to reach), admitting only `USER` with `PASSWORD`;
/// `url` carries them.
pub async fn start_nats_on(port: u16) -> NatsServer {
    let cmd = NatsServerCmd::default()
        .with_jetstream()
        .with_user(USER)
        .with_password(PASSWORD);
    let mut server = start(port, &cmd).await;
    server.url = format!("nats://{USER}:{PASSWORD}@127.0.0.1:{port}");
    server
}

/// NATS started with `cmd` (a `NatsServerCmd`, or the server's flags as
/// they are) on host `port`.
async fn start<I>(port: u16, cmd: I) -> NatsServer
where
    I: IntoIterator,
    I::Item: Into<String>,
{
    let (name, tag) = image_from_env("TEST_NATS_IMAGE", "nats", "2.10.14");
    let container = Nats::default()
        .with_cmd(cmd)
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

/// A three-node NATS cluster with JetStream on a Docker network of its
/// own, each node requiring `USER` and `PASSWORD`, on host ports of its
/// own; `urls` is one comma-separated list (as `NATS_URL` takes a
/// cluster's nodes), `nodes` each node's URL with its container. Nodes do
/// not advertise their in-network addresses: a client knows them by the
/// list it was given.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
    pub urls: String,
}

pub async fn start_nats_cluster() -> NatsCluster {
    let (name, tag) = image_from_env("TEST_NATS_IMAGE", "nats", "2.10.14");
    let id = uuid::Uuid::new_v4().simple().to_string();
    let network = format!("rr-nats-{id}");
    let names: Vec<String> = (1..=3).map(|n| format!("rr-nats-{n}-{id}")).collect();
    let routes = names
        .iter()
        .map(|host| format!("\"nats-route://{host}:6222\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut nodes = Vec::new();
    for (n, host) in names.iter().enumerate() {
        let config = format!(
            "port: 4222\nserver_name: node{n}\n\
             authorization {{ user: \"{USER}\", password: \"{PASSWORD}\" }}\n\
             jetstream {{ store_dir: \"/tmp/nats-js\" }}\n\
             cluster {{ name: rocket-rides, listen: 0.0.0.0:6222, no_advertise: true, routes: [{routes}] }}\n"
        );
        let port = free_port();
        let container = Nats::default()
            .with_name(name.clone())
            .with_tag(tag.clone())
            .with_cmd(["-c", "/etc/nats/cluster.conf"])
            .with_copy_to(
                "/etc/nats/cluster.conf",
                CopyDataSource::Data(config.into_bytes()),
            )
            .with_network(network.clone())
            .with_container_name(host.clone())
            .with_mapped_port(port, 4222.tcp())
            .with_label(CONTAINER_LABEL, "true")
            .start()
            .await
            .unwrap_or_else(|error| panic!("could not start NATS node {host}: {error}"));
        nodes.push(NatsServer {
            container,
            url: format!("nats://{USER}:{PASSWORD}@127.0.0.1:{port}"),
        });
    }
    let urls = nodes
        .iter()
        .map(|node| node.url.clone())
        .collect::<Vec<_>>()
        .join(",");
    NatsCluster { nodes, urls }
}

/// NATS in operator mode (decentralized JWT auth): one operator, one
/// account with JetStream, one user. The server trusts the operator and
/// preloads the account; a client gets in only with the user's credentials
/// file (`credentials`, as `nsc` writes one), whose JWT the account signed.
pub struct OperatorNats {
    pub server: NatsServer,
    pub credentials: String,
}

pub async fn start_nats_with_credentials() -> OperatorNats {
    let operator = nkeys::KeyPair::new_operator();
    let system = nkeys::KeyPair::new_account();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
    });
    let operator_jwt = jwt(
        &operator,
        &operator,
        serde_json::json!({
            "system_account": system.public_key(),
            "type": "operator",
            "version": 2,
        }),
    );
    // JetStream needs the server's system account.
    let system_jwt = jwt(
        &operator,
        &system,
        serde_json::json!({
            "limits": { "subs": -1, "data": -1, "payload": -1, "imports": -1,
                        "exports": -1, "wildcards": true, "conn": -1, "leaf": -1 },
            "type": "account",
            "version": 2,
        }),
    );
    let account_jwt = jwt(
        &operator,
        &account,
        serde_json::json!({
            "limits": unlimited,
            "default_permissions": { "pub": {}, "sub": {} },
            "type": "account",
            "version": 2,
        }),
    );
    let user_jwt = jwt(
        &account,
        &user,
        serde_json::json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2,
        }),
    );
    let config = format!(
        "operator: \"{operator_jwt}\"\nsystem_account: {sys}\nresolver: MEMORY\nresolver_preload: {{\n  {sys}: \"{system_jwt}\"\n  {acc}: \"{account_jwt}\"\n}}\njetstream {{ store_dir: \"/tmp/nats-js\" }}\n",
        sys = system.public_key(),
        acc = account.public_key()
    );
    let credentials = format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().expect("a user seed")
    );
    let port = free_port();
    let (name, tag) = image_from_env("TEST_NATS_IMAGE", "nats", "2.10.14");
    let container = Nats::default()
        .with_name(name.clone())
        .with_tag(tag.clone())
        .with_cmd(["-c", "/etc/nats/operator.conf"])
        .with_copy_to(
            "/etc/nats/operator.conf",
            CopyDataSource::Data(config.into_bytes()),
        )
        .with_mapped_port(port, 4222.tcp())
        .with_label(CONTAINER_LABEL, "true")
        .start()
        .await
        .unwrap_or_else(|error| {
            panic!("could not start NATS ({name}:{tag}) in operator mode: {error}")
        });
    OperatorNats {
        server: NatsServer {
            container,
            url: format!("nats://127.0.0.1:{port}"),
        },
        credentials,
    }
}

/// A NATS JWT (`ed25519-nkey`) for `subject`, signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &nkeys::KeyPair, nats: serde_json::Value) -> String {
    use base64::Engine as _;
    let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs();
    let claims = serde_json::json!({
        "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": now,
        "iss": issuer.public_key(),
        "name": "rocket-rides-test",
        "sub": subject.public_key(),
        "nats": nats,
    });
    let payload = encode(claims.to_string().as_bytes());
    let signed = format!("{header}.{payload}");
    let signature = issuer.sign(signed.as_bytes()).expect("signed");
    format!("{signed}.{}", encode(&signature))
}
