//! SVG charts for the generated reports (`bench --configs`, `sweep`): one scatter chart with
//! linear or log axes, a series per colour (dots, rings around dots, or a connecting line), point
//! labels and a legend. No plotting crate: the charts are a few dozen SVG elements.

use std::fmt::Write as _;

/// How an axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// Base 10, ticks at whole decades (values ≤ 0 are left out).
    Log,
}

/// One axis: its label and scale.
#[derive(Debug, Clone)]
pub struct Axis {
    pub label: String,
    pub scale: Scale,
}

/// How a series draws its points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// A filled dot.
    Dot,
    /// A hollow ring, larger than a dot: marks points of another series.
    Ring,
    /// No marker: the points are joined by a line.
    Line,
}

/// A point, optionally labelled.
#[derive(Debug, Clone)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub label: Option<String>,
}

/// Points drawn alike, named in the legend.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    /// An SVG colour (`#d62728`).
    pub colour: &'static str,
    pub marker: Marker,
    pub points: Vec<Point>,
}

/// A chart: title, axes and series, drawn in order (later series on top).
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 50.0;

/// The drawn range of one axis (log axes in decades).
struct Range {
    scale: Scale,
    lo: f64,
    hi: f64,
}

impl Range {
    fn of(scale: Scale, values: impl Iterator<Item = f64>) -> Range {
        let values: Vec<f64> = values
            .filter(|v| v.is_finite() && (scale == Scale::Linear || *v > 0.0))
            .map(|v| if scale == Scale::Log { v.log10() } else { v })
            .collect();
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = match (lo.is_finite(), scale) {
            (false, Scale::Log) => (0.0, 1.0),
            (false, Scale::Linear) => (0.0, 1.0),
            (true, Scale::Log) => (lo.floor(), hi.ceil().max(lo.floor() + 1.0)),
            (true, Scale::Linear) => {
                let pad = ((hi - lo) * 0.05).max(1e-9);
                (lo - pad, hi + pad)
            }
        };
        Range { scale, lo, hi }
    }

    /// Where `v` falls, 0 at the low end and 1 at the high end.
    fn fraction(&self, v: f64) -> Option<f64> {
        let v = match self.scale {
            Scale::Log if v > 0.0 => v.log10(),
            Scale::Log => return None,
            Scale::Linear => v,
        };
        v.is_finite().then(|| (v - self.lo) / (self.hi - self.lo))
    }

    /// Tick values and their labels.
    fn ticks(&self) -> Vec<(f64, String)> {
        match self.scale {
            Scale::Log => (self.lo as i32..=self.hi as i32)
                .map(|e| (10f64.powi(e), format!("1e{e}")))
                .collect(),
            Scale::Linear => (0..=4)
                .map(|i| {
                    let v = self.lo + (self.hi - self.lo) * i as f64 / 4.0;
                    let digits = if (self.hi - self.lo) < 5.0 { 2 } else { 0 };
                    (v, format!("{v:.digits$}"))
                })
                .collect(),
        }
    }
}

impl Chart {
    /// The chart as a standalone SVG document.
    pub fn svg(&self) -> String {
        let all = || self.series.iter().flat_map(|s| s.points.iter());
        let xr = Range::of(self.x.scale, all().map(|p| p.x));
        let yr = Range::of(self.y.scale, all().map(|p| p.y));
        let px = |x: f64| xr.fraction(x).map(|f| LEFT + f * (WIDTH - LEFT - RIGHT));
        let py = |y: f64| {
            yr.fraction(y)
                .map(|f| HEIGHT - BOTTOM - f * (HEIGHT - TOP - BOTTOM))
        };
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{}\" y=\"18\" text-anchor=\"middle\">{}</text>\n",
            WIDTH / 2.0,
            escape_xml(&self.title)
        );
        for (v, label) in xr.ticks() {
            if let Some(x) = px(v) {
                let _ = writeln!(s, "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>", HEIGHT - BOTTOM, HEIGHT - BOTTOM + 16.0);
            }
        }
        for (v, label) in yr.ticks() {
            if let Some(y) = py(v) {
                let _ = writeln!(s, "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>", WIDTH - RIGHT, LEFT - 6.0, y + 4.0);
            }
        }
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            WIDTH / 2.0,
            HEIGHT - 12.0,
            escape_xml(&self.x.label)
        );
        let _ = writeln!(
            s,
            "<text x=\"16\" y=\"{0}\" transform=\"rotate(-90 16 {0})\" text-anchor=\"middle\">{1}</text>",
            HEIGHT / 2.0,
            escape_xml(&self.y.label)
        );
        for series in &self.series {
            let placed: Vec<(f64, f64, &Point)> = series
                .points
                .iter()
                .filter_map(|p| Some((px(p.x)?, py(p.y)?, p)))
                .collect();
            if series.marker == Marker::Line {
                let points: Vec<String> = placed
                    .iter()
                    .map(|(x, y, _)| format!("{x:.1},{y:.1}"))
                    .collect();
                let _ = writeln!(
                    s,
                    "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>",
                    series.colour,
                    points.join(" ")
                );
            }
            for &(x, y, p) in &placed {
                match series.marker {
                    Marker::Dot => {
                        let _ = writeln!(
                            s,
                            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"{}\"/>",
                            series.colour
                        );
                    }
                    Marker::Ring => {
                        let _ = writeln!(s, "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"8\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>", series.colour);
                    }
                    Marker::Line => {}
                }
                if let Some(label) = &p.label {
                    let _ = writeln!(
                        s,
                        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>",
                        x + 7.0,
                        y - 7.0,
                        escape_xml(label)
                    );
                }
            }
        }
        // Legend, bottom right, one row per series.
        let n = self.series.len() as f64;
        for (row, series) in self.series.iter().enumerate() {
            let (x, y) = (
                WIDTH - RIGHT - 230.0,
                HEIGHT - BOTTOM - 12.0 - 18.0 * (n - 1.0 - row as f64),
            );
            let mark = match series.marker {
                Marker::Dot => format!(
                    "<circle cx=\"{x}\" cy=\"{y}\" r=\"4\" fill=\"{}\"/>",
                    series.colour
                ),
                Marker::Ring => format!("<circle cx=\"{x}\" cy=\"{y}\" r=\"6\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>", series.colour),
                Marker::Line => format!(
                    "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{}\" stroke-width=\"1.5\"/>",
                    x - 6.0,
                    x + 6.0,
                    series.colour
                ),
            };
            let _ = writeln!(
                s,
                "{mark}<text x=\"{}\" y=\"{}\">{}</text>",
                x + 12.0,
                y + 4.0,
                escape_xml(&series.name)
            );
        }
        s += "</svg>\n";
        s
    }
}

/// `s` with the characters XML gives a meaning escaped.
pub fn escape_xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(x: f64, y: f64, label: Option<&str>) -> Point {
        Point {
            x,
            y,
            label: label.map(String::from),
        }
    }

    #[test]
    fn log_axes_tick_whole_decades_and_skip_non_positive_values() {
        let chart = Chart {
            title: "a <b>".into(),
            x: Axis {
                label: "params".into(),
                scale: Scale::Log,
            },
            y: Axis {
                label: "tok/s".into(),
                scale: Scale::Log,
            },
            series: vec![Series {
                name: "ours".into(),
                colour: "#d62728",
                marker: Marker::Dot,
                points: vec![
                    point(150.0, 20.0, Some("x&y")),
                    point(9_000.0, 700.0, None),
                    point(0.0, 5.0, Some("dropped")),
                ],
            }],
        };
        let svg = chart.svg();
        assert!(
            svg.contains("a &lt;b&gt;") && svg.contains("x&amp;y"),
            "{svg}"
        );
        for tick in ["1e2", "1e3", "1e4", "1e1", "1e2", "1e3"] {
            assert!(svg.contains(&format!(">{tick}</text>")), "{tick}");
        }
        assert!(!svg.contains(">1e5<") && !svg.contains("dropped"));
        assert_eq!(
            svg.matches("<circle").count(),
            2 + 1,
            "two points and the legend"
        );
    }

    #[test]
    fn linear_axes_and_line_series() {
        let chart = Chart {
            title: "t".into(),
            x: Axis {
                label: "tok/s".into(),
                scale: Scale::Linear,
            },
            y: Axis {
                label: "bpb".into(),
                scale: Scale::Linear,
            },
            series: vec![Series {
                name: "front".into(),
                colour: "#000",
                marker: Marker::Line,
                points: vec![point(1.0, 3.0, None), point(2.0, 2.5, None)],
            }],
        };
        let svg = chart.svg();
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(!svg.contains("<circle"));
    }
}
