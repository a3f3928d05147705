//! sidecar-on-create: archives every media file that lands in a bucket in MediaHaven. Wiring
//! only; the handler is in the library and the runtime (Lambda, HTTP, CLI) in `bucketfn`.

use std::process::ExitCode;

fn main() -> ExitCode {
    bucketfn::main::<sidecar_on_create::SidecarOnCreate>()
}
