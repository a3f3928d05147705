//! What the command line and the runtimes report, read back: a command-line run's streams, a
//! sweep summary's counts and where it continues, and the outcome of a Lambda answer; and a
//! sweep of a folder of photos, as the tests of the image pipeline run it.

use std::path::PathBuf;
use std::process::{Command, Output};

use super::BoxError;
use super::function::THUMBNAIL_ON_CREATE;
use super::lambda_api::Answer;

/// `binary` with `args` and only `env`, as a person or a job runs it.
pub fn run_cli(binary: &str, args: &[&str], env: &[(&str, &str)]) -> std::io::Result<Output> {
    Command::new(binary)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
}

/// A bucket `photos` in a folder of its own (gone when the folder is dropped).
pub struct Photos {
    pub folder: tempfile::TempDir,
    pub bucket: PathBuf,
}

impl Photos {
    /// The bucket, holding `files` (name, bytes).
    pub fn holding(files: &[(&str, &[u8])]) -> Result<Self, BoxError> {
        let folder = tempfile::tempdir()?;
        let bucket = folder.path().join("photos");
        std::fs::create_dir_all(&bucket)?;
        for (name, bytes) in files {
            std::fs::write(bucket.join(name), bytes)?;
        }
        Ok(Self { folder, bucket })
    }

    /// thumbnail-on-create's `sweep` of the bucket, with the folder as the store, under `env`.
    pub fn sweep(&self, env: &[(&str, &str)]) -> std::io::Result<Output> {
        let storage = self.folder.path().to_string_lossy().into_owned();
        run_cli(
            THUMBNAIL_ON_CREATE,
            &["sweep", "--bucket", "photos", "--storage", &storage],
            env,
        )
    }

    /// The thumbnail of `name` at `size`.
    pub fn thumbnail(&self, name: &str, size: u32) -> Result<image::RgbImage, image::ImageError> {
        Ok(image::open(self.bucket.join(format!("thumbnails/{name}/{size}.jpg")))?.to_rgb8())
    }
}

/// Standard output, and both streams for a failure message.
pub fn streams(out: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let both = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (stdout, both)
}

/// What a sweep summary counts: `[done, skipped, failed]` of `N done, M skipped, K failed`.
pub fn counts(summary: &str) -> Result<[usize; 3], BoxError> {
    let start = summary
        .find("sweep: ")
        .ok_or_else(|| format!("no sweep summary in {summary:?}"))?;
    let mut counts = [None; 3];
    let parts = summary[start + "sweep: ".len()..].split(", ");
    for (count, part) in counts.iter_mut().zip(parts) {
        *count = Some(part.split(' ').next().unwrap_or_default().parse()?);
    }
    match counts {
        [Some(done), Some(skipped), Some(failed)] => Ok([done, skipped, failed]),
        _ => Err(format!("a count is missing in {summary:?}").into()),
    }
}

/// The key a summary says the next run continues after.
pub fn continues_after(summary: &str) -> Option<&str> {
    let (_, rest) = summary.split_once("continues after \"")?;
    Some(rest.split_once("\" on the next run")?.0)
}

/// The one outcome of a successful Lambda answer to a single event.
pub fn lambda_outcome(answer: &Answer) -> Result<String, BoxError> {
    match answer {
        Answer::Response(value) => value["outcomes"][0]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no outcome in {value}").into()),
        Answer::Error { .. } => Err(format!("the invocation failed: {answer:?}").into()),
    }
}
