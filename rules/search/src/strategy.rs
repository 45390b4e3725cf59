//! Strategies: how the next candidate is chosen. Each is a pure function of
//! the space, the input shape, the seed, the candidate's index and (for
//! evolution) the history of results, so a search replayed from the cache
//! proposes exactly the same candidates.

use rand::seq::index::sample as draw_indices;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::genome::Genome;
use crate::space::Space;

/// A candidate proposed before, with its result (higher fitness is
/// better); `None` for one that was never trained (rejected, crashed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluated {
    pub genome: Genome,
    pub fitness: Option<f64>,
}

/// Attempts at a network not proposed before, before settling for one that
/// was (a small space may have none left).
const FRESH_ATTEMPTS: usize = 32;

/// Regularized (aging) evolution's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evolution {
    /// How many of the most recent candidates are alive.
    pub population: usize,
    /// Tournament size: how many of them are drawn to pick a parent.
    pub sample: usize,
}

/// The random stream of candidate `index` under `seed`: independent of every
/// other candidate's, and the same on every machine.
pub fn rng_for(seed: u64, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&index.to_le_bytes());
    key[16..].copy_from_slice(b"kflow-candidate\0");
    ChaCha8Rng::from_seed(key)
}

/// A random member of one of `spaces` (each family equally likely).
fn sample(spaces: &[Space], input: &[usize], rng: &mut ChaCha8Rng) -> Genome {
    // One space draws nothing, so single-space searches keep their streams.
    let space = match spaces {
        [one] => one,
        _ => &spaces[rng.random_range(0..spaces.len())],
    };
    Genome::sample(space, input, rng)
}

/// Candidate `index` of a random search over `spaces` (at least one).
pub fn random(spaces: &[Space], input: &[usize], seed: u64, index: u64) -> Genome {
    sample(spaces, input, &mut rng_for(seed, index))
}

/// Candidate `index` of a regularized evolution (Real et al., 2019): until
/// the population is full, random; then the best of a random sample of the
/// `population` most recent trained candidates (the oldest die), with one
/// mutation. Either way it draws again (up to a limit) while the network
/// is one the history already holds.
pub fn evolve(
    spaces: &[Space],
    input: &[usize],
    history: &[Evaluated],
    evolution: Evolution,
    seed: u64,
    index: u64,
) -> Genome {
    let mut rng = rng_for(seed, index);
    let seen = |g: &Genome| history.iter().any(|e| e.genome == *g);
    let fresh = |rng: &mut ChaCha8Rng, draw: &dyn Fn(&mut ChaCha8Rng) -> Genome| {
        let mut genome = draw(rng);
        for _ in 1..FRESH_ATTEMPTS {
            if !seen(&genome) {
                break;
            }
            genome = draw(rng);
        }
        genome
    };
    let population = evolution.population.max(1);
    let trained: Vec<(&Genome, f64)> = history.iter().filter_map(|e| Some((&e.genome, e.fitness?))).collect();
    if trained.len() < population {
        return fresh(&mut rng, &|rng| sample(spaces, input, rng));
    }
    let alive = &trained[trained.len() - population..];
    let drawn = draw_indices(&mut rng, alive.len(), evolution.sample.clamp(1, alive.len()));
    // Ties go to the younger candidate, so the order of `history` decides
    // and nothing depends on floating-point noise beyond it.
    let parent = drawn
        .iter()
        .max_by(|&a, &b| alive[a].1.total_cmp(&alive[b].1).then(a.cmp(&b)))
        .map_or(alive[alive.len() - 1].0, |i| alive[i].0);
    // A parent mutates within its own family's space.
    match spaces.iter().find(|s| parent.is_of(s)) {
        Some(space) => fresh(&mut rng, &|rng| parent.mutated(space, input, rng)),
        None => fresh(&mut rng, &|rng| sample(spaces, input, rng)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::tests::{autoencoder, cnn};

    const INPUT: [usize; 2] = [17, 32];

    #[test]
    fn a_random_candidate_is_a_function_of_seed_and_index() {
        let space = [Space::Cnn(cnn())];
        assert_eq!(random(&space, &INPUT, 7, 3), random(&space, &INPUT, 7, 3));
        let distinct: std::collections::HashSet<Genome> = (0..20).map(|i| random(&space, &INPUT, 7, i)).collect();
        assert!(distinct.len() > 15, "only {} distinct of 20", distinct.len());
        assert_ne!(random(&space, &INPUT, 7, 3), random(&space, &INPUT, 8, 3));
    }

    #[test]
    fn the_candidate_stream_is_pinned() {
        // A change here changes every search's candidates: it must be a
        // deliberate one (and bump the generate rule's version).
        let g = random(&[Space::Autoencoder(autoencoder())], &INPUT, 1234, 0);
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(json, PINNED_AE, "{json}");
    }

    const PINNED_AE: &str = r#"{"family":"autoencoder","blocks":[{"filters":8,"kernel":1,"activation":"relu","batchnorm":false},{"filters":8,"kernel":3,"activation":"relu","batchnorm":false}],"bottleneck":4}"#;

    fn history(space: &[Space], n: u64) -> Vec<Evaluated> {
        (0..n)
            .map(|i| Evaluated {
                genome: random(space, &INPUT, 99, i),
                fitness: Some((i % 7) as f64),
            })
            .collect()
    }

    #[test]
    fn evolution_samples_randomly_until_the_population_is_full() {
        let space = [Space::Cnn(cnn())];
        let evo = Evolution {
            population: 10,
            sample: 3,
        };
        let h = history(&space, 9);
        assert_eq!(evolve(&space, &INPUT, &h, evo, 5, 9), random(&space, &INPUT, 5, 9));
    }

    #[test]
    fn evolution_mutates_a_living_candidate_and_replays_exactly() {
        let space = [Space::Cnn(cnn())];
        let evo = Evolution {
            population: 10,
            sample: 10,
        };
        let h = history(&space, 30);
        let child = evolve(&space, &INPUT, &h, evo, 5, 30);
        assert_eq!(child, evolve(&space, &INPUT, &h, evo, 5, 30));
        // With the whole population in the tournament, the parent is the
        // fittest living one: the younger of the two with fitness 6.
        let alive = &h[20..];
        let best = alive.iter().rposition(|e| e.fitness == Some(6.0)).unwrap();
        let parent = &alive[best].genome;
        let (Genome::Cnn(c), Genome::Cnn(p)) = (&child, parent) else {
            panic!("family changed")
        };
        let differs = (c.conv != p.conv) as usize
            + (c.blocks.len() != p.blocks.len()) as usize
            + (c.linear != p.linear) as usize
            + c.blocks.iter().zip(&p.blocks).filter(|(a, b)| a != b).count();
        assert!(differs <= 2, "one mutation (plus its fix-ups) changed {differs} things");
    }

    #[test]
    fn candidates_that_aged_out_of_the_population_do_not_matter() {
        let space = [Space::Cnn(cnn())];
        let evo = Evolution {
            population: 5,
            sample: 5,
        };
        let h = history(&space, 20);
        let mut changed = h.clone();
        changed[0] = Evaluated {
            genome: random(&space, &INPUT, 1, 1),
            fitness: Some(1e9),
        };
        assert_eq!(
            evolve(&space, &INPUT, &h, evo, 5, 20),
            evolve(&space, &INPUT, &changed, evo, 5, 20)
        );
    }

    #[test]
    fn evolution_proposes_networks_it_has_not_tried() {
        let space = [Space::Cnn(cnn())];
        let evo = Evolution {
            population: 4,
            sample: 2,
        };
        let mut h = history(&space, 6);
        // Untrained candidates count as tried, but not as parents.
        h.push(Evaluated {
            genome: random(&space, &INPUT, 1, 99),
            fitness: None,
        });
        for index in 7..40 {
            let child = evolve(&space, &INPUT, &h, evo, 5, index);
            assert!(h.iter().all(|e| e.genome != child), "candidate {index} repeats one");
            h.push(Evaluated {
                genome: child,
                fitness: Some(index as f64 % 5.0),
            });
        }
    }
}
