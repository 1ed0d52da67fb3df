//! Plots of the recorded benchmarks (issue 7, part 3): `bench/plots/*.png`.
//!
//!   cargo run --release -p bench --bin plot [-- DATA_DIR [PLOT_DIR]]   (bench/data, bench/plots)
//!
//! Reads what the benchmark scripts leave in `bench/data` and draws, for each one that
//! has run, its throughput beside its reference, and the latency distributions:
//!
//! - `pipeline.png` (pipeline.csv): Mpps of `process` per message kind beside the frame
//!   copy + header checks and the copy + line scan references;
//! - `af_packet.png` (af_packet.csv): messages/s at <= 0.1% loss, siplb beside Kamailio;
//! - `virtio.png` (virtio.csv): Mpps, siplb beside testpmd io forwarding;
//! - `memory.png` (memory.csv): bytes per dialog at each size beside the 64-byte aim;
//! - `latency.png` (af_packet-latency-*.csv): one-way latency distribution per forwarder.
//!
//! Text is drawn with DejaVu Sans (Debian `fonts-dejavu-core`, in ci/setup-host.sh).

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::error::Error;
use std::path::{Path, PathBuf};

type Res<T> = Result<T, Box<dyn Error>>;

const FONT_FILE: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const SIZE: (u32, u32) = (1000, 600);
const COLOURS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// A CSV file as rows of fields (double quotes group fields with commas), header first.
fn read_csv(path: &Path) -> Option<Vec<Vec<String>>> {
    let text = std::fs::read_to_string(path).ok()?;
    let rows = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (mut fields, mut cur, mut quoted) = (Vec::new(), String::new(), false);
            for ch in line.chars() {
                match ch {
                    '"' => quoted = !quoted,
                    ',' if !quoted => fields.push(std::mem::take(&mut cur)),
                    c => cur.push(c),
                }
            }
            fields.push(cur);
            fields
        })
        .collect::<Vec<_>>();
    (rows.len() > 1).then_some(rows)
}

/// Column `name` of a CSV's header.
fn col(rows: &[Vec<String>], name: &str) -> Res<usize> {
    rows[0]
        .iter()
        .position(|h| h == name)
        .ok_or_else(|| format!("no column {name}").into())
}

fn num(s: &str) -> f64 {
    s.trim().parse().unwrap_or(0.0)
}

/// A group of bars (one per series) for each category; values above 0 only.
struct Bars {
    title: String,
    y_desc: String,
    series: Vec<String>,
    /// (category, value per series)
    groups: Vec<(String, Vec<f64>)>,
    log_y: bool,
    /// A horizontal line to compare with (value, label).
    aim: Option<(f64, String)>,
}

fn draw_bars(path: &Path, b: &Bars) -> Res<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let max = b
        .groups
        .iter()
        .flat_map(|g| g.1.iter().copied())
        .chain(b.aim.as_ref().map(|a| a.0))
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let min_pos = b
        .groups
        .iter()
        .flat_map(|g| g.1.iter().copied())
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let n = b.groups.len() as f64;
    let k = b.series.len() as f64;
    let width = 0.8 / k;
    let mut builder = ChartBuilder::on(&root);
    let chart = builder
        .caption(&b.title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80);
    let label = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < b.groups.len() {
            b.groups[i as usize].0.clone()
        } else {
            String::new()
        }
    };
    let bar_colour = |s: usize| COLOURS[s % COLOURS.len()];
    // Where a bar's value label goes: just above the bar.
    let above = |v: f64| if b.log_y { v * 1.12 } else { v + max * 0.035 };
    macro_rules! body {
        ($chart:expr, $base:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(b.groups.len() * 2 + 1)
                .x_label_formatter(&label)
                .y_desc(b.y_desc.as_str())
                .label_style(("sans-serif", 16))
                .axis_desc_style(("sans-serif", 18))
                .draw()?;
            for (s, name) in b.series.iter().enumerate() {
                let c = bar_colour(s);
                chart
                    .draw_series(b.groups.iter().enumerate().filter_map(|(g, (_, v))| {
                        let v = *v.get(s)?;
                        (v > 0.0).then(|| {
                            let x0 = g as f64 - 0.4 + width * s as f64;
                            Rectangle::new([(x0, $base), (x0 + width * 0.95, v)], c.filled())
                        })
                    }))?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled())
                    });
                chart.draw_series(b.groups.iter().enumerate().filter_map(|(g, (_, v))| {
                    let v = *v.get(s)?;
                    (v > 0.0).then(|| {
                        let x = g as f64 - 0.4 + width * (s as f64 + 0.5);
                        Text::new(
                            short(v),
                            (x - 0.03 * 4.0 / n.max(1.0), above(v)),
                            ("sans-serif", 14).into_font(),
                        )
                    })
                }))?;
            }
            if let Some((v, name)) = &b.aim {
                chart
                    .draw_series(LineSeries::new(
                        [(-0.5, *v), (n - 0.5, *v)],
                        ShapeStyle::from(&BLACK).stroke_width(2),
                    ))?
                    .label(name.as_str())
                    .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], BLACK));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 16))
                .draw()?;
        }};
    }
    if b.log_y {
        let lo = 10f64.powf((min_pos.log10() - 0.5).floor());
        let c = chart.build_cartesian_2d(-0.5..n - 0.5, (lo..max * 3.0).log_scale())?;
        body!(c, lo);
    } else {
        let c = chart.build_cartesian_2d(-0.5..n - 0.5, 0.0..max * 1.2)?;
        body!(c, 0.0);
    }
    root.present()?;
    Ok(())
}

/// A value in a few characters (1.23M, 45.6k, 7.89).
fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn pipeline(data: &Path, out: &Path) -> Res<bool> {
    let Some(rows) = read_csv(&data.join("pipeline.csv")) else {
        return Ok(false);
    };
    let (k, p, h, s) = (
        col(&rows, "kind")?,
        col(&rows, "pipeline_median_ns")?,
        col(&rows, "copy_headers_median_ns")?,
        col(&rows, "copy_scan_median_ns")?,
    );
    let mpps = |ns: &str| if num(ns) > 0.0 { 1e3 / num(ns) } else { 0.0 };
    let dialogs = col(&rows, "dialogs").map_or(String::new(), |d| rows[1][d].clone());
    draw_bars(
        &out.join("pipeline.png"),
        &Bars {
            title: format!(
                "(a) balancer pipeline in process, {dialogs} dialogs: Mpps (median round)"
            ),
            y_desc: "million packets/s, one core (log)".into(),
            series: vec![
                "siplb process()".into(),
                "ref: copy + Eth/IPv4/UDP checks".into(),
                "ref: copy + memchr line scan".into(),
            ],
            groups: rows[1..]
                .iter()
                .map(|r| (r[k].clone(), vec![mpps(&r[p]), mpps(&r[h]), mpps(&r[s])]))
                .collect(),
            log_y: true,
            aim: None,
        },
    )?;
    Ok(true)
}

fn af_packet(data: &Path, out: &Path) -> Res<bool> {
    let Some(rows) = read_csv(&data.join("af_packet.csv")) else {
        return Ok(false);
    };
    let (t, m) = (col(&rows, "target")?, col(&rows, "best_msgs_s")?);
    let of = |name: &str| {
        rows[1..]
            .iter()
            .find(|r| r[t] == name)
            .map_or(0.0, |r| num(&r[m]))
    };
    draw_bars(
        &out.join("af_packet.png"),
        &Bars {
            title: "(c) veth/af_packet, one core: messages/s at <= 0.1% loss".into(),
            y_desc: "SIP messages/s through the forwarder".into(),
            series: vec!["siplb".into(), "Kamailio 5.6 dispatcher (reference)".into()],
            groups: vec![(
                "siplb-gen INVITE/ACK/BYE calls".into(),
                vec![of("siplb"), of("kamailio")],
            )],
            log_y: false,
            aim: None,
        },
    )?;
    Ok(true)
}

fn virtio(data: &Path, out: &Path) -> Res<bool> {
    let Some(rows) = read_csv(&data.join("virtio.csv")) else {
        return Ok(false);
    };
    let (d, m) = (col(&rows, "dut")?, col(&rows, "max_mpps")?);
    // Best of the repetitions per device under test.
    let best = |name: &str| {
        rows[1..]
            .iter()
            .filter(|r| r[d] == name)
            .map(|r| num(&r[m]))
            .fold(0.0, f64::max)
    };
    if best("siplb") <= 0.0 && best("testpmd") <= 0.0 {
        return Ok(false); // no search has passed a rate yet
    }
    draw_bars(
        &out.join("virtio.png"),
        &Bars {
            title: "(b) virtio-user/vhost-user, one core: Mpps at <= 0.1% loss (best run)".into(),
            y_desc: "million messages/s".into(),
            series: vec!["siplb".into(), "testpmd io (reference)".into()],
            groups: vec![("virtio".into(), vec![best("siplb"), best("testpmd")])],
            log_y: false,
            aim: None,
        },
    )?;
    Ok(true)
}

fn memory(data: &Path, out: &Path) -> Res<bool> {
    let Some(rows) = read_csv(&data.join("memory.csv")) else {
        return Ok(false);
    };
    let (d, b) = (col(&rows, "dialogs")?, col(&rows, "bytes_per_dialog")?);
    let (r0, r1) = (col(&rows, "rss_start_kb")?, col(&rows, "rss_full_kb")?);
    draw_bars(
        &out.join("memory.png"),
        &Bars {
            title: "(e) memory per dialog, dialogs placed through process()".into(),
            y_desc: "bytes per dialog".into(),
            series: vec![
                "dialog table / dialogs".into(),
                "process RSS growth / dialogs".into(),
            ],
            groups: rows[1..]
                .iter()
                .map(|r| {
                    let n = num(&r[d]);
                    let rss = (num(&r[r1]) - num(&r[r0])) * 1024.0 / n;
                    (format!("{} M dialogs", n / 1e6), vec![num(&r[b]), rss])
                })
                .collect(),
            log_y: false,
            aim: Some((64.0, "aim: 64 bytes".into())),
        },
    )?;
    Ok(true)
}

fn latency(data: &Path, out: &Path) -> Res<bool> {
    let mut series = Vec::new();
    for (name, label) in [
        ("kernel", "kernel IPv4 routing (baseline)"),
        ("kamailio", "Kamailio 5.6 dispatcher"),
        ("siplb", "siplb"),
    ] {
        let Some(rows) = read_csv(&data.join(format!("af_packet-latency-{name}.csv"))) else {
            continue;
        };
        // (nines, us): x = -log10(1 - p), so 90% is 1, 99% is 2, 99.9% is 3.
        let mut pts: Vec<(f64, f64)> = rows[1..]
            .iter()
            .map(|r| (num(&r[0]) / 1000.0, num(&r[1])))
            .filter(|&(p, us)| us > 0.0 && p < 0.99995)
            .map(|(p, us)| (-(1.0 - p).log10(), us))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        if !pts.is_empty() {
            series.push((label, pts));
        }
    }
    if series.is_empty() {
        return Ok(false);
    }
    let rate = read_csv(&data.join("af_packet.csv"))
        .and_then(|r| {
            let (c, u) = (col(&r, "lat_rate").ok()?, col(&r, "unit").ok()?);
            Some(format!("{} {}", r[1][c], r[1][u]))
        })
        .unwrap_or_default();
    let path = out.join("latency.png");
    let root = BitMapBackend::new(&path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let ymax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    let ymin = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(f64::INFINITY, f64::min)
        .max(0.1);
    let xmax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("(d) one-way latency through the forwarder, veth/af_packet, {rate}"),
            ("sans-serif", 22),
        )
        .margin(30)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(
            0.0..(xmax - 1e-6).ceil(),
            (ymin * 0.8..ymax * 1.5).log_scale(),
        )?;
    let nines = |x: &f64| {
        let p = 100.0 * (1.0 - 10f64.powf(-x));
        if (x - x.round()).abs() < 1e-6 {
            let t = format!("{p:.4}");
            format!("{}%", t.trim_end_matches('0').trim_end_matches('.'))
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_labels((xmax - 1e-6).ceil() as usize + 1)
        .x_label_formatter(&nines)
        .x_desc("percentile (captures on the client and the backend side, matched per message)")
        .y_desc("one-way microseconds (log)")
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()?;
    for (i, (label, pts)) in series.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                pts.iter().copied(),
                ShapeStyle::from(&c).stroke_width(3),
            ))?
            .label(*label)
            .legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 18, y)], ShapeStyle::from(&c).stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    root.present()?;
    Ok(true)
}

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let data = PathBuf::from(args.next().unwrap_or_else(|| "bench/data".into()));
    let out = PathBuf::from(args.next().unwrap_or_else(|| "bench/plots".into()));
    let font = std::fs::read(FONT_FILE).map_err(|e| {
        format!("{FONT_FILE}: {e} (install fonts-dejavu-core, or run ci/setup-host.sh)")
    })?;
    // The font must outlive every chart: it lives as long as the process.
    register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| format!("{FONT_FILE}: not a font ab_glyph can read"))?;
    std::fs::create_dir_all(&out)?;
    for (name, f) in [
        ("pipeline", pipeline as fn(&Path, &Path) -> Res<bool>),
        ("af_packet", af_packet),
        ("virtio", virtio),
        ("memory", memory),
        ("latency", latency),
    ] {
        match f(&data, &out) {
            Ok(true) => println!("{}", out.join(format!("{name}.png")).display()),
            Ok(false) => println!("{name}: no data in {}", data.display()),
            Err(e) => return Err(format!("{name}: {e}").into()),
        }
    }
    Ok(())
}
