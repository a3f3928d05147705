//! forward-to-stream: publishes a claim-check reference (or the log records) of every object
//! that lands in a bucket. Wiring only; the handler is in the library, the runtimes in `bucketfn`.

use std::process::ExitCode;

fn main() -> ExitCode {
    bucketfn::main::<forward_to_stream::Forwarder>()
}
