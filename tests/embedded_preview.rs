//! A camera JPEG's embedded preview as the command line meets it. With
//! `THUMBNAIL_EMBEDDED_PREVIEW=true` a sweep makes a photo's thumbnails from the Multi-Picture
//! Format "large thumbnail" it carries, when that is at least twice the largest size and of
//! the photo's shape, with the photo's orientation. Other pictures in the index (gain maps,
//! stereo pairs) and previews that are too small, of another shape, outside the file or
//! corrupt are passed over for the photo itself, and without the setting the photo is always
//! what is decoded. The previews here are green where the photo is not, so a thumbnail shows
//! which one it came from. A preview is read in the photo's colour profile, which cameras
//! write only in the photo's markers.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

use crate::support::TestResult;
use crate::support::images::{jpeg_segment as segment, psnr, scene};
use crate::support::summary::{Photos, counts, streams};

/// MP Type codes (CIPA DC-007): a full-HD-class large thumbnail, the undefined type a gain
/// map is listed with, and one image of a stereo pair.
const LARGE_THUMBNAIL: u32 = 0x01_0002;
const UNDEFINED: u32 = 0;
const DISPARITY: u32 = 0x02_0002;
const GREEN: Rgb<u8> = Rgb([40, 200, 60]);

fn green(width: u32, height: u32) -> RgbImage {
    RgbImage::from_pixel(width, height, GREEN)
}

fn jpeg(image: RgbImage) -> Result<Vec<u8>, image::ImageError> {
    let mut bytes = Vec::new();
    DynamicImage::ImageRgb8(image).write_to(&mut Cursor::new(&mut bytes), ImageFormat::Jpeg)?;
    Ok(bytes)
}

/// An EXIF APP1 payload with only the orientation tag (big-endian TIFF, one SHORT entry).
fn exif_orientation(value: u8) -> Vec<u8> {
    let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08".to_vec();
    exif.extend_from_slice(&[0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, value, 0, 0]);
    exif.extend_from_slice(&[0, 0, 0, 0]);
    exif
}

/// What a camera writes: `photo` with an MPF index (and `extra` segments) after its JFIF
/// marker, listing itself and `preview` as MP type `kind`, then `preview` after its end. The
/// preview's listed offset is `misplaced` bytes past where it is.
fn camera_file(
    photo: &[u8],
    preview: &[u8],
    kind: u32,
    misplaced: u32,
    extra: &[Vec<u8>],
) -> Vec<u8> {
    // After SOI and the JFIF APP0 segment, if there is one.
    let at = match photo[3] {
        0xE0 => 4 + usize::from(u16::from_be_bytes([photo[4], photo[5]])),
        _ => 2,
    };
    let extra: Vec<u8> = extra.concat();
    // The MP header: little-endian TIFF, the IFD at 8 with three entries (version, number of
    // images, the entries at 50), no next IFD, then two 16-byte entries.
    const INDEX: usize = 4 + 50 + 32;
    let header_start = at + extra.len() + 4 + 4;
    let primary = (photo.len() + extra.len() + 4 + INDEX) as u32;
    let mut mpf = b"MPF\0II*\0".to_vec();
    mpf.extend_from_slice(&8u32.to_le_bytes());
    mpf.extend_from_slice(&3u16.to_le_bytes());
    for (tag, kind, count, value) in [
        (0xB000u16, 7u16, 4u32, u32::from_le_bytes(*b"0100")),
        (0xB001, 4, 1, 2),
        (0xB002, 7, 32, 50),
    ] {
        mpf.extend_from_slice(&tag.to_le_bytes());
        mpf.extend_from_slice(&kind.to_le_bytes());
        mpf.extend_from_slice(&count.to_le_bytes());
        mpf.extend_from_slice(&value.to_le_bytes());
    }
    mpf.extend_from_slice(&0u32.to_le_bytes());
    let offset = primary - header_start as u32 + misplaced;
    for (attribute, size, offset) in [
        (0x2003_0000u32, primary, 0u32),
        (kind, preview.len() as u32, offset),
    ] {
        mpf.extend_from_slice(&attribute.to_le_bytes());
        mpf.extend_from_slice(&size.to_le_bytes());
        mpf.extend_from_slice(&offset.to_le_bytes());
        mpf.extend_from_slice(&[0; 4]);
    }
    assert_eq!(mpf.len(), INDEX);
    let mut out = photo[..at].to_vec();
    out.extend(extra);
    out.extend(segment(0xE2, &mpf));
    out.extend_from_slice(&photo[at..]);
    out.extend_from_slice(preview);
    out
}

/// Whether most of a thumbnail is the previews' green.
fn is_green(thumbnail: &image::RgbImage) -> bool {
    let green = thumbnail
        .pixels()
        .filter(|p| p.0.iter().zip(GREEN.0).all(|(a, b)| a.abs_diff(b) < 24))
        .count();
    green * 10 > thumbnail.pixels().len() * 9
}

#[test]
fn a_suitable_embedded_preview_stands_in_for_the_photo_only_when_allowed() -> TestResult {
    let photo = jpeg(scene(2400, 1600))?;
    let large = jpeg(green(1200, 800))?;
    let mut corrupt = large.clone();
    // A 12-bit frame header on 8-bit data: the markers walk, libjpeg refuses it.
    let frame = corrupt
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .ok_or("no frame header")?;
    corrupt[frame + 4] = 12;
    let rotated = vec![segment(0xE1, &exif_orientation(6))];
    let files = [
        (
            "suits",
            camera_file(&photo, &large, LARGE_THUMBNAIL, 0, &[]),
        ),
        (
            "rotated",
            camera_file(&photo, &large, LARGE_THUMBNAIL, 0, &rotated),
        ),
        (
            "same",
            camera_file(&photo, &jpeg(scene(1200, 800))?, LARGE_THUMBNAIL, 0, &[]),
        ),
        (
            "small",
            camera_file(&photo, &jpeg(green(500, 333))?, LARGE_THUMBNAIL, 0, &[]),
        ),
        (
            "shape",
            camera_file(&photo, &jpeg(green(1200, 600))?, LARGE_THUMBNAIL, 0, &[]),
        ),
        ("gain_map", camera_file(&photo, &large, UNDEFINED, 0, &[])),
        ("stereo", camera_file(&photo, &large, DISPARITY, 0, &[])),
        (
            "outside",
            camera_file(&photo, &large, LARGE_THUMBNAIL, 1 << 20, &[]),
        ),
        (
            "shifted",
            camera_file(&photo, &large, LARGE_THUMBNAIL, 7, &[]),
        ),
        (
            "corrupt",
            camera_file(&photo, &corrupt, LARGE_THUMBNAIL, 0, &[]),
        ),
    ];
    let named: Vec<(String, &[u8])> = files
        .iter()
        .map(|(name, bytes)| (format!("{name}.jpg"), bytes.as_slice()))
        .collect();
    let named: Vec<(&str, &[u8])> = named.iter().map(|(n, b)| (n.as_str(), *b)).collect();
    let mut made = Vec::new();
    for allowed in ["true", "false"] {
        let photos = Photos::holding(&named)?;
        let out = photos.sweep(&[("THUMBNAIL_EMBEDDED_PREVIEW", allowed)])?;
        let (stdout, both) = streams(&out);
        assert_eq!(out.status.code(), Some(0), "{both}");
        assert_eq!(counts(&stdout)?, [files.len(), 0, 0], "{both}");
        let mut thumbnails = std::collections::BTreeMap::new();
        for (name, _) in &files {
            let thumbnail = photos.thumbnail(&format!("{name}.jpg"), 256)?;
            let from_preview = allowed == "true" && ["suits", "rotated"].contains(name);
            assert_eq!(
                is_green(&thumbnail),
                from_preview,
                "{name}, allowed {allowed}"
            );
            let expected = if *name == "rotated" {
                (171, 256)
            } else {
                (256, 171)
            };
            assert_eq!(
                thumbnail.dimensions(),
                expected,
                "{name}, allowed {allowed}"
            );
            thumbnails.insert(*name, thumbnail);
        }
        if allowed == "true" {
            assert!(
                both.contains("the embedded preview is corrupt; decoding the photo"),
                "{both}"
            );
        }
        made.push(thumbnails);
    }
    // The same scene from its preview and from the photo (47.8 dB when this was written).
    let quality = psnr(&made[0]["same"], &made[1]["same"]);
    assert!(quality >= 40.0, "{quality:.1} dB");
    // Passed-over previews leave the photo's own thumbnail, byte for byte the same pixels.
    for name in [
        "small", "shape", "gain_map", "stereo", "outside", "shifted", "corrupt",
    ] {
        assert_eq!(made[0][name], made[1][name], "{name}");
    }
    Ok(())
}

#[test]
fn a_damaged_preview_index_never_costs_the_photo_its_thumbnail() -> TestResult {
    use thumbnail_on_create::Config;
    use thumbnail_on_create::pipeline::{Spec, make_thumbnails};
    let photo = jpeg(scene(1200, 800))?;
    let file = camera_file(&photo, &jpeg(green(600, 400))?, LARGE_THUMBNAIL, 0, &[]);
    // The MPF segment's payload: after SOI, the JFIF segment and the APP2 marker and length.
    let start = 4 + usize::from(u16::from_be_bytes([file[4], file[5]])) + 4;
    let spec = Spec {
        embedded_previews: true,
        ..Spec::from(&Config::default())
    };
    let mut noise = bucketfn::testing::Noise(0x2545_F491_4F6C_DD1D);
    let (mut from_preview, mut from_photo) = (0, 0);
    for _ in 0..200 {
        let mut damaged = file.clone();
        for _ in 0..1 + noise.next_u64() % 4 {
            let at = start + (noise.next_u64() % 86) as usize;
            damaged[at] = match noise.next_u64() % 3 {
                0 => 0,
                1 => 0xFF,
                _ => noise.next_u64() as u8,
            };
        }
        // The index is an application segment: whatever it says, the photo is whole.
        let thumbnails = make_thumbnails(&damaged, &spec, &bucketfn::budget::Stop::default())
            .map_err(|e| e.to_string())?;
        let image = image::load_from_memory(&thumbnails[0].bytes)?.to_rgb8();
        match is_green(&image) {
            true => from_preview += 1,
            false => from_photo += 1,
        }
    }
    // Damage that misses the entries leaves the preview in use; the rest falls back.
    assert!(
        from_preview > 10 && from_photo > 10,
        "{from_preview} / {from_photo}"
    );
    Ok(())
}

/// The mean colour of a thumbnail.
fn mean(thumbnail: &RgbImage) -> [f64; 3] {
    let n = thumbnail.pixels().len() as f64;
    [0, 1, 2].map(|c| thumbnail.pixels().map(|p| f64::from(p.0[c])).sum::<f64>() / n)
}

#[test]
fn an_embedded_preview_is_read_in_the_photos_colour_profile() -> TestResult {
    // Photo and preview are the same green in Display P3; only the photo carries the profile.
    let profile = moxcms::ColorProfile::new_display_p3()
        .encode()
        .map_err(|e| format!("{e:?}"))?;
    let mut icc = b"ICC_PROFILE\0\x01\x01".to_vec();
    icc.extend_from_slice(&profile);
    let file = camera_file(
        &jpeg(green(2400, 1600))?,
        &jpeg(green(1200, 800))?,
        LARGE_THUMBNAIL,
        0,
        &[segment(0xE2, &icc)],
    );
    let mut colours = Vec::new();
    for allowed in ["true", "false"] {
        let photos = Photos::holding(&[("p3.jpg", &file)])?;
        let out = photos.sweep(&[("THUMBNAIL_EMBEDDED_PREVIEW", allowed)])?;
        let (stdout, both) = streams(&out);
        assert_eq!(out.status.code(), Some(0), "{both}");
        assert_eq!(counts(&stdout)?, [1, 0, 0], "{both}");
        let thumbnail = photos.thumbnail("p3.jpg", 256)?;
        colours.push(mean(&thumbnail));
    }
    let (from_preview, from_photo) = (colours[0], colours[1]);
    // The profile matters: the photo's thumbnail is converted away from the stored values.
    let stored = GREEN.0.map(f64::from);
    assert!(
        (0..3).any(|c| (from_photo[c] - stored[c]).abs() > 8.0),
        "the profile changed nothing: {from_photo:?} against {stored:?}"
    );
    // And the preview's thumbnail is converted alike.
    assert!(
        (0..3).all(|c| (from_preview[c] - from_photo[c]).abs() <= 3.0),
        "from the preview {from_preview:?}, from the photo {from_photo:?}"
    );
    Ok(())
}
