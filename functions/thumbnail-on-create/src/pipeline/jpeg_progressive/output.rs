//! The planes' samples as an image: chroma enlarged to the luma grid, colours converted to
//! the raster's layout.

use super::markers::Frame;
use super::planes::Plane;
use super::{ColourModel, enlargement, max_sampling, scaled};
use crate::pipeline::raster::{Layout, Raster};

/// The samples of every component at `side` / 8 scale, upsampled to the luma grid, then
/// converted.
pub(super) fn to_raster(
    frame: &Frame,
    planes: &[Plane],
    side: usize,
    model: ColourModel,
) -> Raster {
    let (width, height) = (scaled(frame.width, side), scaled(frame.height, side));
    let (h_max, v_max) = max_sampling(frame);
    let samples: Vec<Vec<u8>> = planes
        .iter()
        .enumerate()
        .map(|(index, plane)| {
            let c = frame.components[index];
            // The component's own size (libjpeg's downsampled_width and _height) at its side.
            let own = (
                scaled(
                    (u64::from(frame.width) * u64::from(c.h)).div_ceil(u64::from(h_max)) as u32,
                    plane.side,
                ) as usize,
                scaled(
                    (u64::from(frame.height) * u64::from(c.v)).div_ceil(u64::from(v_max)) as u32,
                    plane.side,
                ) as usize,
            );
            let blocks = frame.blocks_of(index);
            let own_samples = plane.samples((blocks.0 as usize, blocks.1 as usize), own);
            upsample(
                own_samples,
                own,
                enlargement(frame, index, side).unwrap_or((1, 1)),
                (width as usize, height as usize),
            )
        })
        .collect();
    let pixels = (width * height) as usize;
    match (model, samples.as_slice()) {
        (ColourModel::Grey, [grey, ..]) => Raster::new(width, height, Layout::Gray, grey.clone()),
        (ColourModel::Rgb | ColourModel::YCbCr, [a, b, c, ..]) => {
            let mut out = Vec::with_capacity(pixels * 3);
            for ((&a, &b), &c) in a.iter().zip(b).zip(c) {
                let rgb = match model {
                    ColourModel::YCbCr => ycc_to_rgb(a, b, c),
                    _ => [a, b, c],
                };
                out.extend_from_slice(&rgb);
            }
            Raster::new(width, height, Layout::Rgb, out)
        }
        (_, [a, b, c, k, ..]) => {
            let mut out = Vec::with_capacity(pixels * 4);
            for (((&a, &b), &c), &k) in a.iter().zip(b).zip(c).zip(k) {
                let cmy = match model {
                    // libjpeg's YCCK to CMYK: the YCC part as RGB, inverted.
                    ColourModel::Ycck => ycc_to_rgb(a, b, c).map(|v| 255 - v),
                    _ => [a, b, c],
                };
                out.extend_from_slice(&[cmy[0], cmy[1], cmy[2], k]);
            }
            Raster::new(width, height, Layout::Cmyk, out)
        }
        // `applies` admits 1, 3 or 4 components, and the model follows their number.
        (_, planes) => Raster::new(
            width,
            height,
            Layout::Gray,
            planes.first().cloned().unwrap_or_else(|| vec![128; pixels]),
        ),
    }
}

/// JFIF's YCbCr to RGB (libjpeg's coefficients, 16-bit fixed point, rounded).
pub(super) fn ycc_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    const ONE: i32 = 1 << 16;
    const HALF: i32 = 1 << 15;
    let (y, cb, cr) = (
        i32::from(y) * ONE + HALF,
        i32::from(cb) - 128,
        i32::from(cr) - 128,
    );
    let r = y + 91_881 * cr;
    let g = y - 22_554 * cb - 46_802 * cr;
    let b = y + 116_130 * cb;
    [r, g, b].map(|v| (v >> 16).clamp(0, 255) as u8)
}

/// A plane of `own` samples enlarged by whole `factor`s and cut to `size`: linear
/// interpolation between sample centres for a factor of 2 (as libjpeg's fancy upsampling),
/// repetition otherwise.
pub(super) fn upsample(
    own: Vec<u8>,
    (across, down): (usize, usize),
    factor: (usize, usize),
    (width, height): (usize, usize),
) -> Vec<u8> {
    // Full-resolution planes (luma, unsubsampled chroma) are already the image.
    if factor == (1, 1) && (across, down) == (width, height) {
        return own;
    }
    // The weights of the two nearest samples along one axis, in quarters.
    // Past the last sample (the image's padding), both taps are the last one.
    let taps = |position: usize, f: usize, n: usize| -> (usize, usize, i32) {
        let own = position / f;
        if f != 2 {
            return (own.min(n - 1), own.min(n - 1), 4);
        }
        let neighbour = match position % 2 {
            0 => own.saturating_sub(1),
            _ => own + 1,
        };
        (own.min(n - 1), neighbour.min(n - 1), 3)
    };
    // The taps of each column, found once for all rows.
    let columns: Vec<(usize, usize, i32)> = (0..width).map(|x| taps(x, factor.0, across)).collect();
    let mut out = Vec::with_capacity(width * height);
    for y in 0..height {
        let (y0, y1, wy) = taps(y, factor.1, down);
        let (row0, row1) = (&own[y0 * across..][..across], &own[y1 * across..][..across]);
        out.extend(columns.iter().map(|&(x0, x1, wx)| {
            let near = wx * i32::from(row0[x0]) + (4 - wx) * i32::from(row0[x1]);
            let far = wx * i32::from(row1[x0]) + (4 - wx) * i32::from(row1[x1]);
            ((wy * near + (4 - wy) * far + 8) >> 4) as u8
        }));
    }
    out
}
