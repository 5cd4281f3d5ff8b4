//! Charts as inline SVG, drawn on the server: no script, no font or file from
//! elsewhere, so the page works offline and prints as it shows. Each chart scales to
//! its container's width (`viewBox`, `width="100%"`) and carries a `<title>` and a
//! text summary for a screen reader.

use crate::page::escape;

/// One bar of a stacked bar chart: a label (under the bar, and in its tooltip) and
/// its segments, bottom first, as (value, CSS class).
pub struct Bar {
    pub label: String,
    pub segments: Vec<(f64, &'static str)>,
}

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 160.0;
const AXIS: f64 = 24.0;

/// A stacked bar chart of `bars` (oldest first), with the greatest total on its axis.
/// With no bars, says so in the chart's place.
pub fn stacked_bars(title: &str, unit: &str, bars: &[Bar]) -> String {
    let plot = HEIGHT - AXIS;
    let max = bars.iter().map(|b| b.segments.iter().map(|(v, _)| v).sum::<f64>()).fold(0.0, f64::max);
    let mut svg = format!(
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = escape(title)
    );
    svg.push_str(&format!(r#"<line class="axis" x1="0" y1="{plot}" x2="{WIDTH}" y2="{plot}"/>"#));
    if bars.is_empty() {
        svg.push_str(&format!(r#"<text class="empty" x="{}" y="{}" text-anchor="middle">nothing recorded yet</text></svg>"#, WIDTH / 2.0, plot / 2.0));
        return svg;
    }
    // At least room for 30 bars: a few runs are narrow bars on the left, not slabs.
    let slot = WIDTH / bars.len().max(30) as f64;
    let bar_width = (slot * 0.7).max(1.0);
    for (i, bar) in bars.iter().enumerate() {
        let x = i as f64 * slot + (slot - bar_width) / 2.0;
        let mut y = plot;
        let total: f64 = bar.segments.iter().map(|(v, _)| v).sum();
        svg.push_str(&format!("<g><title>{}: {} {}</title>", escape(&bar.label), format_number(total), escape(unit)));
        for (value, class) in &bar.segments {
            let h = if max > 0.0 { value / max * (plot - 4.0) } else { 0.0 };
            if h > 0.0 {
                y -= h;
                svg.push_str(&format!(r#"<rect class="{class}" x="{x:.1}" y="{y:.1}" width="{bar_width:.1}" height="{h:.1}"/>"#));
            }
        }
        if total == 0.0 {
            // A run that found nothing still shows, as a mark on the axis.
            svg.push_str(&format!(r#"<rect class="zero" x="{x:.1}" y="{:.1}" width="{bar_width:.1}" height="2"/>"#, plot - 2.0));
        }
        svg.push_str("</g>");
    }
    svg.push_str(&format!(r#"<text class="tick" x="2" y="12">{} {}</text>"#, format_number(max), escape(unit)));
    if let (Some(first), Some(last)) = (bars.first(), bars.last()) {
        svg.push_str(&format!(r#"<text class="tick" x="2" y="{}">{}</text>"#, HEIGHT - 6.0, escape(&first.label)));
        if bars.len() > 1 {
            let end = (bars.len() as f64 * slot).clamp(WIDTH / 2.0, WIDTH) - 2.0;
            svg.push_str(&format!(r#"<text class="tick" x="{end:.1}" y="{}" text-anchor="end">{}</text>"#, HEIGHT - 6.0, escape(&last.label)));
        }
    }
    svg.push_str("</svg>");
    svg
}

/// `1234567` as `1,234,567`; fractions with up to two decimals.
pub fn format_number(value: f64) -> String {
    if value.fract() != 0.0 {
        return format!("{value:.2}");
    }
    let digits = format!("{}", value.abs() as u64);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 {
        out.insert(0, '-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_greatest_total_and_escape_their_labels() {
        let bars = vec![
            Bar { label: "a<b".into(), segments: vec![(2.0, "missing"), (2.0, "orphan")] },
            Bar { label: "c".into(), segments: vec![(1.0, "missing")] },
            Bar { label: "d".into(), segments: vec![] },
        ];
        let svg = stacked_bars("drift", "findings", &bars);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("a&lt;b") && !svg.contains("a<b"));
        // The tallest bar fills the plot; the other is a quarter of it.
        assert!(svg.contains(r#"class="missing" x="#) && svg.contains("height=\"66.0\""), "{svg}");
        // Three bars take three of thirty slots.
        assert!(svg.contains(r#"x="3.0" y="#), "the first bar sits at the left: {svg}");
        assert!(svg.contains(r#"class="zero""#), "an empty run is still marked");
        assert!(svg.contains(">4 findings<"));
    }

    #[test]
    fn no_bars_say_so() {
        assert!(stacked_bars("x", "y", &[]).contains("nothing recorded yet"));
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(format_number(1234567.0), "1,234,567");
        assert_eq!(format_number(0.0), "0");
        assert_eq!(format_number(-1000.0), "-1,000");
        assert_eq!(format_number(0.126), "0.13");
    }
}
