use std::path::Path;

use super::*;

fn header() -> String {
    header_line() + "\n"
}

/// A valid data row with `label`, values 0.5, 1.5, ...
fn row(ts: &str, label: &str) -> String {
    let values: Vec<String> = (0..NUM_CHANNELS).map(|c| format!("{}.5", c)).collect();
    format!("{ts},{},{label}\n", values.join(","))
}

/// (values, label, index) of each row.
type Rows = Vec<([f32; NUM_CHANNELS], bool, u64)>;

fn read(text: &str) -> Result<(Rows, ReadSummary), DataError> {
    let mut rows = Vec::new();
    let summary = read_rows_from(text.as_bytes(), Path::new("data.csv"), None, |r| {
        rows.push((*r.values, r.label, r.index));
        Ok(())
    })?;
    Ok((rows, summary))
}

/// The (line, column, message) of a CSV error.
fn csv_error(text: &str) -> (u64, u64, String) {
    match read(text) {
        Err(DataError::Csv {
            path,
            line,
            column,
            message,
        }) => {
            assert_eq!(path, Path::new("data.csv"));
            (line, column, message)
        }
        other => panic!("expected a CSV error, got {other:?}"),
    }
}

#[test]
fn reads_rows_in_order_with_labels() {
    let text = header() + &row("t0", "0") + &row("t1", "1") + &row("t2", "2.5") + &row("t3", "-1") + &row("t4", "0.0");
    let (rows, summary) = read(&text).unwrap();
    assert_eq!(summary, ReadSummary { rows: 5, anomalous: 2 });
    let labels: Vec<bool> = rows.iter().map(|r| r.1).collect();
    assert_eq!(labels, [false, true, true, false, false]);
    assert_eq!(rows.iter().map(|r| r.2).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert_eq!(rows[0].0[0], 0.5);
    assert_eq!(rows[0].0[16], 16.5);
}

#[test]
fn reads_pandas_boolean_labels() {
    let text = header() + &row("t0", "True") + &row("t1", "False") + &row("t2", "true") + &row("t3", " FALSE ");
    let (rows, summary) = read(&text).unwrap();
    assert_eq!(summary, ReadSummary { rows: 4, anomalous: 2 });
    assert_eq!(rows.iter().map(|r| r.1).collect::<Vec<_>>(), [true, false, true, false]);
}

#[test]
fn accepts_crlf_bom_and_spaces() {
    let text = format!("\u{feff}{}\r\n", header_line()) + &row("t0", " 1 ").replace('\n', "\r\n");
    let (rows, _) = read(&text).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].1);
}

#[test]
fn wrong_header_name_says_which_and_what() {
    let text = header().replace(",bso2,", ",bso_2,") + &row("t0", "0");
    let (line, column, message) = csv_error(&text);
    assert_eq!((line, column), (1, 14));
    assert_eq!(message, "header column 14 is `bso_2`, expected `bso2`");
    let text = header().replace(",bso2,bso3,", ",bso3,bso2,") + &row("t0", "0");
    let (_, column, message) = csv_error(&text);
    assert_eq!(column, 14, "{message}");
}

#[test]
fn first_and_last_columns_may_have_any_name_and_channels_any_case() {
    let renamed = header()
        .replacen("timestamp,", "time,", 1)
        .replace(",y\n", ",label\n")
        .replace(",ced1,", ",CED1,");
    let text = renamed + &row("t0", "0") + &row("t1", "1");
    let (rows, _) = read(&text).unwrap();
    assert_eq!(rows.iter().map(|r| r.1).collect::<Vec<_>>(), [false, true]);
}

#[test]
fn wrong_header_count() {
    let text = header().replace(",cso1", "") + &row("t0", "0");
    let (line, column, message) = csv_error(&text);
    assert_eq!((line, column), (1, 19));
    assert!(message.starts_with("header: expected 19 columns"), "{message}");
    assert!(message.ends_with("found 18"), "{message}");
}

#[test]
fn bad_number_has_line_column_text_and_name() {
    let bad = row("t1", "0").replacen("3.5", "3.5x", 1);
    let text = header() + &row("t0", "0") + &bad;
    let err = read(&text).unwrap_err();
    // aimp is column 2, so channel 3 (asin1) is column 5.
    assert_eq!(err.to_string(), "data.csv:3:5: column `asin1`: `3.5x` is not a number");
}

#[test]
fn missing_and_extra_columns() {
    let short = row("t1", "0").replacen(",16.5", "", 1);
    let (line, column, message) = csv_error(&(header() + &row("t0", "0") + &row("t1", "0") + &short));
    assert_eq!(
        (line, column, message.as_str()),
        (4, 19, "expected 19 columns, found 18")
    );
    let long = row("t1", "0").replace('\n', ",7\n");
    let (line, column, message) = csv_error(&(header() + &long));
    assert_eq!(
        (line, column, message.as_str()),
        (2, 20, "expected 19 columns, found 20")
    );
    let (line, column, message) = csv_error(&(header() + "x\n"));
    assert_eq!((line, column, message.as_str()), (2, 2, "expected 19 columns, found 1"));
}

#[test]
fn non_finite_values_are_rejected() {
    for (bad, shown) in [
        ("NaN", "NaN"),
        ("inf", "inf"),
        ("-infinity", "-infinity"),
        ("1e39", "1e39"),
    ] {
        let text = header() + &row("t0", "0").replacen("0.5", bad, 1);
        let (line, column, message) = csv_error(&text);
        assert_eq!((line, column), (2, 2));
        assert_eq!(message, format!("column `aimp`: `{shown}` is not a finite number"));
    }
}

#[test]
fn bad_label() {
    let (line, column, message) = csv_error(&(header() + &row("t0", "yes")));
    assert_eq!(
        (line, column, message.as_str()),
        (2, 19, "column `y`: `yes` is neither a number nor true/false")
    );
    let (_, column, _) = csv_error(&(header() + &row("t0", "nan")));
    assert_eq!(column, 19);
    // Named as the file names the column.
    let labelled = header().replacen(",y", ",label", 1);
    let (_, column, message) = csv_error(&(labelled + &row("t0", "yes")));
    assert_eq!(
        (column, message.as_str()),
        (19, "column `label`: `yes` is neither a number nor true/false")
    );
}

#[test]
fn empty_file_and_header_only() {
    let (line, column, message) = csv_error("");
    assert_eq!((line, column), (1, 1));
    assert!(message.starts_with("empty file"), "{message}");
    let (line, column, message) = csv_error(&header());
    assert_eq!(
        (line, column, message.as_str()),
        (2, 1, "no data rows after the header")
    );
}

#[test]
fn blank_lines_do_not_shift_line_numbers() {
    let bad = row("t1", "0").replacen("0.5", "oops", 1);
    let (line, column, _) = csv_error(&(header() + "\n" + &row("t0", "0") + "\n" + &bad));
    assert_eq!((line, column), (5, 2));
}

#[test]
fn crlf_blank_lines_and_quoted_line_breaks_keep_lines_exact() {
    let crlf = |s: String| s.replace('\n', "\r\n");
    let bad = row("t3", "0").replacen("2.5", "?", 1);
    let text = crlf(header() + "\n" + &row("t0", "0") + "  \n" + &row("\"t\n1\"", "0") + &row("t2", "1") + &bad);
    let (line, column, message) = csv_error(&text);
    assert_eq!(
        (line, column, message.as_str()),
        (8, 4, "column `arnd`: `?` is not a number")
    );
    // The last row may lack a line ending.
    let text = header() + &row("t0", "0") + row("t1", "x").trim_end();
    assert_eq!(csv_error(&text).0, 3);
    let (rows, _) = read(&(crlf(header() + &row("t0", "1")) + "\r\n\r\n")).unwrap();
    assert_eq!(rows.len(), 1);
}

#[test]
fn callback_error_stops_the_read() {
    let text = header() + &row("t0", "0") + &row("t1", "0") + &row("t2", "0");
    let mut seen = 0;
    let err = read_rows_from(text.as_bytes(), Path::new("x"), None, |r| {
        seen += 1;
        if r.index == 1 {
            Err(DataError::Dataset("stop".into()))
        } else {
            Ok(())
        }
    });
    assert!(matches!(err, Err(DataError::Dataset(m)) if m == "stop"));
    assert_eq!(seen, 2);
}

#[test]
fn limit_stops_early_without_reading_the_rest() {
    // The third data row is malformed; a limit of 2 never reaches it.
    let text = header() + &row("t0", "0") + &row("t1", "1") + "garbage\n";
    let summary = read_rows_from(text.as_bytes(), Path::new("x"), Some(2), |_| Ok(())).unwrap();
    assert_eq!(summary, ReadSummary { rows: 2, anomalous: 1 });
}

#[test]
fn missing_file_is_an_io_error_with_the_path() {
    let err = read_rows(Path::new("/nonexistent/kflow/data.csv"), |_| Ok(())).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }));
    assert!(err.to_string().starts_with("/nonexistent/kflow/data.csv: "), "{err}");
}

#[test]
fn writer_round_trips_through_the_reader() {
    let rows = vec![
        OwnedRow {
            timestamp: "2023-01-01 00:00:00".into(),
            values: [1.25; NUM_CHANNELS],
            label: false,
        },
        OwnedRow {
            timestamp: "2023-01-01 00:00:01".into(),
            values: [-0.1234567; NUM_CHANNELS],
            label: true,
        },
    ];
    let mut out = Vec::new();
    assert_eq!(write_rows(&mut out, rows).unwrap(), 2);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines[0], header_line());
    assert!(
        lines[1].starts_with("2023-01-01 00:00:00,1.250000,1.250000,"),
        "{}",
        lines[1]
    );
    assert!(lines[2].ends_with(",-0.123457,1"), "{}", lines[2]);
    assert_eq!(lines[3], "");
    assert!(!text.contains('\r'));
    let (read_back, summary) = read(&text).unwrap();
    assert_eq!(summary, ReadSummary { rows: 2, anomalous: 1 });
    assert_eq!(read_back[1].0[5], -0.123457);
}

#[test]
fn writer_rejects_what_it_cannot_write() {
    let mut out = Vec::new();
    let mut w = RowWriter::new(&mut out).unwrap();
    assert!(matches!(
        w.write("a,b", &[0.0; NUM_CHANNELS], false),
        Err(DataError::Params(_))
    ));
    let mut values = [0.0; NUM_CHANNELS];
    values[3] = f32::NAN;
    assert!(matches!(w.write("t", &values, false), Err(DataError::Params(_))));
}
