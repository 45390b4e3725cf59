//! The static arena: every buffer that is live at the same layer step gets
//! its own bytes, and buffers whose lifetimes do not meet share them.

/// A buffer live from layer step `first` to `last`, inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    pub bytes: usize,
    pub first: usize,
    pub last: usize,
}

impl Lifetime {
    fn meets(&self, other: &Lifetime) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Where each buffer lives in the arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArenaPlan {
    /// Byte offsets, in the order of the lifetimes given; each a multiple
    /// of [`ALIGN`].
    pub offsets: Vec<usize>,
    /// The arena's size, a multiple of [`ALIGN`].
    pub bytes: usize,
}

/// 32-bit outputs are read and written as `int32_t`.
pub const ALIGN: usize = 4;

/// Greedy first fit, largest buffers first: each buffer goes to the lowest
/// offset where it overlaps no already placed buffer it meets in time.
/// Not optimal (that is NP-hard), but a chain of layers reuses two
/// buffers, as a hand-written ping-pong would.
pub fn plan(buffers: &[Lifetime]) -> ArenaPlan {
    let mut order: Vec<usize> = (0..buffers.len()).collect();
    // Stable ties by index keep the plan, and so the generated C, deterministic.
    order.sort_by(|&a, &b| buffers[b].bytes.cmp(&buffers[a].bytes).then(a.cmp(&b)));
    let mut offsets = vec![0; buffers.len()];
    let mut placed: Vec<(usize, usize, usize)> = Vec::new(); // (start, end, buffer)
    let mut total = 0;
    for i in order {
        let size = buffers[i].bytes.next_multiple_of(ALIGN);
        let mut taken: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&(_, _, j)| buffers[j].meets(&buffers[i]))
            .map(|&(s, e, _)| (s, e))
            .collect();
        taken.sort_unstable();
        let mut at = 0;
        for (s, e) in taken {
            if at + size <= s {
                break;
            }
            at = at.max(e);
        }
        offsets[i] = at;
        placed.push((at, at + size, i));
        total = total.max(at + size);
    }
    ArenaPlan { offsets, bytes: total }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life(bytes: usize, first: usize, last: usize) -> Lifetime {
        Lifetime { bytes, first, last }
    }

    #[test]
    fn buffers_live_together_never_share_bytes() {
        let buffers = [
            life(100, 0, 3),
            life(40, 1, 1),
            life(64, 2, 4),
            life(7, 0, 0),
            life(100, 4, 5),
            life(12, 3, 3),
        ];
        let p = plan(&buffers);
        for (i, a) in buffers.iter().enumerate() {
            assert_eq!(p.offsets[i] % ALIGN, 0);
            assert!(p.offsets[i] + a.bytes <= p.bytes);
            for (j, b) in buffers.iter().enumerate().skip(i + 1) {
                if a.meets(b) {
                    let (sa, sb) = (p.offsets[i], p.offsets[j]);
                    assert!(sa + a.bytes <= sb || sb + b.bytes <= sa, "buffers {i} and {j} overlap");
                }
            }
        }
    }

    #[test]
    fn a_chain_of_layers_reuses_two_buffers() {
        let buffers: Vec<Lifetime> = (0..6).map(|i| life(64, i, i + 1)).collect();
        assert_eq!(plan(&buffers).bytes, 128);
    }

    #[test]
    fn no_buffers_need_no_arena() {
        assert_eq!(plan(&[]).bytes, 0);
    }
}
