use std::collections::BTreeSet;

use super::plant::{FIRST_TELEMETRY, NUM_TELEMETRY, TELEMETRY_CENTER, TELEMETRY_SPAN};
use super::*;
use crate::read_rows_from;
use crate::testutil::generated_csv;
use std::path::Path;

fn params(rows: u64, seed: u64) -> GeneratorParams {
    GeneratorParams {
        rows,
        seed,
        ..GeneratorParams::default()
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let (a, meta_a) = generated_csv(5_000, 7);
    let (b, meta_b) = generated_csv(5_000, 7);
    let (c, _) = generated_csv(5_000, 8);
    assert_eq!(a, b);
    assert_eq!(meta_a, meta_b);
    assert_ne!(a, c);
}

#[test]
fn row_count_and_line_shape_are_exact() {
    // The row count is exact and every line has 19 fields ending in 0 or 1.
    let (bytes, meta) = generated_csv(1_234, 1);
    let text = String::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + 1_234);
    assert_eq!(meta.rows, 1_234);
    assert_eq!(lines[1].split(',').next(), Some("2023-01-01 00:00:00"));
    assert!(
        lines
            .iter()
            .skip(1)
            .all(|l| l.split(',').count() == 19 && (l.ends_with(",0") || l.ends_with(",1")))
    );
}

#[test]
fn anomaly_fraction_kinds_and_nominal_prefix_at_100k() {
    let (bytes, meta) = generated_csv(100_000, 0);
    let fraction = meta.anomalous_rows as f64 / meta.rows as f64;
    eprintln!(
        "anomaly fraction at 100k rows: {fraction:.4}, {} segments",
        meta.segments.len()
    );
    assert!((fraction - 0.038).abs() <= 0.005, "fraction {fraction}");

    let kinds: BTreeSet<AnomalyKind> = meta.segments.iter().map(|s| s.kind).collect();
    assert_eq!(kinds.len(), 5, "{kinds:?}");
    assert_eq!(meta.nominal_rows, 20_000);

    // Segments are ordered, apart, inside the evaluation rows, of the advertised lengths, and sum to the count.
    let mut previous_end = 0;
    let mut total = 0;
    for s in &meta.segments {
        assert!(s.start >= meta.nominal_rows && s.start >= previous_end + 60, "{s:?}");
        assert!(s.end > s.start && s.end <= meta.rows);
        assert!((20..=400).contains(&(s.end - s.start)) || s.end == meta.rows, "{s:?}");
        assert_eq!(s.channels.len(), 1);
        assert!(CHANNELS[FIRST_TELEMETRY..].contains(&s.channels[0].as_str()));
        previous_end = s.end;
        total += s.end - s.start;
    }
    assert_eq!(total, meta.anomalous_rows);

    // The CSV's labels, read back through the loader, are exactly the segments.
    let mut segment = meta.segments.iter().peekable();
    let summary = read_rows_from(&bytes[..], Path::new("gen"), None, |row| {
        while segment.peek().is_some_and(|s| s.end <= row.index) {
            segment.next();
        }
        let inside = segment.peek().is_some_and(|s| s.start <= row.index);
        assert_eq!(row.label, inside, "row {}", row.index);
        Ok(())
    })
    .unwrap();
    assert_eq!(summary.anomalous, meta.anomalous_rows);
}

#[test]
fn streams_a_generated_file_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.csv");
    let mut file = std::fs::File::create(&path).unwrap();
    let meta = generate(&params(3_000, 3), &mut file).unwrap();
    drop(file);
    let mut rows = 0;
    let summary = crate::read_rows(&path, |row| {
        assert_eq!(row.index, rows);
        assert!(row.values.iter().all(|v| v.is_finite()));
        rows += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(summary.rows, 3_000);
    assert_eq!(summary.anomalous, meta.anomalous_rows);
}

#[test]
fn params_are_validated_and_strict() {
    let mut out = Vec::new();
    for bad in [
        GeneratorParams {
            rows: 0,
            ..GeneratorParams::default()
        },
        GeneratorParams {
            anomaly_fraction: -0.1,
            ..GeneratorParams::default()
        },
        GeneratorParams {
            anomaly_fraction: 0.45,
            nominal_fraction: 0.2,
            ..GeneratorParams::default()
        },
        GeneratorParams {
            nominal_fraction: 1.0,
            ..GeneratorParams::default()
        },
        GeneratorParams {
            anomaly_fraction: f64::NAN,
            ..GeneratorParams::default()
        },
    ] {
        assert!(matches!(generate(&bad, &mut out), Err(DataError::Params(_))), "{bad:?}");
    }
    let parsed: GeneratorParams = serde_json::from_str(r#"{"rows": 10}"#).unwrap();
    assert_eq!(
        parsed,
        GeneratorParams {
            rows: 10,
            ..GeneratorParams::default()
        }
    );
    assert!(serde_json::from_str::<GeneratorParams>(r#"{"rowz": 10}"#).is_err());
}

#[test]
fn no_anomalies_when_fraction_is_zero_or_rows_are_few() {
    let mut out = Vec::new();
    let meta = generate(
        &GeneratorParams {
            rows: 5_000,
            anomaly_fraction: 0.0,
            ..GeneratorParams::default()
        },
        &mut out,
    )
    .unwrap();
    assert_eq!(meta.anomalous_rows, 0);
    let meta = generate(&params(50, 0), &mut Vec::new()).unwrap();
    assert_eq!(meta.rows, 50);
}

#[test]
fn timestamps_are_calendar_dates() {
    let mut s = String::new();
    format_timestamp(0, &mut s);
    assert_eq!(s, "2023-01-01 00:00:00");
    s.clear();
    format_timestamp(59 * 86_400 + 3_723, &mut s);
    assert_eq!(s, "2023-03-01 01:02:03");
    s.clear();
    format_timestamp(5_000_000 - 1, &mut s);
    assert_eq!(s, "2023-02-27 20:53:19");
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
}

/// Anomaly sizes are set in units of each reading's typical spread (`TELEMETRY_SPAN`, around `TELEMETRY_CENTER`);
/// this keeps those constants honest when the plant changes.
#[test]
fn telemetry_spans_match_the_plant() {
    let mut out = Vec::new();
    let p = GeneratorParams {
        rows: 100_000,
        seed: 11,
        anomaly_fraction: 0.0,
        ..GeneratorParams::default()
    };
    generate(&p, &mut out).unwrap();
    let mut sum = [0f64; NUM_CHANNELS];
    let mut sum2 = [0f64; NUM_CHANNELS];
    let summary = read_rows_from(&out[..], Path::new("gen"), None, |row| {
        for (c, &v) in row.values.iter().enumerate() {
            sum[c] += f64::from(v);
            sum2[c] += f64::from(v) * f64::from(v);
        }
        Ok(())
    })
    .unwrap();
    let n = summary.rows as f64;
    let mut wrong = Vec::new();
    for c in 0..NUM_CHANNELS {
        let mean = sum[c] / n;
        let std = (sum2[c] / n - mean * mean).max(0.0).sqrt();
        eprintln!("{:>6}: mean {mean:9.3} std {std:8.3}", CHANNELS[c]);
        assert!(std > 0.0, "{} is constant", CHANNELS[c]);
        if c >= FIRST_TELEMETRY {
            let k = c - FIRST_TELEMETRY;
            let ratio = std / TELEMETRY_SPAN[k];
            if !(0.6..=1.6).contains(&ratio) || (mean - TELEMETRY_CENTER[k]).abs() > 0.5 * TELEMETRY_SPAN[k] {
                wrong.push(format!("{}: mean {mean:.1} std {std:.1}", CHANNELS[c]));
            }
        }
    }
    assert!(wrong.is_empty(), "spans or centres out of date: {wrong:?}");
    assert_eq!(NUM_TELEMETRY, 10);
}
