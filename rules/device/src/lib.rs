pub mod decoder;
pub mod frame;
pub mod message;
