//! Line plots (training and validation loss versus step, ...) rendered to PNG with no font or
//! plotting dependency.
//!
//! [`render`] draws onto a white RGB canvas: a framed plot area with light grid lines, x and y
//! axes with 4–6 "nice" ticks (1-2-5 steps, or decades on a log y axis), axis labels, a title,
//! a legend with one colored swatch per named series, and a 2 px polyline per series. Text uses
//! the built-in 5×7 bitmap font [`FONT`] (printable ASCII, descenders in an 8th row), drawn
//! ×2, or ×3 for the title; other characters are drawn as `?`. [`write_png`] renders and writes
//! a PNG atomically.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, RgbImage};

use crate::error::{Error, Result};

/// A default palette of distinguishable colors (matplotlib's first six "tab10" colors: blue,
/// orange, green, red, purple, brown).
pub const PALETTE: [[u8; 3]; 6] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
];

/// One line of a plot: `(x, y)` points joined in the given order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend entry; series with an empty name get none (no legend if all are empty).
    pub name: String,
    /// The points, drawn in order. Non-finite points (and y ≤ 0 on a log axis) are skipped.
    pub points: Vec<(f64, f64)>,
    /// The line color, RGB.
    pub color: [u8; 3],
}

impl Series {
    /// A series from its parts.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>, color: [u8; 3]) -> Self {
        Series {
            name: name.into(),
            points,
            color,
        }
    }
}

/// What to draw around the series: title, axis labels, y scale and image size.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotSpec {
    /// The title above the plot (none if empty).
    pub title: String,
    /// The label under the x axis (none if empty).
    pub x_label: String,
    /// The label left of the y axis, written bottom to top (none if empty).
    pub y_label: String,
    /// A log10 y axis; points with y ≤ 0 are then skipped.
    pub log_y: bool,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
}

impl Default for PlotSpec {
    /// 900 × 560, no title or labels, linear y axis.
    fn default() -> Self {
        PlotSpec {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            log_y: false,
            width: 900,
            height: 560,
        }
    }
}

/// The largest width or height [`render`] accepts.
const MAX_SIDE: u32 = 16_384;

const WHITE: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [34, 34, 34];
const FRAME: [u8; 3] = [60, 60, 60];
const GRID: [u8; 3] = [226, 226, 226];
const LEGEND_BORDER: [u8; 3] = [175, 175, 175];

/// Text scale of labels, ticks and legend (5×7 glyphs drawn as 10×14).
const TEXT_SCALE: i64 = 2;
/// Text scale of the title when it fits (else [`TEXT_SCALE`]).
const TITLE_SCALE: i64 = 3;
/// Glyph width in font pixels.
const GLYPH_W: i64 = 5;
/// Glyph cell height in font pixels: 7 rows above the baseline and 1 descender row.
const GLYPH_H: i64 = 8;
/// Rows above the baseline (cap height).
const CAP_H: i64 = 7;
/// Horizontal advance per character in font pixels (glyph + 1 column of spacing).
const ADVANCE: i64 = 6;
/// Length of the tick marks outside the frame.
const TICK_LEN: i64 = 5;

/// The built-in bitmap font: printable ASCII 32..=126, one `[u8; 8]` per character, one byte per
/// row from the top, bit 4 the leftmost of 5 columns. Rows 0–6 sit above the baseline, row 7
/// holds descenders (`g j p q y , _`).
pub const FONT: [[u8; 8]; 95] = [
    [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], // ' '
    [0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04, 0x00], // '!'
    [0x0a, 0x0a, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00], // '"'
    [0x0a, 0x0a, 0x1f, 0x0a, 0x1f, 0x0a, 0x0a, 0x00], // '#'
    [0x04, 0x0f, 0x14, 0x0e, 0x05, 0x1e, 0x04, 0x00], // '$'
    [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03, 0x00], // '%'
    [0x0c, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0d, 0x00], // '&'
    [0x04, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00], // '\''
    [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02, 0x00], // '('
    [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08, 0x00], // ')'
    [0x00, 0x04, 0x15, 0x0e, 0x15, 0x04, 0x00, 0x00], // '*'
    [0x00, 0x04, 0x04, 0x1f, 0x04, 0x04, 0x00, 0x00], // '+'
    [0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x04, 0x08], // ','
    [0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00, 0x00], // '-'
    [0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c, 0x00], // '.'
    [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00, 0x00], // '/'
    [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e, 0x00], // '0'
    [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e, 0x00], // '1'
    [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f, 0x00], // '2'
    [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e, 0x00], // '3'
    [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02, 0x00], // '4'
    [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e, 0x00], // '5'
    [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e, 0x00], // '6'
    [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08, 0x00], // '7'
    [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e, 0x00], // '8'
    [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c, 0x00], // '9'
    [0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00, 0x00], // ':'
    [0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x04, 0x08, 0x00], // ';'
    [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02, 0x00], // '<'
    [0x00, 0x00, 0x1f, 0x00, 0x1f, 0x00, 0x00, 0x00], // '='
    [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08, 0x00], // '>'
    [0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04, 0x00], // '?'
    [0x0e, 0x11, 0x01, 0x0d, 0x15, 0x15, 0x0e, 0x00], // '@'
    [0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11, 0x00], // 'A'
    [0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e, 0x00], // 'B'
    [0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e, 0x00], // 'C'
    [0x1c, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1c, 0x00], // 'D'
    [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f, 0x00], // 'E'
    [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10, 0x00], // 'F'
    [0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f, 0x00], // 'G'
    [0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11, 0x00], // 'H'
    [0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e, 0x00], // 'I'
    [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c, 0x00], // 'J'
    [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11, 0x00], // 'K'
    [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f, 0x00], // 'L'
    [0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11, 0x00], // 'M'
    [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x00], // 'N'
    [0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e, 0x00], // 'O'
    [0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10, 0x00], // 'P'
    [0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d, 0x00], // 'Q'
    [0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11, 0x00], // 'R'
    [0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e, 0x00], // 'S'
    [0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x00], // 'T'
    [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e, 0x00], // 'U'
    [0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04, 0x00], // 'V'
    [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a, 0x00], // 'W'
    [0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11, 0x00], // 'X'
    [0x11, 0x11, 0x11, 0x0a, 0x04, 0x04, 0x04, 0x00], // 'Y'
    [0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f, 0x00], // 'Z'
    [0x0e, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0e, 0x00], // '['
    [0x00, 0x10, 0x08, 0x04, 0x02, 0x01, 0x00, 0x00], // '\\'
    [0x0e, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0e, 0x00], // ']'
    [0x04, 0x0a, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00], // '^'
    [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1f], // '_'
    [0x08, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00], // '`'
    [0x00, 0x00, 0x0e, 0x01, 0x0f, 0x11, 0x0f, 0x00], // 'a'
    [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1e, 0x00], // 'b'
    [0x00, 0x00, 0x0e, 0x10, 0x10, 0x11, 0x0e, 0x00], // 'c'
    [0x01, 0x01, 0x0d, 0x13, 0x11, 0x11, 0x0f, 0x00], // 'd'
    [0x00, 0x00, 0x0e, 0x11, 0x1f, 0x10, 0x0e, 0x00], // 'e'
    [0x06, 0x09, 0x08, 0x1c, 0x08, 0x08, 0x08, 0x00], // 'f'
    [0x00, 0x00, 0x0f, 0x11, 0x11, 0x0f, 0x01, 0x0e], // 'g'
    [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11, 0x00], // 'h'
    [0x04, 0x00, 0x0c, 0x04, 0x04, 0x04, 0x0e, 0x00], // 'i'
    [0x02, 0x00, 0x06, 0x02, 0x02, 0x02, 0x12, 0x0c], // 'j'
    [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12, 0x00], // 'k'
    [0x0c, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e, 0x00], // 'l'
    [0x00, 0x00, 0x1a, 0x15, 0x15, 0x15, 0x15, 0x00], // 'm'
    [0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11, 0x00], // 'n'
    [0x00, 0x00, 0x0e, 0x11, 0x11, 0x11, 0x0e, 0x00], // 'o'
    [0x00, 0x00, 0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10], // 'p'
    [0x00, 0x00, 0x0f, 0x11, 0x11, 0x0f, 0x01, 0x01], // 'q'
    [0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10, 0x00], // 'r'
    [0x00, 0x00, 0x0f, 0x10, 0x0e, 0x01, 0x1e, 0x00], // 's'
    [0x08, 0x08, 0x1c, 0x08, 0x08, 0x09, 0x06, 0x00], // 't'
    [0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0d, 0x00], // 'u'
    [0x00, 0x00, 0x11, 0x11, 0x11, 0x0a, 0x04, 0x00], // 'v'
    [0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0a, 0x00], // 'w'
    [0x00, 0x00, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x00], // 'x'
    [0x00, 0x00, 0x11, 0x11, 0x11, 0x0f, 0x01, 0x0e], // 'y'
    [0x00, 0x00, 0x1f, 0x02, 0x04, 0x08, 0x1f, 0x00], // 'z'
    [0x03, 0x04, 0x04, 0x08, 0x04, 0x04, 0x03, 0x00], // '{'
    [0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x00], // '|'
    [0x18, 0x04, 0x04, 0x02, 0x04, 0x04, 0x18, 0x00], // '}'
    [0x00, 0x00, 0x08, 0x15, 0x02, 0x00, 0x00, 0x00], // '~'
];

/// The glyph of `c` (`?` for characters outside printable ASCII).
fn glyph(c: char) -> &'static [u8; 8] {
    let code = c as u32;
    let index = if (32..=126).contains(&code) {
        code - 32
    } else {
        u32::from(b'?') - 32
    };
    &FONT[index as usize]
}

/// Width in pixels of `text` drawn at `scale` (no trailing spacing).
fn text_width(text: &str, scale: i64) -> i64 {
    let n = text.chars().count() as i64;
    if n == 0 {
        0
    } else {
        (n * ADVANCE - (ADVANCE - GLYPH_W)) * scale
    }
}

/// A half-open pixel rectangle `[x0, x1) × [y0, y1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rect {
    x0: i64,
    y0: i64,
    x1: i64,
    y1: i64,
}

impl Rect {
    fn contains(&self, x: i64, y: i64) -> bool {
        x >= self.x0 && x < self.x1 && y >= self.y0 && y < self.y1
    }
}

/// An RGB pixel buffer with clipped drawing primitives.
struct Canvas {
    w: i64,
    h: i64,
    buf: Vec<u8>,
}

impl Canvas {
    fn new(w: u32, h: u32, background: [u8; 3]) -> Self {
        let n = w as usize * h as usize;
        let mut buf = Vec::with_capacity(n * 3);
        for _ in 0..n {
            buf.extend_from_slice(&background);
        }
        Canvas {
            w: i64::from(w),
            h: i64::from(h),
            buf,
        }
    }

    fn index(&self, x: i64, y: i64) -> Option<usize> {
        (x >= 0 && y >= 0 && x < self.w && y < self.h).then(|| ((y * self.w + x) * 3) as usize)
    }

    fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if let Some(i) = self.index(x, y) {
            self.buf[i..i + 3].copy_from_slice(&c);
        }
    }

    fn get(&self, x: i64, y: i64) -> Option<[u8; 3]> {
        self.index(x, y)
            .map(|i| [self.buf[i], self.buf[i + 1], self.buf[i + 2]])
    }

    /// Fills `r` (clipped to the canvas).
    fn fill(&mut self, r: Rect, c: [u8; 3]) {
        for y in r.y0.max(0)..r.y1.min(self.h) {
            for x in r.x0.max(0)..r.x1.min(self.w) {
                self.put(x, y, c);
            }
        }
    }

    /// A 1 px outline just inside `r`.
    fn outline(&mut self, r: Rect, c: [u8; 3]) {
        self.fill(Rect { y1: r.y0 + 1, ..r }, c);
        self.fill(Rect { y0: r.y1 - 1, ..r }, c);
        self.fill(Rect { x1: r.x0 + 1, ..r }, c);
        self.fill(Rect { x0: r.x1 - 1, ..r }, c);
    }

    /// A 2 px line from `a` to `b` (Bresenham with a 2×2 brush), clipped to `clip`.
    fn line(&mut self, a: (i64, i64), b: (i64, i64), c: [u8; 3], clip: Rect) {
        let (mut x, mut y) = a;
        let dx = (b.0 - x).abs();
        let dy = -(b.1 - y).abs();
        let sx = if x < b.0 { 1 } else { -1 };
        let sy = if y < b.1 { 1 } else { -1 };
        let mut err = dx + dy;
        loop {
            for (ox, oy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                if clip.contains(x + ox, y + oy) {
                    self.put(x + ox, y + oy, c);
                }
            }
            if x == b.0 && y == b.1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Draws `text` left to right with its top-left corner at `(x, y)`.
    fn text(&mut self, x: i64, y: i64, text: &str, scale: i64, c: [u8; 3]) {
        for (i, ch) in text.chars().enumerate() {
            let left = x + i as i64 * ADVANCE * scale;
            for (row, bits) in glyph(ch).iter().enumerate() {
                for col in 0..GLYPH_W {
                    if bits >> (GLYPH_W - 1 - col) & 1 == 1 {
                        let (px, py) = (left + col * scale, y + row as i64 * scale);
                        self.fill(
                            Rect {
                                x0: px,
                                y0: py,
                                x1: px + scale,
                                y1: py + scale,
                            },
                            c,
                        );
                    }
                }
            }
        }
    }

    /// Draws `text` bottom to top (rotated 90° counter-clockwise): glyph tops face left, the
    /// text starts at `bottom` and occupies columns `left..left + GLYPH_H * scale`.
    fn text_up(&mut self, left: i64, bottom: i64, text: &str, scale: i64, c: [u8; 3]) {
        for (i, ch) in text.chars().enumerate() {
            let start = i as i64 * ADVANCE;
            for (row, bits) in glyph(ch).iter().enumerate() {
                for col in 0..GLYPH_W {
                    if bits >> (GLYPH_W - 1 - col) & 1 == 1 {
                        let px = left + row as i64 * scale;
                        let py = bottom - (start + col + 1) * scale;
                        self.fill(
                            Rect {
                                x0: px,
                                y0: py,
                                x1: px + scale,
                                y1: py + scale,
                            },
                            c,
                        );
                    }
                }
            }
        }
    }

    /// Pixels of `r` that are neither background nor grid (i.e. data).
    fn ink(&self, r: Rect) -> usize {
        let mut n = 0;
        for y in r.y0..r.y1 {
            for x in r.x0..r.x1 {
                if let Some(p) = self.get(x, y)
                    && p != WHITE
                    && p != GRID
                {
                    n += 1;
                }
            }
        }
        n
    }

    fn into_image(self) -> Result<RgbImage> {
        let (w, h) = (self.w as u32, self.h as u32);
        RgbImage::from_raw(w, h, self.buf)
            .ok_or_else(|| Error::Value(format!("plot: pixel buffer does not match {w}x{h}")))
    }
}

/// `n · 10^e`, computed so that decimal tick values are the nearest doubles (0.3, not
/// 0.30000000000000004).
fn scaled(n: i64, e: i32) -> f64 {
    if e >= 0 {
        n as f64 * 10f64.powi(e)
    } else if e >= -300 {
        n as f64 / 10f64.powi(-e)
    } else {
        n as f64 * 10f64.powi(e)
    }
}

/// Evenly spaced ticks `k · m · 10^e` for `k` in `k0..=k1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NiceTicks {
    /// Step mantissa: 1, 2 or 5.
    m: i64,
    /// Step exponent.
    e: i32,
    k0: i64,
    k1: i64,
}

impl NiceTicks {
    fn count(&self) -> i64 {
        self.k1 - self.k0 + 1
    }

    fn values(&self) -> Vec<f64> {
        (self.k0..=self.k1)
            .map(|k| scaled(k * self.m, self.e))
            .collect()
    }

    /// Labels with as many decimals as the step needs, in scientific notation for values of a
    /// million or more and for steps below 10⁻⁴.
    fn labels(&self) -> Vec<(f64, String)> {
        let values = self.values();
        let max_abs = values.iter().fold(0f64, |a, v| a.max(v.abs()));
        let sci = max_abs >= 1e6 || self.e < -4;
        values
            .into_iter()
            .map(|v| {
                let label = if v == 0.0 {
                    "0".to_string()
                } else if sci {
                    let digits = (max_abs.log10().floor() as i64 - i64::from(self.e)).clamp(0, 12);
                    format!("{:.*e}", digits as usize, v)
                } else {
                    format!("{:.*}", (-self.e).max(0) as usize, v)
                };
                (v, label)
            })
            .collect()
    }
}

/// Chooses a 1-2-5 step for `[lo, hi]` so that 4–6 ticks fall inside (5 preferred); where no
/// step does that (e.g. 0.5..7.0: 7 ticks at step 1, 3 at step 2) the closest count wins.
/// `None` if the range is empty or not finite.
fn nice_ticks(lo: f64, hi: f64) -> Option<NiceTicks> {
    let span = hi - lo;
    if !(lo.is_finite() && hi.is_finite() && span.is_finite() && span > 0.0) {
        return None;
    }
    let e0 = (span / 5.0).log10().floor() as i32;
    let mut best: Option<((i64, i64), NiceTicks)> = None;
    for e in e0 - 1..=e0 + 1 {
        for m in [1, 2, 5] {
            let step = scaled(m, e);
            let k0 = (lo / step - 1e-9).ceil() as i64;
            let k1 = (hi / step + 1e-9).floor() as i64;
            let t = NiceTicks { m, e, k0, k1 };
            let n = t.count();
            let score = ((4 - n).max(n - 6).max(0), (n - 5).abs());
            if best.is_none_or(|(s, _)| score < s) {
                best = Some((score, t));
            }
        }
    }
    best.map(|(_, t)| t)
}

/// Ticks for a log10 axis spanning `[lo, hi]` (exponents): `(exponent, label)` pairs.
///
/// Up to 4 decades: mantissas 1-2-5 within each decade (at most 7 ticks), else 1-3 (at most 8);
/// wider: powers of ten every 1, 2, 5, 10, ... decades (at most 6). Under about a decade, where
/// fewer than 3 of those fit, linear 1-2-5 ticks placed on the log axis.
fn log_ticks(lo: f64, hi: f64) -> Vec<(f64, String)> {
    let inside = |p: f64| p >= lo - 1e-9 && p <= hi + 1e-9;
    if hi - lo < 4.0 {
        for (mantissas, most) in [(&[1i64, 2, 5][..], 7), (&[1, 3], 8)] {
            let mut ticks = Vec::new();
            for e in lo.floor() as i32..=hi.ceil() as i32 {
                for &m in mantissas {
                    let v = scaled(m, e);
                    if inside(v.log10()) {
                        let label = if (-4..=5).contains(&e) {
                            format!("{:.*}", (-e).max(0) as usize, v)
                        } else {
                            format!("{m}e{e}")
                        };
                        ticks.push((v.log10(), label));
                    }
                }
            }
            if ticks.len() < 3 {
                // Linear ticks placed on the log axis.
                return nice_ticks(10f64.powf(lo), 10f64.powf(hi))
                    .map(|t| t.labels())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|&(v, _)| v > 0.0 && inside(v.log10()))
                    .map(|(v, label)| (v.log10(), label))
                    .collect();
            }
            if ticks.len() <= most {
                return ticks;
            }
        }
    }
    let mut step = 1i64;
    for d in [1i64, 2, 5, 10, 20, 50, 100] {
        step = d;
        let n = (hi / d as f64).floor() as i64 - (lo / d as f64).ceil() as i64 + 1;
        if n <= 6 {
            break;
        }
    }
    let k0 = (lo / step as f64 - 1e-9).ceil() as i64;
    let k1 = (hi / step as f64 + 1e-9).floor() as i64;
    let exps: Vec<i64> = (k0..=k1).map(|k| k * step).collect();
    let plain = exps.iter().all(|e| (-3..=5).contains(e));
    exps.into_iter()
        .map(|e| {
            let label = match e {
                _ if !plain => format!("1e{e}"),
                0.. => format!("1{}", "0".repeat(e as usize)),
                _ => format!("0.{}1", "0".repeat((-e - 1) as usize)),
            };
            (e as f64, label)
        })
        .collect()
}

/// One axis: its range and ticks, in axis space (log10 of the value on a log axis).
#[derive(Debug, Clone)]
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<(f64, String)>,
}

impl Axis {
    /// A linear axis over `[lo, hi]`.
    fn linear(lo: f64, hi: f64) -> Self {
        let ticks = nice_ticks(lo, hi).map(|t| t.labels()).unwrap_or_default();
        Axis { lo, hi, ticks }
    }

    /// Position of `v` (axis space) as a fraction of the axis length.
    fn frac(&self, v: f64) -> f64 {
        (v - self.lo) / (self.hi - self.lo)
    }
}

/// `[lo, hi]` widened by `margin` of its span on each side; a (near-)empty range is padded
/// around its center by 5% of its magnitude (or by `min_pad` if larger).
fn padded(lo: f64, hi: f64, margin: f64, min_pad: f64) -> Result<(f64, f64)> {
    let span = hi - lo;
    let magnitude = lo.abs().max(hi.abs());
    let (lo, hi) = if span > 1e-9 * magnitude && span > 0.0 {
        (lo - margin * span, hi + margin * span)
    } else {
        let center = lo / 2.0 + hi / 2.0;
        let pad = (center.abs() * 0.05).max(min_pad);
        (center - pad, center + pad)
    };
    if lo.is_finite() && hi.is_finite() && (hi - lo).is_finite() && hi > lo {
        Ok((lo, hi))
    } else {
        Err(Error::Value(format!(
            "plot: the data range [{lo}, {hi}] is too large to plot"
        )))
    }
}

/// Renders the series as a line plot into an RGB image of `spec.width × spec.height`.
///
/// Non-finite points, and points with y ≤ 0 on a log y axis, are skipped. The x range is the
/// data's, the y range the data's padded by 5% (a constant series or a single point is padded
/// around its value). Errors with [`Error::Value`] if no series has a drawable point or the
/// image is too small (or larger than 16384 px a side) for the plot and its labels.
pub fn render(spec: &PlotSpec, series: &[Series]) -> Result<RgbImage> {
    let (w, h) = (spec.width, spec.height);
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE {
        return Err(Error::Value(format!(
            "plot: image size {w}x{h} must be between 1 and {MAX_SIDE} pixels a side"
        )));
    }

    // Points in axis space (log10 y on a log axis).
    let data: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!spec.log_y || *y > 0.0))
                .map(|&(x, y)| (x, if spec.log_y { y.log10() } else { y }))
                .collect()
        })
        .collect();
    let mut bounds: Option<(f64, f64, f64, f64)> = None;
    for &(x, y) in data.iter().flatten() {
        let (x0, x1, y0, y1) = bounds.unwrap_or((x, x, y, y));
        bounds = Some((x0.min(x), x1.max(x), y0.min(y), y1.max(y)));
    }
    let Some((x_min, x_max, y_min, y_max)) = bounds else {
        let why = if spec.log_y {
            "finite, with y > 0 on the log y axis"
        } else {
            "finite"
        };
        return Err(Error::Value(format!(
            "plot: no drawable point in any of the {} series (points must be {why})",
            series.len()
        )));
    };

    let (x_lo, x_hi) = padded(x_min, x_max, 0.0, 1.0)?;
    let x_axis = Axis::linear(x_lo, x_hi);
    let y_axis = if spec.log_y {
        let (lo, hi) = padded(y_min, y_max, 0.05, 0.1)?;
        Axis {
            lo,
            hi,
            ticks: log_ticks(lo, hi),
        }
    } else {
        let (lo, hi) = padded(y_min, y_max, 0.05, 1.0)?;
        Axis::linear(lo, hi)
    };

    // Layout.
    let s = TEXT_SCALE;
    let line_h = GLYPH_H * s;
    let (iw, ih) = (i64::from(w), i64::from(h));
    let title_scale = if text_width(&spec.title, TITLE_SCALE) <= iw - 20 {
        TITLE_SCALE
    } else {
        s
    };
    let top = if spec.title.is_empty() {
        16
    } else {
        12 + GLYPH_H * title_scale + 10
    };
    let y_tick_w = y_axis
        .ticks
        .iter()
        .map(|(_, l)| text_width(l, s))
        .max()
        .unwrap_or(0);
    let y_label_w = if spec.y_label.is_empty() {
        0
    } else {
        line_h + 10
    };
    let left = 12 + y_label_w + y_tick_w + 6 + TICK_LEN;
    let x_label_h = if spec.x_label.is_empty() {
        0
    } else {
        line_h + 8
    };
    let bottom = TICK_LEN + 6 + line_h + x_label_h + 10;
    let last_x_tick_w = x_axis.ticks.last().map_or(0, |(_, l)| text_width(l, s));
    let right = (last_x_tick_w / 2 + 8).max(24);
    let area = Rect {
        x0: left,
        y0: top,
        x1: iw - right,
        y1: ih - bottom,
    };
    if area.x1 - area.x0 < 40 || area.y1 - area.y0 < 40 {
        return Err(Error::Value(format!(
            "plot: image size {w}x{h} is too small for the plot and its labels"
        )));
    }
    let (pw, ph) = (
        (area.x1 - area.x0 - 1) as f64,
        (area.y1 - area.y0 - 1) as f64,
    );
    let px = |x: f64| area.x0 + (x_axis.frac(x) * pw).round().clamp(-1.0, pw + 1.0) as i64;
    let py = |y: f64| area.y1 - 1 - (y_axis.frac(y) * ph).round().clamp(-1.0, ph + 1.0) as i64;

    let mut c = Canvas::new(w, h, WHITE);

    // Grid.
    for (v, _) in &x_axis.ticks {
        c.fill(
            Rect {
                x0: px(*v),
                x1: px(*v) + 1,
                ..area
            },
            GRID,
        );
    }
    for (v, _) in &y_axis.ticks {
        c.fill(
            Rect {
                y0: py(*v),
                y1: py(*v) + 1,
                ..area
            },
            GRID,
        );
    }

    // Series: a 2 px polyline, or a square marker for a lone point.
    for (s, points) in series.iter().zip(&data) {
        if let [(x, y)] = points[..] {
            let (cx, cy) = (px(x), py(y));
            let r = Rect {
                x0: cx - 3,
                y0: cy - 3,
                x1: cx + 4,
                y1: cy + 4,
            };
            c.fill(r, s.color);
            continue;
        }
        let mut last: Option<(i64, i64)> = None;
        for &(x, y) in points {
            let p = (px(x), py(y));
            match last {
                Some(q) if q == p => {}
                Some(q) => c.line(q, p, s.color, area),
                None => {}
            }
            last = Some(p);
        }
    }

    // Legend, in the corner of the plot area that hides the least data.
    let entries: Vec<&Series> = series.iter().filter(|s| !s.name.is_empty()).collect();
    let legend = if entries.is_empty() {
        None
    } else {
        let (pad, swatch_w, row_h) = (8, 22, line_h + 6);
        let name_w = entries
            .iter()
            .map(|e| text_width(&e.name, s))
            .max()
            .unwrap_or(0);
        let (lw, lh) = (
            pad + swatch_w + 8 + name_w + pad,
            2 * pad + row_h * entries.len() as i64 - 6,
        );
        let (gap, (x0, y0, x1, y1)) = (10, (area.x0, area.y0, area.x1, area.y1));
        let corners = [
            (x1 - gap - lw, y0 + gap),
            (x0 + gap, y0 + gap),
            (x1 - gap - lw, y1 - gap - lh),
            (x0 + gap, y1 - gap - lh),
        ];
        let rects = corners.map(|(x, y)| Rect {
            x0: x,
            y0: y,
            x1: x + lw,
            y1: y + lh,
        });
        let mut best = rects[0];
        let mut best_ink = usize::MAX;
        for r in rects {
            let ink = c.ink(r);
            if ink < best_ink {
                (best, best_ink) = (r, ink);
            }
        }
        Some((best, pad, swatch_w, row_h))
    };

    // Frame and ticks.
    let frame = Rect {
        x0: area.x0 - 1,
        y0: area.y0 - 1,
        x1: area.x1 + 1,
        y1: area.y1 + 1,
    };
    c.outline(frame, FRAME);
    let label_top = area.y1 + 1 + TICK_LEN + 5;
    for (v, label) in &x_axis.ticks {
        let x = px(*v);
        c.fill(
            Rect {
                x0: x,
                y0: area.y1 + 1,
                x1: x + 1,
                y1: area.y1 + 1 + TICK_LEN,
            },
            FRAME,
        );
        c.text(x - text_width(label, s) / 2, label_top, label, s, INK);
    }
    for (v, label) in &y_axis.ticks {
        let y = py(*v);
        c.fill(
            Rect {
                x0: area.x0 - 1 - TICK_LEN,
                y0: y,
                x1: area.x0 - 1,
                y1: y + 1,
            },
            FRAME,
        );
        let right_edge = area.x0 - 1 - TICK_LEN - 5;
        c.text(
            right_edge - text_width(label, s),
            y - CAP_H * s / 2,
            label,
            s,
            INK,
        );
    }

    // Title and axis labels, centered on the plot area.
    let center_x = (area.x0 + area.x1) / 2;
    let center_y = (area.y0 + area.y1) / 2;
    if !spec.title.is_empty() {
        let x = (center_x - text_width(&spec.title, title_scale) / 2).max(4);
        c.text(x, 12, &spec.title, title_scale, INK);
    }
    if !spec.x_label.is_empty() {
        let x = (center_x - text_width(&spec.x_label, s) / 2).max(4);
        c.text(x, label_top + line_h + 8, &spec.x_label, s, INK);
    }
    if !spec.y_label.is_empty() {
        let bottom = (center_y + text_width(&spec.y_label, s) / 2).min(ih - 4);
        c.text_up(12, bottom, &spec.y_label, s, INK);
    }

    if let Some((r, pad, swatch_w, row_h)) = legend {
        c.fill(r, WHITE);
        c.outline(r, LEGEND_BORDER);
        for (i, e) in entries.iter().enumerate() {
            let top = r.y0 + pad + i as i64 * row_h;
            let mid = top + CAP_H * s / 2;
            let x0 = r.x0 + pad;
            c.fill(
                Rect {
                    x0,
                    y0: mid - 4,
                    x1: x0 + swatch_w,
                    y1: mid + 4,
                },
                e.color,
            );
            c.text(x0 + swatch_w + 8, top, &e.name, s, INK);
        }
    }

    c.into_image()
}

/// `<path>.tmp`, the file [`write_png`] writes before renaming.
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Encodes `img` as PNG into a new file at `tmp`, flushed and synced; errors name `path`.
fn write_tmp(tmp: &Path, path: &Path, img: &RgbImage) -> Result<()> {
    let file = File::create(tmp).map_err(|e| Error::io(path, e))?;
    let mut out = BufWriter::new(file);
    PngEncoder::new(&mut out)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            ExtendedColorType::Rgb8,
        )
        .map_err(|e| match e {
            image::ImageError::IoError(e) => Error::io(path, e),
            other => Error::io(path, std::io::Error::other(other)),
        })?;
    let file = out
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

/// Renders the plot (see [`render`]) and writes it to `path` as a PNG, atomically: the image
/// goes to `<path>.tmp` first, which is then renamed over `path`. On error nothing is left
/// behind (no `.tmp`, and an existing `path` is untouched).
pub fn write_png(path: &Path, spec: &PlotSpec, series: &[Series]) -> Result<()> {
    let img = render(spec, series)?;
    let tmp = tmp_path(path);
    let result = write_tmp(&tmp, path, &img)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` points `(step, f(t))` at steps 0, 5000/n, ... (t = step / 5000).
    fn curve(n: usize, f: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        (0..n)
            .map(|i| {
                let t = i as f64 / n as f64;
                (t * 5000.0, f(t))
            })
            .collect()
    }

    fn two_series() -> Vec<Series> {
        let wiggle = |t: f64| 0.08 * (t * 300.0).sin() * (1.0 - t);
        vec![
            Series::new(
                "train_loss",
                curve(500, |t| 6.0 * (-3.0 * t).exp() + 2.0 + wiggle(t)),
                PALETTE[0],
            ),
            Series::new(
                "val_loss",
                curve(25, |t| 6.2 * (-2.8 * t).exp() + 2.2),
                PALETTE[1],
            ),
        ]
    }

    fn spec() -> PlotSpec {
        PlotSpec {
            title: "MDM-Prime loss (ell = 2)".into(),
            x_label: "step".into(),
            y_label: "loss (nats/token)".into(),
            ..PlotSpec::default()
        }
    }

    fn count(img: &RgbImage, c: [u8; 3]) -> usize {
        img.pixels().filter(|p| p.0 == c).count()
    }

    /// Checks a 1-2-5 step and returns the tick values.
    fn ticks(lo: f64, hi: f64) -> Vec<f64> {
        let t = nice_ticks(lo, hi).unwrap();
        assert!([1, 2, 5].contains(&t.m), "{t:?}");
        t.values()
    }

    fn assert_close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-12 * w.abs().max(1.0),
                "{got:?} vs {want:?}"
            );
        }
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mdm-prime-plot-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn renders_two_series() {
        let img = render(&spec(), &two_series()).unwrap();
        assert_eq!(img.dimensions(), (900, 560));
        // Both lines (not just the legend swatches: 22×8 px each) are drawn.
        assert!(
            count(&img, PALETTE[0]) > 1000,
            "{}",
            count(&img, PALETTE[0])
        );
        assert!(
            count(&img, PALETTE[1]) > 1000,
            "{}",
            count(&img, PALETTE[1])
        );
        let white = count(&img, WHITE) as f64 / (900.0 * 560.0);
        assert!(white > 0.8, "white fraction {white}");
        // Text is drawn: the title row has ink.
        assert!((0..900).any(|x| (12..36).any(|y| img.get_pixel(x, y).0 == INK)));
    }

    #[test]
    fn lines_without_names_have_no_legend_and_stay_in_the_frame() {
        let mut series = two_series();
        for s in &mut series {
            s.name.clear();
        }
        let img = render(&PlotSpec::default(), &series).unwrap();
        assert!(count(&img, PALETTE[0]) > 1000);
        assert!(count(&img, LEGEND_BORDER) == 0);
        // No series color outside the plot area's bounding box of colored pixels' frame.
        let frame_cols: Vec<u32> = (0..900)
            .filter(|&x| img.get_pixel(x, 280).0 == FRAME)
            .collect();
        let (fx0, fx1) = (frame_cols[0], *frame_cols.last().unwrap());
        for (x, _, p) in img.enumerate_pixels() {
            if p.0 == PALETTE[0] || p.0 == PALETTE[1] {
                assert!(
                    x > fx0 && x < fx1,
                    "series pixel at x = {x}, frame {fx0}..{fx1}"
                );
            }
        }
    }

    #[test]
    fn nice_ticks_use_1_2_5_steps() {
        assert_close(&ticks(0.0, 1.0), &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_close(&ticks(3.1, 7.9), &[4.0, 5.0, 6.0, 7.0]);
        assert_close(&ticks(-1.0, 1.0), &[-1.0, -0.5, 0.0, 0.5, 1.0]);
        assert_close(&ticks(0.0, 100_000.0), &[0.0, 2e4, 4e4, 6e4, 8e4, 1e5]);
        assert_close(&ticks(2.31, 2.52), &[2.35, 2.4, 2.45, 2.5]);
        assert_close(
            &ticks(-7.3e-5, -2.1e-5),
            &[-7e-5, -6e-5, -5e-5, -4e-5, -3e-5],
        );
        // Exact decimals, not 0.30000000000000004.
        assert!(ticks(0.0, 1.0).contains(&0.6));
        // Every range gets 3-7 ticks inside it, 4-6 where a 1-2-5 step allows.
        for i in 1..2000 {
            let lo = (i as f64 * 0.37).sin() * 10f64.powi(i % 7 - 3);
            let hi = lo + (i as f64 * 0.11).cos().abs() * 10f64.powi(i % 5 - 2) + 1e-6;
            let v = ticks(lo, hi);
            assert!((3..=7).contains(&v.len()), "{lo}..{hi}: {v:?}");
            assert!(
                v.iter()
                    .all(|t| *t >= lo - 1e-9 * hi.abs() && *t <= hi + 1e-9 * hi.abs())
            );
        }
        assert!(nice_ticks(1.0, 1.0).is_none());
        assert!(nice_ticks(0.0, f64::NAN).is_none());
    }

    #[test]
    fn tick_labels_are_short_and_uniform() {
        let labels = |lo, hi| -> Vec<String> {
            nice_ticks(lo, hi)
                .unwrap()
                .labels()
                .into_iter()
                .map(|(_, l)| l)
                .collect()
        };
        assert_eq!(labels(0.0, 1.0), ["0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        assert_eq!(labels(3.1, 7.9), ["4", "5", "6", "7"]);
        assert_eq!(
            labels(0.0, 100_000.0),
            ["0", "20000", "40000", "60000", "80000", "100000"]
        );
        assert_eq!(
            labels(1e6, 3e6),
            ["1.0e6", "1.5e6", "2.0e6", "2.5e6", "3.0e6"]
        );
        assert_eq!(labels(1e-5, 5e-5), ["1e-5", "2e-5", "3e-5", "4e-5", "5e-5"]);
    }

    #[test]
    fn log_ticks_pick_decades_or_mantissas() {
        let t = |lo: f64, hi: f64| -> Vec<String> {
            log_ticks(lo.log10(), hi.log10())
                .into_iter()
                .map(|(_, l)| l)
                .collect()
        };
        assert_eq!(t(1e-3, 10.0), ["0.001", "0.01", "0.1", "1", "10"]);
        assert_eq!(t(1e-9, 1e3), ["1e-8", "1e-6", "1e-4", "1e-2", "1e0", "1e2"]);
        assert_eq!(t(0.9, 60.0), ["1", "2", "5", "10", "20", "50"]);
        assert_eq!(t(1.5, 8.5), ["2", "4", "6", "8"]);
        assert_eq!(t(0.15, 30.0), ["0.2", "0.5", "1", "2", "5", "10", "20"]);
        assert_eq!(t(0.15, 200.0), ["0.3", "1", "3", "10", "30", "100"]);
        assert_eq!(t(0.15, 2000.0), ["1", "10", "100", "1000"]);
    }

    #[test]
    fn log_axis_skips_nonpositive_points() {
        let spec = PlotSpec {
            log_y: true,
            ..spec()
        };
        let s = Series::new(
            "loss",
            vec![(0.0, 0.0), (1.0, 5.0), (2.0, -1.0), (3.0, 0.5)],
            PALETTE[2],
        );
        let img = render(&spec, &[s]).unwrap();
        assert!(count(&img, PALETTE[2]) > 200);
        let bad = Series::new("loss", vec![(0.0, 0.0), (1.0, -5.0)], PALETTE[2]);
        let err = render(&spec, &[bad]).unwrap_err().to_string();
        assert!(
            err.contains("no drawable point") && err.contains("y > 0"),
            "{err}"
        );
    }

    #[test]
    fn nothing_to_draw_is_an_error() {
        let err = render(&spec(), &[]).unwrap_err();
        assert!(matches!(err, Error::Value(_)), "{err}");
        let empty = Series::new("a", vec![], PALETTE[0]);
        assert!(matches!(render(&spec(), &[empty]), Err(Error::Value(_))));
        let nan = Series::new("a", vec![(f64::NAN, 1.0), (1.0, f64::INFINITY)], PALETTE[0]);
        let err = render(&spec(), &[nan]).unwrap_err().to_string();
        assert!(err.contains("no drawable point"), "{err}");
    }

    #[test]
    fn degenerate_inputs_still_render() {
        let one = Series::new("one", vec![(5.0, 2.5)], PALETTE[3]);
        let img = render(&spec(), &[one]).unwrap();
        assert!(count(&img, PALETTE[3]) >= 49);
        let flat = Series::new("flat", curve(100, |_| 0.0), PALETTE[4]);
        let img = render(
            &PlotSpec {
                log_y: false,
                ..spec()
            },
            &[flat],
        )
        .unwrap();
        assert!(count(&img, PALETTE[4]) > 1000);
        let flat = Series::new("flat", curve(100, |_| 3.0), PALETTE[4]);
        render(
            &PlotSpec {
                log_y: true,
                ..spec()
            },
            &[flat],
        )
        .unwrap();
        let mixed = Series::new(
            "nan",
            vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 3.0)],
            PALETTE[5],
        );
        render(&spec(), &[mixed]).unwrap();
        let huge = Series::new("huge", vec![(0.0, -f64::MAX), (1.0, f64::MAX)], PALETTE[0]);
        assert!(matches!(render(&spec(), &[huge]), Err(Error::Value(_))));
        let tiny = PlotSpec {
            width: 60,
            height: 40,
            ..spec()
        };
        assert!(matches!(render(&tiny, &two_series()), Err(Error::Value(_))));
        let zero = PlotSpec { width: 0, ..spec() };
        assert!(matches!(render(&zero, &two_series()), Err(Error::Value(_))));
    }

    #[test]
    fn many_points_render() {
        let s = Series::new(
            "noisy",
            curve(100_000, |t| 3.0 + (t * 5e3).sin() / (1.0 + 9.0 * t)),
            PALETTE[0],
        );
        let start = std::time::Instant::now();
        render(&spec(), &[s]).unwrap();
        // < 100 ms in release; generous here for debug builds.
        assert!(start.elapsed().as_secs_f64() < 2.0, "{:?}", start.elapsed());
    }

    #[test]
    fn font_covers_the_needed_characters() {
        for c in "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-e/():_%".chars() {
            assert!(glyph(c).iter().any(|&r| r != 0), "{c:?} is blank");
        }
        assert!(FONT.iter().flatten().all(|&r| r < 32));
        assert_eq!(glyph('α'), glyph('?'));
        assert_eq!(text_width("", 2), 0);
        assert_eq!(text_width("ab", 2), 22);
    }

    #[test]
    fn write_png_is_atomic_and_decodable() {
        let dir = scratch_dir("write");
        let path = dir.join("loss.png");
        write_png(&path, &spec(), &two_series()).unwrap();
        let img = image::open(&path).unwrap();
        assert_eq!((img.width(), img.height()), (900, 560));
        assert!(!tmp_path(&path).exists());
        // Overwriting works; a failed render leaves the old file untouched.
        write_png(
            &path,
            &PlotSpec {
                width: 400,
                height: 300,
                ..spec()
            },
            &two_series(),
        )
        .unwrap();
        assert!(write_png(&path, &spec(), &[]).is_err());
        assert_eq!(image::open(&path).unwrap().width(), 400);
        assert!(!tmp_path(&path).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn write_png_into_a_missing_directory_fails_cleanly() {
        let dir = scratch_dir("missing");
        let path = dir.join("no-such-dir").join("loss.png");
        let err = write_png(&path, &spec(), &two_series()).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(err.to_string().contains("loss.png"), "{err}");
        assert!(!path.exists() && !tmp_path(&path).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Writes an example to `$TMPDIR/example-plot.png` for a look by eye.
    #[test]
    #[ignore]
    fn example_plot() {
        let path = std::env::temp_dir().join("example-plot.png");
        write_png(&path, &spec(), &two_series()).unwrap();
        let log = PlotSpec {
            log_y: true,
            title: "log y: Loss vs step, 100% [a-z]".into(),
            ..spec()
        };
        write_png(
            &std::env::temp_dir().join("example-plot-log.png"),
            &log,
            &two_series(),
        )
        .unwrap();
    }
}
