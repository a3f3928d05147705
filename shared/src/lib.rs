//! bucketfn: small, stateless handlers for object-storage bucket events. This crate holds what
//! every function shares, in layers that import only downwards:
//! - foundations: [`config`], [`outcome`] (`Done`, `HandlerError`), [`budget`], [`tls`],
//!   [`telemetry`], and how messages name an object ([`ObjectPath`]);
//! - the event model and its decoders ([`event`]), and the contract a function implements
//!   ([`function`]: `Function`, `Handler`, `Invocation`);
//! - adapters to the outside: [`storage`], [`sink`] (and the choice of one), [`api`] (HTTP API
//!   clients), with what is built on a store ([`lease`], [`sweep`], [`derivatives`]);
//! - the [`operations`] wing (ledger, metrics, pages), which no adapter imports;
//! - the [`runtime`]s (Lambda, HTTP, CLI, `consume`), which compose all of it.
//!
//! `tests/layers.rs` keeps the imports pointing downwards.

pub mod api;
pub mod budget;
pub mod config;
pub mod derivatives;
pub mod event;
pub mod function;
#[cfg(any(feature = "kafka", feature = "consume-kafka"))]
pub mod kafka_cluster;
pub mod lease;
mod object_path;
pub mod operations;
pub mod outcome;
pub mod progress;
pub mod runtime;
pub mod sink;
pub mod sniff;
pub mod sources;
pub mod storage;
pub mod sweep;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
// Not behind a feature: the ledger's rediss:// is in every function.
pub mod tls;

pub use config::{ConfigError, Env, FromEnv, Secret};
pub use event::{EventKind, ObjectEvent, Source};
pub use function::{Function, Handler, Invocation, StartError};
pub use object_path::ObjectPath;
pub use outcome::{BoxError, Done, HandlerError, Outcome};
pub use runtime::main;
pub use storage::{Condition, NewObject, ObjectInfo, ObjectStore, StoreError, StoredObject};
