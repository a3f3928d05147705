//! The Knative deployment's example env files (deploy/knative/*.env.example), loaded as each
//! Service gets them (its ConfigMap, then its Secret, `envFrom` in that order): each is the
//! function's configuration without a problem, names only variables bucketfn reads, and is
//! the file the Knative deploy steps (docs/deploy.md) name.

use bucketfn::FromEnv;
use bucketfn::runtime::RuntimeSettings;

use crate::support::env_files;
use crate::support::{BoxError, TestResult, workspace_root};

const EXAMPLES: [&str; 5] = [
    "thumbnail-on-create",
    "sidecar-on-create",
    "forward-to-stream",
    "archive",
    "stream",
];

fn example(name: &str) -> String {
    format!("deploy/knative/{name}.env.example")
}

/// Reads the runtime's settings and `C` from the examples `names`, then `overrides` (what the
/// Service's manifest sets itself), failing with every problem found.
fn configuration<C: FromEnv>(names: &[&str], overrides: &[(&str, &str)]) -> Result<(), BoxError> {
    let paths: Vec<String> = names.iter().map(|name| example(name)).collect();
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    let mut env = env_files::merged(&paths, overrides)?;
    let runtime = RuntimeSettings::read(&mut env);
    let config = C::read(&mut env);
    env.finish()
        .map_err(|e| format!("{names:?} with {overrides:?}: {e}"))?;
    config.ok_or("no configuration")?;
    // Against S3 nothing starts without the buckets it serves.
    runtime
        .sources
        .ok_or(format!("{names:?}: no SOURCE_BUCKETS"))?;
    Ok(())
}

#[test]
fn every_variable_of_the_knative_examples_is_one_bucketfn_reads() -> TestResult {
    for name in EXAMPLES {
        env_files::only_variables_bucketfn_reads(&example(name))?;
    }
    Ok(())
}

#[test]
fn each_knative_service_starts_from_its_example_files() -> TestResult {
    configuration::<thumbnail_on_create::Config>(&["thumbnail-on-create"], &[])?;
    configuration::<sidecar_on_create::Config>(&["sidecar-on-create", "archive"], &[])?;
    configuration::<forward_to_stream::Config>(&["forward-to-stream", "stream"], &[])?;
    // cleanup-on-remove.yaml's two Services read the other functions' files.
    configuration::<cleanup_on_remove::Config>(
        &["thumbnail-on-create"],
        &[("CLEANUP_TARGETS", "derivatives")],
    )?;
    configuration::<cleanup_on_remove::Config>(
        &["sidecar-on-create", "archive"],
        &[("CLEANUP_TARGETS", "mediahaven")],
    )?;
    Ok(())
}

/// The Knative deploy steps' `--from-env-file=NAME.env` (docs/deploy.md) copy
/// `deploy/knative/NAME.env.example`.
#[test]
fn every_env_file_the_deploy_steps_name_has_its_example() -> TestResult {
    let steps = std::fs::read_to_string(workspace_root().join("docs/deploy.md"))?;
    let named: Vec<&str> = steps
        .split("--from-env-file=")
        .skip(1)
        .filter_map(|rest| rest.split_once(".env"))
        .map(|(name, _)| name)
        .collect();
    assert!(named.len() >= EXAMPLES.len(), "{named:?}");
    for name in named {
        let path = workspace_root().join(example(name));
        assert!(
            path.is_file(),
            "docs/deploy.md names {name}.env: no {}",
            path.display()
        );
    }
    Ok(())
}
