//! The example env files under `deploy/`, read as a container or `kubectl create configmap
//! --from-env-file` reads them, and checked against what bucketfn reads.

use std::collections::BTreeMap;
use std::path::Path;

use bucketfn::Env;

use super::{BoxError, workspace_root};

/// `KEY=VALUE` lines of the file at `path` (from the repository's root) as Docker's
/// `--env-file` and kubectl's `--from-env-file` read them: `#` comments and blank lines
/// skipped, the value everything after the first `=`, quotes included (so a quoted value is
/// refused). A key given twice in one file is refused: one of the two would be silently lost.
pub fn read(path: &str) -> Result<BTreeMap<String, String>, BoxError> {
    let text =
        std::fs::read_to_string(workspace_root().join(path)).map_err(|e| format!("{path}: {e}"))?;
    let mut vars = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("{path}:{}: not KEY=VALUE: {line:?}", n + 1))?;
        if value.starts_with('"') || value.starts_with('\'') {
            return Err(format!("{path}:{}: the quotes of {key} would be kept", n + 1).into());
        }
        if vars.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(format!("{path}:{}: {key} is set twice", n + 1).into());
        }
    }
    Ok(vars)
}

/// The files at `paths` and then `overrides`, later ones winning, as with several
/// `--env-file`s or `envFrom` entries.
pub fn merged(paths: &[&str], overrides: &[(&str, &str)]) -> Result<Env, BoxError> {
    let mut vars = BTreeMap::new();
    for path in paths {
        vars.extend(read(path)?);
    }
    vars.extend(
        overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Ok(Env::from_pairs(vars))
}

/// Fails naming the first variable of the file at `path` that no bucketfn source names as a
/// string (`env.or("NAME", ..)`, ...) and that is not the AWS SDK's own (`AWS_*`): a typo, or
/// a variable that was renamed.
pub fn only_variables_bucketfn_reads(path: &str) -> Result<(), BoxError> {
    let root = workspace_root();
    let mut code = String::new();
    for dir in ["shared/src", "functions"] {
        sources(&root.join(dir), &mut code)?;
    }
    for key in read(path)?.keys() {
        let named = code.contains(&format!("\"{key}\"")) || key.starts_with("AWS_");
        if !named {
            return Err(format!("{path}: {key} is read by nothing (a typo?)").into());
        }
    }
    Ok(())
}

/// Every `.rs` file under `dir`, as text.
fn sources(dir: &Path, into: &mut String) -> Result<(), BoxError> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            sources(&path, into)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push_str(&std::fs::read_to_string(&path)?);
        }
    }
    Ok(())
}
