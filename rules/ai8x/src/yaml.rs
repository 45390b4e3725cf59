//! Reading and writing the ai8x network YAML (spec/max78002.md §4).
//!
//! Files are written by people, so the reader accepts what the izer's
//! parser accepts (aliases, case-insensitive operation and activation
//! names, hex strings with `_`/`.` separators) and rejects what it rejects
//! (unknown keys, `weight_bits`), naming the layer and the key. Values are
//! checked for type here; whether the hardware can run them is `check.rs`'s
//! job, so that a 5×5 kernel reads fine and is rejected with its limit.

use std::fmt::Write as _;

use serde_norway::{Mapping, Value};

use crate::network::{
    Activation, DataFormat, Dims, EltwiseOp, Layer, Network, Op, OutputWidth, PoolKind, SequenceRef, WeightBits,
};

/// A network file the reference tools would not read either.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("invalid YAML: {0}")]
    Syntax(String),
    #[error("{}: expected a mapping of keys", at(*layer))]
    NotAMapping { layer: Option<usize> },
    #[error("{}: missing key `{key}`", at(*layer))]
    MissingKey { layer: Option<usize>, key: &'static str },
    #[error("{}: unknown key `{key}`{}", at(*layer), help.as_deref().map(|h| format!("; {h}")).unwrap_or_default())]
    UnknownKey {
        layer: Option<usize>,
        key: String,
        help: Option<String>,
    },
    #[error("{}: key `{key}` given twice (also as `{alias}`)", at(*layer))]
    DuplicateKey {
        layer: Option<usize>,
        key: String,
        alias: String,
    },
    #[error("{}: `{key}`: {message}", at(*layer))]
    Value {
        layer: Option<usize>,
        key: String,
        message: String,
    },
}

fn at(layer: Option<usize>) -> String {
    match layer {
        Some(i) => format!("layer {i}"),
        None => "network".to_owned(),
    }
}

/// Global keys the reference tools accept but kflow does not model.
const GLOBAL_UNSUPPORTED: &[&str] = &["unload", "data_buffer", "snoop", "weights", "bias"];
const GLOBAL_KEYS: &[&str] = &["arch", "dataset", "layers", "output_map"];

/// Canonical layer keys and their aliases (§4.2).
const LAYER_KEYS: &[(&str, &[&str])] = &[
    ("processors", &[]),
    ("output_processors", &[]),
    ("in_offset", &[]),
    ("out_offset", &[]),
    ("operation", &["op", "operator", "convolution"]),
    ("kernel_size", &[]),
    ("pad", &[]),
    ("stride", &[]),
    ("dilation", &[]),
    ("groups", &["conv_groups"]),
    ("activate", &["activation"]),
    ("max_pool", &[]),
    ("avg_pool", &[]),
    ("pool_stride", &[]),
    ("pool_dilation", &[]),
    ("pool_first", &[]),
    ("eltwise", &[]),
    ("operands", &[]),
    ("in_sequences", &[]),
    ("sequence", &[]),
    ("name", &[]),
    ("in_dim", &[]),
    ("in_channels", &[]),
    ("out_channels", &[]),
    ("write_gap", &[]),
    ("data_format", &[]),
    ("output_width", &[]),
    ("output_shift", &[]),
    ("quantization", &[]),
    ("flatten", &[]),
    ("output_pad", &[]),
    ("bias_group", &["bias_quadrant"]),
    ("output", &[]),
];

/// Layer keys the reference tools accept but kflow does not model (§2.14,
/// §2.15); a layer that sets one to a non-default value is kept with the
/// key listed in `Layer::unsupported`, and the checker rejects it.
const LAYER_UNSUPPORTED: &[(&str, &[&str])] = &[
    ("next_sequence", &[]),
    ("in_crop", &[]),
    ("in_skip", &["read_gap"]),
    ("in_channel_skip", &[]),
    ("streaming", &[]),
    ("weight_source", &[]),
    ("bypass", &[]),
    ("calcx4", &[]),
    ("readahead", &[]),
    ("tcalc", &[]),
    ("snoop_sequence", &[]),
    ("simulated_sequence", &[]),
    ("buffer_shift", &[]),
    ("buffer_insert", &[]),
];

/// Checkpoint keys people put into YAML by mistake (§4.2: there are no
/// `weight_bits`/`bias_bits` YAML keys).
const CHECKPOINT_KEYS: &[(&str, &str)] = &[
    ("weight_bits", "`weight_bits` is a checkpoint key; write `quantization`"),
    ("bias_bits", "`bias_bits` is a checkpoint key; biases are always 8-bit"),
    ("shift_quantile", "`shift_quantile` is a checkpoint key"),
    (
        "adjust_output_shift",
        "`adjust_output_shift` is a checkpoint key; write `output_shift`",
    ),
    ("quantize_activation", "`quantize_activation` is a checkpoint key"),
];

/// Reads a network file.
pub fn parse_network(text: &str) -> Result<Network, YamlError> {
    let value: Value = serde_norway::from_str(text).map_err(|e| YamlError::Syntax(e.to_string()))?;
    let Value::Mapping(map) = value else {
        return Err(YamlError::NotAMapping { layer: None });
    };
    let mut network = Network::default();
    let mut layers = None;
    for (key, value) in &map {
        let key = key_str(None, key)?;
        match key {
            "arch" => network.arch = string(None, key, value)?,
            "dataset" => network.dataset = string(None, key, value)?,
            "output_map" => network.output_map = Some(mask(None, key, value)?),
            "layers" => layers = Some(value),
            k if GLOBAL_UNSUPPORTED.contains(&k) => network.unsupported.push(k.to_owned()),
            k => {
                let all: Vec<&str> = GLOBAL_KEYS.iter().chain(GLOBAL_UNSUPPORTED).copied().collect();
                return Err(unknown_key(None, k, &all));
            }
        }
    }
    for required in ["arch", "dataset"] {
        if !map.contains_key(required) {
            return Err(YamlError::MissingKey {
                layer: None,
                key: required,
            });
        }
    }
    let Some(layers) = layers else {
        return Err(YamlError::MissingKey {
            layer: None,
            key: "layers",
        });
    };
    let Value::Sequence(items) = layers else {
        return Err(value_error(None, "layers", "expected a list of layers"));
    };
    for (index, item) in items.iter().enumerate() {
        network.layers.push(parse_layer(index, item)?);
    }
    Ok(network)
}

fn parse_layer(index: usize, value: &Value) -> Result<Layer, YamlError> {
    let layer_at = Some(index);
    let Value::Mapping(map) = value else {
        return Err(YamlError::NotAMapping { layer: layer_at });
    };
    let entries = canonical_entries(index, map)?;
    let mut layer = Layer::default();
    let mut processors = None;
    for (key, written, value) in entries {
        let k = written.as_str();
        match key {
            "processors" => processors = Some(mask(layer_at, k, value)?),
            "output_processors" => layer.output_processors = Some(mask(layer_at, k, value)?),
            "in_offset" => layer.in_offset = Some(offset(layer_at, k, value)?),
            "out_offset" => layer.out_offset = Some(offset(layer_at, k, value)?),
            "operation" => layer.op = Some(op(layer_at, k, value)?),
            "kernel_size" => layer.kernel_size = Some(kernel_size(layer_at, k, value)?),
            "pad" => layer.pad = Some(uint(layer_at, k, value)?),
            "stride" => layer.stride = Some(dims(layer_at, k, value)?),
            "dilation" => layer.dilation = Some(uint(layer_at, k, value)?),
            "groups" => layer.groups = Some(uint(layer_at, k, value)?),
            "activate" => layer.activate = Some(activation(layer_at, k, value)?),
            "max_pool" | "avg_pool" => {
                if layer.pool.is_some() {
                    return Err(value_error(
                        layer_at,
                        k,
                        "a layer has either `max_pool` or `avg_pool`, not both",
                    ));
                }
                let kind = if key == "max_pool" {
                    PoolKind::Max
                } else {
                    PoolKind::Avg
                };
                layer.pool = Some((kind, dims(layer_at, k, value)?));
            }
            "pool_stride" => layer.pool_stride = Some(dims(layer_at, k, value)?),
            "pool_dilation" => layer.pool_dilation = Some(dims(layer_at, k, value)?),
            "pool_first" => layer.pool_first = Some(boolean(layer_at, k, value)?),
            "eltwise" => layer.eltwise = Some(eltwise(layer_at, k, value)?),
            "operands" => layer.operands = Some(uint(layer_at, k, value)?),
            "in_sequences" => layer.in_sequences = Some(sequences(layer_at, k, value)?),
            "sequence" => {
                // Layers are sorted by `sequence`; kflow keeps the file order
                // (the weights file indexes layers by position), so only the
                // value that changes nothing is accepted.
                if uint(layer_at, k, value)? as usize != index {
                    layer.unsupported.push("sequence".to_owned());
                }
            }
            "name" => {
                let name = string(layer_at, k, value)?;
                if name == "stop" || name == "input" {
                    return Err(value_error(layer_at, k, "`stop` and `input` are reserved names"));
                }
                layer.name = Some(name);
            }
            "in_dim" => layer.in_dim = Some(dims(layer_at, k, value)?),
            "in_channels" => layer.in_channels = Some(uint(layer_at, k, value)?),
            "out_channels" => layer.out_channels = Some(uint(layer_at, k, value)?),
            "write_gap" => layer.write_gap = Some(uint(layer_at, k, value)?),
            "data_format" => layer.data_format = Some(data_format(layer_at, k, value)?),
            "output_width" => layer.output_width = Some(output_width(layer_at, k, value)?),
            "output_shift" => layer.output_shift = Some(int(layer_at, k, value)?),
            "quantization" => layer.quantization = Some(quantization(layer_at, k, value)?),
            "flatten" => layer.flatten = Some(boolean(layer_at, k, value)?),
            "output_pad" => layer.output_pad = Some(uint(layer_at, k, value)?),
            "bias_group" => layer.bias_group = Some(bias_group(layer_at, k, value)?),
            "output" => layer.output = Some(boolean(layer_at, k, value)?),
            unsupported => {
                if !is_default(value) {
                    layer.unsupported.push(unsupported.to_owned());
                }
            }
        }
    }
    layer.processors = processors.ok_or(YamlError::MissingKey {
        layer: layer_at,
        key: "processors",
    })?;
    Ok(layer)
}

/// The layer's entries under their canonical names, in file order; two
/// spellings of one key are an error, as is any key the tools don't know.
fn canonical_entries(index: usize, map: &Mapping) -> Result<Vec<(&'static str, String, &Value)>, YamlError> {
    let mut out: Vec<(&'static str, String, &Value)> = Vec::new();
    for (key, value) in map {
        let written = key_str(Some(index), key)?;
        let Some(canonical) = canonical_layer_key(written) else {
            if let Some((_, help)) = CHECKPOINT_KEYS.iter().find(|(k, _)| *k == written) {
                return Err(YamlError::UnknownKey {
                    layer: Some(index),
                    key: written.to_owned(),
                    help: Some((*help).to_owned()),
                });
            }
            let all: Vec<&str> = LAYER_KEYS
                .iter()
                .chain(LAYER_UNSUPPORTED)
                .flat_map(|(k, aliases)| std::iter::once(*k).chain(aliases.iter().copied()))
                .collect();
            return Err(unknown_key(Some(index), written, &all));
        };
        if let Some((_, first, _)) = out.iter().find(|(k, _, _)| *k == canonical) {
            return Err(YamlError::DuplicateKey {
                layer: Some(index),
                key: first.clone(),
                alias: written.to_owned(),
            });
        }
        out.push((canonical, written.to_owned(), value));
    }
    Ok(out)
}

fn canonical_layer_key(written: &str) -> Option<&'static str> {
    LAYER_KEYS
        .iter()
        .chain(LAYER_UNSUPPORTED)
        .find(|(k, aliases)| *k == written || aliases.contains(&written))
        .map(|(k, _)| *k)
}

fn unknown_key(layer: Option<usize>, key: &str, valid: &[&str]) -> YamlError {
    let nearest = valid
        .iter()
        .map(|v| (strsim::jaro_winkler(key, v), *v))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, v)| format!("did you mean `{v}`?"));
    YamlError::UnknownKey {
        layer,
        key: key.to_owned(),
        help: nearest,
    }
}

/// Whether an unsupported key's value leaves the feature off.
fn is_default(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::Sequence(items) => items.iter().all(is_default),
        _ => false,
    }
}

fn value_error(layer: Option<usize>, key: &str, message: impl Into<String>) -> YamlError {
    YamlError::Value {
        layer,
        key: key.to_owned(),
        message: message.into(),
    }
}

fn key_str(layer: Option<usize>, key: &Value) -> Result<&str, YamlError> {
    match key {
        Value::String(s) => Ok(s),
        other => Err(value_error(layer, &format!("{other:?}"), "keys must be strings")),
    }
}

fn string(layer: Option<usize>, key: &str, value: &Value) -> Result<String, YamlError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        // `arch: 85` or `name: 3` are strings to the izer too.
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(value_error(layer, key, "expected a string")),
    }
}

fn int(layer: Option<usize>, key: &str, value: &Value) -> Result<i32, YamlError> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .and_then(|v| i32::try_from(v).ok())
            .ok_or_else(|| value_error(layer, key, format!("expected an integer, found {n}"))),
        _ => Err(value_error(layer, key, "expected an integer")),
    }
}

fn uint(layer: Option<usize>, key: &str, value: &Value) -> Result<u32, YamlError> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| value_error(layer, key, format!("expected a non-negative integer, found {n}"))),
        _ => Err(value_error(layer, key, "expected a non-negative integer")),
    }
}

fn offset(layer: Option<usize>, key: &str, value: &Value) -> Result<u32, YamlError> {
    match value {
        Value::String(s) => parse_hex(s)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| value_error(layer, key, format!("expected a byte offset, found `{s}`"))),
        other => uint(layer, key, other),
    }
}

fn boolean(layer: Option<usize>, key: &str, value: &Value) -> Result<bool, YamlError> {
    match value {
        Value::Bool(b) => Ok(*b),
        _ => Err(value_error(layer, key, "expected `true` or `false`")),
    }
}

/// A hex string as the izer reads it: `0x` optional, `_` and `.` ignored.
fn parse_hex(text: &str) -> Option<u64> {
    let cleaned: String = text.chars().filter(|c| *c != '_' && *c != '.').collect();
    let digits = cleaned
        .strip_prefix("0x")
        .or_else(|| cleaned.strip_prefix("0X"))
        .unwrap_or(&cleaned);
    if digits.is_empty() {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

fn mask(layer: Option<usize>, key: &str, value: &Value) -> Result<u64, YamlError> {
    let mask = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => parse_hex(s),
        _ => None,
    }
    .ok_or_else(|| value_error(layer, key, "expected a 64-bit processor mask (int or hex string)"))?;
    if mask == 0 {
        return Err(value_error(layer, key, "the processor mask enables no processor"));
    }
    Ok(mask)
}

fn lower(layer: Option<usize>, key: &str, value: &Value) -> Result<String, YamlError> {
    match value {
        Value::String(s) => Ok(s.to_ascii_lowercase()),
        _ => Err(value_error(layer, key, "expected a string")),
    }
}

fn op(layer: Option<usize>, key: &str, value: &Value) -> Result<Op, YamlError> {
    let name = lower(layer, key, value)?;
    Ok(match name.as_str() {
        "conv1d" => Op::Conv1d,
        "conv2d" => Op::Conv2d,
        "convtranspose2d" => Op::ConvTranspose2d,
        "linear" | "fc" | "mlp" => Op::Linear,
        "none" | "passthrough" => Op::Passthrough,
        "add" => Op::Eltwise(EltwiseOp::Add),
        "sub" => Op::Eltwise(EltwiseOp::Sub),
        "xor" | "bitwisexor" => Op::Eltwise(EltwiseOp::Xor),
        "or" | "bitwiseor" => Op::Eltwise(EltwiseOp::Or),
        _ => {
            return Err(value_error(
                layer,
                key,
                format!(
                    "unknown operation `{name}`: expected conv1d, conv2d, convtranspose2d, \
                     linear, passthrough, add, sub, xor or or"
                ),
            ));
        }
    })
}

fn eltwise(layer: Option<usize>, key: &str, value: &Value) -> Result<EltwiseOp, YamlError> {
    match op(layer, key, value)? {
        Op::Eltwise(e) => Ok(e),
        _ => Err(value_error(layer, key, "expected add, sub, xor or or")),
    }
}

fn activation(layer: Option<usize>, key: &str, value: &Value) -> Result<Activation, YamlError> {
    if matches!(value, Value::Null) {
        return Ok(Activation::None);
    }
    match lower(layer, key, value)?.as_str() {
        "none" => Ok(Activation::None),
        "relu" => Ok(Activation::ReLU),
        "abs" => Ok(Activation::Abs),
        other => Err(value_error(
            layer,
            key,
            format!("unknown activation `{other}`: expected ReLU, Abs or None"),
        )),
    }
}

fn dims(layer: Option<usize>, key: &str, value: &Value) -> Result<Dims, YamlError> {
    match value {
        Value::Number(_) => Ok(Dims::One(uint(layer, key, value)?)),
        Value::Sequence(items) => match items.as_slice() {
            [n] => Ok(Dims::One(uint(layer, key, n)?)),
            [r, c] => Ok(Dims::Two(uint(layer, key, r)?, uint(layer, key, c)?)),
            _ => Err(value_error(layer, key, "expected an int or [rows, cols]")),
        },
        _ => Err(value_error(layer, key, "expected an int or [rows, cols]")),
    }
}

fn kernel_size(layer: Option<usize>, key: &str, value: &Value) -> Result<Dims, YamlError> {
    let Value::String(text) = value else {
        return dims(layer, key, value);
    };
    let lowered = text.to_ascii_lowercase();
    let parsed = match lowered.split_once('x') {
        Some((r, c)) => r
            .trim()
            .parse()
            .ok()
            .zip(c.trim().parse().ok())
            .map(|(r, c)| Dims::Two(r, c)),
        None => lowered.trim().parse().ok().map(Dims::One),
    };
    parsed.ok_or_else(|| value_error(layer, key, format!("expected `KxK` or an int, found `{text}`")))
}

fn sequences(layer: Option<usize>, key: &str, value: &Value) -> Result<Vec<SequenceRef>, YamlError> {
    let one = |v: &Value| -> Result<SequenceRef, YamlError> {
        match v {
            Value::Number(n) => match n.as_i64() {
                Some(-1) => Ok(SequenceRef::Input),
                Some(i) if i >= 0 => Ok(SequenceRef::Index(i as usize)),
                _ => Err(value_error(layer, key, format!("invalid layer reference {n}"))),
            },
            Value::String(s) if s == "input" => Ok(SequenceRef::Input),
            Value::String(s) => Ok(SequenceRef::Name(s.clone())),
            _ => Err(value_error(layer, key, "expected a layer index, a name or a list")),
        }
    };
    match value {
        Value::Sequence(items) if !items.is_empty() => items.iter().map(one).collect(),
        Value::Sequence(_) => Err(value_error(layer, key, "the list is empty")),
        other => Ok(vec![one(other)?]),
    }
}

fn data_format(layer: Option<usize>, key: &str, value: &Value) -> Result<DataFormat, YamlError> {
    match lower(layer, key, value)?.as_str() {
        "hwc" | "little" => Ok(DataFormat::HWC),
        "chw" | "big" => Ok(DataFormat::CHW),
        other => Err(value_error(
            layer,
            key,
            format!("unknown data format `{other}`: expected HWC or CHW"),
        )),
    }
}

fn output_width(layer: Option<usize>, key: &str, value: &Value) -> Result<OutputWidth, YamlError> {
    match uint(layer, key, value)? {
        8 => Ok(OutputWidth::Eight),
        32 => Ok(OutputWidth::ThirtyTwo),
        other => Err(value_error(layer, key, format!("expected 8 or 32, found {other}"))),
    }
}

fn quantization(layer: Option<usize>, key: &str, value: &Value) -> Result<WeightBits, YamlError> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.to_ascii_lowercase(),
        _ => String::new(),
    };
    match text.as_str() {
        "1" => Ok(WeightBits::One),
        "2" => Ok(WeightBits::Two),
        "4" => Ok(WeightBits::Four),
        "8" => Ok(WeightBits::Eight),
        "bin" | "binary" => Ok(WeightBits::Binary),
        _ => Err(value_error(layer, key, "expected 1, 2, 4, 8 or binary")),
    }
}

fn bias_group(layer: Option<usize>, key: &str, value: &Value) -> Result<Vec<u8>, YamlError> {
    let one = |v: &Value| -> Result<u8, YamlError> {
        let q = uint(layer, key, v)?;
        u8::try_from(q)
            .ok()
            .filter(|q| usize::from(*q) < crate::device::QUADRANTS)
            .ok_or_else(|| value_error(layer, key, format!("quadrant {q} is not in 0..3")))
    };
    match value {
        Value::Sequence(items) => items.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

/// Writes a network. Every key that is `Some` is written, in the order of
/// the spec's §4.5 example; the caller (`Allocation::to_network`) makes
/// `pad`, `output_shift` and `quantization` explicit (§4.4).
pub fn to_yaml(network: &Network) -> String {
    let mut out = String::from("---\n");
    let _ = writeln!(out, "arch: {}", scalar(&network.arch));
    let _ = writeln!(out, "dataset: {}", scalar(&network.dataset));
    if let Some(map) = network.output_map {
        let _ = writeln!(out, "output_map: {}", hex_mask(map));
    }
    out.push_str("layers:\n");
    for layer in &network.layers {
        write_layer(&mut out, layer);
    }
    out
}

fn write_layer(out: &mut String, layer: &Layer) {
    let mut first = true;
    let mut line = |key: &str, value: String| {
        let lead = if first { "  - " } else { "    " };
        first = false;
        let _ = writeln!(out, "{lead}{key}: {value}");
    };
    if let Some(name) = &layer.name {
        line("name", scalar(name));
    }
    if let Some(format) = layer.data_format {
        line("data_format", format!("{format:?}"));
    }
    line("processors", hex_mask(layer.processors));
    if let Some(map) = layer.output_processors {
        line("output_processors", hex_mask(map));
    }
    if let Some(offset) = layer.in_offset {
        line("in_offset", format!("0x{offset:04x}"));
    }
    if let Some(offset) = layer.out_offset {
        line("out_offset", format!("0x{offset:04x}"));
    }
    if let Some(seqs) = &layer.in_sequences {
        let items: Vec<String> = seqs
            .iter()
            .map(|s| match s {
                SequenceRef::Input => "-1".to_owned(),
                SequenceRef::Index(i) => i.to_string(),
                SequenceRef::Name(n) => scalar(n),
            })
            .collect();
        line("in_sequences", format!("[{}]", items.join(", ")));
    }
    if let Some(dim) = layer.in_dim {
        line("in_dim", dims_list(dim));
    }
    if let Some(op) = layer.op {
        line("op", op.as_str().to_owned());
    }
    if let Some(e) = layer.eltwise {
        line("eltwise", e.as_str().to_owned());
    }
    if let Some(n) = layer.operands {
        line("operands", n.to_string());
    }
    if let Some(pool_first) = layer.pool_first {
        line("pool_first", pool_first.to_string());
    }
    if let Some((kind, size)) = layer.pool {
        let key = match kind {
            PoolKind::Max => "max_pool",
            PoolKind::Avg => "avg_pool",
        };
        line(key, dims_list(size));
    }
    if let Some(stride) = layer.pool_stride {
        line("pool_stride", dims_list(stride));
    }
    if let Some(size) = layer.kernel_size {
        line("kernel_size", size.to_string());
    }
    if let Some(pad) = layer.pad {
        line("pad", pad.to_string());
    }
    if let Some(stride) = layer.stride {
        line("stride", dims_list(stride));
    }
    if let Some(groups) = layer.groups {
        line("groups", groups.to_string());
    }
    if let Some(dilation) = layer.dilation {
        line("dilation", dilation.to_string());
    }
    if let Some(true) = layer.flatten {
        line("flatten", "true".to_owned());
    }
    if let Some(act) = layer.activate {
        line("activate", act.as_str().to_owned());
    }
    if let Some(bits) = layer.quantization {
        line("quantization", bits.to_string());
    }
    if let Some(shift) = layer.output_shift {
        line("output_shift", shift.to_string());
    }
    if let Some(width) = layer.output_width {
        line("output_width", width.bits().to_string());
    }
    if let Some(gap) = layer.write_gap {
        line("write_gap", gap.to_string());
    }
    if let Some(groups) = &layer.bias_group {
        let items: Vec<String> = groups.iter().map(u8::to_string).collect();
        line("bias_group", format!("[{}]", items.join(", ")));
    }
    if let Some(output) = layer.output {
        line("output", output.to_string());
    }
}

fn hex_mask(mask: u64) -> String {
    format!("0x{mask:016x}")
}

fn dims_list(dims: Dims) -> String {
    match dims {
        Dims::One(n) => n.to_string(),
        Dims::Two(r, c) => format!("[{r}, {c}]"),
    }
}

/// A string as a YAML scalar: plain when that reads back as the same
/// string, double-quoted (JSON escapes are valid YAML) otherwise.
fn scalar(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && !matches!(
            text.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null"
        );
    if plain {
        text.to_owned()
    } else {
        serde_json::Value::String(text.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "
arch: kflow_cats_cnn1d
dataset: cats_w8
layers:
  - name: conv0
    data_format: HWC
    processors: 0x000000000001ffff
    output_processors: 0x00000000ffffffff
    in_offset: 0x0000
    out_offset: 0xa000
    op: conv1d
    kernel_size: 3
    pad: 1
    activate: ReLU
    quantization: 8
    output_shift: -1
  - name: fc1
    processors: 0x0000_0000_0000_ffff
    output_processors: '0x0000.0000.0000.0003'
    in_offset: 0xa000
    out_offset: 0x0000
    operation: MLP
    pad: 0
    activation: none
    quantization: 8
    output_shift: 0
    output_width: 8
    output: true
";

    #[test]
    fn reads_the_spec_example_with_aliases_and_hex_strings() {
        let net = parse_network(EXAMPLE).unwrap();
        assert_eq!(net.arch, "kflow_cats_cnn1d");
        assert_eq!(net.layers.len(), 2);
        let conv0 = &net.layers[0];
        assert_eq!(conv0.processors, 0x1ffff);
        assert_eq!(conv0.out_offset, Some(0xa000));
        assert_eq!(conv0.op, Some(Op::Conv1d));
        assert_eq!(conv0.kernel_size, Some(Dims::One(3)));
        assert_eq!(conv0.activate, Some(Activation::ReLU));
        assert_eq!(conv0.output_shift, Some(-1));
        let fc1 = &net.layers[1];
        assert_eq!(fc1.processors, 0xffff);
        assert_eq!(fc1.output_processors, Some(0x3));
        assert_eq!(fc1.op, Some(Op::Linear));
        assert_eq!(fc1.activate, Some(Activation::None));
    }

    #[test]
    fn unknown_key_names_the_layer_and_the_nearest_key() {
        let text = "arch: a\ndataset: d\nlayers:\n  - processors: 1\n  - processors: 1\n    kernel_sise: 3x3\n";
        let err = parse_network(text).unwrap_err().to_string();
        assert_eq!(err, "layer 1: unknown key `kernel_sise`; did you mean `kernel_size`?");
    }

    #[test]
    fn weight_bits_is_rejected_with_a_pointer_to_quantization() {
        let text = "arch: a\ndataset: d\nlayers:\n  - processors: 1\n    weight_bits: 4\n";
        let err = parse_network(text).unwrap_err().to_string();
        assert!(err.starts_with("layer 0: unknown key `weight_bits`"), "{err}");
        assert!(err.contains("`quantization`"), "{err}");
    }

    #[test]
    fn two_spellings_of_one_key_are_rejected() {
        let text = "arch: a\ndataset: d\nlayers:\n  - processors: 1\n    op: conv2d\n    operation: conv1d\n";
        let err = parse_network(text).unwrap_err().to_string();
        assert!(err.contains("`op` given twice"), "{err}");
    }

    #[test]
    fn missing_processors_names_the_layer() {
        let text = "arch: a\ndataset: d\nlayers:\n  - op: conv2d\n";
        let err = parse_network(text).unwrap_err().to_string();
        assert_eq!(err, "layer 0: missing key `processors`");
    }

    #[test]
    fn bad_value_names_the_layer_and_key() {
        let text = "arch: a\ndataset: d\nlayers:\n  - processors: 1\n  - processors: 1\n    activate: Sigmoid\n";
        let err = parse_network(text).unwrap_err().to_string();
        assert!(err.starts_with("layer 1: `activate`: unknown activation"), "{err}");
    }

    #[test]
    fn unsupported_keys_are_kept_only_when_switched_on() {
        let text = "arch: a\ndataset: d\nlayers:\n  - processors: 1\n    streaming: false\n    in_crop: [0, 0]\n  - processors: 1\n    streaming: true\n";
        let net = parse_network(text).unwrap();
        assert!(net.layers[0].unsupported.is_empty());
        assert_eq!(net.layers[1].unsupported, vec!["streaming".to_owned()]);
    }

    #[test]
    fn kernel_sizes_read_as_written_so_the_checker_can_reject_them() {
        let text = "arch: a\ndataset: d\nlayers:\n  - processors: 1\n    kernel_size: 5X5\n";
        let net = parse_network(text).unwrap();
        assert_eq!(net.layers[0].kernel_size, Some(Dims::Two(5, 5)));
    }

    #[test]
    fn emitted_yaml_reads_back_unchanged() {
        let mut net = parse_network(EXAMPLE).unwrap();
        net.layers[0].pool = Some((PoolKind::Max, Dims::One(2)));
        net.layers[0].pool_stride = Some(Dims::One(2));
        net.layers[1].in_sequences = Some(vec![SequenceRef::Index(0), SequenceRef::Input]);
        net.layers[1].name = Some("needs quoting: yes".to_owned());
        net.layers[1].dilation = Some(2);
        let text = to_yaml(&net);
        assert_eq!(parse_network(&text).unwrap(), net);
    }

    #[test]
    fn syntax_errors_carry_the_location() {
        let err = parse_network("arch: [\n").unwrap_err().to_string();
        assert!(err.starts_with("invalid YAML"), "{err}");
        assert!(err.contains("line"), "{err}");
    }
}
