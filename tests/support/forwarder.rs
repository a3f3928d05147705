//! forward-to-stream handlers over an in-memory bucket, for the tests of each sink.

use std::sync::Arc;

use bucketfn::storage::MemoryStore;
use bucketfn::{Env, ObjectStore};
use forward_to_stream::{Config, Forwarder};

use super::BoxError;

/// The bucket the object lives in.
pub const BUCKET: &str = "logs";

/// A forwarder configured by `env` (a sink's variables and the test's own), over a store that
/// holds one text object `logs/<key>`.
pub fn forwarder_over(
    env: Vec<(&str, String)>,
    key: &str,
    text: String,
) -> Result<(Arc<MemoryStore>, Forwarder), BoxError> {
    let config: Config = Env::from_pairs(env).load()?;
    let store = Arc::new(MemoryStore::new());
    store.insert(BUCKET, key, text, "text/plain");
    let publisher = config.sink.publisher()?;
    let forwarder = Forwarder::new(
        config,
        Arc::clone(&store) as Arc<dyn ObjectStore>,
        publisher,
    );
    Ok((store, forwarder))
}
