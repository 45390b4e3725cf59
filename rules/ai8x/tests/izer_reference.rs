//! kflow's generated C against ADI's izer (ai8x-synthesis) on the 105
//! reference networks of tests/data/izer-reference: register writes per
//! phase, kernel, bias and input memory, the unload map, and kflow's
//! simulation against the izer's. The summary prints with
//!
//! ```text
//! cargo test -p kflow-ai8x --test izer_reference -- --nocapture
//! ```
//!
//! and `IZER_CASE=<name>` prints every difference of the cases whose name
//! contains it.

mod izer;

use std::collections::BTreeMap;

use izer::case::{Case, all};
use izer::compare::{CaseDiff, PHASES, compare};
use izer::run::run;

/// Cases identical to the izer in every phase: every register write in the
/// same order, every kernel, bias and input word, the unload map and the
/// simulated output. The list only grows.
const IDENTICAL: &[&str] = &[
    "000-conv1d",
    "001-conv2d",
    "002-pool",
    "003-pool-big",
    "004-conv1d-max78000",
    "005-flatten-mp",
    "006-linear",
    "007-linear-big",
    "008-elt-add",
    "009-conv2d-max78000",
    "010-elt-xor",
    "011-elt-or",
    "012-fused",
    "013-convt",
    "014-pool-max78000",
    "015-quant",
    "016-binary",
    "017-multipass",
    "018-outq",
    "019-flatten-max78000",
    "020-elt3",
    "021-conv2d",
    "022-conv1d",
    "023-multipass",
    "024-linear-max78000",
    "025-conv2d",
    "026-pool",
    "027-pool-big",
    "028-flatten",
    "029-elt-add-max78000",
    "030-linear",
    "031-linear-big",
    "032-elt-add",
    "033-elt-sub",
    "034-elt-sub-max78000",
    "035-elt-or",
    "036-fused",
    "037-convt",
    "038-depthwise",
    "039-fused-max78000",
    "040-binary",
    "041-multipass",
    "042-outq",
    "043-conv1d",
    "044-convt-max78000",
    "045-conv2d",
    "046-conv1d",
    "047-multipass",
    "048-conv1d",
    "049-quant-max78000",
    "050-pool",
    "051-pool-big",
    "052-flatten",
    "053-flatten-mp",
    "054-multipass-max78000",
    "055-linear-big",
    "056-elt-add",
    "057-elt-sub",
    "058-elt-xor",
    "059-outq-max78000",
    "060-fused",
    "061-convt",
    "062-depthwise",
    "063-quant",
    "064-linear-big-max78000",
    "065-multipass",
    "066-outq",
    "067-avgpool2d",
    "068-elt3",
    "069-outq-max78000",
    "070-conv1d-off",
    "071-depthwise",
    "072-fused",
    "073-elt-sub",
    "074-fused-max78000",
    "075-conv1d",
    "076-conv1d-off",
    "077-depthwise",
    "078-elt-or",
    "079-convt-max78000",
    "080-flatten-mp",
    "081-chw",
    "082-pool1d",
    "083-elt-xor",
    "084-conv1d-off-max78000",
    "085-outq",
    "086-avgpool2d",
    "087-elt3",
    "088-pool-big",
    "089-chw-max78000",
    "090-depthwise",
    "091-fused",
    "092-elt-sub",
    "093-flatten-mp",
    "094-avgpool2d-max78000",
    "095-conv1d-off",
    "096-depthwise",
    "097-elt-or",
    "098-fused",
    "099-pool1d-max78000",
    "100-conv1d-k68",
    "101-conv1d-k68",
    "102-conv1d-k68",
    "103-conv1d-rare",
    "104-conv1d-rare",
];

fn compare_all() -> BTreeMap<String, CaseDiff> {
    let names = all();
    assert_eq!(names.len(), 105, "the reference has 105 cases");
    let results = std::sync::Mutex::new(BTreeMap::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    // Two workers: every case compiles a C program.
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(name) = names.get(i) else { break };
                    let case = Case::load(name);
                    let diff = match run(&case) {
                        Ok(r) => compare(&case, &r),
                        Err(e) => CaseDiff {
                            phases: BTreeMap::new(),
                            failure: Some(e),
                        },
                    };
                    results.lock().unwrap().insert(name.clone(), diff);
                }
            });
        }
    });
    results.into_inner().unwrap()
}

fn print_summary(diffs: &BTreeMap<String, CaseDiff>) {
    println!("per case: phase equal/different/missing/extra (* = identical)");
    for (name, diff) in diffs {
        let mut line = format!("{name:28}");
        for phase in PHASES {
            match diff.phases.get(phase) {
                Some(d) => line.push_str(&format!(
                    " {phase} {}/{}/{}/{}{}",
                    d.equal,
                    d.different,
                    d.missing,
                    d.extra,
                    if d.identical() { "*" } else { "" }
                )),
                None => line.push_str(&format!(" {phase} -")),
            }
        }
        if let Some(f) = &diff.failure {
            line.push_str(&format!("  NOT GENERATED: {f}"));
        }
        println!("{line}");
    }
    println!("\nidentical cases per phase (of {}):", diffs.len());
    for phase in PHASES {
        let n = diffs
            .values()
            .filter(|d| d.phases.get(phase).is_some_and(|p| p.identical()))
            .count();
        println!("  {phase:10} {n}");
    }
    let all = diffs
        .values()
        .filter(|d| d.failure.is_none() && PHASES.iter().all(|p| d.phases[p].identical()))
        .count();
    println!("  {:10} {all}", "all");
    // Ranked by the number of cases, then by the number of writes.
    let mut ranked: BTreeMap<String, (Vec<&str>, usize, String)> = BTreeMap::new();
    for (name, diff) in diffs {
        if let Some(f) = &diff.failure {
            let what = format!("not generated: {}", f.split_once(": ").map_or(f.as_str(), |x| x.1));
            let e = ranked.entry(what).or_default();
            e.0.push(name);
            e.1 += 1;
        }
        for phase in diff.phases.values() {
            for (what, detail) in &phase.findings {
                let e = ranked.entry(what.clone()).or_default();
                if e.0.last() != Some(&name.as_str()) {
                    e.0.push(name);
                }
                e.1 += 1;
                if e.2.is_empty() {
                    e.2 = format!("{name} {detail}");
                }
            }
        }
    }
    let mut ranked: Vec<_> = ranked.into_iter().collect();
    ranked.sort_by_key(|(_, (cases, n, _))| std::cmp::Reverse((cases.len(), *n)));
    println!("\ndifferences ranked (cases, writes/words: what; e.g.):");
    for (what, (cases, n, example)) in &ranked {
        println!("{:4} {:6}  {what}; e.g. {example}", cases.len(), n);
    }
    if let Ok(wanted) = std::env::var("IZER_CASE") {
        for (name, diff) in diffs.iter().filter(|(n, _)| n.contains(&wanted)) {
            println!("\n{name}:");
            for (phase, d) in &diff.phases {
                for (what, detail) in &d.findings {
                    println!("  [{phase}] {what}: {detail}");
                }
            }
        }
    }
}

#[test]
fn generated_programs_match_the_izer_where_listed() {
    let diffs = compare_all();
    print_summary(&diffs);
    let regressions: Vec<String> = IDENTICAL
        .iter()
        .flat_map(|name| {
            let diff = &diffs[*name];
            PHASES
                .iter()
                .filter(|phase| diff.phases.get(*phase).is_none_or(|d| !d.identical()))
                .map(move |phase| format!("{name} {phase}"))
        })
        .collect();
    assert!(
        regressions.is_empty(),
        "no longer identical to the izer: {regressions:?}"
    );
    // kflow's simulator must agree with the izer's wherever kflow accepts
    // the network.
    let wrong: Vec<&String> = diffs
        .iter()
        .filter(|(_, d)| d.phases.get("output").is_some_and(|p| !p.identical()))
        .map(|(name, _)| name)
        .collect();
    assert!(
        wrong.is_empty(),
        "simulated outputs differ from expected.npy: {wrong:?}"
    );
}
