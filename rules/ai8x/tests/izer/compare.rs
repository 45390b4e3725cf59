//! kflow's writes against the izer's, phase by phase, with register names
//! decoded per the reference README's tables.

use std::collections::BTreeMap;

use super::case::{Case, chunks, hex, pairs, read_npy};
use super::run::{Run, layer_kind};

/// The phases compared, in the izer's call order; `output` is kflow's
/// simulation against expected.npy.
pub const PHASES: [&str; 12] = [
    "init",
    "polls",
    "kernels",
    "bias",
    "configure",
    "input",
    "start",
    "isr",
    "stop",
    "continue",
    "unload",
    "output",
];

/// How one phase compares.
#[derive(Default, Clone)]
pub struct PhaseDiff {
    pub equal: usize,
    pub different: usize,
    /// In the izer's program, not in kflow's.
    pub missing: usize,
    /// In kflow's program, not in the izer's.
    pub extra: usize,
    /// Register phases: the same writes in the same order.
    pub ordered: bool,
    /// `(what, detail)`: `what` ranks the differences across cases
    /// ("configure LCTL2 passthrough: value"), `detail` shows one.
    pub findings: Vec<(String, String)>,
}

impl PhaseDiff {
    pub fn identical(&self) -> bool {
        self.ordered && self.different == 0 && self.missing == 0 && self.extra == 0
    }
}

/// A case's comparison: per phase, or why kflow made no program.
pub struct CaseDiff {
    pub phases: BTreeMap<&'static str, PhaseDiff>,
    pub failure: Option<String>,
}

/// Layer register names by index `r` (README "Register names").
const MAX78002_LAYER: [&str; 20] = [
    "NXTLYR",
    "RCNT",
    "CCNT",
    "ONED",
    "PRCNT",
    "PCCNT",
    "STRIDE",
    "WPTR_BASE",
    "WPTR_TOFFS",
    "WPTR_MOFFS",
    "WPTR_CHOFFS",
    "RPTR_BASE",
    "LCTL",
    "LCTL2",
    "MCNT1",
    "MCNT2",
    "OCHAN",
    "TPTR",
    "ENA",
    "POST",
];
const MAX78000_LAYER: [&str; 21] = [
    "RCNT",
    "CCNT",
    "ONED",
    "PRCNT",
    "PCCNT",
    "STRIDE",
    "WPTR_BASE",
    "WPTR_TOFFS",
    "WPTR_MOFFS",
    "WPTR_CHOFFS",
    "RPTR_BASE",
    "LCTL",
    "MCNT",
    "TPTR",
    "ENA",
    "POST",
    "r16",
    "r17",
    "r18",
    "r19",
    "LCTL2",
];
const CONTROL: [&str; 4] = ["CTL", "SRAM", "LCNT_MAX", "SRAM_TEST"];

/// A decoded register address.
pub struct Register {
    pub name: String,
    pub quadrant: Option<u32>,
    pub layer: Option<usize>,
}

pub fn decode(max78000: bool, address: u32) -> Register {
    let unknown = Register {
        name: format!("0x{address:08x}"),
        quadrant: None,
        layer: None,
    };
    if address == 0x5000_1000 {
        return Register {
            name: "AON_CTL".into(),
            ..unknown
        };
    }
    let (base, stride) = if max78000 {
        (0x5010_0000u32, 0x40_0000u32)
    } else {
        (0x5100_0000, 0x100_0000)
    };
    let Some(rel) = address.checked_sub(base) else {
        return unknown;
    };
    let (q, off) = (rel / stride, rel % stride);
    if q >= 4 {
        return unknown;
    }
    if off < 0x10 {
        return Register {
            name: CONTROL[(off / 4) as usize].into(),
            quadrant: Some(q),
            layer: None,
        };
    }
    let (r, layer) = if max78000 {
        let o = off - 0x10;
        ((o / 0x80) as usize, ((o % 0x80) / 4) as usize)
    } else if (0x10_0000..0x10_0000 + 0x100 * 32).contains(&off) {
        (((off & 0xff) / 4) as usize, ((off - 0x10_0000) / 0x100) as usize)
    } else {
        return unknown;
    };
    let names: &[&str] = if max78000 { &MAX78000_LAYER } else { &MAX78002_LAYER };
    match names.get(r) {
        Some(name) => Register {
            name: (*name).into(),
            quadrant: Some(q),
            layer: Some(layer),
        },
        None => unknown,
    }
}

/// Register writes as `(address, n-th write to it) → value`, counted, and
/// the differences named by register and layer kind.
fn compare_writes(case: &Case, run: &Run, phase: &str, izer: &[(u32, u32)], kflow: &[(u32, u32)]) -> PhaseDiff {
    let keyed = |writes: &[(u32, u32)]| {
        let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
        writes
            .iter()
            .map(|&(a, v)| {
                let n = seen.entry(a).or_default();
                *n += 1;
                ((a, *n), v)
            })
            .collect::<BTreeMap<(u32, usize), u32>>()
    };
    let (ours, theirs) = (keyed(kflow), keyed(izer));
    let mut diff = PhaseDiff {
        ordered: izer == kflow,
        ..PhaseDiff::default()
    };
    let mut name = |address: u32, how: &str, detail: String| {
        let r = decode(case.max78000(), address);
        let kind = r
            .layer
            .map(|l| format!(" {}", layer_kind(&run.allocation, l)))
            .unwrap_or_default();
        let place = match (r.layer, r.quadrant) {
            (Some(l), Some(q)) => format!("L{l} q{q} "),
            (None, Some(q)) => format!("q{q} "),
            _ => String::new(),
        };
        diff.findings
            .push((format!("{phase} {}{kind}: {how}", r.name), format!("{place}{}", detail)));
    };
    for (key, v) in &theirs {
        match ours.get(key) {
            Some(o) if o == v => diff.equal += 1,
            Some(o) => {
                diff.different += 1;
                name(key.0, "value", format!("izer 0x{v:08x} kflow 0x{o:08x}"));
            }
            None => {
                diff.missing += 1;
                name(key.0, "missing", format!("izer 0x{v:08x}"));
            }
        }
    }
    for (key, o) in &ours {
        if !theirs.contains_key(key) {
            diff.extra += 1;
            name(key.0, "extra", format!("kflow 0x{o:08x}"));
        }
    }
    if diff.findings.is_empty() && !diff.ordered {
        diff.findings
            .push((format!("{phase}: order"), "same writes, other order".into()));
    }
    diff
}

/// Memory contents as `key → value`.
fn compare_memory<K: Ord + Copy + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    phase: &str,
    izer: &BTreeMap<K, V>,
    kflow: &BTreeMap<K, V>,
) -> PhaseDiff {
    let mut diff = PhaseDiff {
        ordered: true,
        ..PhaseDiff::default()
    };
    for (k, v) in izer {
        match kflow.get(k) {
            Some(o) if o == v => diff.equal += 1,
            Some(o) => {
                diff.different += 1;
                diff.findings
                    .push((format!("{phase}: value"), format!("{k:x?} izer {v:x?} kflow {o:x?}")));
            }
            None => {
                diff.missing += 1;
                diff.findings.push((format!("{phase}: missing"), format!("{k:x?}")));
            }
        }
    }
    for k in kflow.keys() {
        if !izer.contains_key(k) {
            diff.extra += 1;
            diff.findings.push((format!("{phase}: extra"), format!("{k:x?}")));
        }
    }
    diff
}

fn word_map(chunks: &[(u32, Vec<u32>)]) -> BTreeMap<u32, u32> {
    chunks
        .iter()
        .flat_map(|(a, words)| words.iter().enumerate().map(move |(i, w)| (a + 4 * i as u32, *w)))
        .collect()
}

/// Kernel memory as `(processor, column) → 9 bytes`: each mexpress chunk
/// is a big-endian byte stream of 72-bit columns from its first column
/// (README "Kernel memory").
fn columns(max78000: bool, chunks: &[(u32, Vec<u32>)]) -> BTreeMap<(u32, u32), [u8; 9]> {
    let (base, q_stride, p_stride) = if max78000 {
        (0x5018_0000u32, 0x40_0000u32, 0x4000u32)
    } else {
        (0x5140_0000, 0x100_0000, 0x2_0000)
    };
    let mut map = BTreeMap::new();
    for (address, words) in chunks {
        let (q, off) = ((address - base) / q_stride, (address - base) % q_stride);
        let p = 16 * q + off / p_stride;
        let first = (off % p_stride) / 4;
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        for (i, column) in bytes.chunks_exact(9).enumerate() {
            map.insert((p, first + i as u32), column.try_into().unwrap());
        }
    }
    map
}

/// The izer's unload map as the address of every output byte.
fn unload_addresses(izer: &serde_json::Value) -> Vec<u32> {
    let mut bytes = vec![0; izer["unload"]["output_bytes"].as_u64().unwrap() as usize];
    for entry in izer["unload"]["map"].as_array().unwrap() {
        let j = entry[0].as_u64().unwrap() as usize;
        let address = super::case::hex(&entry[1]);
        let (step, count) = (entry[2].as_u64().unwrap() as u32, entry[3].as_u64().unwrap() as usize);
        for k in 0..count {
            bytes[j + k] = address + step * k as u32;
        }
    }
    bytes
}

fn compare_output(case: &Case, run: &Run) -> PhaseDiff {
    let expected = read_npy(&case.file("expected.npy"));
    let mut diff = PhaseDiff {
        ordered: true,
        ..PhaseDiff::default()
    };
    match &run.output {
        Err(e) => {
            diff.missing = expected.values.len();
            diff.findings.push(("output: no simulation".into(), e.clone()));
        }
        Ok(values) if values.len() != expected.values.len() => {
            diff.different = expected.values.len();
            diff.findings.push((
                "output: shape".into(),
                format!("{} values, expected {:?}", values.len(), expected.shape),
            ));
        }
        Ok(values) => {
            for (o, e) in values.iter().zip(&expected.values) {
                if o == e {
                    diff.equal += 1;
                } else {
                    diff.different += 1;
                }
            }
            if diff.different > 0 {
                diff.findings.push((
                    "output: values".into(),
                    format!("{} of {} differ", diff.different, values.len()),
                ));
            }
        }
    }
    diff
}

/// `[address, "&=" or "|=", operand]` entries as the writes they make.
fn read_modify_write(entries: &serde_json::Value) -> Vec<(u32, u32)> {
    entries
        .as_array()
        .map(|list| list.iter().map(|e| (hex(&e[0]), hex(&e[2]))).collect())
        .unwrap_or_default()
}

/// The registers `cnn_init()` polls, in order of first read, against the
/// izer's `polls.init` addresses.
fn compare_polls(izer: &serde_json::Value, reads: &[u32]) -> PhaseDiff {
    let theirs: Vec<u32> = izer["polls"]["init"]
        .as_array()
        .map(|list| list.iter().map(|p| hex(&p[0])).collect())
        .unwrap_or_default();
    let mut ours: Vec<u32> = Vec::new();
    for &a in reads {
        if !ours.contains(&a) {
            ours.push(a);
        }
    }
    if theirs == ours {
        return PhaseDiff {
            equal: ours.len(),
            ordered: true,
            ..PhaseDiff::default()
        };
    }
    PhaseDiff {
        different: 1,
        findings: vec![(
            "polls: polled registers".to_owned(),
            format!("izer {theirs:08x?}, kflow {ours:08x?}"),
        )],
        ..PhaseDiff::default()
    }
}

pub fn compare(case: &Case, run: &Run) -> CaseDiff {
    let izer = &case.izer;
    let mut phases = BTreeMap::new();
    phases.insert("output", compare_output(case, run));
    let trace = match &run.trace {
        Ok(trace) => trace,
        Err(e) => {
            return CaseDiff {
                phases,
                failure: Some(e.clone()),
            };
        }
    };
    let written = |phase: &str| trace.writes.get(phase).cloned().unwrap_or_default();
    for phase in ["init", "configure", "start"] {
        let theirs = pairs(&izer["registers"][phase]);
        phases.insert(phase, compare_writes(case, run, phase, &theirs, &written(phase)));
    }
    // The driver ran the read-modify-write functions on registers that read
    // as all ones (ISR, stop) or zero (continue): what they wrote is the
    // izer's `&=` mask or `|=` bits.
    for phase in ["isr", "stop", "continue"] {
        let theirs = read_modify_write(&izer["read_modify_write"][phase]);
        phases.insert(phase, compare_writes(case, run, phase, &theirs, &written(phase)));
    }
    phases.insert("polls", compare_polls(izer, &trace.init_reads));
    let kernels = compare_memory(
        "kernels",
        &columns(case.max78000(), &chunks(&izer["kernels"])),
        &columns(case.max78000(), &trace.kernels),
    );
    phases.insert("kernels", kernels);
    let bias: BTreeMap<u32, u32> = written("bias").into_iter().collect();
    phases.insert("bias", compare_memory("bias", &word_map(&chunks(&izer["bias"])), &bias));
    let input: BTreeMap<u32, u32> = written("input").into_iter().collect();
    phases.insert(
        "input",
        compare_memory("input", &word_map(&chunks(&izer["input"])), &input),
    );
    let unload = |bytes: &[u32]| bytes.iter().copied().enumerate().collect::<BTreeMap<usize, u32>>();
    phases.insert(
        "unload",
        compare_memory("unload", &unload(&unload_addresses(izer)), &unload(&trace.unload)),
    );
    CaseDiff { phases, failure: None }
}
