//! thumbnail-on-create: writes a thumbnail of every image that lands in a bucket. Wiring only;
//! the handler is in the library and the runtime (Lambda, HTTP, CLI) in `bucketfn`.

use std::process::ExitCode;

fn main() -> ExitCode {
    bucketfn::main::<thumbnail_on_create::Thumbnailer>()
}
