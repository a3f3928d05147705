//! Server-rendered HTML for the operations pages: plain HTML and a little CSS, no JavaScript,
//! and every key and value escaped on the way out (object keys are user-controlled).

use std::fmt::Write;

use chrono::{DateTime, Utc};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use crate::function::{Derived, Location};
use crate::operations::ledger::{EventEntry, HistoryPage, Stats};

/// Text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters in keys would garble the page; show them as escapes.
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// A value for a URL query parameter.
pub fn query(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

fn time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

const STYLE: &str = "
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:14px 28px;display:flex;flex-wrap:wrap;gap:8px 28px;align-items:baseline}
header h1{font-size:18px;margin:0;font-weight:600}
header a{color:#c9d3e3;text-decoration:none}header a.here{color:#fff;border-bottom:2px solid #6fa8ff}
main{padding:20px 28px;max-width:1400px}
h2{font-size:16px;margin:0 0 12px}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px rgba(0,0,0,.08)}
th,td{text-align:left;padding:8px 10px;border-bottom:1px solid #e6e9ee;vertical-align:top}
th{background:#eef1f5;font-weight:600;font-size:13px;color:#4a5568}
td.key{font-family:ui-monospace,Menlo,monospace;font-size:13px;word-break:break-all}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.completed,.ok{background:#dff5e3;color:#17692b}.skipped,.missing{background:#eef1f5;color:#4a5568}
.retryable{background:#fff1d6;color:#8a5a00}.permanent,.failed{background:#fde2e1;color:#a61b1b}
ul.files{margin:0;padding-left:18px;font-size:13px}ul.files li{margin:2px 0}
.muted{color:#718096;font-size:13px}
.cards{display:flex;gap:14px;margin-bottom:18px;flex-wrap:wrap}
.card{background:#fff;padding:12px 16px;box-shadow:0 1px 2px rgba(0,0,0,.08);min-width:150px}
.card b{display:block;font-size:22px}
nav.pages{margin:14px 0;display:flex;gap:16px}
img.thumb{max-width:160px;max-height:160px;display:block;background:#eee}
@media (max-width:600px){header{padding:12px 14px;gap:6px 18px}main{padding:14px}table{display:block;overflow-x:auto}}
";

/// Which pages a function has, for the header's links.
pub struct Site<'a> {
    pub function: &'a str,
    /// Whether it offers the gallery ([`crate::Handler::gallery`]).
    pub gallery: bool,
}

pub(crate) fn layout(site: &Site<'_>, here: &str, title: &str, body: &str) -> String {
    let link = |href: &str, text: &str| {
        let class = if href == here { " class=\"here\"" } else { "" };
        format!("<a href=\"{href}\"{class}>{text}</a>")
    };
    let gallery = match site.gallery {
        true => link("/gallery", "Gallery"),
        false => String::new(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title} · {function}</title><style>{STYLE}</style></head><body>\
         <header><h1>{function}</h1>{gallery}{}{}{}</header><main>{body}</main></body></html>",
        link("/events/history", "Events"),
        link("/files", "Files"),
        link("/metrics", "Metrics"),
        function = escape(site.function),
        title = escape(title),
    )
}

fn badge(outcome: &str) -> String {
    format!("<span class=\"badge {0}\">{0}</span>", escape(outcome))
}

fn entry_row(entry: &EventEntry) -> String {
    let object = if entry.key.is_empty() && entry.bucket.is_empty() {
        "<span class=\"muted\">whole bucket</span>".to_owned()
    } else {
        escape(&format!("{}/{}", entry.bucket, entry.key))
    };
    let mut files = String::new();
    if !entry.files.is_empty() {
        files.push_str("<ul class=\"files\">");
        for file in &entry.files {
            let status = match file.status.as_str() {
                "ok" | "missing" => file.status.clone(),
                _ => "failed".to_owned(),
            };
            let _ = write!(
                files,
                "<li>{} <span class=\"badge {status}\" title=\"{}\">{}</span> {} <span class=\"muted\">{}</span></li>",
                escape(&file.action),
                escape(&file.status),
                escape(&status),
                escape(&file.target),
                escape(&file.at.format("%H:%M:%S%.3f").to_string()),
            );
        }
        if entry.more_files > 0 {
            let _ = write!(
                files,
                "<li class=\"muted\">and {} more</li>",
                entry.more_files
            );
        }
        files.push_str("</ul>");
    }
    format!(
        "<tr><td>{}</td><td>{}<br><span class=\"muted\">{} · {}</span></td><td class=\"key\">{object}</td>\
         <td>{}<br><span class=\"muted\">{} ms · {}</span><br><span class=\"muted\">{}</span></td><td>{files}</td></tr>",
        escape(&time(&entry.received)),
        escape(&entry.class),
        escape(&entry.source),
        escape(&entry.event_name),
        badge(&entry.outcome),
        entry.duration_ms,
        escape(&entry.instance),
        escape(&entry.detail),
    )
}

/// `/events/history`: events newest first, `per_page` to a page.
pub fn history(
    site: &Site<'_>,
    stats: Option<&Stats>,
    page: &HistoryPage,
    number: u64,
    per_page: u64,
) -> String {
    let mut body = String::new();
    if let Some(stats) = stats {
        let card =
            |label: &str, value: u64| format!("<div class=\"card\">{label}<b>{value}</b></div>");
        let _ = write!(
            body,
            "<div class=\"cards\">{}{}{}{}</div>",
            card("object events succeeded", stats.object_events.succeeded),
            card("object events failed", stats.object_events.failed),
            card("sweeps succeeded", stats.sweep_events.succeeded),
            card("sweeps failed", stats.sweep_events.failed),
        );
    }
    let _ = write!(
        body,
        "<h2>Events received ({} in all, newest first)</h2>",
        page.total
    );
    if page.entries.is_empty() {
        body.push_str("<p class=\"muted\">No events yet.</p>");
    } else {
        body.push_str(
            "<table><thead><tr><th>Received</th><th>Type</th><th>Object</th><th>Outcome</th>\
             <th>Files</th></tr></thead><tbody>",
        );
        for entry in &page.entries {
            body.push_str(&entry_row(entry));
        }
        body.push_str("</tbody></table>");
    }
    let pages = page.total.div_ceil(per_page.max(1)).max(1);
    body.push_str("<nav class=\"pages\">");
    if number > 0 {
        let _ = write!(
            body,
            "<a href=\"/events/history?page={}\">← newer</a>",
            number - 1
        );
    }
    let _ = write!(
        body,
        "<span class=\"muted\">page {} of {pages}</span>",
        number + 1
    );
    if number + 1 < pages {
        let _ = write!(
            body,
            "<a href=\"/events/history?page={}\">older →</a>",
            number + 1
        );
    }
    body.push_str("</nav>");
    layout(site, "/events/history", "Events", &body)
}

/// One object a function knows and what it made of it.
pub struct FileRow {
    pub key: String,
    /// The object where its inputs are, as listed; `None` when it is not there (moved away).
    pub listed: Option<Listed>,
    /// Per output: the derived object and its size, when present.
    pub outputs: Vec<(Derived, Option<u64>)>,
}

/// An input as its bucket lists it.
pub struct Listed {
    pub size: u64,
    pub modified: Option<DateTime<Utc>>,
}

/// The output columns of a page: every label any row has, in the order rows name them (a
/// row without outputs, an object no output can be derived from, must not take the page's
/// columns away).
fn output_labels(rows: &[FileRow]) -> Vec<&str> {
    let mut labels: Vec<&str> = Vec::new();
    for (derived, _) in rows.iter().flat_map(|row| &row.outputs) {
        if !labels.contains(&derived.label.as_str()) {
            labels.push(&derived.label);
        }
    }
    labels
}

fn output_cell(body: &mut String, row: &FileRow, derived: &Derived, present: Option<u64>) {
    match present {
        Some(size) if derived.image => {
            let _ = write!(
                body,
                "<td><img class=\"thumb\" alt=\"{} of {}\" src=\"/files/object?input={}&amp;label={}\">\
                 <span class=\"badge ok\">present</span> <span class=\"muted\">{size} bytes</span></td>",
                escape(&derived.label),
                escape(&row.key),
                query(&row.key),
                query(&derived.label),
            );
        }
        Some(size) => {
            let _ = write!(
                body,
                "<td><span class=\"badge ok\">present</span> <span class=\"muted\">{size} bytes</span></td>"
            );
        }
        None => body.push_str("<td><span class=\"badge missing\">missing</span></td>"),
    }
}

/// `/files`: the objects a function knows, each with its presence where its inputs are and
/// beside what was made of it, a page at a time; `next` is the next page's query.
pub fn files(
    site: &Site<'_>,
    location: Option<&Location>,
    rows: &[FileRow],
    next: Option<&str>,
) -> String {
    let Some(location) = location else {
        let body = "<p class=\"muted\">This function keeps no files of its own, or its input bucket is \
                    not configured.</p>";
        return layout(site, "/files", "Files", body);
    };
    let place = escape(&format!("{}/{}", location.bucket, location.prefix));
    let mut body = format!("<h2>Objects under {place}</h2>");
    let labels = output_labels(rows);
    let _ = write!(
        body,
        "<table><thead><tr><th>Object</th><th>In {place}</th><th>Modified</th>"
    );
    for label in &labels {
        let _ = write!(body, "<th>{}</th>", escape(label));
    }
    body.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(
            body,
            "<tr><td colspan=\"{}\" class=\"muted\">No objects.</td></tr>",
            3 + labels.len()
        );
    }
    for row in rows {
        let _ = write!(body, "<tr><td class=\"key\">{}</td>", escape(&row.key));
        match &row.listed {
            Some(listed) => {
                let _ = write!(
                    body,
                    "<td><span class=\"badge ok\">present</span> <span class=\"muted\">{} bytes</span></td><td>{}</td>",
                    listed.size,
                    listed.modified.as_ref().map(time).unwrap_or_default(),
                );
            }
            None => {
                body.push_str("<td><span class=\"badge missing\">moved away</span></td><td></td>")
            }
        }
        for label in &labels {
            match row.outputs.iter().find(|(d, _)| d.label == *label) {
                Some((derived, present)) => output_cell(&mut body, row, derived, *present),
                None => body.push_str("<td class=\"muted\">none</td>"),
            }
        }
        body.push_str("</tr>");
    }
    body.push_str("</tbody></table><nav class=\"pages\"><a href=\"/files\">first page</a>");
    if let Some(next) = next {
        let _ = write!(body, "<a href=\"/files?{}\">next page →</a>", escape(next));
    }
    body.push_str("</nav>");
    layout(site, "/files", "Files", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_quotes_and_control_characters() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\"\n"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;\\u{a}"
        );
        assert_eq!(query("a b/c&d=é"), "a%20b%2Fc%26d%3D%C3%A9");
    }
}
