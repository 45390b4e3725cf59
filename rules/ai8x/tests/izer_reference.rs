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

/// Every case identical to the izer in every phase: every register write
/// in the same order, every kernel, bias and input word, the unload map and
/// the simulated output.
#[test]
fn generated_programs_match_the_izer_on_every_case() {
    let diffs = compare_all();
    print_summary(&diffs);
    let differences: Vec<String> = diffs
        .iter()
        .flat_map(|(name, diff)| {
            let failure = diff.failure.iter().map(move |f| format!("{name}: not generated: {f}"));
            let phases = PHASES
                .iter()
                .filter(|phase| diff.phases.get(*phase).is_none_or(|d| !d.identical()))
                .map(move |phase| format!("{name} {phase}"));
            failure.chain(phases)
        })
        .collect();
    assert!(
        differences.is_empty(),
        "differ from the izer (IZER_CASE=<name> prints the details): {differences:?}"
    );
}
