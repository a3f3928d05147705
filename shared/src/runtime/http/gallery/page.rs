//! The gallery page: server-rendered, so that it works without its script; the script only
//! swaps in thumbnails as they are made and shows a dropped image's thumbnail in place.

use std::fmt::Write;

use serde_json::{Value, json};

use super::GallerySettings;
use crate::function::Location;
use crate::operations::files::InputPage;
use crate::operations::pages::{FileRow, Site, escape, layout, query};

pub(super) struct View<'a> {
    pub function: &'a str,
    pub location: &'a Location,
    pub listed: &'a InputPage,
    pub settings: &'a GallerySettings,
    pub notice: Option<&'a str>,
    pub sweeping: bool,
}

/// Below the header's style: cards that fill a phone's width and wrap on a desktop.
const STYLE: &str = "
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:14px}
.tile{background:#fff;box-shadow:0 1px 2px rgba(0,0,0,.08);padding:10px;display:flex;flex-direction:column;gap:6px}
.tile .name{font:12px/1.3 ui-monospace,Menlo,monospace;word-break:break-all}
.tile .pic{aspect-ratio:1;display:flex;align-items:center;justify-content:center;background:#eef1f5}
.tile .pic img{max-width:100%;max-height:100%}
.na{color:#718096;font-size:13px}
.actions{display:flex;flex-wrap:wrap;gap:14px;margin-bottom:18px}
.actions form,.panel{background:#fff;box-shadow:0 1px 2px rgba(0,0,0,.08);padding:12px 14px;display:flex;flex-wrap:wrap;gap:8px;align-items:center}
.panel{flex-direction:column;align-items:stretch}
button{font:inherit;padding:6px 14px;border:0;border-radius:4px;background:#2b6cb0;color:#fff;cursor:pointer}
button.danger{background:#c53030}
input[type=text]{font:inherit;padding:5px 8px}
.notice{background:#dff5e3;color:#17692b;padding:8px 12px;margin-bottom:14px}
#drop{border:2px dashed #a0aec0;padding:18px;text-align:center;color:#4a5568}
#drop.over{border-color:#2b6cb0;background:#ebf4ff}
#tried img{max-width:100%;display:block;margin-top:8px}
@media (max-width:600px){.actions{flex-direction:column}}
";

pub(super) fn render(view: &View<'_>) -> String {
    let location = view.location;
    let place = escape(&format!("{}/{}", location.bucket, location.prefix));
    let pending = view.listed.rows.iter().any(|row| {
        row.outputs
            .iter()
            .any(|(d, made)| d.image && made.is_none())
    });
    let mut body = format!("<style>{STYLE}</style>");
    if let Some(notice) = view.notice {
        let _ = write!(
            body,
            "<p class=\"notice\" role=\"status\">{}</p>",
            escape(notice)
        );
    }
    body.push_str("<div class=\"actions\">");
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/gallery/upload\" enctype=\"multipart/form-data\">\
         <label>Images for {place} <input type=\"file\" name=\"images\" accept=\"image/*\" multiple required></label>\
         <button type=\"submit\">Upload Image</button></form>"
    );
    if !view.settings.hide_button {
        let label = match view.sweeping {
            true => "Thumbnails job running…",
            false => "Thumbnails Job Runner",
        };
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/gallery/sweep\">\
             <button type=\"submit\" id=\"run-job\">{label}</button>\
             <span class=\"muted\">makes what is missing, as a scheduled sweep</span></form>"
        );
    }
    if view.settings.clear {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/gallery/clear\" id=\"clear\">\
             <label>Type <b>{bucket}</b> to confirm <input type=\"text\" name=\"confirm\" autocomplete=\"off\" required></label>\
             <button type=\"submit\" class=\"danger\">Clear bucket</button></form>",
            bucket = escape(&location.bucket)
        );
    }
    body.push_str(
        "</div><div class=\"actions\"><div class=\"panel\" id=\"try\">\
         <form method=\"post\" action=\"/gallery/try\" enctype=\"multipart/form-data\">\
         <label>Try one, stored nowhere: <input type=\"file\" name=\"image\" accept=\"image/*\" required></label>\
         <button type=\"submit\">Make its thumbnail</button></form>\
         <div id=\"drop\" hidden>or drop an image here</div><div id=\"tried\"></div></div></div>",
    );
    let _ = write!(body, "<h2>Images / Thumbnails in {place}</h2>");
    if view.listed.rows.is_empty() {
        body.push_str("<p class=\"muted\">No images yet.</p>");
    }
    body.push_str("<div class=\"grid\" id=\"images\">");
    for row in &view.listed.rows {
        tile(&mut body, row);
    }
    body.push_str("</div><nav class=\"pages\">");
    if let Some(next) = &view.listed.next {
        let _ = write!(
            body,
            "<a href=\"/gallery?{}\" id=\"next\">Next page</a>",
            escape(&next.query())
        );
    }
    body.push_str("<a href=\"/gallery\">Refresh</a></nav>");
    // Without the script, the page reloads itself while thumbnails are missing.
    let refresh = match pending {
        true => "<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>",
        false => "",
    };
    let body = format!("{refresh}{body}<script src=\"/gallery/gallery.js\" defer></script>");
    layout(
        &Site {
            function: view.function,
            gallery: true,
        },
        "/gallery",
        "Gallery",
        &body,
    )
}

fn tile(body: &mut String, row: &FileRow) {
    let (key_attr, key) = (escape(&row.key), escape(&row.key));
    match row.listed {
        Some(_) => {
            let _ = write!(
                body,
                "<div class=\"tile\" data-key=\"{key_attr}\"><a class=\"name\" href=\"/gallery/image?key={}\">{key}</a>",
                query(&row.key),
            );
        }
        // Moved away: the thumbnails are what the gallery still shows of it.
        None => {
            let _ = write!(
                body,
                "<div class=\"tile\" data-key=\"{key_attr}\"><span class=\"name\">{key} <span class=\"muted\">(moved)</span></span>"
            );
        }
    }
    // An output that is not an image (a moved input's copy) has no place among the pictures.
    for (derived, made) in row.outputs.iter().filter(|(d, _)| d.image) {
        let label = escape(&derived.label);
        let src = format!(
            "/files/object?input={}&amp;label={}",
            query(&row.key),
            query(&derived.label)
        );
        match made {
            Some(_) => {
                let _ = write!(
                    body,
                    "<div class=\"pic\" data-label=\"{label}\"><img alt=\"{label} thumbnail of {}\" src=\"{src}\"></div>",
                    escape(&row.key)
                );
            }
            None => {
                let _ = write!(
                    body,
                    "<div class=\"pic\" data-label=\"{label}\" data-src=\"{src}\"><span class=\"na\">N/A</span></div>"
                );
            }
        }
        let _ = write!(body, "<span class=\"muted\">{label}</span>");
    }
    body.push_str("</div>");
}

/// `/gallery/state`: which outputs of each image on the page exist.
pub(super) fn progress(listed: &InputPage) -> Value {
    let images: Vec<Value> = listed
        .rows
        .iter()
        .map(|row| {
            let made: Vec<&str> = row
                .outputs
                .iter()
                .filter(|(_, size)| size.is_some())
                .map(|(d, _)| d.label.as_str())
                .collect();
            json!({ "key": row.key, "made": made })
        })
        .collect();
    json!({ "images": images })
}
