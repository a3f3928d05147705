//! The operations wing: what the runtime keeps and shows about the events a function handled.
//! The event ledger (counts and history, in memory or Redis), the Prometheus metrics, the
//! recorder of the objects an event touched, the operations pages (`/events/history`,
//! `/files`) and their routes. The runtime composes it; no event decoder, store or sink
//! imports it.

pub(crate) mod files;
pub mod ledger;
pub mod metrics;
pub(crate) mod pages;
mod recording;
pub(crate) mod routes;

use std::sync::Arc;

use ledger::Recorder;
use metrics::Metrics;
use pages::Site;

use crate::function::Handler;
use crate::storage::ObjectStore;

pub use recording::RecordingStore;

/// What the runtime keeps about the events it handles: metrics and the ledger.
#[derive(Clone)]
pub struct Observer {
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// This instance's name in the history.
    pub instance: Arc<str>,
}

/// What the operations routes and the pages they share with the gallery read: the function,
/// its store and what the runtime kept about its events.
pub(crate) struct OpsState<H> {
    pub(crate) name: &'static str,
    pub(crate) handler: Arc<H>,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) observer: Observer,
}

impl<H: Handler> OpsState<H> {
    pub(crate) fn site(&self) -> Site<'static> {
        Site {
            function: self.name,
            gallery: self.handler.gallery(),
        }
    }
}

impl<H> Clone for OpsState<H> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            handler: Arc::clone(&self.handler),
            store: Arc::clone(&self.store),
            observer: self.observer.clone(),
        }
    }
}
