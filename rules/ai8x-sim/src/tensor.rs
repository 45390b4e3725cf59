//! Activations in CHW order: `data[(c·height + y)·width + x]`.

use crate::network::Shape;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tensor<T> {
    pub shape: Shape,
    pub data: Vec<T>,
}

impl<T> Tensor<T> {
    /// `None` when `data.len()` is not `shape.len()`.
    pub fn new(shape: Shape, data: Vec<T>) -> Option<Tensor<T>> {
        (data.len() == shape.len()).then_some(Tensor { shape, data })
    }
}

/// A layer's output: int8, or the raw accumulator of a 32-bit output layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Int8(Tensor<i8>),
    Int32(Tensor<i32>),
}

impl Output {
    pub fn shape(&self) -> Shape {
        match self {
            Output::Int8(t) => t.shape,
            Output::Int32(t) => t.shape,
        }
    }

    pub fn as_int8(&self) -> Option<&Tensor<i8>> {
        match self {
            Output::Int8(t) => Some(t),
            Output::Int32(_) => None,
        }
    }

    pub fn as_int32(&self) -> Option<&Tensor<i32>> {
        match self {
            Output::Int8(_) => None,
            Output::Int32(t) => Some(t),
        }
    }
}
