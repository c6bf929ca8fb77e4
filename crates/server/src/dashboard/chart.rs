//! The overview's chart of the last days, drawn here as inline SVG: one small bar chart per
//! series (writes, conflicts settled, reviews held, failures), a bar a day. No script, no
//! library, nothing fetched: it shows offline and without JavaScript.

use fieldsync_app::workspace::DayActivity;
use maud::{Markup, html};

/// The drawing's size in SVG units; it scales to the page's width.
const WIDTH: f64 = 300.0;
const HEIGHT: f64 = 60.0;

/// One series: its name, as a class and a title, and its count of a day.
struct Series {
    name: &'static str,
    title: &'static str,
    count: fn(&DayActivity) -> u64,
}

const SERIES: [Series; 4] = [
    Series { name: "writes", title: "Writes", count: |day| day.writes },
    Series { name: "conflicts", title: "Conflicts settled", count: |day| day.conflicts },
    Series { name: "reviews", title: "Reviews held", count: |day| day.reviews },
    Series { name: "failures", title: "Failures", count: |day| day.failures },
];

/// The four charts of `days` (oldest first).
pub(crate) fn activity(days: &[DayActivity]) -> Markup {
    let (Some(first), Some(last)) = (days.first(), days.last()) else { return html! {} };
    html! {
        div.charts {
            @for series in &SERIES {
                (bars(series, days, &format!("{} to {}", first.day, last.day)))
            }
        }
    }
}

/// One series as bars, each with its day and count as data and as a tooltip.
fn bars(series: &Series, days: &[DayActivity], span: &str) -> Markup {
    let highest = days.iter().map(series.count).max().unwrap_or(0).max(1);
    let total: u64 = days.iter().map(series.count).sum();
    let slot = WIDTH / days.len() as f64;
    let label = format!("{} per day, {span}: {total} in all", series.title);
    html! {
        figure.chart {
            figcaption { (series.title) " " span.total { (total) } }
            svg class={ "chart " (series.name) } data-series=(series.name) role="img" aria-label=(label)
                viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) preserveAspectRatio="none" {
                line.axis x1="0" y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) {}
                @for (index, day) in days.iter().enumerate() {
                    @let count = (series.count)(day);
                    @let height = HEIGHT * count as f64 / highest as f64;
                    rect.bar data-day=(day.day) data-value=(count)
                        x=(format!("{:.2}", index as f64 * slot + slot * 0.1)) y=(format!("{:.2}", HEIGHT - height))
                        width=(format!("{:.2}", slot * 0.8)) height=(format!("{height:.2}")) {
                        title { (day.day) ": " (count) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(offset: i8, writes: u64) -> DayActivity {
        let day = jiff::civil::date(2026, 11, 1).checked_add(jiff::Span::new().days(offset)).unwrap();
        DayActivity { day, runs: 1, writes, conflicts: 0, reviews: 0, failures: 0 }
    }

    #[test]
    fn a_bar_a_day_in_each_series_the_highest_full_height() {
        let days: Vec<DayActivity> = (0..30).map(|offset| day(offset, u64::from(offset as u8 % 3))).collect();
        let svg = activity(&days).into_string();
        assert_eq!(svg.matches("<svg").count(), 4);
        assert_eq!(svg.matches("<rect").count(), 4 * 30);
        assert!(svg.contains(r#"data-day="2026-11-03" data-value="2""#), "{svg}");
        assert!(svg.contains(&format!(r#"height="{HEIGHT:.2}""#)), "the highest bar fills the height");
        assert!(svg.contains("Writes per day, 2026-11-01 to 2026-11-30: 30 in all"), "{svg}");
    }
}
