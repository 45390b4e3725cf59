//! `kflow device-sim`: a simulated board served over TCP and, optionally,
//! a serial port, until the process is killed.

use std::io::Write;
use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use kflow_ai8x_board::SimBoard;
use kflow_device::transport::SerialLink;
use kflow_device::{LinkTimeouts, ServeOptions, Server, StreamTransport};

use crate::Failure;
use crate::cli::DeviceSimArgs;

pub fn serve(args: DeviceSimArgs, quiet: bool) -> Result<(), Failure> {
    let board: kflow_device::SimBoard = args.board.parse().map_err(|e: String| Failure::Build(Some(e)))?;
    let timeouts = LinkTimeouts::default();
    let say = |line: String| {
        if !quiet {
            println!("{line}");
            let _ = std::io::stdout().flush();
        }
    };
    let serial = match &args.serial {
        Some(path) => {
            let path = path.to_string_lossy().into_owned();
            let endpoint = format!("serial://{path}?baud={}", args.baud);
            // Opened here, so that a wrong path fails the command at once.
            let link = SerialLink::open(endpoint.clone(), &path, args.baud, timeouts)
                .map_err(|e| Failure::Build(Some(format!("cannot open {endpoint}: {e}"))))?;
            say(format!("kflow device-sim: {} board on {endpoint}", board.name()));
            Some(thread::spawn(move || {
                serve_serial(board, link, endpoint, path, args.baud, timeouts)
            }))
        }
        None => None,
    };
    if let Some(listen) = &args.listen {
        let listener =
            TcpListener::bind(listen).map_err(|e| Failure::Build(Some(format!("cannot listen on {listen}: {e}"))))?;
        let address = listener
            .local_addr()
            .map_err(|e| Failure::Build(Some(format!("cannot read the address of {listen}: {e}"))))?;
        say(format!(
            "kflow device-sim: {} board listening on tcp://{address}",
            board.name()
        ));
        let options = ServeOptions {
            idle_connection_timeout: Some(Duration::from_secs(args.idle_timeout.max(1))),
            ..ServeOptions::default()
        };
        let mut server = Server::with_options(SimBoard::new(board), options);
        server
            .serve_tcp(&listener, timeouts)
            .map_err(|e| Failure::Build(Some(format!("serving tcp://{address}: {e}"))))?;
    }
    if let Some(serial) = serial {
        let _ = serial.join();
    }
    Ok(())
}

/// Serves the port for ever; a port that fails is reopened.
fn serve_serial(
    board: kflow_device::SimBoard,
    link: SerialLink,
    endpoint: String,
    path: String,
    baud: u32,
    timeouts: LinkTimeouts,
) {
    let mut server = Server::new(SimBoard::new(board));
    let mut link = Some(link);
    loop {
        let current = match link.take() {
            Some(link) => link,
            None => match SerialLink::open(endpoint.clone(), &path, baud, timeouts) {
                Ok(link) => link,
                Err(_) => {
                    thread::sleep(Duration::from_millis(200));
                    continue;
                }
            },
        };
        let _ = server.serve(&mut StreamTransport::new(current));
        thread::sleep(Duration::from_millis(50));
    }
}
