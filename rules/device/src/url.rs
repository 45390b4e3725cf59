//! Device URLs: which board, reached how.
//!
//! - `sim://max78002`, `sim://max78000`: a simulated board in this process;
//! - `tcp://HOST:PORT`: a `kflow device-sim` or a bridge to a board
//!   (`HOST` may be a name, an IPv4 address or a bracketed IPv6 address);
//! - `serial://PATH?baud=N`: a board on a serial port, e.g.
//!   `serial:///dev/ttyUSB0?baud=115200` (`baud` defaults to 115200);
//! - `qemu://MACHINE?firmware=PATH`: a firmware on a board QEMU emulates,
//!   e.g. `qemu://mps2-an386`; kflow's `flash` names the firmware it built
//!   for the model.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// The baud rate of a `serial://` URL without `baud=`.
pub const DEFAULT_BAUD: u32 = 115_200;

/// A board the simulator can stand in for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimBoard {
    Max78002,
    Max78000,
}

impl SimBoard {
    pub const ALL: [SimBoard; 2] = [SimBoard::Max78002, SimBoard::Max78000];

    pub fn name(self) -> &'static str {
        match self {
            SimBoard::Max78002 => "max78002",
            SimBoard::Max78000 => "max78000",
        }
    }
}

impl FromStr for SimBoard {
    type Err = String;

    fn from_str(s: &str) -> Result<SimBoard, String> {
        SimBoard::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let known: Vec<_> = SimBoard::ALL.iter().map(|b| b.name()).collect();
                format!("unknown simulated board `{s}`; known boards: {}", known.join(", "))
            })
    }
}

/// A board QEMU emulates, for firmwares of Cortex-M cores without an
/// accelerator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QemuMachine {
    /// Arm's MPS2 with the AN386 image: a Cortex-M4.
    Mps2An386,
    /// Arm's MPS2 with the AN500 image: a Cortex-M7.
    Mps2An500,
}

impl QemuMachine {
    pub const ALL: [QemuMachine; 2] = [QemuMachine::Mps2An386, QemuMachine::Mps2An500];

    /// QEMU's name of the machine.
    pub fn name(self) -> &'static str {
        match self {
            QemuMachine::Mps2An386 => "mps2-an386",
            QemuMachine::Mps2An500 => "mps2-an500",
        }
    }
}

impl FromStr for QemuMachine {
    type Err = String;

    fn from_str(s: &str) -> Result<QemuMachine, String> {
        QemuMachine::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let known: Vec<_> = QemuMachine::ALL.iter().map(|m| m.name()).collect();
                format!("unknown QEMU machine `{s}`; known machines: {}", known.join(", "))
            })
    }
}

/// Where a board is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DeviceUrl {
    Sim(SimBoard),
    Tcp {
        host: String,
        port: u16,
    },
    Serial {
        path: String,
        baud: u32,
    },
    /// `firmware` is the ELF QEMU boots; without it the URL names the
    /// board but cannot be opened.
    Qemu {
        machine: QemuMachine,
        firmware: Option<String>,
    },
}

/// Why a string is not a device URL.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("device URL `{url}`: {reason}")]
pub struct UrlError {
    pub url: String,
    pub reason: String,
}

const FORMS: &str = "expected sim://max78002, sim://max78000, tcp://HOST:PORT, serial:///dev/ttyX?baud=N, qemu://mps2-an386 or qemu://mps2-an500";

impl FromStr for DeviceUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<DeviceUrl, UrlError> {
        let fail = |reason: String| UrlError {
            url: url.to_string(),
            reason,
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(fail(format!("no scheme; {FORMS}")));
        };
        match scheme {
            "sim" => rest.parse().map(DeviceUrl::Sim).map_err(fail),
            "tcp" => parse_tcp(rest).map_err(fail),
            "serial" => parse_serial(rest).map_err(fail),
            "qemu" => parse_qemu(rest).map_err(fail),
            _ => {
                let hint = ["sim", "tcp", "serial", "qemu"]
                    .into_iter()
                    .find(|known| strsim::levenshtein(&scheme.to_ascii_lowercase(), known) <= 2)
                    .map(|known| format!(" (did you mean `{known}://`?)"))
                    .unwrap_or_default();
                Err(fail(format!("unknown scheme `{scheme}`{hint}; {FORMS}")))
            }
        }
    }
}

fn parse_tcp(rest: &str) -> Result<DeviceUrl, String> {
    if rest.contains(['/', '?', '#']) {
        return Err("a tcp:// URL is HOST:PORT with no path or query".into());
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or("an IPv6 host needs a closing `]`")?;
        (host, after.strip_prefix(':').ok_or("no port; write tcp://HOST:PORT")?)
    } else {
        let (host, port) = rest.rsplit_once(':').ok_or("no port; write tcp://HOST:PORT")?;
        if host.contains(':') {
            return Err("an IPv6 host must be in brackets, e.g. tcp://[::1]:5000".into());
        }
        (host, port)
    };
    if host.is_empty() {
        return Err("no host; write tcp://HOST:PORT".into());
    }
    let port = match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(format!("port `{port}` is not a number from 1 to 65535")),
        Ok(port) => port,
    };
    Ok(DeviceUrl::Tcp {
        host: host.to_string(),
        port,
    })
}

fn parse_serial(rest: &str) -> Result<DeviceUrl, String> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() {
        return Err("no port path; write serial:///dev/ttyUSB0?baud=115200".into());
    }
    let mut baud = DEFAULT_BAUD;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("baud", value)) => {
                baud = match value.parse::<u32>() {
                    Ok(0) | Err(_) => return Err(format!("baud rate `{value}` is not a positive number")),
                    Ok(baud) => baud,
                }
            }
            _ => return Err(format!("unknown query parameter `{pair}`; the only one is baud=N")),
        }
    }
    Ok(DeviceUrl::Serial {
        path: path.to_string(),
        baud,
    })
}

fn parse_qemu(rest: &str) -> Result<DeviceUrl, String> {
    let (machine, query) = rest.split_once('?').unwrap_or((rest, ""));
    let machine = machine.parse()?;
    let firmware = match query {
        "" => None,
        _ => match query.strip_prefix("firmware=") {
            Some("") => return Err("an empty firmware path".into()),
            Some(path) => Some(path.to_string()),
            None => return Err(format!("unknown query `{query}`; the only parameter is firmware=PATH")),
        },
    };
    Ok(DeviceUrl::Qemu { machine, firmware })
}

impl DeviceUrl {
    /// This URL with the firmware a QEMU board boots (other URLs are
    /// returned as they are).
    pub fn with_firmware(&self, path: &str) -> DeviceUrl {
        match self {
            DeviceUrl::Qemu { machine, .. } => DeviceUrl::Qemu {
                machine: *machine,
                firmware: Some(path.to_string()),
            },
            other => other.clone(),
        }
    }
}

impl fmt::Display for DeviceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceUrl::Sim(board) => write!(f, "sim://{}", board.name()),
            DeviceUrl::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            DeviceUrl::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            DeviceUrl::Serial { path, baud } => write!(f, "serial://{path}?baud={baud}"),
            DeviceUrl::Qemu {
                machine,
                firmware: None,
            } => write!(f, "qemu://{}", machine.name()),
            DeviceUrl::Qemu {
                machine,
                firmware: Some(path),
            } => write!(f, "qemu://{}?firmware={path}", machine.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<DeviceUrl, String> {
        url.parse::<DeviceUrl>().map_err(|e| e.to_string())
    }

    #[test]
    fn parses_each_scheme_and_prints_it_back() {
        let cases = [
            ("sim://max78002", DeviceUrl::Sim(SimBoard::Max78002)),
            ("sim://max78000", DeviceUrl::Sim(SimBoard::Max78000)),
            (
                "tcp://127.0.0.1:5000",
                DeviceUrl::Tcp {
                    host: "127.0.0.1".into(),
                    port: 5000,
                },
            ),
            (
                "tcp://board.local:1",
                DeviceUrl::Tcp {
                    host: "board.local".into(),
                    port: 1,
                },
            ),
            (
                "tcp://[::1]:5000",
                DeviceUrl::Tcp {
                    host: "::1".into(),
                    port: 5000,
                },
            ),
            (
                "serial:///dev/ttyUSB0?baud=921600",
                DeviceUrl::Serial {
                    path: "/dev/ttyUSB0".into(),
                    baud: 921_600,
                },
            ),
            (
                "qemu://mps2-an386",
                DeviceUrl::Qemu {
                    machine: QemuMachine::Mps2An386,
                    firmware: None,
                },
            ),
            (
                "qemu://mps2-an500",
                DeviceUrl::Qemu {
                    machine: QemuMachine::Mps2An500,
                    firmware: None,
                },
            ),
            (
                "qemu://mps2-an386?firmware=/tmp/fw.elf",
                DeviceUrl::Qemu {
                    machine: QemuMachine::Mps2An386,
                    firmware: Some("/tmp/fw.elf".into()),
                },
            ),
        ];
        for (text, url) in cases {
            assert_eq!(parse(text).unwrap(), url, "{text}");
            assert_eq!(url.to_string(), text);
        }
    }

    #[test]
    fn serial_baud_defaults_to_115200() {
        assert_eq!(
            parse("serial:///dev/ttyACM0").unwrap(),
            DeviceUrl::Serial {
                path: "/dev/ttyACM0".into(),
                baud: 115_200
            }
        );
    }

    #[test]
    fn errors_name_the_url_and_what_is_wrong() {
        let cases = [
            ("max78002", "no scheme"),
            ("simm://max78002", "unknown scheme `simm` (did you mean `sim://`?)"),
            ("http://x:1", "unknown scheme `http`"),
            (
                "sim://max78003",
                "unknown simulated board `max78003`; known boards: max78002, max78000",
            ),
            ("tcp://localhost", "no port"),
            ("tcp://:5000", "no host"),
            ("tcp://localhost:0", "port `0`"),
            ("tcp://localhost:99999", "port `99999`"),
            ("tcp://localhost:5000/x", "no path or query"),
            ("tcp://::1:5000", "brackets"),
            ("serial://", "no port path"),
            ("serial:///dev/ttyUSB0?baud=fast", "baud rate `fast`"),
            (
                "serial:///dev/ttyUSB0?parity=none",
                "unknown query parameter `parity=none`",
            ),
            (
                "qemu://mps2-an385",
                "unknown QEMU machine `mps2-an385`; known machines: mps2-an386, mps2-an500",
            ),
            ("qemu://mps2-an386?firmware=", "an empty firmware path"),
            ("qemu://mps2-an386?elf=x", "unknown query `elf=x`"),
            ("qemo://mps2-an386", "did you mean `qemu://`?"),
        ];
        for (text, expected) in cases {
            let message = parse(text).unwrap_err();
            assert!(message.starts_with(&format!("device URL `{text}`: ")), "{message}");
            assert!(message.contains(expected), "{text}: {message}");
        }
    }
}
