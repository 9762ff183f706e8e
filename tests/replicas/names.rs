//! Names unique across replicas (`store::name_claims`): two event logs on one PostgreSQL
//! schema are two replicas, each creating entities as the API does — claim the name in the
//! log, then run the create command. Racing on one name, exactly one replica creates it; the
//! other is told the name is taken (the API's 409). After a connector's removal, the name is
//! free again, on either replica.

use std::sync::Arc;

use agp::domain::ResourceName;
use agp::domain::agent::{Agent, AgentCommand};
use agp::domain::connector::{Connector, ConnectorCommand, Overrides, Registration};
use agp::domain::profile::{Profile, ProfileCommand};
use agp::domain::security::{NameKind, NameRelease};
use agp::store::EventLog;
use agp::store::aggregate_store::{CommandBus, CommandMeta};
use agp::store::name_claims::{ClaimError, NameClaims};
use agp::store::postgres::{PgLog, PgOptions};
use uuid::Uuid;

use crate::pg_server::TempPostgres;

/// One replica: its own log handle on the shared schema, and the buses the API uses.
struct Replica {
    log: Arc<dyn EventLog>,
    claims: NameClaims,
    profiles: CommandBus<Profile>,
    agents: CommandBus<Agent>,
    connectors: CommandBus<Connector>,
}

impl Replica {
    async fn open(url: &str) -> Arc<Self> {
        let log: Arc<dyn EventLog> = Arc::new(
            PgLog::open(PgOptions::new(url))
                .await
                .expect("open PgLog")
                .0,
        );
        Arc::new(Self {
            claims: NameClaims::new(log.clone()),
            profiles: CommandBus::new(log.clone(), ()),
            agents: CommandBus::new(log.clone(), ()),
            connectors: CommandBus::new(log.clone(), ()),
            log,
        })
    }

    /// What `POST /profiles` does after its projection check.
    async fn create_profile(&self, name: &str) -> Result<String, ClaimError> {
        let (id, meta) = (Uuid::now_v7().to_string(), CommandMeta::system());
        self.claims
            .claim(NameKind::Profile, &rname(name), &id, &meta)
            .await?;
        let create = ProfileCommand::Create {
            profile_id: id.clone(),
            name: rname(name),
            description: "d".into(),
        };
        self.profiles
            .execute(&id, create, &meta)
            .await
            .expect("create profile");
        Ok(id)
    }

    /// What `POST /agents` does after its projection checks.
    async fn create_agent(&self, name: &str, profile_id: &str) -> Result<String, ClaimError> {
        let (id, meta) = (Uuid::now_v7().to_string(), CommandMeta::system());
        self.claims
            .claim(NameKind::Agent, &rname(name), &id, &meta)
            .await?;
        let create = AgentCommand::Create {
            agent_id: id.clone(),
            name: rname(name),
            profile_id: profile_id.into(),
            key_hash: "ab".repeat(32),
            key_prefix: "agp_abababab".into(),
        };
        self.agents
            .execute(&id, create, &meta)
            .await
            .expect("create agent");
        Ok(id)
    }

    /// What a connector add does (claim, then the `Add` command).
    async fn add_connector(&self, name: &str) -> Result<String, ClaimError> {
        let (id, meta) = (Uuid::now_v7().to_string(), CommandMeta::system());
        self.claims
            .claim(NameKind::Connector, &rname(name), &id, &meta)
            .await?;
        let add = ConnectorCommand::Add {
            registration_reason: None,
            connector_id: id.clone(),
            name: rname(name),
            mcp_server_url: format!("https://mcp.{name}.example.com/mcp"),
            client_name: format!("AGP {name}"),
            registration: Registration::Dcr,
            scopes: None,
            overrides: Overrides::default(),
        };
        self.connectors
            .execute(&id, add, &meta)
            .await
            .expect("add connector");
        Ok(id)
    }

    /// What a connector removal does (the `Remove` command, then the release).
    async fn remove_connector(&self, name: &str, id: &str) {
        let meta = CommandMeta::system();
        let remove = ConnectorCommand::Remove {
            confirm: name.into(),
        };
        self.connectors
            .execute(id, remove, &meta)
            .await
            .expect("remove connector");
        let released = self
            .claims
            .release(
                NameKind::Connector,
                &rname(name),
                id,
                NameRelease::Removed,
                &meta,
            )
            .await
            .expect("release");
        assert!(released);
    }
}

fn rname(s: &str) -> ResourceName {
    ResourceName::parse(s).expect("name")
}

/// Exactly one of two racing results is a success; the other is `Taken`.
fn one_winner<T: std::fmt::Debug>(results: [Result<T, ClaimError>; 2], what: &str) {
    let won = results.iter().filter(|r| r.is_ok()).count();
    let taken = results
        .iter()
        .filter(|r| matches!(r, Err(ClaimError::Taken)))
        .count();
    assert_eq!((won, taken), (1, 1), "{what}: {results:?}");
}

/// How many events of `event_type` name `name` in the whole log.
fn created(log: &dyn EventLog, event_type: &str, name: &str) -> usize {
    log.read_all(1, 100_000)
        .expect("read")
        .iter()
        .filter(|r| r.event_type == event_type && r.data["name"] == name)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_creating_one_name_at_once_create_it_once() {
    let pg = TempPostgres::start().expect("start PostgreSQL");
    let url = pg.create_database("agp_test").expect("create database");
    let a = Replica::open(&url).await;
    let b = Replica::open(&url).await;

    let ops = a.create_profile("ops").await.expect("ops");
    for round in 0..8 {
        let n = format!("profile-{round}");
        let (ra, rb) = tokio::join!(
            tokio::spawn({
                let (a, n) = (a.clone(), n.clone());
                async move { a.create_profile(&n).await }
            }),
            tokio::spawn({
                let (b, n) = (b.clone(), n.clone());
                async move { b.create_profile(&n).await }
            })
        );
        one_winner([ra.expect("join"), rb.expect("join")], &n);
        assert_eq!(created(a.log.as_ref(), "profile.created", &n), 1, "{n}");

        let n = format!("agent-{round}");
        let (ra, rb) = tokio::join!(
            tokio::spawn({
                let (a, n, p) = (a.clone(), n.clone(), ops.clone());
                async move { a.create_agent(&n, &p).await }
            }),
            tokio::spawn({
                let (b, n, p) = (b.clone(), n.clone(), ops.clone());
                async move { b.create_agent(&n, &p).await }
            })
        );
        one_winner([ra.expect("join"), rb.expect("join")], &n);
        assert_eq!(created(a.log.as_ref(), "agent.created", &n), 1, "{n}");

        let n = format!("connector-{round}");
        let (ra, rb) = tokio::join!(
            tokio::spawn({
                let (a, n) = (a.clone(), n.clone());
                async move { a.add_connector(&n).await }
            }),
            tokio::spawn({
                let (b, n) = (b.clone(), n.clone());
                async move { b.add_connector(&n).await }
            })
        );
        one_winner([ra.expect("join"), rb.expect("join")], &n);
        assert_eq!(created(a.log.as_ref(), "connector.added", &n), 1, "{n}");
    }
    // Kinds are separate namespaces: a profile and an agent may share a name.
    b.create_agent("ops", &ops)
        .await
        .expect("an agent named like a profile");
    assert!(matches!(
        b.create_profile("ops").await,
        Err(ClaimError::Taken)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_connectors_name_is_free_again_on_every_replica() {
    let pg = TempPostgres::start().expect("start PostgreSQL");
    let url = pg.create_database("agp_test").expect("create database");
    let a = Replica::open(&url).await;
    let b = Replica::open(&url).await;

    let first = a.add_connector("notion").await.expect("add on A");
    assert!(matches!(
        b.add_connector("notion").await,
        Err(ClaimError::Taken)
    ));
    a.remove_connector("notion", &first).await;
    let second = b.add_connector("notion").await.expect("re-add on B");
    assert_ne!(first, second);
    assert!(matches!(
        a.add_connector("notion").await,
        Err(ClaimError::Taken)
    ));

    // A removal whose release was never written (the replica died after `Remove`): the next
    // add on any replica takes the claim over.
    let remove = ConnectorCommand::Remove {
        confirm: "notion".into(),
    };
    b.connectors
        .execute(&second, remove, &CommandMeta::system())
        .await
        .expect("remove without release");
    let third = a
        .add_connector("notion")
        .await
        .expect("the removed connector's claim is taken over");
    let types: Vec<String> = a
        .log
        .read_stream("name/connector/notion", 1)
        .expect("read")
        .into_iter()
        .map(|r| format!("{} {}", r.event_type, r.data["id"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        types,
        [
            format!("name.claimed {first}"),
            format!("name.released {first}"),
            format!("name.claimed {second}"),
            format!("name.released {second}"),
            format!("name.claimed {third}"),
        ]
    );
}
