//! Decoded pixels in one of the few layouts the pipeline handles, 8 bits per channel.

/// Channel layout of a raster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Gray,
    GrayAlpha,
    Rgb,
    Rgba,
    /// CMYK as libjpeg delivers it (Adobe JPEGs already un-inverted).
    Cmyk,
}

impl Layout {
    pub fn channels(self) -> usize {
        match self {
            Self::Gray => 1,
            Self::GrayAlpha => 2,
            Self::Rgb => 3,
            Self::Rgba | Self::Cmyk => 4,
        }
    }

    pub fn has_alpha(self) -> bool {
        matches!(self, Self::GrayAlpha | Self::Rgba)
    }
}

/// Pixels, row-major without padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raster {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub pixels: Vec<u8>,
}

impl Raster {
    pub fn new(width: u32, height: u32, layout: Layout, pixels: Vec<u8>) -> Self {
        debug_assert_eq!(
            pixels.len(),
            width as usize * height as usize * layout.channels()
        );
        Self {
            width,
            height,
            layout,
            pixels,
        }
    }
}
