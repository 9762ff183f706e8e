//! The cqrs-es adapter: aggregates load from and commit to the [`EventLog`].
//!
//! Why not `CqrsFramework`: its `execute` returns `()`, and the API needs the global sequence of
//! the events a command wrote to answer only after the projections have caught up with them
//! (read-your-writes). [`CommandBus::execute`] is the same load → handle → commit loop, and it
//! returns the [`Appended`] position. It also never uses cqrs-es snapshots (the 0.5.0 snapshot
//! and aggregate-store modes apply each command's events twice, see `stack.md`).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{
    Aggregate, AggregateContext, AggregateError, DomainEvent, EventEnvelope, EventStore,
};
use uuid::Uuid;

use super::{AppendBatch, Appended, EventLog, ExpectedVersion, NewEvent, StoreError};
use crate::domain::encode_event;
use crate::domain::upcast::current_version;

/// Metadata keys the bus understands.
pub const META_ACTOR: &str = "actor";
pub const META_CORRELATION_ID: &str = "correlation_id";
/// Set on committed envelopes: the global sequence of the event.
pub const META_SEQ: &str = "seq";

/// Who issued a command and under which correlation id.
#[derive(Debug, Clone)]
pub struct CommandMeta {
    pub actor: String,
    pub correlation_id: Uuid,
}

impl CommandMeta {
    pub fn system() -> Self {
        Self {
            actor: "system".to_string(),
            correlation_id: Uuid::now_v7(),
        }
    }
}

/// The stream holding aggregate `A` with id `id`.
pub fn stream_name<A: Aggregate>(id: &str) -> String {
    format!("{}-{}", A::TYPE, id)
}

/// A loaded aggregate and the stream version it was loaded at.
pub struct LogAggregateContext<A: Aggregate> {
    aggregate_id: String,
    version: u64,
    aggregate: A,
}

impl<A: Aggregate> AggregateContext<A> for LogAggregateContext<A> {
    fn aggregate(&mut self) -> &mut A {
        &mut self.aggregate
    }
}

/// cqrs-es `EventStore` over our log.
pub struct LogEventStore<A> {
    log: Arc<dyn EventLog>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for LogEventStore<A> {
    fn clone(&self) -> Self {
        Self {
            log: self.log.clone(),
            _aggregate: PhantomData,
        }
    }
}

impl<A> LogEventStore<A> {
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self {
            log,
            _aggregate: PhantomData,
        }
    }
}

fn lift<E: std::error::Error>(e: StoreError) -> AggregateError<E> {
    match e {
        StoreError::Conflict { .. } => AggregateError::AggregateConflict,
        StoreError::Corrupt { .. } => AggregateError::DeserializationError(Box::new(e)),
        other => AggregateError::DatabaseConnectionError(Box::new(other)),
    }
}

impl<A: Aggregate> LogEventStore<A> {
    fn decode(
        &self,
        aggregate_id: &str,
        record: &super::RecordedEvent,
    ) -> Result<EventEnvelope<A>, AggregateError<A::Error>> {
        let data =
            crate::domain::upcast::upcast(&record.event_type, record.schema_version, &record.data)
                .map_err(|e| AggregateError::DeserializationError(Box::new(e)))?;
        let payload: A::Event = crate::domain::event::decode_tagged(&record.event_type, &data)
            .map_err(|e| AggregateError::DeserializationError(Box::new(e)))?;
        let mut metadata = HashMap::new();
        metadata.insert(META_ACTOR.to_string(), record.actor.clone());
        metadata.insert(
            META_CORRELATION_ID.to_string(),
            record.correlation_id.to_string(),
        );
        metadata.insert(META_SEQ.to_string(), record.seq.to_string());
        Ok(EventEnvelope {
            aggregate_id: aggregate_id.to_string(),
            sequence: usize::try_from(record.version).unwrap_or(usize::MAX),
            payload,
            metadata,
        })
    }
}

impl<A: Aggregate> EventStore<A> for LogEventStore<A> {
    type AC = LogAggregateContext<A>;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let records = self
            .log
            .read_stream(&stream_name::<A>(aggregate_id), 1)
            .map_err(lift)?;
        records
            .iter()
            .map(|r| self.decode(aggregate_id, r))
            .collect()
    }

    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<Self::AC, AggregateError<A::Error>> {
        let mut aggregate = A::default();
        let mut version = 0;
        for envelope in self.load_events(aggregate_id).await? {
            version = envelope.sequence as u64;
            aggregate.apply(envelope.payload);
        }
        Ok(LogAggregateContext {
            aggregate_id: aggregate_id.to_string(),
            version,
            aggregate,
        })
    }

    async fn commit(
        &self,
        events: Vec<A::Event>,
        context: Self::AC,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let actor = metadata
            .get(META_ACTOR)
            .cloned()
            .unwrap_or_else(|| "system".to_string());
        let correlation_id = metadata
            .get(META_CORRELATION_ID)
            .and_then(|s| Uuid::parse_str(s).ok())
            .unwrap_or_else(Uuid::now_v7);
        let mut new_events = Vec::with_capacity(events.len());
        for event in &events {
            let (event_type, data) =
                encode_event(event).map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?;
            debug_assert_eq!(event_type, event.event_type());
            new_events.push(NewEvent {
                id: Uuid::now_v7(),
                schema_version: current_version(&event_type),
                event_type,
                actor: actor.clone(),
                correlation_id,
                data,
            });
        }
        let expected = if context.version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(context.version)
        };
        let appended = self
            .log
            .append(AppendBatch {
                stream: stream_name::<A>(&context.aggregate_id),
                expected,
                events: new_events,
            })
            .await
            .map_err(lift)?;
        let envelopes = events
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                let mut metadata = metadata.clone();
                metadata.insert(
                    META_SEQ.to_string(),
                    (appended.first_seq + i as u64).to_string(),
                );
                EventEnvelope {
                    aggregate_id: context.aggregate_id.clone(),
                    sequence: usize::try_from(appended.first_version + i as u64)
                        .unwrap_or(usize::MAX),
                    payload,
                    metadata,
                }
            })
            .collect();
        Ok(envelopes)
    }
}

/// What a successful command did.
#[derive(Debug, Clone)]
pub struct Committed<A: Aggregate> {
    /// The aggregate after the command.
    pub aggregate: A,
    /// Where its events landed; `None` when the command changed nothing.
    pub appended: Option<Appended>,
}

/// Runs commands against aggregates of type `A`: load, decide, commit.
pub struct CommandBus<A: Aggregate> {
    store: LogEventStore<A>,
    services: A::Services,
}

impl<A: Aggregate> CommandBus<A> {
    pub fn new(log: Arc<dyn EventLog>, services: A::Services) -> Self {
        Self {
            store: LogEventStore::new(log),
            services,
        }
    }

    /// Executes `command` on aggregate `id`. A concurrent writer to the same aggregate makes this
    /// fail with `AggregateConflict` (the caller may retry); nothing is ever overwritten.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        meta: &CommandMeta,
    ) -> Result<Committed<A>, AggregateError<A::Error>>
    where
        A: Clone,
    {
        let mut context = self.store.load_aggregate(id).await?;
        let sink: EventSink<A> = EventSink::default();
        context
            .aggregate
            .handle(command, &self.services, &sink)
            .await
            .map_err(AggregateError::UserError)?;
        let aggregate = context.aggregate.clone();
        let events = sink.collect().await;
        let mut metadata = HashMap::new();
        metadata.insert(META_ACTOR.to_string(), meta.actor.clone());
        metadata.insert(
            META_CORRELATION_ID.to_string(),
            meta.correlation_id.to_string(),
        );
        let envelopes = self.store.commit(events, context, metadata).await?;
        let appended = match (envelopes.first(), envelopes.last()) {
            (Some(first), Some(last)) => {
                let seq = |e: &EventEnvelope<A>| {
                    e.metadata
                        .get(META_SEQ)
                        .and_then(|s| s.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                Some(Appended {
                    first_seq: seq(first),
                    last_seq: seq(last),
                    first_version: first.sequence as u64,
                    last_version: last.sequence as u64,
                    deduplicated: false,
                })
            }
            _ => None,
        };
        Ok(Committed {
            aggregate,
            appended,
        })
    }

    /// Loads aggregate `id` as its events built it.
    pub async fn load(&self, id: &str) -> Result<A, AggregateError<A::Error>> {
        Ok(self.store.load_aggregate(id).await?.aggregate)
    }
}

/// Appends one fact (an event no aggregate decides, e.g. `vault.key_rotated`) to `stream` with
/// `ExpectedVersion::Any`, as `meta`'s actor; returns once it is durable.
pub async fn append_fact<E: DomainEvent>(
    log: &dyn EventLog,
    stream: &str,
    event: &E,
    meta: &CommandMeta,
) -> Result<Appended, StoreError> {
    let (event_type, data) = encode_event(event).map_err(|e| StoreError::Backend(e.to_string()))?;
    log.append(AppendBatch {
        stream: stream.to_string(),
        expected: ExpectedVersion::Any,
        events: vec![NewEvent {
            id: Uuid::now_v7(),
            schema_version: current_version(&event_type),
            event_type,
            actor: meta.actor.clone(),
            correlation_id: meta.correlation_id,
            data,
        }],
    })
    .await
}
