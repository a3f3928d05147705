//! The MediaHaven sidecar (`MediaHAVEN_external_metadata`) for an essence or a collateral, and
//! the update that links a collateral to its essence, written with a real XML writer so that
//! any key or metadata value yields well-formed UTF-8 XML.

use std::io;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

/// Everything a sidecar says; `collateral` is set for collaterals. `pid` is the record's own
/// PID: for a collateral `<essence pid>_<type>`, where the original writes the essence's PID
/// (meemoo's metadata model gives every object a PID of its own, and the essence's
/// `is_verwant_aan` names `<essence pid>_<type>`, which only this way is a record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sidecar<'a> {
    pub pid: &'a str,
    pub cp_name: &'a str,
    pub tenant: &'a str,
    pub domain: &'a str,
    pub bucket: &'a str,
    pub key: &'a str,
    pub owner: &'a str,
    pub md5: Option<&'a str>,
    pub collateral: Option<CollateralOf<'a>>,
}

/// What a collateral sidecar adds: the essence it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollateralOf<'a> {
    pub essence_pid: &'a str,
    pub media_id: &'a str,
    pub object_use: &'a str,
}

/// The sidecar document, UTF-8 with an XML declaration.
pub fn render(s: &Sidecar<'_>) -> io::Result<Vec<u8>> {
    let mut w = document()?;
    w.write_event(Event::Start(BytesStart::new(
        "MediaHAVEN_external_metadata",
    )))?;
    let (title, description) = match &s.collateral {
        None => (
            format!("Essence: pid: {}", s.pid),
            format!(
                "Main fragment for essence:\n    - filename: {}\n    - CP: {}\n    ",
                s.key, s.cp_name
            ),
        ),
        // The original's wording, whatever the collateral: the title names the essence's PID
        // (the collateral's own is in `<PID>`) and the description says "Subtitles" for scripts
        // too. A MediaHaven search or an operator reading either sees what the original wrote.
        Some(c) => (
            format!("Collateral: pid: {}", c.essence_pid),
            format!(
                "Subtitles for essence:\n    - filename: {}\n    - CP: {}\n    ",
                s.key, s.cp_name
            ),
        ),
    };
    text(&mut w, "title", &title)?;
    text(&mut w, "description", &description)?;
    w.write_event(Event::Start(BytesStart::new("MDProperties")))?;
    text(&mut w, "CP", s.cp_name)?;
    text(&mut w, "CP_id", s.tenant)?;
    text(&mut w, "sp_name", "s3")?;
    text(&mut w, "PID", s.pid)?;
    text(&mut w, "s3_domain", s.domain)?;
    text(&mut w, "s3_bucket", s.bucket)?;
    text(&mut w, "s3_object_key", s.key)?;
    text(&mut w, "s3_object_owner", s.owner)?;
    if let Some(c) = &s.collateral {
        text(&mut w, "dc_identifier_localid", c.media_id)?;
    }
    text(&mut w, "object_level", "file")?;
    let object_use = s
        .collateral
        .as_ref()
        .map_or("archive_master", |c| c.object_use);
    text(&mut w, "object_use", object_use)?;
    text(&mut w, "ie_type", "n/a")?;
    w.write_event(Event::Start(BytesStart::new("dc_identifier_localids")))?;
    text(&mut w, "Bestandsnaam", s.key)?;
    w.write_event(Event::End(BytesEnd::new("dc_identifier_localids")))?;
    if let Some(md5) = s.md5 {
        text(&mut w, "md5", md5)?;
    }
    if let Some(c) = &s.collateral {
        relation(&mut w, c.essence_pid)?;
    }
    w.write_event(Event::End(BytesEnd::new("MDProperties")))?;
    w.write_event(Event::End(BytesEnd::new("MediaHAVEN_external_metadata")))?;
    finish(w)
}

/// The metadata update that adds `is_verwant_aan <collateral pid>` to the essence.
pub fn relation_update(collateral_pid: &str) -> io::Result<Vec<u8>> {
    let mut w = document()?;
    w.write_event(Event::Start(BytesStart::new(
        "MediaHAVEN_external_metadata",
    )))?;
    w.write_event(Event::Start(BytesStart::new("MDProperties")))?;
    relation(&mut w, collateral_pid)?;
    w.write_event(Event::End(BytesEnd::new("MDProperties")))?;
    w.write_event(Event::End(BytesEnd::new("MediaHAVEN_external_metadata")))?;
    finish(w)
}

fn document() -> io::Result<Writer<Vec<u8>>> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    Ok(w)
}

fn finish(w: Writer<Vec<u8>>) -> io::Result<Vec<u8>> {
    let mut bytes = w.into_inner();
    bytes.push(b'\n');
    Ok(bytes)
}

fn relation(w: &mut Writer<Vec<u8>>, pid: &str) -> io::Result<()> {
    w.write_event(Event::Start(BytesStart::new("dc_relations")))?;
    text(w, "is_verwant_aan", pid)?;
    w.write_event(Event::End(BytesEnd::new("dc_relations")))
}

fn text(w: &mut Writer<Vec<u8>>, name: &str, value: &str) -> io::Result<()> {
    w.create_element(name)
        .write_text_content(BytesText::new(&xml_chars(value)))?;
    Ok(())
}

/// XML 1.0 cannot carry most control characters even as references; they become U+FFFD so
/// that the document stays well-formed (the key itself is in the file-transfer message).
fn xml_chars(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => '\u{fffd}',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quick_xml::Reader;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn essence<'a>(key: &'a str, owner: &'a str) -> Sidecar<'a> {
        Sidecar {
            pid: "j96059k22s",
            cp_name: "VRT",
            tenant: "OR-rf5kf25",
            domain: "s3",
            bucket: "MAM_HighresVideo",
            key,
            owner,
            md5: Some("1234abcd1234abcd1234abcd1234abcd"),
            collateral: None,
        }
    }

    /// Reads the document back (failing on anything malformed), returning the text of every
    /// element named `name`.
    fn texts_of(xml: &[u8], name: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
        let mut reader = Reader::from_reader(xml);
        let mut buf = Vec::new();
        let mut current: Option<String> = None;
        let mut found = Vec::new();
        loop {
            match reader.read_event_into(&mut buf)? {
                Event::Start(e) => {
                    current = (e.name().as_ref() == name).then(String::new);
                }
                Event::Text(t) => {
                    if let Some(text) = current.as_mut() {
                        text.push_str(&t.xml10_content());
                    }
                }
                Event::GeneralRef(r) => {
                    let c = match r.as_ref() {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "quot" => '"',
                        "apos" => '\'',
                        other => return Err(format!("unknown entity {other}").into()),
                    };
                    if let Some(text) = current.as_mut() {
                        text.push(c);
                    }
                }
                Event::End(_) => found.extend(current.take()),
                Event::Eof => return Ok(found),
                _ => {}
            }
            buf.clear();
        }
    }

    #[test]
    fn essence_sidecar_matches_the_golden_file() -> TestResult {
        let xml = render(&essence("191213-VAN_clip.MXF", "Object Owner CN+OR-id"))?;
        assert_eq!(
            String::from_utf8(xml)?,
            include_str!("../golden/essence.xml")
        );
        Ok(())
    }

    #[test]
    fn collateral_sidecar_matches_the_golden_file() -> TestResult {
        let sidecar = Sidecar {
            pid: "j96059k22s_openOt",
            bucket: "mam-collaterals",
            key: "openOt/MEDIA1/subs.srt",
            md5: None,
            collateral: Some(CollateralOf {
                essence_pid: "j96059k22s",
                media_id: "MEDIA1",
                object_use: "subtitle",
            }),
            ..essence("", "owner")
        };
        assert_eq!(
            String::from_utf8(render(&sidecar)?)?,
            include_str!("../golden/collateral.xml")
        );
        assert_eq!(
            String::from_utf8(relation_update("j96059k22s_openOt")?)?,
            include_str!("../golden/relation-update.xml")
        );
        Ok(())
    }

    #[test]
    fn every_collateral_has_the_originals_title_and_description_and_a_pid_of_its_own() -> TestResult
    {
        let sidecar = Sidecar {
            pid: "j96059k22s_script",
            key: "script/MEDIA1",
            collateral: Some(CollateralOf {
                essence_pid: "j96059k22s",
                media_id: "MEDIA1",
                object_use: "collateral",
            }),
            ..essence("", "owner")
        };
        let xml = render(&sidecar)?;
        assert_eq!(texts_of(&xml, "title")?, ["Collateral: pid: j96059k22s"]);
        assert_eq!(
            texts_of(&xml, "description")?,
            ["Subtitles for essence:\n    - filename: script/MEDIA1\n    - CP: VRT\n    "]
        );
        assert_eq!(texts_of(&xml, "PID")?, ["j96059k22s_script"]);
        assert_eq!(texts_of(&xml, "is_verwant_aan")?, ["j96059k22s"]);
        assert_eq!(texts_of(&xml, "object_use")?, ["collateral"]);
        Ok(())
    }

    #[test]
    fn hostile_keys_and_owners_stay_well_formed_and_round_trip() -> TestResult {
        let key = "a<b>&c \"quoted\" 'single' ]]> café ☀/𝄞.mxf";
        let owner = "</s3_object_owner><injected/>";
        let xml = render(&essence(key, owner))?;
        assert!(xml.starts_with(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
        assert_eq!(texts_of(&xml, "s3_object_key")?, [key]);
        assert_eq!(texts_of(&xml, "Bestandsnaam")?, [key]);
        assert_eq!(texts_of(&xml, "s3_object_owner")?, [owner]);
        assert!(texts_of(&xml, "injected")?.is_empty());
        Ok(())
    }

    #[test]
    fn control_characters_become_replacement_characters() -> TestResult {
        let xml = render(&essence("a\u{1}b\u{1b}c\td.mxf", "o"))?;
        assert_eq!(
            texts_of(&xml, "s3_object_key")?,
            ["a\u{fffd}b\u{fffd}c\td.mxf"]
        );
        Ok(())
    }
}
