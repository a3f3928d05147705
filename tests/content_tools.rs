//! forward-to-stream writes the records of a bucket to a local file as bare log-ingest lines,
//! each stamped with the record's own time (`CONTENT_TIME_FIELD`), through the binary's `sweep`
//! over a directory as the bucket: AWS VPC flow logs (gzipped lines under a header) and IBM
//! flow logs (a JSON document).

use std::io::Write;
use std::path::Path;
use std::process::Command;

use std::time::{SystemTime, UNIX_EPOCH};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};

use crate::support::function::FORWARD_TO_STREAM;
use crate::support::{BoxError, TestResult};

/// Sweeps the bucket `logs` of `storage` into `out` as log-ingest lines, the record times in
/// `time_field`; the lines written.
fn sweep_to_lines(storage: &Path, out: &Path, time_field: &str) -> Result<Vec<Value>, BoxError> {
    let output = Command::new(FORWARD_TO_STREAM)
        .args(["sweep", "--bucket", "logs", "--storage"])
        .arg(storage)
        .env_clear()
        .env("SOURCE_BUCKET", "logs")
        .env("LOG_FORMAT", "text")
        .env("FORWARD_MODE", "content")
        .env("FORWARD_SINK", "file")
        .env("FORWARD_FILE", out)
        .env("FORWARD_FILE_FORMAT", "log-ingest")
        .env("LOG_INGEST_APP", "flow-logs")
        .env("CONTENT_TIME_FIELD", time_field)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("1 done"), "{text}");
    let written = std::fs::read_to_string(out)?;
    Ok(written
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

/// The line as the log-ingest API takes it, and nothing else; its dedupe id's record index.
fn check_shape(line: &Value, index: usize) {
    let mut fields: Vec<&str> = line
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["app", "level", "line", "meta", "timestamp"],
        "{line}"
    );
    assert_eq!(line["app"], "flow-logs");
    assert_eq!(line["level"], "INFO");
    let id = line["meta"]["dedupe_id"].as_str().unwrap_or_default();
    assert!(id.ends_with(&format!(":{index}")), "{line}");
}

fn storage_with(key: &str, bytes: &[u8]) -> Result<tempfile::TempDir, BoxError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("storage/logs").join(key);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, bytes)?;
    Ok(dir)
}

#[test]
fn aws_flow_logs_become_log_ingest_lines_at_each_records_start() -> TestResult {
    const HEADER: &str = "version account-id interface-id srcaddr dstaddr srcport dstport \
        protocol packets bytes start end action log-status";
    let starts: Vec<i64> = (0..50).map(|n| 1_700_000_000 + 37 * n).collect();
    let mut records: Vec<String> = starts
        .iter()
        .enumerate()
        .map(|(n, start)| {
            format!(
                "2 123456789010 eni-{n:04} 10.0.1.5 10.0.0.220 39812 443 6 20 4249 {start} {} ACCEPT OK",
                start + 60
            )
        })
        .collect();
    // A record without data has no time of its own.
    records.push("2 123456789010 eni-idle - - - - - - - 1700009999 1700010059 - NODATA".into());
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    writeln!(encoder, "{HEADER}")?;
    for record in &records {
        writeln!(encoder, "{record}")?;
    }
    let dir = storage_with("vpc/2024/flows.log.gz", &encoder.finish()?)?;
    let out = dir.path().join("lines.jsonl");
    let before = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let lines = sweep_to_lines(&dir.path().join("storage"), &out, "start")?;

    // The header is record 0, as without CONTENT_TIME_FIELD, stamped when written.
    assert_eq!(lines.len(), records.len() + 1);
    assert_eq!(lines[0]["line"], HEADER);
    for (index, line) in lines.iter().enumerate() {
        check_shape(line, index);
    }
    for ((line, record), start) in lines[1..].iter().zip(&records).zip(&starts) {
        assert_eq!(line["line"], record.as_str());
        assert_eq!(line["timestamp"], start * 1000, "{line}");
        assert_eq!(line["meta"]["key"], "logs/vpc/2024/flows.log.gz");
    }
    let last = &lines[records.len()];
    assert_eq!(last["timestamp"], 1_700_009_999_000i64, "{last}");
    let header_time = u128::from(lines[0]["timestamp"].as_u64().unwrap_or_default());
    assert!(header_time >= before, "{header_time} < {before}");
    Ok(())
}

#[test]
fn ibm_flow_logs_become_log_ingest_lines_at_each_records_start_time() -> TestResult {
    let flows: Vec<Value> = (0..30)
        .map(|n| {
            json!({
                "start_time": format!("2024-03-05T10:{:02}:{:02}.250Z", n / 60, n % 60),
                "end_time": "2024-03-05T11:00:00Z",
                "connection_start_time": "2024-03-05T09:00:00Z",
                "initiator_ip": format!("10.240.0.{n}"),
                "target_ip": "10.240.1.4",
                "action": "accepted",
                "bytes_from_initiator": 1200 + n,
            })
        })
        .collect();
    let document = json!({
        "version": "0.0.1",
        "collector_crn": "crn:v1:bluemix:public:is:us-south:a/123::flow-log-collector:r006-1",
        "number_of_flow_logs": flows.len(),
        "flow_logs": flows,
    });
    let dir = storage_with(
        "ibm/collector/flows.json",
        serde_json::to_string_pretty(&document)?.as_bytes(),
    )?;
    let out = dir.path().join("lines.jsonl");
    let lines = sweep_to_lines(&dir.path().join("storage"), &out, "start_time")?;

    assert_eq!(lines.len(), flows.len());
    for (index, (line, flow)) in lines.iter().zip(&flows).enumerate() {
        check_shape(line, index);
        let record: Value = serde_json::from_str(line["line"].as_str().unwrap_or_default())?;
        assert_eq!(&record, flow);
        let expected = 1_709_632_800_000i64 + index as i64 * 1000 + 250;
        assert_eq!(line["timestamp"], expected, "{line}");
    }
    Ok(())
}
