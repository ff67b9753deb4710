//! Charts drawn on the server as SVG: axes, tick labels, a `<title>` and `<desc>`, and
//! only presentation attributes (the pages' CSP allows no inline style). Each chart on
//! a page comes with a table of the same numbers as its text alternative.

use std::fmt::Write;

/// The SVG's box; the drawing area is inside the margins.
const W: f64 = 720.0;
const H: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 34.0;

/// One coloured series.
pub struct Series<'a> {
    pub name: &'a str,
    pub color: &'a str,
    /// One value per x label; `None` is a gap (nothing to divide by that day).
    pub values: Vec<Option<f64>>,
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round upper bound for the y axis and its step (1, 2 or 5 times a power of ten).
fn nice_max(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 0.25);
    }
    let raw = max / 4.0;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|s| s * 4.0 >= max)
        .unwrap_or(10.0 * power);
    (step * 4.0, step)
}

fn open(out: &mut String, id: &str, title: &str, desc: &str) {
    let _ = write!(
        out,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-labelledby=\"{id}-t {id}-d\" xmlns=\"http://www.w3.org/2000/svg\" font-size=\"12\" font-family=\"system-ui, sans-serif\">\
         <title id=\"{id}-t\">{}</title><desc id=\"{id}-d\">{}</desc>",
        escape(title),
        escape(desc)
    );
}

/// The axes, horizontal grid lines with their labels, and every `label_every`-th x
/// label. Returns the x of each slot's centre and the slot width.
fn axes(
    out: &mut String,
    labels: &[String],
    y_max: f64,
    y_step: f64,
    y_label: &dyn Fn(f64) -> String,
    label_every: usize,
) -> (Vec<f64>, f64) {
    let (plot_w, plot_h) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let mut v = 0.0;
    while v <= y_max + y_step / 2.0 {
        let y = TOP + plot_h - v / y_max * plot_h;
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e3e6ea\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#4a5260\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            escape(&y_label(v))
        );
        v += y_step;
    }
    let n = labels.len().max(1);
    let slot = plot_w / n as f64;
    let centres: Vec<f64> = (0..n).map(|i| LEFT + slot * (i as f64 + 0.5)).collect();
    for (i, label) in labels.iter().enumerate() {
        if i % label_every == 0 || i + 1 == n {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#4a5260\">{}</text>",
                centres[i],
                H - BOTTOM + 16.0,
                escape(label)
            );
        }
    }
    let _ = write!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#4a5260\"/>\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{:.1}\" stroke=\"#4a5260\"/>",
        TOP + plot_h,
        W - RIGHT,
        TOP + plot_h,
        TOP + plot_h
    );
    (centres, slot)
}

/// Bars, stacked when there are several series (values are counts or amounts).
pub fn bars(
    id: &str,
    title: &str,
    desc: &str,
    labels: &[String],
    series: &[Series<'_>],
    y_label: &dyn Fn(f64) -> String,
) -> String {
    let totals: Vec<f64> = (0..labels.len())
        .map(|i| {
            series
                .iter()
                .map(|s| s.values.get(i).copied().flatten().unwrap_or(0.0))
                .sum()
        })
        .collect();
    let (y_max, y_step) = nice_max(totals.iter().copied().fold(0.0, f64::max));
    let mut out = String::new();
    open(&mut out, id, title, desc);
    let (centres, slot) = axes(&mut out, labels, y_max, y_step, y_label, 5);
    let plot_h = H - TOP - BOTTOM;
    let width = (slot * 0.7).max(1.0);
    for (i, x) in centres.iter().enumerate() {
        let mut base = TOP + plot_h;
        for s in series {
            let value = s.values.get(i).copied().flatten().unwrap_or(0.0);
            if value <= 0.0 {
                continue;
            }
            let h = value / y_max * plot_h;
            base -= h;
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"{base:.1}\" width=\"{width:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{}: {}</title></rect>",
                x - width / 2.0,
                s.color,
                escape(&labels[i]),
                escape(&format!("{} {}", s.name, y_label(value)))
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// Lines of rates between 0 and 1 (shown as percentages); a gap where a day has none.
pub fn rates(id: &str, title: &str, desc: &str, labels: &[String], series: &[Series<'_>]) -> String {
    let mut out = String::new();
    open(&mut out, id, title, desc);
    let percent = |v: f64| format!("{:.0} %", v * 100.0);
    let (centres, _) = axes(&mut out, labels, 1.0, 0.25, &percent, 5);
    let plot_h = H - TOP - BOTTOM;
    for s in series {
        let mut path = String::new();
        let mut pen_down = false;
        for (i, x) in centres.iter().enumerate() {
            match s.values.get(i).copied().flatten() {
                Some(v) => {
                    let y = TOP + plot_h - v.clamp(0.0, 1.0) * plot_h;
                    let _ = write!(path, "{}{x:.1} {y:.1}", if pen_down { " L" } else { " M" });
                    let _ = write!(
                        out,
                        "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{}\"><title>{}: {} {}</title></circle>",
                        s.color,
                        escape(&labels[i]),
                        escape(s.name),
                        percent(v)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        if !path.is_empty() {
            let _ = write!(
                out,
                "<path d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>",
                path.trim(),
                s.color
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_y_axis_ends_on_a_round_number_above_the_largest_value() {
        assert_eq!(nice_max(0.0), (1.0, 0.25));
        assert_eq!(nice_max(7.0), (8.0, 2.0));
        assert_eq!(nice_max(100.0), (100.0, 25.0));
        assert_eq!(nice_max(123_456.0), (200_000.0, 50_000.0));
    }

    #[test]
    fn a_chart_names_itself_and_escapes_what_it_shows() {
        let labels: Vec<String> = ["<a>", "b"].iter().map(|s| s.to_string()).collect();
        let svg = bars(
            "x",
            "Paid & more",
            "desc",
            &labels,
            &[Series {
                name: "paid",
                color: "#000",
                values: vec![Some(3.0), None],
            }],
            &|v| format!("{v}"),
        );
        assert!(svg.contains("<title id=\"x-t\">Paid &amp; more</title>"));
        assert!(svg.contains("&lt;a&gt;") && !svg.contains("<a>"));
        assert_eq!(svg.matches("<rect").count(), 1);
        let line = rates(
            "r",
            "t",
            "d",
            &labels,
            &[Series {
                name: "P",
                color: "#000",
                values: vec![Some(0.5), None],
            }],
        );
        assert_eq!(line.matches("<circle").count(), 1);
        assert!(line.contains("50 %"));
    }
}
