//! The shared crate's layers, as its tree shows them: no top-level module of `shared/src`
//! imports one that imports it back, and the adapters (event decoders, stores, sinks, API
//! clients) import neither the operations wing nor the runtimes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::support::{BoxError, TestResult, workspace_root};

/// Modules that reach the outside world, which the operations wing and the runtimes use and
/// never the other way round.
const ADAPTERS: [&str; 4] = ["event", "storage", "sink", "api"];
const ABOVE_ADAPTERS: [&str; 2] = ["operations", "runtime"];

/// Each top-level module of `src` and the top-level modules its code (tests aside) names,
/// through `crate::module`, `crate::{module, ...}` or a re-export at the crate root.
fn imports(src: &Path) -> Result<BTreeMap<String, BTreeSet<String>>, BoxError> {
    let lib = std::fs::read_to_string(src.join("lib.rs"))?;
    let modules: BTreeSet<String> = lib
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let name = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("mod "))?;
            Some(name.trim_end_matches(';').to_owned())
        })
        .collect();
    // `pub use outcome::{Done, HandlerError};` at the root: `crate::Done` means outcome.
    let mut reexported = BTreeMap::new();
    for line in lib.lines() {
        if let Some(rest) = line.trim().strip_prefix("pub use ")
            && let Some((module, names)) = rest.split_once("::")
        {
            for name in names.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
                if !name.is_empty() {
                    reexported.insert(name.to_owned(), module.to_owned());
                }
            }
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(src)?;
            let Some(first) = relative.components().next() else {
                continue;
            };
            let own = first
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned();
            if !modules.contains(&own) {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            let code = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default();
            let named = graph.entry(own.clone()).or_default();
            // Comments out, so that a path a comment names is no import; lines joined, so that
            // a group over several lines is read whole.
            let code: Vec<&str> = code
                .lines()
                .map(|line| line.split("//").next().unwrap_or_default())
                .collect();
            let code = code.join("\n");
            for (at, _) in code.match_indices("crate::") {
                let rest = &code[at + "crate::".len()..];
                // `crate::{a::X, b}`: the first segment of every path in the group.
                let targets: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => top_level_paths(group)
                        .into_iter()
                        .filter_map(first_segment)
                        .collect(),
                    None => first_segment(rest).into_iter().collect(),
                };
                for target in targets {
                    let module = reexported
                        .get(target)
                        .cloned()
                        .unwrap_or_else(|| target.to_owned());
                    if module != own && modules.contains(&module) {
                        named.insert(module);
                    }
                }
            }
        }
    }
    Ok(graph)
}

/// The first segment of a path: `storage` of `storage::ObjectStore`.
fn first_segment(path: &str) -> Option<&str> {
    path.trim_start()
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
        .filter(|segment| !segment.is_empty())
}

/// The paths of a `{...}` group (its opening brace already taken), split at its own commas
/// and not at those of a group inside it.
fn top_level_paths(group: &str) -> Vec<&str> {
    let (mut paths, mut start, mut depth) = (Vec::new(), 0, 0usize);
    for (at, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                paths.push(&group[start..at]);
                return paths;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                paths.push(&group[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    paths
}

/// A path of imports from `from` back to itself, if there is one.
fn loop_through(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_owned()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last()?;
        for next in graph.get(last).into_iter().flatten() {
            if next == from {
                let mut found = path.clone();
                found.push(next.clone());
                return Some(found);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn the_shared_crate_has_no_import_loop_and_adapters_stay_below_operations() -> TestResult {
    let graph = imports(&workspace_root().join("shared/src"))?;
    // The reader found the arrows that are known to be there.
    assert!(graph["runtime"].contains("operations"), "{graph:?}");
    assert!(graph["storage"].contains("outcome"), "{graph:?}");
    let loops: Vec<String> = graph
        .keys()
        .filter_map(|module| loop_through(&graph, module))
        .map(|path| path.join(" -> "))
        .collect();
    assert!(loops.is_empty(), "import loops: {loops:#?}");
    let upward: Vec<String> = ADAPTERS
        .iter()
        .flat_map(|adapter| {
            let graph = &graph;
            ABOVE_ADAPTERS
                .iter()
                .filter(move |above| graph.get(*adapter).is_some_and(|n| n.contains(**above)))
                .map(move |above| format!("{adapter} -> {above}"))
        })
        .collect();
    assert!(upward.is_empty(), "adapters importing upwards: {upward:?}");
    Ok(())
}
