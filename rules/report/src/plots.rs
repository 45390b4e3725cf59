//! The plots, as SVG text (plotters' SVG backend: text stays `<text>`, so
//! no font library is needed). Every plot has a title, axis labels with
//! units and a legend.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::ReportError;
use crate::numbers::{Numbers, STATUSES};

const SIZE: (u32, u32) = (860, 460);
const FONT: &str = "sans-serif";

/// One plot: its file name and SVG text.
pub struct Plot {
    pub file: String,
    pub title: String,
    pub svg: String,
}

fn err<E: std::fmt::Debug>(plot: &str) -> impl Fn(E) -> ReportError + '_ {
    move |e| ReportError::Plot {
        plot: plot.to_owned(),
        message: format!("{e:?}"),
    }
}

/// Draws into a fresh SVG of [`SIZE`].
fn svg(
    file: &str,
    title: &str,
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), ReportError>,
) -> Result<Plot, ReportError> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err(file))?;
        draw(&root)?;
        root.present().map_err(err(file))?;
    }
    Ok(Plot {
        file: file.to_owned(),
        title: title.to_owned(),
        svg: text,
    })
}

/// A chart with its title and room for the axis labels (`y_area` wide).
fn builder<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    y_area: u32,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, (FONT, 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(y_area);
    builder
}

/// Draws the legend of the chart's labelled series.
fn legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    position: SeriesLabelPosition,
    file: &str,
) -> Result<(), ReportError> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .draw()
        .map_err(err(file))
}

fn family_color(family: &str) -> RGBColor {
    match family {
        "forecaster" => RGBColor(31, 119, 180),
        "cnn" => RGBColor(214, 39, 40),
        "autoencoder" => RGBColor(44, 160, 44),
        _ => RGBColor(127, 127, 127),
    }
}

fn status_color(status: &str) -> RGBColor {
    match status {
        "evaluated" => RGBColor(44, 160, 44),
        "trained" => RGBColor(31, 119, 180),
        "generated" => RGBColor(158, 202, 225),
        "rejected-too-big" => RGBColor(255, 127, 14),
        "rejected-incompatible" => RGBColor(214, 39, 40),
        "crashed" => RGBColor(148, 103, 189),
        _ => RGBColor(127, 127, 127),
    }
}

pub fn all(n: &Numbers) -> Result<Vec<Plot>, ReportError> {
    let mut plots = vec![training(n)?, statuses(n)?];
    plots.push(front(
        n,
        "pareto_latency.svg",
        "Quality against accelerator latency",
        Axis::Latency,
    )?);
    plots.push(front(
        n,
        "pareto_memory.svg",
        "Quality against weight memory",
        Axis::Weights,
    )?);
    if !n.kept.is_empty() {
        plots.push(quality(n)?);
    }
    if n.kept.iter().any(|k| k.cpu_us.is_some()) {
        plots.push(latency(n)?);
    }
    for (i, k) in n.kept.iter().enumerate() {
        if k.roc_float.is_some() || k.roc_target.is_some() {
            plots.push(roc(&crate::roc_plot(i + 1), k)?);
        }
        if let Some(r) = &k.resources {
            plots.push(resources(&crate::resources_plot(i + 1), &k.candidate, r)?);
            plots.push(layers(&crate::layers_plot(i + 1), &k.candidate, r)?);
        }
    }
    Ok(plots)
}

/// Every candidate's training and validation loss over the epochs it was
/// trained, the rung boundaries marked.
fn training(n: &Numbers) -> Result<Plot, ReportError> {
    const FILE: &str = "training.svg";
    svg(FILE, "Training losses of every candidate", |root| {
        let losses = n
            .training
            .iter()
            .flat_map(|c| c.epochs.iter().flat_map(|e| [e.train_loss, e.val_loss]))
            .filter(|v| v.is_finite() && *v > 0.0);
        let (lo, hi) = losses.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let (lo, hi) = if lo.is_finite() {
            (lo / 1.5, hi * 1.5)
        } else {
            (1e-3, 1.0)
        };
        let max_epoch = n
            .training
            .iter()
            .flat_map(|c| c.epochs.iter().map(|e| e.epoch))
            .max()
            .unwrap_or(1);
        let mut chart = builder(root, "Training losses of every candidate", 70)
            .build_cartesian_2d(0.5f64..f64::from(max_epoch) + 0.5, (lo..hi).log_scale())
            .map_err(err(FILE))?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| format!("{x:.0}"))
            .x_desc("epochs trained (budget)")
            .y_desc("loss (log scale; cross-entropy or MSE)")
            .label_style((FONT, 13))
            .draw()
            .map_err(err(FILE))?;
        let mut rung_start = 0;
        for rung in &n.rungs {
            if rung_start > 0 {
                let x = f64::from(rung_start) + 0.5;
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(x, lo), (x, hi)],
                        BLACK.mix(0.3).stroke_width(1),
                    )))
                    .map_err(err(FILE))?;
            }
            rung_start = rung.epochs;
        }
        let mut families: Vec<&str> = Vec::new();
        for curve in &n.training {
            let color = family_color(&curve.family);
            let point = |v: f64, e: u32| (v.is_finite() && v > 0.0).then_some((f64::from(e), v));
            let val: Vec<(f64, f64)> = curve.epochs.iter().filter_map(|e| point(e.val_loss, e.epoch)).collect();
            let train: Vec<(f64, f64)> = curve
                .epochs
                .iter()
                .filter_map(|e| point(e.train_loss, e.epoch))
                .collect();
            let series = chart
                .draw_series(LineSeries::new(val, color.mix(0.8).stroke_width(2)))
                .map_err(err(FILE))?;
            if !families.contains(&curve.family.as_str()) {
                families.push(&curve.family);
                series
                    .label(format!("{} (validation solid, training dashed)", curve.family))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            }
            chart
                .draw_series(DashedLineSeries::new(train, 4, 4, color.mix(0.6).stroke_width(1)))
                .map_err(err(FILE))?;
        }
        chart
            .draw_series(std::iter::once(PathElement::new(
                Vec::<(f64, f64)>::new(),
                BLACK.mix(0.3),
            )))
            .map_err(err(FILE))?
            .label("rung boundary")
            .legend(|(x, y)| PathElement::new(vec![(x + 10, y - 6), (x + 10, y + 6)], BLACK.mix(0.3)));
        legend(&mut chart, SeriesLabelPosition::UpperRight, FILE)
    })
}

/// Candidates by final status, batch by batch of proposals (stacked).
fn statuses(n: &Numbers) -> Result<Plot, ReportError> {
    const FILE: &str = "status.svg";
    svg(FILE, "Candidates by status over the search", |root| {
        let batches = n.status_by_batch.len().max(1);
        let tallest = n
            .status_by_batch
            .iter()
            .map(|b| b.counts.values().sum::<u64>())
            .max()
            .unwrap_or(1);
        let mut chart = builder(root, "Candidates by status over the search", 60)
            .build_cartesian_2d(-0.5f64..batches as f64 - 0.5, 0f64..tallest as f64 * 1.35)
            .map_err(err(FILE))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(batches.min(20))
            .x_label_formatter(&|x| format!("{}", x.round() as i64 + 1))
            .x_desc("batch of proposals (in search order)")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .y_desc("candidates")
            .label_style((FONT, 13))
            .draw()
            .map_err(err(FILE))?;
        for status in STATUSES {
            let color = status_color(status);
            let bars: Vec<Rectangle<(f64, f64)>> = n
                .status_by_batch
                .iter()
                .filter_map(|b| {
                    let below: u64 = STATUSES
                        .iter()
                        .take_while(|s| **s != status)
                        .map(|s| b.counts.get(*s).copied().unwrap_or(0))
                        .sum();
                    let count = b.counts.get(status).copied().unwrap_or(0);
                    (count > 0).then(|| {
                        let x = b.batch as f64;
                        Rectangle::new(
                            [(x - 0.35, below as f64), (x + 0.35, (below + count) as f64)],
                            color.filled(),
                        )
                    })
                })
                .collect();
            let total = n.stats.counts.get(status).copied().unwrap_or(0);
            if total == 0 {
                continue;
            }
            chart
                .draw_series(bars)
                .map_err(err(FILE))?
                .label(format!("{status} ({total})"))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight, FILE)
    })
}

#[derive(Clone, Copy)]
enum Axis {
    Latency,
    Weights,
}

/// Validation F1 of every trained candidate against a resource, the
/// Pareto front and the kept models marked, the fixed baseline model (at
/// its own validation F1) and the z-score detector's F1 beside them.
fn front(n: &Numbers, file: &str, title: &str, axis: Axis) -> Result<Plot, ReportError> {
    svg(file, title, |root| {
        let x_of = |p: &crate::numbers::Point| match axis {
            Axis::Latency => p.latency_us,
            Axis::Weights => p.weight_bytes,
        };
        let points: Vec<(f64, f64, &crate::numbers::Point)> = n
            .candidates
            .iter()
            .filter_map(|p| Some((x_of(p).filter(|x| *x > 0.0)?, p.val_f1, p)))
            .collect();
        let fixed = n.fixed.as_ref().and_then(|f| {
            let x = match axis {
                Axis::Latency => f.latency_us,
                Axis::Weights => f.weight_bytes,
            };
            Some((x.filter(|x| *x > 0.0)?, f.val_f1?, f.targets.join(" + ")))
        });
        let (xlo, xhi) = points
            .iter()
            .map(|(x, _, _)| *x)
            .chain(fixed.as_ref().map(|f| f.0))
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
        let (xlo, xhi) = if xlo.is_finite() {
            (xlo / 1.5, xhi * 1.5)
        } else {
            (0.1, 10.0)
        };
        let x_desc = match axis {
            Axis::Latency => "latency on the accelerator (µs, log scale)",
            Axis::Weights => "weight memory (bytes, log scale)",
        };
        let mut chart = builder(root, title, 60)
            .build_cartesian_2d((xlo..xhi).log_scale(), 0f64..1f64)
            .map_err(err(file))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("validation F1")
            .label_style((FONT, 13))
            .draw()
            .map_err(err(file))?;
        chart
            .draw_series(
                points
                    .iter()
                    .filter(|(_, _, p)| !p.on_front && !p.kept)
                    .map(|(x, y, p)| Circle::new((*x, *y), 4, family_color(&p.family).mix(0.5).filled())),
            )
            .map_err(err(file))?
            .label("candidate (colour: family)")
            .legend(|(x, y)| Circle::new((x + 8, y), 4, RGBColor(127, 127, 127).filled()));
        let mut front: Vec<(f64, f64)> = points
            .iter()
            .filter(|(_, _, p)| p.on_front)
            .map(|(x, y, _)| (*x, *y))
            .collect();
        front.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(front, BLACK.stroke_width(1)))
            .map_err(err(file))?
            .label("Pareto front")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        chart
            .draw_series(
                points
                    .iter()
                    .filter(|(_, _, p)| p.kept)
                    .map(|(x, y, _)| Circle::new((*x, *y), 7, RGBColor(0, 0, 0).stroke_width(2))),
            )
            .map_err(err(file))?
            .label("kept (deployed)")
            .legend(|(x, y)| Circle::new((x + 8, y), 6, BLACK.stroke_width(2)));
        if let Some((x, y, name)) = fixed {
            chart
                .draw_series([Cross::new((x, y), 7, RGBColor(214, 39, 40).stroke_width(3))])
                .map_err(err(file))?
                .label(format!("fixed baseline {name}"))
                .legend(|(x, y)| Cross::new((x + 8, y), 6, RGBColor(214, 39, 40).stroke_width(3)));
        }
        if let Some(f1) = n.zscore.as_ref().and_then(|b| b.f1) {
            chart
                .draw_series(DashedLineSeries::new(
                    [(xlo, f1), (xhi, f1)],
                    6,
                    4,
                    RGBColor(214, 39, 40).stroke_width(1),
                ))
                .map_err(err(file))?
                .label(format!("z-score detector (test F1 {f1:.3})"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(214, 39, 40)));
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft, file)
    })
}

/// Each kept model's inference time on the accelerator and as C on the
/// Cortex-M core without it.
fn latency(n: &Numbers) -> Result<Plot, ReportError> {
    const FILE: &str = "latency.svg";
    svg(FILE, "Accelerator against the Cortex-M core", |root| {
        let rows: Vec<(usize, f64, f64)> = n
            .kept
            .iter()
            .enumerate()
            .filter_map(|(i, k)| Some((i, k.accelerator_us?, k.cpu_us?)))
            .collect();
        let hi = rows.iter().map(|r| r.2).fold(1.0f64, f64::max) * 3.0;
        let lo = rows.iter().map(|r| r.1).fold(hi, f64::min) / 3.0;
        let names: Vec<String> = n.kept.iter().map(|k| k.candidate.clone()).collect();
        let mut chart = builder(root, "Inference time: accelerator against the Cortex-M core", 70)
            .build_cartesian_2d(-0.5f64..names.len().max(1) as f64 - 0.5, (lo..hi).log_scale())
            .map_err(err(FILE))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(names.len().max(1))
            .x_label_formatter(&|x| category(&names, *x))
            .x_desc("kept model")
            .y_desc("time per inference (µs, log scale)")
            .label_style((FONT, 13))
            .draw()
            .map_err(err(FILE))?;
        let accel = RGBColor(44, 160, 44);
        let cpu = RGBColor(31, 119, 180);
        chart
            .draw_series(
                rows.iter()
                    .map(|&(i, a, _)| Rectangle::new([(i as f64 - 0.35, lo), (i as f64, a)], accel.filled())),
            )
            .map_err(err(FILE))?
            .label("CNN accelerator")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], accel.filled()));
        chart
            .draw_series(
                rows.iter()
                    .map(|&(i, _, c)| Rectangle::new([(i as f64, lo), (i as f64 + 0.35, c)], cpu.filled())),
            )
            .map_err(err(FILE))?
            .label("Cortex-M, C inference (QEMU-counted)")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], cpu.filled()));
        chart
            .draw_series(rows.iter().map(|&(i, a, c)| {
                Text::new(
                    format!("{:.0}×", c / a.max(f64::MIN_POSITIVE)),
                    (i as f64 - 0.1, c * 1.4),
                    (FONT, 16).into_font().color(&BLACK),
                )
            }))
            .map_err(err(FILE))?;
        legend(&mut chart, SeriesLabelPosition::UpperRight, FILE)
    })
}

/// One of a kept model's F1 figures.
type Quality = fn(&crate::numbers::KeptRow) -> Option<f64>;

/// Test F1 of each kept model: the float model on the host, as deployed
/// (quantized, on the simulated accelerator) and on the board.
fn quality(n: &Numbers) -> Result<Plot, ReportError> {
    const FILE: &str = "quality.svg";
    svg(FILE, "Quality: float, quantized and on the board", |root| {
        let names: Vec<String> = n.kept.iter().map(|k| k.candidate.clone()).collect();
        let mut chart = builder(root, "Test F1: float, quantized and on the board", 60)
            .build_cartesian_2d(-0.5f64..names.len() as f64 - 0.5, 0f64..1.15f64)
            .map_err(err(FILE))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(names.len())
            .x_label_formatter(&|x| category(&names, *x))
            .x_desc("kept model")
            .y_desc("test F1")
            .label_style((FONT, 13))
            .draw()
            .map_err(err(FILE))?;
        let bars: [(&str, RGBColor, Quality); 3] = [
            ("float (host, ONNX Runtime)", RGBColor(127, 127, 127), |k| k.f1_float),
            ("quantized (simulated target)", RGBColor(31, 119, 180), |k| k.f1_target),
            ("on the board", RGBColor(44, 160, 44), |k| k.f1_board),
        ];
        for (b, (label, color, value)) in bars.into_iter().enumerate() {
            let left = -0.36 + 0.24 * b as f64;
            chart
                .draw_series(n.kept.iter().enumerate().filter_map(|(i, k)| {
                    let x = i as f64 + left;
                    Some(Rectangle::new([(x, 0.0), (x + 0.22, value(k)?)], color.filled()))
                }))
                .map_err(err(FILE))?
                .label(label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight, FILE)
    })
}

/// The name of the category at `x`, on whole positions only.
fn category(names: &[String], x: f64) -> String {
    let i = x.round();
    if i >= 0.0 && (i - x).abs() < 0.01 {
        names.get(i as usize).cloned().unwrap_or_default()
    } else {
        String::new()
    }
}

/// One kept model's kernel memory, processor by processor, against what
/// each processor has.
fn resources(file: &str, candidate: &str, r: &crate::data::ResourceUse) -> Result<Plot, ReportError> {
    let title = format!("{candidate}: kernel memory per processor ({})", r.device);
    svg(file, &title, |root| {
        let processors = r.kernel_columns_limit.len().max(r.kernel_columns.len()).max(1);
        let top = r.kernel_columns_limit.iter().copied().max().unwrap_or(1).max(1) as f64;
        let mut chart = builder(root, &title, 70)
            .build_cartesian_2d(-0.5f64..processors as f64 - 0.5, (0.5f64..top * 3.0).log_scale())
            .map_err(err(file))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|x| format!("{x:.0}"))
            .x_desc("processor")
            .y_desc("kernel memory (9-byte columns, log scale)")
            .label_style((FONT, 13))
            .draw()
            .map_err(err(file))?;
        let used = RGBColor(31, 119, 180);
        chart
            .draw_series(
                r.kernel_columns
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .map(|(p, &c)| {
                        Rectangle::new([(p as f64 - 0.4, 0.5), (p as f64 + 0.4, f64::from(c))], used.filled())
                    }),
            )
            .map_err(err(file))?
            .label(format!(
                "used ({} columns; bias bytes per quadrant {:?} of {})",
                r.kernel_columns.iter().map(|&c| u64::from(c)).sum::<u64>(),
                r.bias_bytes,
                r.bias_bytes_limit
            ))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], used.filled()));
        let limit = RGBColor(214, 39, 40);
        chart
            .draw_series(r.kernel_columns_limit.iter().enumerate().map(|(p, &c)| {
                PathElement::new(
                    vec![(p as f64 - 0.45, f64::from(c)), (p as f64 + 0.45, f64::from(c))],
                    limit.stroke_width(2),
                )
            }))
            .map_err(err(file))?
            .label("available")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], limit.stroke_width(2)));
        legend(&mut chart, SeriesLabelPosition::UpperRight, file)
    })
}

/// One kept model's test ROC curves: the float model's and as deployed.
fn roc(file: &str, k: &crate::numbers::KeptRow) -> Result<Plot, ReportError> {
    let title = format!("{}: ROC curve on the test split", k.candidate);
    svg(file, &title, |root| {
        let mut chart = builder(root, &title, 60)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(err(file))?;
        chart
            .configure_mesh()
            .x_desc("false-positive rate")
            .y_desc("true-positive rate (recall)")
            .label_style((FONT, 13))
            .draw()
            .map_err(err(file))?;
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                6,
                4,
                BLACK.mix(0.4).stroke_width(1),
            ))
            .map_err(err(file))?
            .label("chance (AUC 0.5)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
        let curves = [
            ("float", RGBColor(127, 127, 127), &k.roc_float),
            ("as deployed", RGBColor(31, 119, 180), &k.roc_target),
        ];
        for (name, color, curve) in curves {
            let Some(r) = curve else { continue };
            let auc = r.auc.map_or_else(|| "–".to_owned(), |a| format!("{a:.3}"));
            chart
                .draw_series(LineSeries::new(
                    r.curve.iter().map(|p| (p[0], p[1])),
                    color.stroke_width(2),
                ))
                .map_err(err(file))?
                .label(format!("{name} (AUC {auc})"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight, file)
    })
}

/// Each layer's share of the accelerator's memories: kernel memory (its
/// columns against the smallest processor's), bias memory (against one
/// quadrant's) and data memory (its input and output maps against one
/// instance).
fn layers(file: &str, candidate: &str, r: &crate::data::ResourceUse) -> Result<Plot, ReportError> {
    let title = format!("{candidate}: each layer against the memories of the {}", r.device);
    svg(file, &title, |root| {
        let names: Vec<String> = r.layers.iter().map(|l| l.name.clone()).collect();
        let smallest = r
            .kernel_columns_limit
            .iter()
            .copied()
            .filter(|&c| c > 0)
            .min()
            .unwrap_or(1);
        let percent = |used: f64, limit: f64| 100.0 * used / limit.max(1.0);
        let shares: Vec<[f64; 3]> = r
            .layers
            .iter()
            .map(|l| {
                [
                    percent(f64::from(l.kernel_columns), f64::from(smallest)),
                    percent(l.bias_bytes as f64, f64::from(r.bias_bytes_limit)),
                    percent(l.data_bytes as f64, f64::from(r.data_bytes_limit)),
                ]
            })
            .collect();
        let top = shares.iter().flatten().copied().fold(100.0f64, f64::max) * 1.2;
        let mut chart = builder(root, &title, 60)
            .build_cartesian_2d(-0.5f64..names.len().max(1) as f64 - 0.5, 0f64..top)
            .map_err(err(file))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(names.len().max(1))
            .x_label_formatter(&|x| category(&names, *x))
            .x_desc("layer")
            .y_desc("share of the device memory (%)")
            .label_style((FONT, 13))
            .draw()
            .map_err(err(file))?;
        let memories = [
            (format!("kernel memory (of {smallest} columns)"), RGBColor(31, 119, 180)),
            (
                format!("bias memory (of {} bytes)", r.bias_bytes_limit),
                RGBColor(255, 127, 14),
            ),
            (
                format!("data memory (of {} bytes)", r.data_bytes_limit),
                RGBColor(44, 160, 44),
            ),
        ];
        for (m, (label, color)) in memories.into_iter().enumerate() {
            let left = -0.36 + 0.24 * m as f64;
            chart
                .draw_series(shares.iter().enumerate().map(|(i, s)| {
                    let x = i as f64 + left;
                    Rectangle::new([(x, 0.0), (x + 0.22, s[m])], color.filled())
                }))
                .map_err(err(file))?
                .label(label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
        }
        chart
            .draw_series(DashedLineSeries::new(
                [(-0.5, 100.0), (names.len() as f64 - 0.5, 100.0)],
                6,
                4,
                RGBColor(214, 39, 40).stroke_width(1),
            ))
            .map_err(err(file))?
            .label("the limit (100%)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(214, 39, 40)));
        legend(&mut chart, SeriesLabelPosition::UpperRight, file)
    })
}
