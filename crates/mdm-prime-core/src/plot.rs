//! Line plots (training and validation loss versus step, ...) rendered to PNG with the
//! [`plotters`] crate and an embedded font, so no system font is needed.
//!
//! [`render`] draws onto a white RGB canvas with plotters' bitmap backend: a framed plot area
//! with light grid lines, x and y axes with ticks (decades on a log y axis), axis labels, a
//! title, a legend with one colored swatch per named series, and a 2 px line per series. Text is
//! set in DejaVu Sans, subset to Latin, Greek and a few symbols (ℓ, −, ≤, …) and embedded in the
//! binary (`assets/fonts/`, rebuilt by `scripts/subset-font.sh`; licence beside it); plotters
//! reads it through `ab_glyph`, never through the system's font configuration.
//! [`write_png`] renders and writes a PNG atomically (docs/decisions/0004-plotters.md).

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, RgbImage};
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::error::{Error, Result};

/// A default palette of distinguishable colors (matplotlib's ten "tab10" colors: blue, orange,
/// green, red, purple, brown, pink, grey, olive, cyan), so a plot of up to ten series never
/// repeats one.
pub const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
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
    /// Put the legend in a column of [`LEGEND_COLUMN`] px right of the plot instead of over its
    /// upper right corner (for plots with many series, whose lines the legend would hide); names
    /// too long for the column are shortened with "…". Ignored (the legend goes inside) when the
    /// image is narrower than three columns or too short for one row per named series.
    pub legend_beside: bool,
    /// Image width in pixels (the legend column included).
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
}

impl Default for PlotSpec {
    /// 900 × 560, no title or labels, linear y axis, the legend inside.
    fn default() -> Self {
        PlotSpec {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            log_y: false,
            legend_beside: false,
            width: 900,
            height: 560,
        }
    }
}

/// The smallest width and height [`render`] accepts: room for the axes, their labels and a
/// plot area.
const MIN_SIDE: (u32, u32) = (240, 160);
/// The largest width or height [`render`] accepts.
const MAX_SIDE: u32 = 16_384;
/// The width of the legend column of [`PlotSpec::legend_beside`].
pub const LEGEND_COLUMN: u32 = 260;
/// Where the column's first entry sits, and the distance between entries, in pixels.
const LEGEND_TOP: u32 = 64;
const LEGEND_ROW: u32 = 22;

/// The embedded font: DejaVu Sans 2.37 (Debian `fonts-dejavu-core`), subset by
/// `scripts/subset-font.sh`; Bitstream Vera licence in `assets/fonts/DejaVuSans-LICENSE.txt`.
const FONT_BYTES: &[u8] = include_bytes!("../assets/fonts/DejaVuSans-subset.ttf");
/// The family name the font is registered under with plotters.
const FONT: &str = "mdm-prime-sans";

const INK: RGBColor = RGBColor(34, 34, 34);
const GRID: RGBColor = RGBColor(226, 226, 226);
const LEGEND_BORDER: RGBColor = RGBColor(175, 175, 175);

/// Registers [`FONT_BYTES`] with plotters once per process.
fn font() -> Result<&'static str> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok());
    if ok {
        Ok(FONT)
    } else {
        Err(Error::Value(
            "plot: the embedded font (assets/fonts/DejaVuSans-subset.ttf) does not parse; \
             rebuild it with scripts/subset-font.sh"
                .into(),
        ))
    }
}

/// A plotters error as this crate's error.
fn drawing<E: std::fmt::Display>(e: E) -> Error {
    Error::Value(format!("plot: drawing failed: {e}"))
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

/// The drawable points of each series and the axis ranges: x the data's, y the data's padded
/// by 5% (a constant series or a single point is padded around its value; on a log axis the
/// padding is in log10 units).
type Drawable = (Vec<Vec<(f64, f64)>>, Range<f64>, Range<f64>);

fn drawable(spec: &PlotSpec, series: &[Series]) -> Result<Drawable> {
    let keep = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!spec.log_y || y > 0.0);
    let data: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| s.points.iter().copied().filter(keep).collect())
        .collect();
    let axis_y = |y: f64| if spec.log_y { y.log10() } else { y };
    let mut bounds: Option<(f64, f64, f64, f64)> = None;
    for &(x, y) in data.iter().flatten() {
        let y = axis_y(y);
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
            "plot: no drawable point (each point must be {why})"
        )));
    };
    let (x0, x1) = padded(x_min, x_max, 0.0, 0.5)?;
    let (y0, y1) = padded(y_min, y_max, 0.05, if spec.log_y { 0.1 } else { 0.5 })?;
    // A log axis spans whole decades: plotters labels only powers of 10 and the steps between.
    let (y0, y1) = if spec.log_y {
        (10f64.powf(y0.floor()), 10f64.powf(y1.ceil()))
    } else {
        (y0, y1)
    };
    if (spec.log_y && y0 <= 0.0) || !y1.is_finite() {
        return Err(Error::Value(format!(
            "plot: the log y range 10^[{}, {}] is too large to plot",
            y_min, y_max
        )));
    }
    Ok((data, x0..x1, y0..y1))
}

/// Renders the series as a line plot into an RGB image of `spec.width × spec.height`.
///
/// Non-finite points, and points with y ≤ 0 on a log y axis, are skipped. The x range is the
/// data's, the y range the data's padded by 5% (a constant series or a single point is padded
/// around its value). Errors with [`Error::Value`] if no series has a drawable point or the
/// image is smaller than 240 × 160 (room for the axes and labels) or larger than 16384 px a
/// side.
pub fn render(spec: &PlotSpec, series: &[Series]) -> Result<RgbImage> {
    let (w, h) = (spec.width, spec.height);
    if w < MIN_SIDE.0 || h < MIN_SIDE.1 || w > MAX_SIDE || h > MAX_SIDE {
        return Err(Error::Value(format!(
            "plot: image size {w}x{h} must be between {}x{} and {MAX_SIDE}x{MAX_SIDE} pixels",
            MIN_SIDE.0, MIN_SIDE.1
        )));
    }
    let (data, x_range, y_range) = drawable(spec, series)?;
    let font = font()?;
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    let named = series.iter().filter(|s| !s.name.is_empty()).count() as u32;
    let fits = 3 * LEGEND_COLUMN <= w && LEGEND_TOP + LEGEND_ROW * named <= h;
    let column = if spec.legend_beside && named > 0 && fits {
        LEGEND_COLUMN
    } else {
        0
    };
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let (plot_area, legend_area) = root.split_horizontally(w - column);
        let mut builder = ChartBuilder::on(&plot_area);
        builder
            .margin(16)
            .x_label_area_size(if spec.x_label.is_empty() { 30 } else { 52 })
            .y_label_area_size(if spec.y_label.is_empty() { 56 } else { 80 });
        if !spec.title.is_empty() {
            builder.caption(&spec.title, (font, 26).into_font().color(&INK));
        }
        if spec.log_y {
            let chart = builder
                .build_cartesian_2d(x_range, y_range.log_scale())
                .map_err(drawing)?;
            draw(chart, spec, series, &data, font, column == 0)?;
        } else {
            let chart = builder
                .build_cartesian_2d(x_range, y_range)
                .map_err(drawing)?;
            draw(chart, spec, series, &data, font, column == 0)?;
        }
        if column > 0 {
            legend_column(&legend_area, series, font)?;
        }
        root.present().map_err(drawing)?;
    }
    Ok(RgbImage::from_raw(w, h, buf).expect("the buffer holds w·h RGB pixels"))
}

/// A series' legend swatch: 22 × 8 px of its color, left edge `x`, centred on `y`.
fn swatch(x: i32, y: i32, color: RGBColor) -> Rectangle<(i32, i32)> {
    Rectangle::new([(x, y - 4), (x + 22, y + 4)], color.filled())
}

/// One swatch and name per named series, top to bottom, in the column right of the plot.
fn legend_column<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    series: &[Series],
    font: &str,
) -> Result<()> {
    let style = (font, 15).into_font().color(&INK);
    let room = area.dim_in_pixel().0.saturating_sub(36 + 4);
    let named = series.iter().filter(|s| !s.name.is_empty());
    for (k, s) in named.enumerate() {
        let y = (LEGEND_TOP + LEGEND_ROW * k as u32) as i32;
        let color = RGBColor(s.color[0], s.color[1], s.color[2]);
        area.draw(&swatch(6, y, color)).map_err(drawing)?;
        // The longest prefix that fits, with "…" when it is not the whole name.
        let chars: Vec<char> = s.name.chars().collect();
        let mut name = s.name.clone();
        for keep in (0..chars.len()).rev() {
            if area.estimate_text_size(&name, &style).map_err(drawing)?.0 <= room {
                break;
            }
            name = chars[..keep].iter().chain(&['…']).collect();
        }
        area.draw(&Text::new(name, (36, y - 9), style.clone()))
            .map_err(drawing)?;
    }
    Ok(())
}

/// The mesh, the lines and (when `legend_inside`) the legend on a chart whose y axis is linear
/// or logarithmic.
fn draw<'a, DB, X, Y>(
    mut chart: ChartContext<'a, DB, Cartesian2d<X, Y>>,
    spec: &PlotSpec,
    series: &[Series],
    data: &[Vec<(f64, f64)>],
    font: &str,
    legend_inside: bool,
) -> Result<()>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(spec.x_label.as_str())
        .y_desc(spec.y_label.as_str())
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&tick_label)
        .y_label_formatter(&tick_label)
        .label_style((font, 15).into_font().color(&INK))
        .axis_desc_style((font, 17).into_font().color(&INK))
        .axis_style(INK)
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(drawing)?;
    let mut named = false;
    for (s, points) in series.iter().zip(data) {
        let color = RGBColor(s.color[0], s.color[1], s.color[2]);
        let style = color.stroke_width(2);
        let drawn = chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(drawing)?;
        if legend_inside && !s.name.is_empty() {
            named = true;
            drawn
                .label(s.name.as_str())
                .legend(move |(x, y)| swatch(x, y, color));
        }
    }
    if named {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE)
            .border_style(LEGEND_BORDER)
            .label_font((font, 15).into_font().color(&INK))
            .draw()
            .map_err(drawing)?;
    }
    Ok(())
}

/// A tick value as a short label: integers as such below 10⁶ (`2000`, not `2000.0`), others
/// with up to 4 decimals and trailing zeros dropped (`0.25`, `2.5`), very large or small
/// magnitudes in scientific notation (`1.5e6`, `2e-5`).
fn tick_label(v: &f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e6).contains(&a) {
        let s = format!("{v:.2e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.'))
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// `img` encoded as PNG; errors name `path`.
fn encode_png(path: &Path, img: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    PngEncoder::new(&mut bytes)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            ExtendedColorType::Rgb8,
        )
        .map_err(|e| Error::io(path, std::io::Error::other(e)))?;
    Ok(bytes)
}

/// Renders the plot (see [`render`]) and writes it to `path` as a PNG, atomically: a synced
/// temporary `<name>.<pid>.<n>.tmp` ([`crate::fsutil::write_temp`]) renamed over
/// `path` — the temporary name a run's recovery recognises and removes when a process is killed
/// mid-write. On error nothing is left behind (an existing `path` is untouched).
pub fn write_png(path: &Path, spec: &PlotSpec, series: &[Series]) -> Result<()> {
    let img = render(spec, series)?;
    let bytes = encode_png(path, &img)?;
    let tmp = crate::fsutil::write_temp(path, &bytes).map_err(|e| Error::io(path, e))?;
    crate::fsutil::crash_point("plot:temp");
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
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
            title: "MDM-Prime loss (ℓ = 2)".into(),
            x_label: "step".into(),
            y_label: "loss (nats/token)".into(),
            ..PlotSpec::default()
        }
    }

    fn count(img: &RgbImage, c: [u8; 3]) -> usize {
        img.pixels().filter(|p| p.0 == c).count()
    }

    /// Pixels that are dark grey or black: text and axes (the palette colors are all lighter).
    fn dark(img: &RgbImage, rows: Range<u32>) -> usize {
        rows.flat_map(|y| (0..img.width()).map(move |x| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&c| c < 90))
            .count()
    }

    /// No temporary (`*.tmp`) is left in `dir`.
    fn no_temp_in(dir: &Path) -> bool {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .all(|e| !e.file_name().to_string_lossy().ends_with(".tmp"))
            })
            .unwrap_or(true)
    }

    fn scratch_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mdm-prime-plot-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn renders_two_series_with_text() {
        let img = render(&spec(), &two_series()).unwrap();
        assert_eq!(img.dimensions(), (900, 560));
        // Both lines (not just the legend swatches: 23×9 px each) are drawn, 2 px wide.
        for c in [PALETTE[0], PALETTE[1]] {
            assert!(count(&img, c) > 1500, "{c:?}: {}", count(&img, c));
        }
        let white = count(&img, [255; 3]) as f64 / (900.0 * 560.0);
        assert!((0.6..0.98).contains(&white), "white fraction {white}");
        // Text is drawn: the title band (above the plot area) has dark glyph pixels, and so
        // has the x label band at the bottom.
        assert!(dark(&img, 10..40) > 200, "title: {}", dark(&img, 10..40));
        assert!(
            dark(&img, 520..556) > 50,
            "x label: {}",
            dark(&img, 520..556)
        );
    }

    #[test]
    fn the_embedded_font_covers_the_label_characters() {
        use ab_glyph::{Font, FontRef};
        let f = FontRef::try_from_slice(FONT_BYTES).unwrap();
        for c in "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-e/():_%ℓ−±×≤≥≈αβσ"
            .chars()
        {
            assert_ne!(f.glyph_id(c).0, 0, "{c:?} is not in the font subset");
        }
        // Subset: small enough to embed (the full face is 760 KB).
        assert!(FONT_BYTES.len() < 64 * 1024, "{}", FONT_BYTES.len());
    }

    #[test]
    fn lines_without_names_have_no_legend() {
        let mut series = two_series();
        let with = render(&spec(), &series).unwrap();
        for s in &mut series {
            s.name.clear();
        }
        let without = render(&spec(), &series).unwrap();
        let border = LEGEND_BORDER.0;
        let border = [border, LEGEND_BORDER.1, LEGEND_BORDER.2];
        // (Anti-aliased glyph edges hit the border's grey now and then.)
        let (a, b) = (count(&with, border), count(&without, border));
        assert!(
            a > b + 100,
            "legend border pixels: {a} with names, {b} without"
        );
    }

    #[test]
    fn a_legend_beside_leaves_the_plot_area_to_the_lines() {
        let beside = PlotSpec {
            width: 900 + LEGEND_COLUMN,
            legend_beside: true,
            ..spec()
        };
        let img = render(&beside, &two_series()).unwrap();
        let column = |img: &RgbImage, c: [u8; 3]| {
            img.enumerate_pixels()
                .filter(|&(x, _, p)| x >= 900 && p.0 == c)
                .count()
        };
        // Each series has its 22×8 px swatch in the column (and nothing else there in its
        // color) and its line left of it; the column has the names' glyphs and no legend
        // border (there is no box).
        for c in [PALETTE[0], PALETTE[1]] {
            assert_eq!(column(&img, c), 22 * 8, "{c:?} swatch");
            assert!(count(&img, c) > 1500 + 22 * 8, "{c:?} line");
        }
        let glyphs = img
            .enumerate_pixels()
            .filter(|&(x, _, p)| x >= 900 + 36 && p.0.iter().all(|&v| v < 90))
            .count();
        assert!(glyphs > 100, "legend names: {glyphs} dark pixels");
        let border = [LEGEND_BORDER.0, LEGEND_BORDER.1, LEGEND_BORDER.2];
        let inside = render(&spec(), &two_series()).unwrap();
        assert!(count(&inside, border) > count(&img, border) + 100);
        // Without names there is no column: the plot (its grid and lines) spans the width.
        let mut unnamed = two_series();
        for s in &mut unnamed {
            s.name.clear();
        }
        let img = render(&beside, &unnamed).unwrap();
        let right = img
            .enumerate_pixels()
            .filter(|&(x, _, p)| (910..900 + LEGEND_COLUMN - 30).contains(&x) && p.0 != [255; 3])
            .count();
        assert!(
            right > 1000,
            "{right} drawn pixels where the column would be"
        );
        // A name longer than the column is shortened: nothing is drawn in the last 4 px.
        let mut long = two_series();
        long[0].name = "a legend entry far too long for a column of two hundred and sixty".into();
        let img = render(&beside, &long).unwrap();
        let edge = img
            .enumerate_pixels()
            .filter(|&(x, _, p)| x >= 900 + LEGEND_COLUMN - 4 && p.0 != [255; 3])
            .count();
        assert_eq!(edge, 0);
        // Too narrow for a column: the legend goes inside, in its box.
        let narrow = PlotSpec {
            width: 3 * LEGEND_COLUMN - 1,
            ..beside.clone()
        };
        let img = render(&narrow, &two_series()).unwrap();
        assert!(count(&img, border) > 100);
    }

    #[test]
    fn series_stay_inside_the_plot_area() {
        // A series far outside the others' range sets the y range; nothing is drawn in the
        // label margins (x < 16 + y label area, or below the x axis).
        let s = Series::new("big", curve(200, |t| 1e4 * t), PALETTE[3]);
        let img = render(&spec(), &[s]).unwrap();
        for (x, y, p) in img.enumerate_pixels() {
            if p.0 == PALETTE[3] && !(700..=900).contains(&x) {
                assert!(
                    x > 16 + 80 - 2 && y < 560 - 16 - 52 + 2,
                    "series pixel at {x},{y}"
                );
            }
        }
    }

    #[test]
    fn tick_labels_are_short() {
        let labels: Vec<String> = [0.0, 2000.0, 0.25, 2.5, -1.0, 1.5e6, 2e-5, 0.001, 1e5]
            .iter()
            .map(tick_label)
            .collect();
        assert_eq!(
            labels,
            [
                "0", "2000", "0.25", "2.5", "-1", "1.5e6", "2e-5", "0.001", "100000"
            ]
        );
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
        // Decades apart: a log axis draws both ends.
        let wide = Series::new(
            "wide",
            curve(100, |t| 10f64.powf(-3.0 + 6.0 * t)),
            PALETTE[4],
        );
        let img = render(&spec, &[wide]).unwrap();
        assert!(count(&img, PALETTE[4]) > 1000);
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
        render(&spec(), &[one]).unwrap();
        let flat = Series::new("flat", curve(100, |_| 0.0), PALETTE[4]);
        let img = render(&spec(), &[flat]).unwrap();
        assert!(count(&img, PALETTE[4]) > 1000);
        let flat = Series::new("flat", curve(100, |_| 3.0), PALETTE[4]);
        let log = PlotSpec {
            log_y: true,
            ..spec()
        };
        render(&log, &[flat]).unwrap();
        let mixed = Series::new(
            "nan",
            vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 3.0)],
            PALETTE[5],
        );
        render(&spec(), &[mixed]).unwrap();
        let huge = Series::new("huge", vec![(0.0, -f64::MAX), (1.0, f64::MAX)], PALETTE[0]);
        assert!(matches!(render(&spec(), &[huge]), Err(Error::Value(_))));
        for (width, height) in [(60, 40), (0, 560), (900, 0), (20_000, 100)] {
            let bad = PlotSpec {
                width,
                height,
                ..spec()
            };
            let err = render(&bad, &two_series()).unwrap_err().to_string();
            assert!(err.contains("image size"), "{err}");
        }
        // The smallest accepted size draws.
        let small = PlotSpec {
            width: MIN_SIDE.0,
            height: MIN_SIDE.1,
            ..spec()
        };
        render(&small, &two_series()).unwrap();
    }

    #[test]
    fn many_points_render() {
        let s = Series::new(
            "noisy",
            curve(100_000, |t| 3.0 + (t * 5e3).sin() / (1.0 + 9.0 * t)),
            PALETTE[0],
        );
        let img = render(&spec(), &[s]).unwrap();
        assert!(count(&img, PALETTE[0]) > 1500);
    }

    #[test]
    fn write_png_is_atomic_and_decodable() {
        let dir = scratch_dir("write");
        let path = dir.join("loss.png");
        write_png(&path, &spec(), &two_series()).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (900, 560));
        assert!(count(&img, PALETTE[0]) > 1500, "decoded PNG is blank");
        assert!(no_temp_in(&dir));
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
        assert!(no_temp_in(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn write_png_into_a_missing_directory_fails_cleanly() {
        let dir = scratch_dir("missing");
        let path = dir.join("no-such-dir").join("loss.png");
        let err = write_png(&path, &spec(), &two_series()).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(err.to_string().contains("loss.png"), "{err}");
        assert!(!path.exists() && no_temp_in(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Writes examples to `$TMPDIR/example-plot*.png` for a look by eye.
    #[test]
    #[ignore]
    fn example_plot() {
        let path = std::env::temp_dir().join("example-plot.png");
        write_png(&path, &spec(), &two_series()).unwrap();
        let log = PlotSpec {
            log_y: true,
            title: "log y: Loss vs step, 100% [a-z] ℓ ≤ 4".into(),
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
