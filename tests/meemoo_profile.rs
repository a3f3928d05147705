//! The meemoo profile (deploy/meemoo/*.env.example) loaded as the functions' configuration,
//! as a container gets it from `--env-file`: it parses, names only variables bucketfn reads,
//! reproduces what the original s3-events-handler hard-codes, and `consume` starts on it.

use std::collections::BTreeMap;
use std::time::Duration;

use bucketfn::runtime::RuntimeSettings;
use bucketfn::sink::amqp::Declare;
use bucketfn::{Env, FromEnv};
use sidecar_on_create::ftp::UploadMode;

use crate::support::env_files;
use crate::support::function::{CLEANUP_ON_REMOVE, FunctionProcess, free_port};
use crate::support::{BoxError, TestResult};

/// One file of the profile.
fn env_file(name: &str) -> Result<BTreeMap<String, String>, BoxError> {
    env_files::read(&format!("deploy/meemoo/{name}"))
}

/// Later files win, as with several `--env-file`s.
fn profile(files: &[&str], overrides: &[(&str, &str)]) -> Result<Env, BoxError> {
    let paths: Vec<String> = files.iter().map(|f| format!("deploy/meemoo/{f}")).collect();
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    env_files::merged(&paths, overrides)
}

#[test]
fn every_variable_of_the_profile_is_one_bucketfn_reads() -> TestResult {
    for file in ["meemoo.env.example", "cleanup-on-remove.env.example"] {
        env_files::only_variables_bucketfn_reads(&format!("deploy/meemoo/{file}"))?;
    }
    Ok(())
}

#[test]
fn the_profile_is_sidecar_on_creates_configuration_and_the_originals_rules() -> TestResult {
    let mut env = profile(&["meemoo.env.example"], &[])?;
    let runtime = RuntimeSettings::read(&mut env);
    let config = sidecar_on_create::Config::read(&mut env);
    env.finish()?;
    let config = config.ok_or("no configuration")?;
    assert!(
        runtime.sources.is_some(),
        "SOURCE_BUCKETS is needed against S3"
    );
    assert_eq!(runtime.concurrency, 1);

    // is_collateral(): the one collateral bucket.
    assert_eq!(
        config.collateral_buckets.iter().collect::<Vec<_>>(),
        ["mam-collaterals"]
    );
    // query_params_item_ingested(): VRT's essences are not matched by md5.
    assert_eq!(config.md5_exempt_tenant.as_deref(), Some("VRT"));
    // destination_config.yml in production: only VRT's essences go to tape.
    let d = &config.destinations;
    assert_eq!(d.environment, "production");
    for (cp, kind, folder) in [
        ("VRT", "essence", "TAPE-SHARE-EVENTS"),
        ("VRT", "collateral", "DISK-SHARE-EVENTS"),
        ("Testbeeld", "essence", "DISK-SHARE-EVENTS"),
        ("meemoo", "essence", "DISK-SHARE-EVENTS"),
    ] {
        assert_eq!(d.folder(cp, "OR-rf5kf25", kind), folder, "{cp} {kind}");
    }
    // The file-transfer topology as the original declares it, and its routing by queue name.
    assert_eq!(
        config.amqp.declare,
        Declare::Create {
            queue_durable: true,
            exchange_durable: false
        }
    );
    assert_eq!(config.amqp.queue.as_deref(), Some("filetransfer"));
    assert_eq!(config.amqp.routing_key, "filetransfer");
    // One STOR under the final name, as the original uploads.
    assert_eq!(config.ftp.upload, UploadMode::Direct);
    Ok(())
}

#[test]
fn in_qas_every_destination_is_disk() -> TestResult {
    let config: sidecar_on_create::Config =
        profile(&["meemoo.env.example"], &[("APP_ENVIRONMENT", "qas")])?.load()?;
    for cp in ["VRT", "Testbeeld"] {
        for kind in ["essence", "collateral"] {
            let folder = config.destinations.folder(cp, "OR-rf5kf25", kind);
            assert_eq!(folder, "DISK-SHARE-EVENTS", "{cp} {kind}");
        }
    }
    Ok(())
}

#[test]
fn cleanup_on_remove_reads_the_profile_with_a_queue_of_its_own() -> TestResult {
    let files = ["meemoo.env.example", "cleanup-on-remove.env.example"];
    let mut env = profile(&files, &[])?;
    let runtime = RuntimeSettings::read(&mut env);
    let config = cleanup_on_remove::Config::read(&mut env);
    env.finish()?;
    config.ok_or("no configuration")?;
    assert!(runtime.sources.is_some());
    // One queue per function: on a shared queue each would ack the other's events as skipped.
    let common = env_file(files[0])?;
    let cleanup = env_file(files[1])?;
    assert_ne!(common.get("CONSUME_QUEUE"), cleanup.get("CONSUME_QUEUE"));
    assert_eq!(
        cleanup.get("CLEANUP_TARGETS").map(String::as_str),
        Some("mediahaven")
    );
    Ok(())
}

#[tokio::test]
async fn cleanup_on_remove_consume_starts_on_the_profile() -> TestResult {
    // The profile as it is, but for where the broker and the buckets are: nothing listens on
    // the broker's port, and the buckets are folders (`--storage`), so that start-up gets as
    // far as consuming. A configuration problem (consume's own variables included) would end
    // the process at once with `invalid configuration`.
    let files = ["meemoo.env.example", "cleanup-on-remove.env.example"];
    let mut vars = BTreeMap::new();
    for file in files {
        vars.extend(env_file(file)?);
    }
    let broker = free_port()?;
    vars.insert(
        "AMQP_URL".to_owned(),
        format!("amqp://guest:guest@127.0.0.1:{broker}/%2f"),
    );
    vars.insert("PORT".to_owned(), free_port()?.to_string());
    vars.insert("LISTEN_ADDRESS".to_owned(), "127.0.0.1".to_owned());
    let storage = tempfile::tempdir()?;
    for bucket in ["MAM_HighresVideo", "mam-collaterals"] {
        std::fs::create_dir(storage.path().join(bucket))?;
    }
    let env: Vec<(&str, String)> = vars.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let dir = storage.path().to_string_lossy().into_owned();
    let mut process =
        FunctionProcess::spawn(CLEANUP_ON_REMOVE, &["consume", "--storage", &dir], &env)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let logs = process.logs();
        if logs.contains("Cannot reach the broker; trying again.") {
            break;
        }
        // `wait` with no time to wait fails while the process runs.
        if let Ok(code) = process.wait(Duration::ZERO).await {
            return Err(format!("consume exited ({code:?}) on the profile:\n{logs}").into());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("consume did not get to the broker:\n{logs}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!process.logs().contains("invalid configuration"));
    process.terminate()?;
    process.wait(Duration::from_secs(20)).await?;
    Ok(())
}
