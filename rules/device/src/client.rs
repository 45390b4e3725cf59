//! The host side: requests with sequence numbers, deadlines and retries.
//!
//! A request that gets no intact answer in time (lost, corrupt, or the
//! board said its frame arrived corrupt) is sent again with the same
//! sequence number and the `RETRY` flag, after a pause that doubles each
//! time; a broken connection is reopened first. Every request of the
//! protocol is idempotent (see [`crate::message`]), and the board answers a
//! resent request from memory, so resending is always safe. After the
//! last try the error names the device, the step and the last failure:
//! `device tcp://127.0.0.1:5000: load model chunk at offset 4096: no answer
//! after 3 tries (last: connection refused)`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::thread;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::decoder::Decoded;
use crate::frame::{Flags, Frame};
use crate::message::{
    DeviceError, DeviceInfo, ErrorCode, MAX_DATA, MAX_MODEL_BYTES, MAX_TENSOR_BYTES, ModelSummary, Request, Response,
    RunStatistics,
};
use crate::transport::{self, LinkTimeouts, OpenError, Transport, TransportError};
use crate::url::DeviceUrl;

/// How hard the client tries.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Tries per request, the first included (at least 1).
    pub attempts: u32,
    /// How long to wait for each answer.
    pub response_timeout: Duration,
    /// Pause before the second try; doubled before each later one.
    pub first_backoff: Duration,
    /// Longest pause.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            response_timeout: Duration::from_secs(5),
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX);
        self.first_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// Why a request failed. Every variant names the device and the step.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("device {device}: {step}: no answer after {attempts} tries (last: {last})")]
    NoAnswer {
        device: String,
        step: String,
        attempts: u32,
        last: String,
    },
    #[error("device {device}: {step}: the board refused: {error}")]
    Refused {
        device: String,
        step: String,
        error: DeviceError,
    },
    #[error("device {device}: {step}: {problem}")]
    Protocol {
        device: String,
        step: String,
        problem: String,
    },
}

impl ClientError {
    /// The board's error, when the board refused.
    pub fn device_error(&self) -> Option<&DeviceError> {
        match self {
            ClientError::Refused { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Progress of [`Client::flash`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashProgress {
    pub sent_bytes: u64,
    pub total_bytes: u64,
}

/// The result of one inference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inference {
    pub output: Vec<u8>,
    pub statistics: RunStatistics,
}

enum Failure {
    /// Worth trying again.
    Retry(String),
    /// The board answered with an error.
    Refused(DeviceError),
}

/// A connection to one board.
pub struct Client<T> {
    transport: T,
    policy: RetryPolicy,
    next_seq: u32,
    needs_reconnect: bool,
    chunk_len: Option<usize>,
}

fn clamp_chunk(len: usize) -> usize {
    len.clamp(1, MAX_DATA)
}

impl Client<Box<dyn Transport>> {
    /// Opens a `tcp://` or `serial://` board (a `sim://` board is attached
    /// with [`crate::serve::spawn_in_process`] and [`Client::new`]).
    pub fn connect(url: &DeviceUrl, timeouts: LinkTimeouts, policy: RetryPolicy) -> Result<Self, OpenError> {
        Ok(Client::new(transport::open(url, timeouts)?, policy))
    }
}

impl<T: Transport> Client<T> {
    pub fn new(transport: T, policy: RetryPolicy) -> Client<T> {
        // A fresh starting point per client, so that a board serving one
        // host after another (on a serial line) never mistakes a new
        // request for a resent one.
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let next_seq = (hasher.finish() as u32).max(1);
        Client {
            transport,
            policy,
            next_seq,
            needs_reconnect: false,
            chunk_len: None,
        }
    }

    /// The device URL, as messages name it.
    pub fn device(&self) -> &str {
        self.transport.endpoint()
    }

    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    pub fn ping(&mut self) -> Result<Duration, ClientError> {
        let nonce = u64::from(self.next_seq) << 32 | 0x6b66;
        let start = Instant::now();
        match self.request(|| "ping".into(), &Request::Ping { nonce })? {
            Response::Pong { nonce: back } if back == nonce => Ok(start.elapsed()),
            other => Err(self.unexpected("ping", &other)),
        }
    }

    pub fn device_info(&mut self) -> Result<DeviceInfo, ClientError> {
        match self.request(|| "device info".into(), &Request::GetInfo)? {
            Response::Info(info) => {
                self.chunk_len = Some(clamp_chunk(info.max_chunk_bytes as usize));
                Ok(info)
            }
            other => Err(self.unexpected("device info", &other)),
        }
    }

    /// Uploads a model in chunks, then checks by digest that the board
    /// holds exactly these bytes. `progress` is called after each chunk.
    pub fn flash(
        &mut self,
        model: &[u8],
        mut progress: impl FnMut(FlashProgress),
    ) -> Result<ModelSummary, ClientError> {
        let info = self.device_info()?;
        let limit = info.max_model_bytes.min(MAX_MODEL_BYTES);
        let summary = ModelSummary::of(model).filter(|s| s.len <= limit).ok_or_else(|| {
            self.protocol_error(
                "flash",
                format!("the model is {} bytes; the board takes at most {limit}", model.len()),
            )
        })?;
        let chunk_len = clamp_chunk(info.max_chunk_bytes as usize);
        let total = u64::from(summary.len);
        self.request_expecting(
            || format!("begin model upload ({} bytes)", summary.len),
            &Request::LoadModelBegin(summary),
            |r| matches!(r, Response::UploadStarted),
        )?;
        let mut offset = 0usize;
        progress(FlashProgress {
            sent_bytes: 0,
            total_bytes: total,
        });
        while offset < model.len() {
            let end = (offset + chunk_len).min(model.len());
            let request = Request::LoadModelChunk {
                offset: offset as u32,
                data: model[offset..end].to_vec(),
            };
            let step = || format!("load model chunk at offset {offset}");
            let next = match self.request(step, &request)? {
                Response::ChunkAccepted { next_offset } => next_offset as usize,
                other => return Err(self.unexpected(&step(), &other)),
            };
            if next <= offset || next > model.len() {
                return Err(self.protocol_error(
                    &step(),
                    format!("the board reports {next} bytes received after a chunk ending at {end}"),
                ));
            }
            offset = next;
            progress(FlashProgress {
                sent_bytes: offset as u64,
                total_bytes: total,
            });
        }
        self.request_expecting(
            || "finish model upload".into(),
            &Request::LoadModelEnd(summary),
            |r| *r == Response::ModelLoaded(summary),
        )?;
        match self.verify()? {
            Some(held) if held == summary => Ok(summary),
            held => Err(self.protocol_error(
                "verify",
                format!(
                    "the board holds {}, not the {} bytes with digest {} just flashed",
                    held.map_or("no model".into(), |h| format!(
                        "{} bytes with digest {}",
                        h.len, h.digest
                    )),
                    summary.len,
                    summary.digest
                ),
            )),
        }
    }

    /// The size and digest of the model the board holds.
    pub fn verify(&mut self) -> Result<Option<ModelSummary>, ClientError> {
        match self.request(|| "verify".into(), &Request::Verify)? {
            Response::Verified(held) => Ok(held),
            other => Err(self.unexpected("verify", &other)),
        }
    }

    /// Loads the input of the next run, in chunks.
    pub fn load_input(&mut self, input: &[u8]) -> Result<(), ClientError> {
        let total_len = u32::try_from(input.len())
            .ok()
            .filter(|&len| len <= MAX_TENSOR_BYTES)
            .ok_or_else(|| {
                self.protocol_error(
                    &format!("load input ({} bytes)", input.len()),
                    format!("an input has at most {MAX_TENSOR_BYTES} bytes"),
                )
            })?;
        let chunk_len = self.chunk_len()?;
        let mut offset = 0;
        loop {
            let end = (offset + chunk_len).min(input.len());
            let request = Request::LoadInput {
                total_len,
                offset: offset as u32,
                data: input[offset..end].to_vec(),
            };
            let step = || format!("load input chunk at offset {offset} ({total_len} bytes)");
            match self.request(step, &request)? {
                Response::InputLoaded { received } if received as usize == end => {}
                other => return Err(self.unexpected(&step(), &other)),
            }
            if end == input.len() {
                return Ok(());
            }
            offset = end;
        }
    }

    /// Runs one inference; returns the output's length and the statistics.
    pub fn run(&mut self) -> Result<(u32, RunStatistics), ClientError> {
        match self.request(|| "run".into(), &Request::Run)? {
            Response::RunComplete { output_len, statistics } => Ok((output_len, statistics)),
            other => Err(self.unexpected("run", &other)),
        }
    }

    /// The output of the last run, read in chunks.
    pub fn read_output(&mut self) -> Result<Vec<u8>, ClientError> {
        let mut output = Vec::new();
        loop {
            let offset = output.len();
            let step = || format!("read output at offset {offset}");
            let request = Request::ReadOutput { offset: offset as u32 };
            let (total_len, data) = match self.request(step, &request)? {
                Response::Output { total_len, data } => (total_len as usize, data),
                other => return Err(self.unexpected(&step(), &other)),
            };
            let end = offset + data.len();
            if end > total_len || (data.is_empty() && offset < total_len) || total_len > MAX_TENSOR_BYTES as usize {
                return Err(self.protocol_error(
                    &step(),
                    format!("the board sent {} bytes of an output of {total_len}", data.len()),
                ));
            }
            output.extend_from_slice(&data);
            if end == total_len {
                return Ok(output);
            }
        }
    }

    /// The largest chunk the board takes (asked once).
    fn chunk_len(&mut self) -> Result<usize, ClientError> {
        match self.chunk_len {
            Some(len) => Ok(len),
            None => Ok(clamp_chunk(self.device_info()?.max_chunk_bytes as usize)),
        }
    }

    pub fn read_statistics(&mut self) -> Result<RunStatistics, ClientError> {
        match self.request(|| "read statistics".into(), &Request::ReadStatistics)? {
            Response::Statistics(statistics) => Ok(statistics),
            other => Err(self.unexpected("read statistics", &other)),
        }
    }

    /// Loads `input`, runs, and reads the output back.
    pub fn infer(&mut self, input: &[u8]) -> Result<Inference, ClientError> {
        self.load_input(input)?;
        let (output_len, statistics) = self.run()?;
        let output = self.read_output()?;
        if output.len() != output_len as usize {
            return Err(self.protocol_error(
                "read output",
                format!(
                    "the run reported {output_len} output bytes, the board sent {}",
                    output.len()
                ),
            ));
        }
        Ok(Inference { output, statistics })
    }

    pub fn reset(&mut self) -> Result<(), ClientError> {
        self.request_expecting(|| "reset".into(), &Request::Reset, |r| *r == Response::ResetDone)
    }

    fn request_expecting(
        &mut self,
        step: impl Fn() -> String,
        request: &Request,
        accept: impl Fn(&Response) -> bool,
    ) -> Result<(), ClientError> {
        let response = self.request(&step, request)?;
        if accept(&response) {
            Ok(())
        } else {
            Err(self.unexpected(&step(), &response))
        }
    }

    /// Sends `request` until an answer arrives or the tries run out.
    /// `step` names it in errors.
    pub fn request(&mut self, step: impl Fn() -> String, request: &Request) -> Result<Response, ClientError> {
        let payload = request
            .encode()
            .map_err(|e| self.protocol_error(&step(), e.to_string()))?;
        let seq = self.take_seq();
        let mut frame = Frame::new(request.kind(), seq, payload);
        let attempts = self.policy.attempts.max(1);
        let mut last = String::new();
        for attempt in 0..attempts {
            if attempt > 0 {
                thread::sleep(self.policy.backoff(attempt));
                frame.flags = frame.flags.with(Flags::RETRY);
            }
            match self.exchange(&frame) {
                Ok(response) => return Ok(response),
                Err(Failure::Refused(error)) => {
                    return Err(ClientError::Refused {
                        device: self.device().into(),
                        step: step(),
                        error,
                    });
                }
                Err(Failure::Retry(why)) => last = why,
            }
        }
        Err(ClientError::NoAnswer {
            device: self.device().into(),
            step: step(),
            attempts,
            last,
        })
    }

    fn exchange(&mut self, frame: &Frame) -> Result<Response, Failure> {
        if self.needs_reconnect {
            self.transport
                .reconnect()
                .map_err(|e| Failure::Retry(format!("reconnect: {e}")))?;
            self.needs_reconnect = false;
        }
        if let Err(e) = self.transport.send(frame) {
            self.needs_reconnect = true;
            return Err(Failure::Retry(format!("send: {e}")));
        }
        let deadline = Instant::now() + self.policy.response_timeout;
        loop {
            let received = match self.transport.receive(deadline) {
                Ok(received) => received,
                Err(TransportError::TimedOut) => {
                    return Err(Failure::Retry(format!(
                        "no answer within {} ms",
                        self.policy.response_timeout.as_millis()
                    )));
                }
                Err(e) => {
                    self.needs_reconnect = true;
                    return Err(Failure::Retry(format!("receive: {e}")));
                }
            };
            let answer = match received {
                Decoded::Frame(answer) if answer.seq == frame.seq => answer,
                // An answer to bytes the board could not read or to an
                // earlier request: not ours.
                Decoded::Frame(_) => continue,
                Decoded::Rejected(rejected) if rejected.seq == Some(frame.seq) => {
                    return Err(Failure::Retry(format!("corrupt answer: {}", rejected.error)));
                }
                Decoded::Rejected(_) => continue,
            };
            return match Response::decode(answer.kind, &answer.payload) {
                Ok(Response::Error(error)) if error.code == ErrorCode::CorruptFrame => Err(Failure::Retry(format!(
                    "the board received a corrupt frame: {}",
                    error.message
                ))),
                Ok(Response::Error(error)) => Err(Failure::Refused(error)),
                Ok(response) => Ok(response),
                Err(e) => Err(Failure::Retry(format!("unreadable answer: {e}"))),
            };
        }
    }

    fn take_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        // 0 marks the board's answers to unreadable bytes.
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        seq
    }

    fn unexpected(&self, step: &str, response: &Response) -> ClientError {
        self.protocol_error(step, format!("unexpected answer {:?}", response.kind()))
    }

    fn protocol_error(&self, step: &str, problem: String) -> ClientError {
        ClientError::Protocol {
            device: self.device().into(),
            step: step.into(),
            problem,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_first_pause_up_to_the_cap() {
        let policy = RetryPolicy {
            attempts: 10,
            response_timeout: Duration::from_secs(1),
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
        };
        let pauses: Vec<u128> = (1..6).map(|retry| policy.backoff(retry).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 500, 500]);
        assert_eq!(policy.backoff(200), Duration::from_millis(500));
    }
}
