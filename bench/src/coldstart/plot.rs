//! The stage breakdown of every measured path as an SVG bar chart: one horizontal bar per path,
//! split into fetch, unpack/mount, process start and to-ready, labelled with the total and the
//! ratio to the naive start.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use super::report::Report;

/// Colours of the four stages, in [`super::report::Stages::named`] order.
const STAGE_COLOURS: [RGBColor; 4] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
];

/// Draws the report's measured paths into `file` (SVG).
pub fn draw(report: &Report, file: &Path) -> anyhow::Result<()> {
    draw_svg(report, file)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("drawing the plot {}", file.display()))
}

fn draw_svg(report: &Report, file: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let rows: Vec<_> = report.measured().collect();
    let count = rows.len().max(1);
    let longest = rows
        .iter()
        .map(|(_, run, _)| run.stages.total())
        .fold(0.0f64, f64::max)
        .max(0.001);
    let naive = rows
        .iter()
        .find(|(kind, _, _)| kind.name() == "naive")
        .map(|(_, run, _)| run.stages.total());
    let height = 140 + 60 * count as u32;
    let root = SVGBackend::new(file, (1000, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Cold start to ready: {}", report.setup.image),
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(230)
        .build_cartesian_2d(0f64..longest * 1.3, (0..count).into_segmented())?;
    // Row i is drawn at band count-1-i so the first path is on top.
    let band = |i: usize| count - 1 - i;
    let names: Vec<&str> = rows.iter().map(|(kind, _, _)| kind.label()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_label_formatter(&|value| match value {
            SegmentValue::CenterOf(b) if *b < count => names
                .get(count - 1 - b)
                .map(|s| s.to_string())
                .unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("seconds")
        .draw()?;
    for (stage, colour) in STAGE_COLOURS.iter().enumerate() {
        let bars = rows.iter().enumerate().map(|(i, (_, run, _))| {
            let named = run.stages.named();
            let before: f64 = named[..stage].iter().map(|(_, s)| s).sum();
            Rectangle::new(
                [
                    (before, SegmentValue::Exact(band(i))),
                    (before + named[stage].1, SegmentValue::Exact(band(i) + 1)),
                ],
                colour.filled(),
            )
        });
        let name = rows
            .first()
            .map(|(_, run, _)| run.stages.named()[stage].0)
            .unwrap_or_default();
        chart
            .draw_series(bars)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    chart.draw_series(rows.iter().enumerate().map(|(i, (_, run, _))| {
        let total = run.stages.total();
        let ratio = naive
            .filter(|_| total > 0.0)
            .map(|n| format!(" ({:.1}x)", n / total))
            .unwrap_or_default();
        Text::new(
            format!("{total:.2}s{ratio}"),
            (total + longest * 0.01, SegmentValue::CenterOf(band(i))),
            ("sans-serif", 14),
        )
    }))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
