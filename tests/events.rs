//! Every file in `events/` decodes exactly as recorded under `tests/decoded/` (the `decode`
//! output as JSON, or the rejection message), so a sample cannot rot and a decoder change
//! shows up as a diff.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bucketfn::event::decode;
use bucketfn::runtime::parse_headers;
use http::HeaderMap;
use serde_json::Value;

use crate::support::{TestResult, workspace_root};

fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(files_under(&path)?);
        } else {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn headers_for(sample: &Path) -> Result<HeaderMap, String> {
    let path = sample.with_extension("headers");
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_headers(&text.lines().map(str::to_owned).collect::<Vec<_>>()),
        Err(_) => Ok(HeaderMap::new()),
    }
}

#[test]
fn every_sample_event_decodes_as_recorded() -> TestResult {
    let root = workspace_root();
    let events_dir = root.join("events");
    let decoded_dir = root.join("tests/decoded");
    let mut mismatches = Vec::new();
    let mut sources = BTreeSet::new();
    let mut checked = 0;
    for sample in files_under(&events_dir)? {
        if sample.extension().is_some_and(|e| e == "headers") {
            continue;
        }
        let relative = sample.strip_prefix(&events_dir)?.with_extension("");
        let expected_json = decoded_dir.join(&relative).with_extension("json");
        let expected_error = decoded_dir.join(&relative).with_extension("error");
        let body = std::fs::read(&sample)?;
        let result = decode(&body, &headers_for(&sample)?).and_then(|d| d.into_events());
        match result {
            Ok(events) => {
                let actual = serde_json::to_value(&events)?;
                let expected: Value = match std::fs::read(&expected_json) {
                    Ok(bytes) => serde_json::from_slice(&bytes)?,
                    Err(_) => {
                        mismatches.push(format!(
                            "{}: decoded, but {} is missing",
                            relative.display(),
                            expected_json.display()
                        ));
                        continue;
                    }
                };
                if actual != expected {
                    mismatches.push(format!(
                        "{}: decoded to\n{}\nexpected\n{}",
                        relative.display(),
                        serde_json::to_string_pretty(&actual)?,
                        serde_json::to_string_pretty(&expected)?
                    ));
                }
                for event in &events {
                    sources.insert(event.source.as_str());
                }
            }
            Err(error) => match std::fs::read_to_string(&expected_error) {
                Ok(expected) if expected.trim() == error.to_string() => {}
                Ok(expected) => mismatches.push(format!(
                    "{}: rejected with\n  {error}\nexpected\n  {}",
                    relative.display(),
                    expected.trim()
                )),
                Err(_) => mismatches.push(format!("{}: rejected with {error}", relative.display())),
            },
        }
        checked += 1;
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
    assert!(
        checked >= 58,
        "only {checked} samples found in {}",
        events_dir.display()
    );
    let expected_sources = [
        "aws-s3", "azure", "ceph", "gcs", "ibm-cos", "minio", "oci", "s3-batch", "schedule", "viaa",
    ];
    assert_eq!(sources, expected_sources.into_iter().collect());
    Ok(())
}

#[test]
fn every_recorded_decoding_has_its_sample() -> TestResult {
    let root = workspace_root();
    let decoded_dir = root.join("tests/decoded");
    for recorded in files_under(&decoded_dir)? {
        let relative = recorded.strip_prefix(&decoded_dir)?.with_extension("");
        let stem = root.join("events").join(&relative);
        let has_sample = ["json", "txt"]
            .iter()
            .any(|ext| stem.with_extension(ext).exists());
        assert!(
            has_sample,
            "{} has no sample in events/",
            recorded.display()
        );
    }
    Ok(())
}

#[test]
fn everything_under_invalid_is_rejected() -> TestResult {
    let dir = workspace_root().join("events/invalid");
    let samples = files_under(&dir)?;
    assert!(samples.len() >= 4);
    for sample in samples {
        let body = std::fs::read(&sample)?;
        let result = decode(&body, &HeaderMap::new()).and_then(|d| d.into_events());
        assert!(result.is_err(), "{} was accepted", sample.display());
    }
    Ok(())
}
