//! kflow's device protocol: how a host flashes a model to a board, streams
//! inputs to it and reads back outputs and cycle counts.
//!
//! Layers, bottom up: [`frame`] (the wire format) and [`decoder`] (frames
//! out of a byte stream, resynchronising after anything else), [`message`]
//! (typed requests and responses with explicit limits), [`transport`]
//! (TCP, serial, QEMU, in-process), [`url`] (`sim://`, `tcp://`, `serial://`,
//! `qemu://`),
//! then [`client`] (the host: retries, `flash`) and [`serve`] (the board
//! side loop around a [`serve::Board`]).
//!
//! This crate knows nothing of kflow's engine, models or the accelerator:
//! it moves bytes. What a board does with a model is its `Board`'s
//! business.

pub mod client;
pub mod decoder;
pub mod frame;
pub mod message;
pub mod serve;
pub mod transport;
pub mod url;

pub use client::{Client, ClientError, FlashProgress, Inference, RetryPolicy};
pub use message::{DeviceError, DeviceInfo, ErrorCode, ModelSummary, RunStatistics};
pub use serve::{Board, ServeOptions, Server, spawn_in_process};
pub use transport::{LinkTimeouts, OpenError, StreamTransport, Transport, TransportError, open};
pub use url::{DeviceUrl, QemuMachine, SimBoard};
