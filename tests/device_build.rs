//! Kept models flashed to and evaluated on boards through the real `kflow`
//! binary: `kflow device-sim` over TCP and over a pseudo-terminal pair, a
//! board killed mid-flash, and a generated model tampered with between
//! `codegen` and `flash`.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::board::{start_serial, start_tcp};
use common::{KillOnDrop, Ws};
use serde_json::Value;

fn smoke_workspace() -> Ws {
    let ws = Ws::new();
    for package in ["datasets", "host", "spaces", "platforms", "max78002"] {
        ws.repository_package(package);
    }
    ws
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("JSON")
}

/// Every kept model of the smoke search ran on `url`, every window equal to
/// the host-side simulator's.
fn assert_kept_models_ran_on(ws: &Ws, url: &str) {
    let dir = ws.out_dir().join("max78002/anomaly_smoke");
    let summary = read_json(&dir.join("summary.json"));
    let kept = summary["kept"].as_array().expect("kept models");
    assert!(!kept.is_empty(), "{summary}");
    for k in kept {
        let device = &k["device"];
        assert_eq!(device["url"], url, "{k}");
        assert_eq!(device["matches_simulator"], true, "{k}");
        let metrics = read_json(&dir.join(k["dir"].as_str().expect("dir")).join("device_metrics.json"));
        // Every test window the host evaluated was compared on the board.
        let host = read_json(&dir.join(k["dir"].as_str().expect("dir")).join("metrics.json"));
        let test_windows: u64 = host["quality"]["confusion"]
            .as_array()
            .expect("confusion")
            .iter()
            .flat_map(|row| row.as_array().expect("row").iter().map(|v| v.as_u64().expect("count")))
            .sum();
        assert_eq!(metrics["test_windows_compared"], test_windows, "{metrics}");
        assert_eq!(metrics["mismatched_windows"], 0, "{metrics}");
        assert!(
            metrics["latency"]["cycles"]["median"].as_f64().is_some_and(|c| c > 1.0),
            "{metrics}"
        );
        // Quality on the board is the simulated accelerator's.
        assert_eq!(metrics["quality"], host["accelerator"]["quality"], "{metrics}");
        // The software baseline stays on its own board whatever `--device`
        // names.
        assert_eq!(k["cpu"]["url"], "qemu://mps2-an386", "{k}");
        assert_eq!(k["cpu"]["matches_simulator"], true, "{k}");
    }
}

#[test]
fn device_sim_over_tcp_flashes_and_evaluates_every_kept_model() {
    let (_board, url) = start_tcp();
    let ws = smoke_workspace();
    let report = ws.build_ok(&["//max78002:anomaly_smoke", "--device", &url]);
    assert!(report.count("executed") > 0);
    assert_kept_models_ran_on(&ws, &url);
    let device_actions = |r: &common::Report, status: &str| {
        r.actions()
            .iter()
            .filter(|a| a["status"] == status)
            .filter_map(|a| a["id"].as_str())
            .filter(|id| ["/flash", "/evaluate_device"].iter().any(|end| id.ends_with(end)))
            .count()
    };
    let flashed = device_actions(&report, "executed");
    assert!(
        flashed >= 4,
        "a flash and an evaluation per kept model, on the board and on the M4"
    );

    // A deterministic board's results are cached like any action's...
    let again = ws.build_ok(&["//max78002:anomaly_smoke", "--device", &url]);
    assert_eq!(again.count("executed"), 0);
    // ...unless asked to run on the board again: then only the device
    // actions (and the search that reads them) run.
    let rerun = ws.build_ok(&["//max78002:anomaly_smoke", "--device", &url, "--rerun-devices"]);
    assert_eq!(device_actions(&rerun, "executed"), flashed);
    assert_eq!(rerun.count("executed"), flashed as u64 + 1);
    assert_kept_models_ran_on(&ws, &url);
}

#[test]
fn device_sim_over_a_pseudo_terminal_pair_evaluates_every_kept_model() {
    let board = start_serial();
    let ws = smoke_workspace();
    ws.build_ok(&["//max78002:anomaly_smoke", "--device", &board.url]);
    assert_kept_models_ran_on(&ws, &board.url);
}

/// Forwards TCP connections to a board; kills the board when the first
/// model chunk passes (once), and forwards to whatever board is set next.
struct Saboteur {
    addr: String,
    upstream: Arc<Mutex<Option<(KillOnDrop, String)>>>,
}

static ARMED: AtomicBool = AtomicBool::new(true);

impl Saboteur {
    fn start(board: (KillOnDrop, String)) -> Saboteur {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        let upstream = Arc::new(Mutex::new(Some(board)));
        let shared = upstream.clone();
        std::thread::spawn(move || {
            for host in listener.incoming().flatten() {
                let target = shared
                    .lock()
                    .expect("lock")
                    .as_ref()
                    .map(|(_, url)| url.trim_start_matches("tcp://").to_owned());
                let Some(board) = target.and_then(|a| TcpStream::connect(a).ok()) else {
                    // No board: the connection closes at once.
                    continue;
                };
                let shared = shared.clone();
                let (mut host_in, mut board_out) =
                    (host.try_clone().expect("clone"), board.try_clone().expect("clone"));
                std::thread::spawn(move || {
                    let (mut host_out, mut board_in) = (host, board);
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut board_in, &mut host_out);
                    });
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = host_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        if chunk_frame_starts(&seen) && ARMED.swap(false, Ordering::SeqCst) {
                            // Mid-flash: the board dies before the chunk arrives.
                            drop(shared.lock().expect("lock").take());
                            let _ = board_out.shutdown(std::net::Shutdown::Both);
                            let _ = host_in.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                        if board_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    // The host hung up: so does the board's side, which
                    // serves one connection at a time.
                    let _ = board_out.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Saboteur { addr, upstream }
    }

    fn url(&self) -> String {
        format!("tcp://{}", self.addr)
    }
}

/// Whether a load-model-chunk frame begins in `bytes` (the protocol's frame
/// header: magic `KF`, version, then the message type).
fn chunk_frame_starts(bytes: &[u8]) -> bool {
    let chunk = kflow_device::frame::MessageType::LoadModelChunk.code();
    bytes
        .windows(4)
        .any(|w| w[..2] == kflow_device::frame::MAGIC && w[2] == kflow_device::frame::VERSION && w[3] == chunk)
}

#[test]
fn a_board_killed_mid_flash_fails_the_build_clearly_and_a_restarted_board_succeeds() {
    let saboteur = Saboteur::start(start_tcp());
    let ws = smoke_workspace();
    let failed = ws.build(&["//max78002:anomaly_smoke", "--device", &saboteur.url()]);
    common::assert_no_panic(&failed.run);
    assert_eq!(failed.run.code, 1, "{}", failed.run.stderr);
    let stderr = &failed.run.stderr;
    assert!(
        stderr.contains(&format!("device {}", saboteur.url())) && stderr.contains("load model chunk"),
        "the error names the device and the step:\n{stderr}"
    );

    // The board is back, behind the same URL; the build resumes.
    *saboteur.upstream.lock().expect("lock") = Some(start_tcp());
    let report = ws.build_ok(&["//max78002:anomaly_smoke", "--device", &saboteur.url()]);
    let retrained = report
        .actions()
        .iter()
        .filter(|a| a["status"] == "executed")
        .filter_map(|a| a["id"].as_str())
        .filter(|id| id.ends_with("/train"))
        .count();
    assert_eq!(retrained, 0, "training came from the cache");
    assert_kept_models_ran_on(&ws, &saboteur.url());
}

/// The small CNN of `Ws::quantized_cnn` taken to generated code, plus a
/// `flash` and an `evaluate_device` of the code as generated (`:board`) and
/// of the copy in `graphs/m/gen/` (`:board_tampered`).
fn tamper_workspace() -> Ws {
    let ws = Ws::new();
    ws.small_dataset(20_000, 3).repository_package("platforms");
    ws.quantized_cnn(
        "m",
        r#"
[[ai8x_synthesize]]
name = "synth"
quantized = ":q"
platform = "//platforms:max78002"

[[codegen]]
name = "code"
synthesized = ":synth"

[[flash]]
name = "flash"
code = ":code"
synthesized = ":synth"

[[evaluate_device]]
name = "board"
flashed = ":flash"
synthesized = ":synth"
quantized = ":q"
model = ":cnn"
dataset = "//data:small"

[[cmd]]
name = "tampered"
srcs = ["gen/cnn_model.regs", "gen/cnn_model.bin"]
outs = ["cnn_model.regs", "cnn_model.bin"]
cmd = "cp gen/cnn_model.regs gen/cnn_model.bin ."

[[flash]]
name = "flash_tampered"
code = ":tampered"
synthesized = ":synth"

[[evaluate_device]]
name = "board_tampered"
flashed = ":flash_tampered"
synthesized = ":synth"
quantized = ":q"
model = ":cnn"
dataset = "//data:small"
"#,
    );
    ws
}

#[test]
fn a_flipped_register_or_weight_word_makes_the_board_differ_or_refuse() {
    let ws = tamper_workspace();
    ws.build_ok(&["//m:board", "//m:code"]);
    let honest = read_json(&ws.output("m", "board", "metrics.json"));
    assert_eq!(honest["matches_simulator"], true, "{honest}");
    let regs = std::fs::read(ws.output("m", "code", "cnn_model.regs")).expect("regs");
    let bin = std::fs::read(ws.output("m", "code", "cnn_model.bin")).expect("bin");
    let word = |bytes: &[u8], at: usize| u32::from_le_bytes(bytes[4 * at..4 * at + 4].try_into().expect("word"));
    // cnn_model.regs: an 8-byte header, then per phase a count and
    // (address, value) pairs; the configure phase follows init.
    let init = word(&regs[8..], 0) as usize;
    let configure_first_value = 2 + 2 * init + 2;
    // cnn_model.bin: [address, n_words, word...]: the first kernel word.
    let cases = [
        ("a register value", 8 + 4 * configure_first_value, true),
        ("a kernel word", 8, false),
    ];
    for (what, byte, in_regs) in cases {
        let (mut r, mut b) = (regs.clone(), bin.clone());
        let target = if in_regs { &mut r } else { &mut b };
        target[byte] ^= 0x10;
        ws.file("graphs/m/gen/cnn_model.regs", "");
        std::fs::write(ws.root().join("graphs/m/gen/cnn_model.regs"), &r).expect("write");
        std::fs::write(ws.root().join("graphs/m/gen/cnn_model.bin"), &b).expect("write");
        let build = ws.build(&["//m:board_tampered"]);
        common::assert_no_panic(&build.run);
        if build.run.code == 0 {
            let metrics = read_json(&ws.output("m", "board_tampered", "metrics.json"));
            assert_eq!(metrics["matches_simulator"], false, "{what}: {metrics}");
            assert!(
                metrics["mismatched_windows"].as_u64().is_some_and(|n| n > 0),
                "{metrics}"
            );
            assert!(metrics["first_mismatch"]["window"].is_u64(), "{metrics}");
        } else {
            let stderr = &build.run.stderr;
            assert!(
                stderr.contains("the board refused") && (stderr.contains("0x") || stderr.contains("register")),
                "{what}: a refusal names the register or address:\n{stderr}"
            );
        }
        let refusal = build
            .run
            .stderr
            .lines()
            .find(|l| l.contains("refused"))
            .unwrap_or("outputs differ");
        println!("{what}: {refusal}");
    }
}

#[test]
fn a_bad_device_url_is_a_graph_error_at_its_attribute() {
    let ws = tamper_workspace();
    ws.package(
        "bad",
        "[[flash]]\nname = \"f\"\ncode = \"//m:code\"\nsynthesized = \"//m:synth\"\ndevice = \"usb://board\"\n",
    );
    let build = ws.build(&["//bad:f"]);
    assert_eq!(build.run.code, 2, "{}", build.run.stderr);
    assert!(
        build.run.stderr.contains("graphs/bad/BUILD.toml:5") && build.run.stderr.contains("unknown scheme `usb`"),
        "{}",
        build.run.stderr
    );
}
