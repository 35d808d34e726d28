//! Draws the benchmark charts of `docs/benchmarks.md` from the figures kept beside them:
//!
//! - `docs/charts/scheduler-throughput.svg` from `scheduler-throughput.csv` (the scheduler
//!   benchmark's pods/s against node count);
//! - `docs/charts/pods-running.svg` from `pods-running.csv` (Pods Running against time while
//!   a 10,000-replica Deployment rolls out on 1,000 fake nodes over HTTP; the median run of
//!   `cargo bench --bench deployment_http`, copied from `target/deployment_http.csv`).
//!
//! ```text
//! cargo run --example bench_charts
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;

fn charts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/charts")
}

/// The CSV's data rows, split on commas: `#` comments are skipped, and so is a header row,
/// which is the first row whose last field is not a number (a header may also be a comment).
fn rows(name: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let path = charts().join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(data_rows(&text))
}

fn data_rows(text: &str) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(',').map(|f| f.trim().to_string()).collect())
        .collect();
    let is_header = |row: &Vec<String>| row.last().is_some_and(|f| f.parse::<f64>().is_err());
    if rows.first().is_some_and(is_header) {
        rows.remove(0);
    }
    rows
}

/// An axis number as a person writes it: `10000`, not `10000.0`.
fn whole(value: &f64) -> String {
    format!("{value:.0}")
}

fn number(field: &str) -> anyhow::Result<f64> {
    field
        .parse()
        .with_context(|| format!("{field:?} is not a number"))
}

fn scheduler_throughput() -> anyhow::Result<()> {
    let points: Vec<(String, f64, f64)> = rows("scheduler-throughput.csv")?
        .iter()
        .map(|r| Ok((r[0].clone(), number(&r[1])?, number(&r[2])?)))
        .collect::<anyhow::Result<_>>()?;
    let out = charts().join("scheduler-throughput.svg");
    let root = SVGBackend::new(&out, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = points.iter().map(|p| p.2).fold(0.0, f64::max) * 1.25;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Scheduler throughput (default plugins, real bind path)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((300f64..8_000f64).log_scale(), 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("nodes")
        .y_desc("pods scheduled per second")
        .x_label_formatter(&whole)
        .y_label_formatter(&whole)
        .draw()?;
    for (i, (workload, nodes, rate)) in points.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        chart
            .draw_series(std::iter::once(Circle::new(
                (*nodes, *rate),
                6,
                colour.filled(),
            )))?
            .label(format!("{workload}: {rate:.0} pods/s at {nodes:.0} nodes"))
            .legend(move |(x, y)| Circle::new((x, y), 5, colour.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    println!("wrote {}", out.display());
    Ok(())
}

fn pods_running() -> anyhow::Result<()> {
    let points: Vec<(f64, f64)> = rows("pods-running.csv")?
        .iter()
        .map(|r| Ok((number(&r[0])?, number(&r[1])?)))
        .collect::<anyhow::Result<_>>()?;
    let out = charts().join("pods-running.svg");
    let root = SVGBackend::new(&out, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let end = points.last().map_or(1.0, |p| p.0).max(1.0);
    let top = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "10,000-replica Deployment on 1,000 fake nodes, over HTTP",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end * 1.02, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the Deployment was created")
        .y_desc("Pods Running")
        .x_label_formatter(&whole)
        .y_label_formatter(&whole)
        .draw()?;
    chart.draw_series(LineSeries::new(points, BLUE.stroke_width(2)))?;
    root.present()?;
    println!("wrote {}", out.display());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    scheduler_throughput()?;
    pods_running()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_in_a_comment_does_not_cost_the_first_data_row() {
        let text = "# a note\n# workload,nodes,pods_per_second\n1000 pods,500,5547\n10000 pods,5000,4533\n";
        let rows = data_rows(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], ["1000 pods", "500", "5547"]);
    }

    #[test]
    fn a_plain_header_row_is_skipped() {
        let rows = data_rows("seconds,running\n0.00,0\n0.10,22\n");
        assert_eq!(rows, [["0.00", "0"], ["0.10", "22"]]);
    }

    #[test]
    fn axis_numbers_are_whole() {
        assert_eq!(whole(&10000.0), "10000");
        assert_eq!(whole(&2.5), "2");
    }
}
