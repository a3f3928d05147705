//! The documentation's links stay honest: every relative link in README.md and docs/*.md names
//! a file of the repository, and every `#anchor` a heading of the Markdown file it points into,
//! as GitHub makes anchors of headings. Links inside code (fenced blocks, code spans) are text.

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use crate::support::{BoxError, workspace_root};

/// README.md and every docs/*.md, relative to the workspace root.
fn pages(root: &Path) -> Result<Vec<PathBuf>, BoxError> {
    let mut pages = vec![PathBuf::from("README.md")];
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(root.join("docs"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(
                Path::new("docs").join(path.file_name().ok_or("a docs entry without a name")?),
            );
        }
    }
    docs.sort();
    pages.extend(docs);
    Ok(pages)
}

/// The anchor GitHub gives a heading: its text lower-cased, backticks dropped, each space a
/// `-`, and every other character that is not a letter, a digit, `-` or `_` dropped
/// (the heading ``A directory as the bucket (`--storage DIR`)`` has the anchor
/// `a-directory-as-the-bucket---storage-dir`).
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The lines of a Markdown text, each with whether it is inside a fenced code block (the
/// fences themselves count as inside).
fn lines_with_fences(text: &str) -> Vec<(&str, bool)> {
    let mut fence: Option<(char, usize)> = None;
    let mut lines = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let run = marker.map_or(0, |m| trimmed.chars().take_while(|c| *c == m).count());
        match (fence, marker) {
            (None, Some(m)) if run >= 3 => {
                fence = Some((m, run));
                lines.push((line, true));
            }
            (Some((m, open)), Some(c))
                if c == m && run >= open && trimmed[run..].trim().is_empty() =>
            {
                fence = None;
                lines.push((line, true));
            }
            _ => lines.push((line, fence.is_some())),
        }
    }
    lines
}

/// The text of an ATX heading line (`## Text`, closing `#`s dropped), if the line is one.
fn heading(line: &str) -> Option<&str> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let rest = &line[indent..];
    let level = rest.len() - rest.trim_start_matches('#').len();
    if indent > 3 || !(1..=6).contains(&level) {
        return None;
    }
    let text = &rest[level..];
    if !(text.is_empty() || text.starts_with(' ')) {
        return None;
    }
    Some(text.trim().trim_end_matches('#').trim_end())
}

/// The anchors of a Markdown file's headings outside code blocks; a repeated one gets GitHub's
/// `-1`, `-2`, ... after the first.
fn anchors(text: &str) -> HashSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = HashSet::new();
    for (line, in_code) in lines_with_fences(text) {
        let Some(text) = heading(line).filter(|_| !in_code) else {
            continue;
        };
        let base = slug(text);
        let count = seen.entry(base.clone()).or_insert(0);
        anchors.insert(if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        });
        *count += 1;
    }
    anchors
}

/// The prose of a Markdown text (fenced blocks blanked, code spans blanked to spaces, line
/// breaks kept, so that a byte's line is still its line).
fn prose(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (line, in_code) in lines_with_fences(text) {
        if !in_code {
            out.push_str(line);
        }
        out.push('\n');
    }
    // Code spans: a run of N backticks up to the next run of exactly N in the same paragraph.
    let bytes = out.as_bytes();
    let mut blank = vec![false; bytes.len()];
    let run_at = |i: usize| bytes[i..].iter().take_while(|b| **b == b'`').count();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let run = run_at(i);
        let mut j = i + run;
        let mut close = None;
        while j < bytes.len() {
            if bytes[j..].starts_with(b"\n\n") {
                break;
            }
            if bytes[j] == b'`' {
                let other = run_at(j);
                if other == run {
                    close = Some(j + other);
                    break;
                }
                j += other;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                blank[i..end].iter_mut().for_each(|b| *b = true);
                i = end;
            }
            None => i += run,
        }
    }
    out.char_indices()
        .map(|(at, c)| if blank[at] && c != '\n' { ' ' } else { c })
        .collect()
}

/// Every link target of a Markdown text with its line: inline links and images
/// (`](target)`, `](target "title")`), reference definitions (`[label]: target`) and HTML
/// `src="target"` / `href="target"`.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (index, line) in prose(text).lines().enumerate() {
        let number = index + 1;
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let target = after
                .trim_start()
                .split([')', ' '])
                .next()
                .unwrap_or_default();
            let target = target.trim_start_matches('<').trim_end_matches('>');
            if !target.is_empty() {
                found.push((number, target.to_owned()));
            }
            rest = after;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with('[')
            && let Some((label, target)) = trimmed.split_once("]:")
            && !label.contains(']')
            && let Some(target) = target.split_whitespace().next()
        {
            found.push((number, target.to_owned()));
        }
        for attribute in ["src=\"", "href=\""] {
            let mut rest = line;
            while let Some(at) = rest.find(attribute) {
                let after = &rest[at + attribute.len()..];
                let target = after.split('"').next().unwrap_or_default();
                found.push((number, target.to_owned()));
                rest = after;
            }
        }
    }
    found
}

/// `%XX` escapes of a link's path decoded (a space is `%20` in a link).
fn percent_decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `path` with `.` and `..` folded, or `None` when it climbs out of where it started.
fn normalized(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// A link to the web or to mail, which is not checked.
fn is_web(target: &str) -> bool {
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|scheme| target.starts_with(scheme))
}

/// What is wrong with one relative link target of `page` (relative to `root`), if anything.
fn broken(root: &Path, page: &Path, target: &str) -> Result<Option<String>, BoxError> {
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        page.to_path_buf()
    } else {
        let from = page.parent().unwrap_or(Path::new(""));
        match normalized(&from.join(percent_decoded(path))) {
            Some(file) => file,
            None => return Ok(Some("points outside the repository".to_owned())),
        }
    };
    let on_disk = root.join(&file);
    if !on_disk.exists() {
        return Ok(Some(format!("no file {}", file.display())));
    }
    let Some(anchor) = anchor else {
        return Ok(None);
    };
    if file.extension().is_none_or(|e| e != "md") {
        return Ok(Some(format!(
            "#{anchor} into {}, which is not Markdown: no heading to check it against",
            file.display()
        )));
    }
    let headings = anchors(&std::fs::read_to_string(&on_disk)?);
    if headings.contains(anchor) {
        Ok(None)
    } else {
        Ok(Some(format!(
            "no heading of {} has the anchor #{anchor}",
            file.display()
        )))
    }
}

/// Every broken link of `pages` (relative to `root`) as `page:line: target: what is wrong`,
/// and how many relative links were checked.
fn check(root: &Path, pages: &[PathBuf]) -> Result<(Vec<String>, usize), BoxError> {
    let mut problems = Vec::new();
    let mut checked = 0;
    for page in pages {
        let text = std::fs::read_to_string(root.join(page))?;
        for (line, target) in links(&text) {
            if is_web(&target) {
                continue;
            }
            checked += 1;
            if let Some(problem) = broken(root, page, &target)? {
                problems.push(format!("{}:{line}: {target}: {problem}", page.display()));
            }
        }
    }
    Ok((problems, checked))
}

#[test]
fn every_relative_link_of_the_docs_names_a_file_and_a_heading() -> Result<(), BoxError> {
    let root = workspace_root();
    let pages = pages(&root)?;
    assert!(pages.len() > 1, "no docs/*.md beside the README: {pages:?}");
    let (problems, checked) = check(&root, &pages)?;
    // The pages hold about 70 relative links: far fewer means the link reader is broken.
    assert!(checked > 50, "only {checked} links found in {pages:?}");
    assert!(
        problems.is_empty(),
        "{} broken link(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    Ok(())
}

#[test]
fn anchors_are_made_as_github_makes_them() -> Result<(), BoxError> {
    for (heading, anchor) in [
        (
            "A directory as the bucket (`--storage DIR`)",
            "a-directory-as-the-bucket---storage-dir",
        ),
        ("Deliveries (`EVENT_AUTH`)", "deliveries-event_auth"),
        (
            "Events from a queue (`consume`)",
            "events-from-a-queue-consume",
        ),
        ("scripts/e2e.sh, e2e.d/", "scriptse2esh-e2ed"),
        ("Où ça va: 2.0!", "où-ça-va-20"),
    ] {
        assert_eq!(slug(heading), anchor, "{heading}");
    }
    let text = "# Title\n\n```sh\n# not a heading\n```\n\n## Title ##\n\n## Title\n";
    let expected: HashSet<String> = ["title", "title-1", "title-2"].map(String::from).into();
    assert_eq!(anchors(text), expected);
    Ok(())
}

#[test]
fn the_checker_names_each_broken_link_and_ignores_code() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("docs"))?;
    std::fs::write(dir.path().join("picture.png"), b"")?;
    std::fs::write(
        dir.path().join("README.md"),
        "# Top\n\n## Part one\n\n[ok](#part-one) [page](docs/a.md#second-part) ![p](picture.png)\n\
         [multi\nline](docs/a.md) `[code](#nowhere)` [gone](#nowhere)\n\n```\n[fenced](missing.md)\n```\n\
         [web](https://example.com/#x) <img src=\"docs/missing.png\">\n\n[1]: docs/none.md\n",
    )?;
    std::fs::write(
        dir.path().join("docs/a.md"),
        "# A\n\n## Second part\n\n[back](../README.md#top) [bad](../README.md#part-two) [out](../../x.md)\n",
    )?;
    let pages = [PathBuf::from("README.md"), PathBuf::from("docs/a.md")];
    let (problems, checked) = check(dir.path(), &pages)?;
    assert_eq!(
        problems,
        [
            "README.md:7: #nowhere: no heading of README.md has the anchor #nowhere",
            "README.md:12: docs/missing.png: no file docs/missing.png",
            "README.md:14: docs/none.md: no file docs/none.md",
            "docs/a.md:5: ../README.md#part-two: no heading of README.md has the anchor #part-two",
            "docs/a.md:5: ../../x.md: points outside the repository",
        ],
    );
    assert_eq!(checked, 10);
    Ok(())
}
