//! `--plot`: an SVG of write-acknowledgement latency distributions, one panel per
//! workload, one percentile curve per backend, latency on a log scale. Hand-written SVG:
//! polylines, text and lines are all it takes.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// One curve.
pub struct Series {
    pub label: String,
    pub color: &'static str,
    pub hist: Histogram<u64>,
}

/// One panel (a workload) with its curves.
pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
}

/// A stable color per backend name, so every panel uses the same one.
pub fn color_for(label: &str) -> &'static str {
    match label {
        "writebehind" => "#1f77b4",
        "writebehind-threads" => "#2ca02c",
        "pwrite" => "#ff7f0e",
        "pwrite-direct" => "#d62728",
        _ => "#7f7f7f",
    }
}

const PANEL_W: f64 = 460.0;
const PANEL_H: f64 = 340.0;
const TOP: f64 = 70.0; // title and legend band
const M_LEFT: f64 = 62.0;
const M_RIGHT: f64 = 18.0;
const M_TOP: f64 = 30.0;
const M_BOTTOM: f64 = 46.0;
const POINTS: usize = 240;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn decade_label(k: i32) -> String {
    let units = [(0, "ns"), (3, "µs"), (6, "ms"), (9, "s")];
    let (base, unit) = units
        .iter()
        .rev()
        .find(|(b, _)| k >= *b)
        .copied()
        .unwrap_or((0, "ns"));
    format!("{}{unit}", 10u64.pow((k - base).clamp(0, 3) as u32))
}

fn nines_label(k: i32) -> String {
    match k {
        0 => "0%".into(),
        1 => "90%".into(),
        _ => format!("99.{}%", "9".repeat((k - 2) as usize)).replace(".%", "%"),
    }
}

/// The SVG document for `panels`, side by side under `title`. Both axes are shared by
/// all panels so curves can be compared across them.
pub fn svg(title: &str, panels: &[Panel]) -> String {
    let all: Vec<&Series> = panels
        .iter()
        .flat_map(|p| p.series.iter())
        .filter(|s| !s.hist.is_empty())
        .collect();
    let n = panels.len().max(1) as f64;
    let width = PANEL_W * n;
    let height = TOP + PANEL_H;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        width / 2.0,
        esc(title)
    );
    // Legend: every label once, in first-seen order.
    let mut labels: Vec<(&str, &str)> = Vec::new();
    for s in &all {
        if !labels.iter().any(|(l, _)| *l == s.label) {
            labels.push((&s.label, s.color));
        }
    }
    let mut lx = 16.0;
    for (label, color) in &labels {
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" y1="46" x2="{}" y2="46" stroke="{color}" stroke-width="3"/><text x="{}" y="50">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            esc(label)
        );
        lx += 42.0 + 7.0 * label.chars().count() as f64;
    }
    if all.is_empty() {
        let _ = writeln!(
            out,
            r#"<text x="16" y="{}">no latency data</text>"#,
            TOP + 30.0
        );
        out.push_str("</svg>\n");
        return out;
    }
    // Shared axes: percentile in "nines" (x = -log10(1 - q)), latency in decades.
    let max_nines = all
        .iter()
        .map(|s| (s.hist.len() as f64).log10())
        .fold(0.0, f64::max)
        .ceil()
        .clamp(2.0, 6.0);
    let lo = all.iter().map(|s| s.hist.min().max(1)).min().unwrap_or(1);
    let hi = all.iter().map(|s| s.hist.max().max(1)).max().unwrap_or(10);
    let y_lo = (lo as f64).log10().floor() as i32;
    let y_hi = ((hi as f64).log10().ceil() as i32).max(y_lo + 1);

    for (i, panel) in panels.iter().enumerate() {
        let x0 = PANEL_W * i as f64 + M_LEFT;
        let x1 = PANEL_W * (i + 1) as f64 - M_RIGHT;
        let y0 = TOP + M_TOP; // top of the plot area
        let y1 = TOP + PANEL_H - M_BOTTOM; // bottom
        let px = |nines: f64| x0 + (x1 - x0) * nines / max_nines;
        let py = |ns: f64| {
            let l = ns.max(1.0).log10();
            y1 - (y1 - y0) * (l - f64::from(y_lo)) / f64::from(y_hi - y_lo)
        };
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">{}</text>"#,
            (x0 + x1) / 2.0,
            y0 - 10.0,
            esc(&panel.title)
        );
        for k in y_lo..=y_hi {
            let y = py(10f64.powi(k));
            let _ = writeln!(
                out,
                r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                x0 - 6.0,
                y + 4.0,
                decade_label(k)
            );
        }
        for k in 0..=max_nines as i32 {
            let x = px(f64::from(k));
            // The last label ends at the frame so it does not run into the next panel.
            let anchor = if k == max_nines as i32 {
                "end"
            } else {
                "middle"
            };
            let _ = writeln!(
                out,
                r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y1}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="{anchor}">{}</text>"##,
                y1 + 16.0,
                nines_label(k)
            );
        }
        let _ = writeln!(
            out,
            r##"<rect x="{x0}" y="{y0}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
            x1 - x0,
            y1 - y0
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
            (x0 + x1) / 2.0,
            y1 + 34.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle" transform="rotate(-90 {} {})">write ack latency</text>"#,
            x0 - 46.0,
            (y0 + y1) / 2.0,
            x0 - 46.0,
            (y0 + y1) / 2.0
        );
        for s in panel.series.iter().filter(|s| !s.hist.is_empty()) {
            let end = (s.hist.len() as f64).log10().min(max_nines);
            let mut pts = String::new();
            for j in 0..=POINTS {
                let nines = end * j as f64 / POINTS as f64;
                let q = 1.0 - 10f64.powf(-nines);
                let v = s.hist.value_at_quantile(q) as f64;
                let _ = write!(pts, "{:.1},{:.1} ", px(nines), py(v));
            }
            let _ = write!(pts, "{:.1},{:.1}", px(end), py(s.hist.max() as f64));
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{pts}"><title>{}</title></polyline>"#,
                s.color,
                esc(&s.label)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workloads::latency_histogram;

    fn hist(base: u64, n: u64) -> Histogram<u64> {
        let mut h = latency_histogram();
        for i in 0..n {
            h.record(base + base * (i % 100) / 10 + if i % 1000 == 0 { base * 100 } else { 0 })
                .unwrap();
        }
        h
    }

    fn points(svg: &str) -> Vec<Vec<(f64, f64)>> {
        svg.split("points=\"")
            .skip(1)
            .map(|rest| {
                rest[..rest.find('"').unwrap()]
                    .split_whitespace()
                    .map(|p| {
                        let (x, y) = p.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn one_monotone_curve_per_backend_inside_the_canvas() {
        let panels = vec![
            Panel {
                title: "pages".into(),
                series: vec![
                    Series {
                        label: "writebehind".into(),
                        color: color_for("writebehind"),
                        hist: hist(300, 50_000),
                    },
                    Series {
                        label: "pwrite-direct".into(),
                        color: color_for("pwrite-direct"),
                        hist: hist(40_000, 20_000),
                    },
                ],
            },
            Panel {
                title: "seq <&>".into(),
                series: vec![
                    Series {
                        label: "writebehind".into(),
                        color: color_for("writebehind"),
                        hist: hist(200, 1000),
                    },
                    Series {
                        label: "empty".into(),
                        color: color_for("x"),
                        hist: latency_histogram(),
                    },
                ],
            },
        ];
        let s = svg("write ack", &panels);
        assert!(s.starts_with("<svg ") && s.trim_end().ends_with("</svg>"));
        assert_eq!(
            s.matches("<polyline").count(),
            3,
            "empty series are skipped"
        );
        assert!(s.contains("seq &lt;&amp;&gt;"), "titles are escaped");
        assert!(
            s.contains(">pwrite-direct</text>"),
            "legend names the backends"
        );
        assert!(
            s.contains(">99.9%<") && s.contains(">1µs<"),
            "axes are labelled"
        );
        for curve in points(&s) {
            for w in curve.windows(2) {
                assert!(w[1].0 >= w[0].0, "x goes right");
                assert!(
                    w[1].1 <= w[0].1 + 1e-9,
                    "latency never falls with the percentile"
                );
            }
            for (x, y) in curve {
                assert!((0.0..=2.0 * PANEL_W).contains(&x) && (TOP..=TOP + PANEL_H).contains(&y));
            }
        }
    }

    #[test]
    fn no_data_still_makes_a_valid_picture() {
        let s = svg("nothing", &[]);
        assert!(s.contains("no latency data") && s.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn axis_labels_read_well() {
        assert_eq!(decade_label(2), "100ns");
        assert_eq!(decade_label(3), "1µs");
        assert_eq!(decade_label(7), "10ms");
        assert_eq!(decade_label(10), "10s");
        assert_eq!(nines_label(0), "0%");
        assert_eq!(nines_label(2), "99%");
        assert_eq!(nines_label(4), "99.99%");
    }
}
