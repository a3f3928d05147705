//! cleanup-on-remove: removes the derivatives and the MediaHaven records of every object
//! removed from a bucket. Wiring only; the handler is in the library, the runtime in `bucketfn`.

use std::process::ExitCode;

fn main() -> ExitCode {
    bucketfn::main::<cleanup_on_remove::CleanupOnRemove>()
}
