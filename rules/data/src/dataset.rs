//! `build_dataset`: rows in, normalized split tensors out, in two streaming passes.
//!
//! Pass 1 reads only labels: it labels every window and so decides the split of every window. Pass 2 reads values:
//! it copies each kept window into its split and fits the normalization on the rows of training windows. Then the
//! kept windows are normalized in place. Memory is the kept windows plus one bool and one byte per window.

use crate::csv::{CHANNELS, NUM_CHANNELS};
use crate::normalize::Fit;
use crate::source::RowSource;
use crate::split::{Part, assign};
use crate::tensors::{Dataset, DatasetMeta, Split, SplitCounts};
use crate::windows::Labeler;
use crate::{DataError, WindowParams};

/// Builds train/val/test tensors from `source` (read twice; it must give the same rows both times).
pub fn build_dataset(source: &mut impl RowSource, params: &WindowParams) -> Result<Dataset, DataError> {
    params.validate()?;
    let skip = params.skip_rows;
    let limit = params.max_rows.map(|m| skip.saturating_add(m));

    // Pass 1: labels.
    let mut labeler = Labeler::new(params);
    let mut rows = 0u64;
    let mut anomalous_rows = 0u64;
    source.for_each_row(limit, &mut |row| {
        if let Some(r) = row.index.checked_sub(skip) {
            labeler.push(r, row.label);
            rows = r + 1;
            anomalous_rows += u64::from(row.label);
        }
        Ok(())
    })?;
    let labels = labeler.labels;
    if labels.is_empty() {
        return Err(DataError::Dataset(format!(
            "{rows} rows (after skipping {skip}) are too few for one window of {} rows{}",
            params.length,
            if params.label.lookahead() > 0 {
                " plus the label row after it"
            } else {
                ""
            }
        )));
    }

    let parts = assign(&labels, params);
    let mut sizes = [0usize; 3];
    for part in parts.iter().flatten() {
        sizes[part.index()] += 1;
    }
    let mut splits = sizes.map(|n| Split::with_capacity(n, params.length));

    // Pass 2: values. A ring of the last `extent` rows holds everything a completing window needs.
    let extent = params.extent() as usize;
    let mut ring = vec![[0f32; NUM_CHANNELS]; extent];
    let mut fit = Fit::default();
    let mut rows_again = 0u64;
    let window_count = labels.len() as u64;
    source.for_each_row(limit, &mut |row| {
        let Some(r) = row.index.checked_sub(skip) else {
            return Ok(());
        };
        rows_again = r + 1;
        ring[(r % extent as u64) as usize] = *row.values;

        let containing = params.windows_containing(r);
        let in_train = (containing.start..containing.end.min(window_count))
            .any(|i| parts.get(i as usize).copied().flatten() == Some(Part::Train));
        if in_train {
            fit.add(row.values);
        }

        let Some(i) = params.completed_at(r) else { return Ok(()) };
        let (Some(Some(part)), Some(&label)) = (parts.get(i as usize), labels.get(i as usize)) else {
            return Ok(());
        };
        let split = &mut splits[part.index()];
        let first = params.window_rows(i).start;
        // Channels first: x[n][c][t].
        let ring = &ring;
        split.x.extend(
            (0..NUM_CHANNELS).flat_map(|c| {
                (first..first + params.length as u64).map(move |r| ring[(r % extent as u64) as usize][c])
            }),
        );
        split.y.push(u8::from(label));
        split.shape[0] += 1;
        Ok(())
    })?;
    if rows_again != rows || splits.iter().zip(&sizes).any(|(s, &n)| s.len() != n) {
        return Err(DataError::Dataset(format!(
            "the source gave {rows} rows, then {rows_again}: it must give the same rows on every pass"
        )));
    }

    let normalization = fit.finish(params.scale, params.int8_grid)?;
    let length = params.length;
    for split in &mut splits {
        for (k, x) in split.x.iter_mut().enumerate() {
            *x = normalization.apply(k / length % NUM_CHANNELS, *x);
        }
    }

    let [train, val, test] = splits;
    let meta = DatasetMeta {
        source: source.describe(),
        channels: CHANNELS.iter().map(|c| c.to_string()).collect(),
        window: params.length,
        stride: params.stride,
        label_rule: params.label,
        scale: params.scale,
        int8_grid: params.int8_grid,
        mean: normalization.mean,
        std: normalization.std,
        block: params.block,
        fractions: params.fractions,
        seed: params.seed,
        skip_rows: params.skip_rows,
        max_rows: params.max_rows,
        rows,
        anomalous_rows,
        windows: window_count,
        dropped_windows: window_count - sizes.iter().sum::<usize>() as u64,
        counts: SplitCounts {
            train: train.counts(),
            val: val.counts(),
            test: test.counts(),
        },
        anomaly_segments: None,
    };
    Ok(Dataset { train, val, test, meta })
}

#[cfg(test)]
mod tests;
