//! Integer shrinking while rows stream in, for decoders without shrink-on-load (PNG): only
//! one output row of sums is held, never the full-size image. Each output pixel is the mean
//! of a `factor`x`factor` block, weighted by alpha so transparent pixels lend no colour.

use super::raster::{Layout, Raster};

pub struct RowShrinker {
    factor: u32,
    layout: Layout,
    out_width: u32,
    in_width: u32,
    /// Per output pixel and channel: the sum over the block so far (colour premultiplied).
    sums: Vec<u64>,
    rows_in_block: u32,
    out: Vec<u8>,
    out_height: u32,
}

impl RowShrinker {
    pub fn new(in_width: u32, factor: u32, layout: Layout) -> Self {
        let factor = factor.max(1);
        let out_width = in_width.div_ceil(factor);
        Self {
            factor,
            layout,
            out_width,
            in_width,
            sums: vec![0; out_width as usize * layout.channels()],
            rows_in_block: 0,
            out: Vec::new(),
            out_height: 0,
        }
    }

    /// Adds one input row (`in_width` pixels of `layout`).
    pub fn push_row(&mut self, row: &[u8]) {
        let channels = self.layout.channels();
        let alpha = self.layout.has_alpha().then_some(channels - 1);
        for (x, pixel) in row
            .chunks_exact(channels)
            .take(self.in_width as usize)
            .enumerate()
        {
            let base = (x / self.factor as usize) * channels;
            let weight = alpha.map_or(1, |a| u64::from(pixel[a]));
            for (c, &value) in pixel.iter().enumerate() {
                let contribution = if Some(c) == alpha {
                    u64::from(value)
                } else {
                    u64::from(value) * weight
                };
                self.sums[base + c] += contribution;
            }
        }
        self.rows_in_block += 1;
        if self.rows_in_block == self.factor {
            self.emit_row();
        }
    }

    fn emit_row(&mut self) {
        let channels = self.layout.channels();
        let alpha = self.layout.has_alpha().then_some(channels - 1);
        let rows = u64::from(self.rows_in_block);
        for x in 0..self.out_width as usize {
            // The last block of a row may be narrower than `factor`.
            let cols = u64::from(self.factor.min(self.in_width - x as u32 * self.factor));
            let count = rows * cols;
            let block = &mut self.sums[x * channels..(x + 1) * channels];
            // Colour was summed premultiplied by alpha: divide by the summed alpha.
            let alpha_sum = alpha.map(|a| block[a]);
            for (c, &sum) in block.iter().enumerate() {
                let divisor = match alpha_sum {
                    Some(weight) if Some(c) != alpha => weight,
                    _ => count,
                };
                // A fully transparent block has no colour to speak of.
                let value = (sum + divisor / 2).checked_div(divisor).unwrap_or(0);
                self.out.push(value.min(255) as u8);
            }
            block.fill(0);
        }
        self.rows_in_block = 0;
        self.out_height += 1;
    }

    /// The shrunk raster; a last partial block of rows still counts.
    pub fn finish(mut self) -> Raster {
        if self.rows_in_block > 0 {
            self.emit_row();
        }
        Raster::new(self.out_width, self.out_height, self.layout, self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_blocks_including_partial_edges() {
        let mut shrinker = RowShrinker::new(3, 2, Layout::Gray);
        shrinker.push_row(&[10, 30, 100]);
        shrinker.push_row(&[50, 70, 200]);
        shrinker.push_row(&[1, 3, 5]);
        let raster = shrinker.finish();
        assert_eq!((raster.width, raster.height), (2, 2));
        assert_eq!(raster.pixels, [40, 150, 2, 5]);
    }

    #[test]
    fn transparent_pixels_lend_no_colour() {
        let mut shrinker = RowShrinker::new(2, 2, Layout::Rgba);
        // An opaque red pixel beside three transparent white ones.
        shrinker.push_row(&[255, 0, 0, 255, 255, 255, 255, 0]);
        shrinker.push_row(&[255, 255, 255, 0, 255, 255, 255, 0]);
        let raster = shrinker.finish();
        assert_eq!(raster.pixels, [255, 0, 0, 64]);
    }

    #[test]
    fn factor_one_keeps_the_image() {
        let mut shrinker = RowShrinker::new(2, 1, Layout::Rgb);
        shrinker.push_row(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(shrinker.finish().pixels, [1, 2, 3, 4, 5, 6]);
    }
}
