//! Element-wise operations (spec §2.7, §3.7): on sign-extended int8, folded
//! from the left over the operands, clipped to int8 once at the end.

use crate::network::EltwiseOp;

pub(crate) fn combine(op: EltwiseOp, operands: &[&[i8]]) -> Vec<i8> {
    let Some((first, rest)) = operands.split_first() else {
        return Vec::new();
    };
    let mut acc: Vec<i32> = first.iter().map(|&v| i32::from(v)).collect();
    for other in rest {
        let apply: fn(i32, i32) -> i32 = match op {
            EltwiseOp::Add => |a, b| a + b,
            EltwiseOp::Sub => |a, b| a - b,
            EltwiseOp::Xor => |a, b| a ^ b,
            EltwiseOp::Or => |a, b| a | b,
        };
        for (a, &b) in acc.iter_mut().zip(other.iter()) {
            *a = apply(*a, i32::from(b));
        }
    }
    acc.into_iter().map(|v| v.clamp(-128, 127) as i8).collect()
}

#[cfg(test)]
mod tests {
    use super::combine;
    use crate::network::EltwiseOp;

    #[test]
    fn xor_acts_on_twos_complement() {
        assert_eq!(combine(EltwiseOp::Xor, &[&[-1], &[1]]), vec![-2]);
    }

    #[test]
    fn add_clips_once_after_all_operands() {
        assert_eq!(
            combine(EltwiseOp::Add, &[&[100, 100], &[100, -100], &[-100, -100]]),
            vec![100, -100]
        );
        assert_eq!(combine(EltwiseOp::Sub, &[&[-100], &[100]]), vec![-128]);
    }
}
