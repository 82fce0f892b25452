//! Published ports: `-p [HOST_IP:]HOST_PORT:GUEST_PORT`, as `docker run -p` writes
//! them. The daemon listens on the host address and relays each connection to the
//! guest's port (what Lima does for `localhost:8000`).

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// One host port relayed to a guest port (TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortForward {
    /// The host address to listen on; loopback unless asked otherwise.
    pub host_ip: Ipv4Addr,
    /// The host port.
    pub host_port: u16,
    /// The guest port connections are relayed to.
    pub guest_port: u16,
}

/// Why a `-p` value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortError {
    /// Not `[HOST_IP:]HOST:GUEST`.
    #[error("{0:?} is not a port mapping: write HOST:GUEST or HOST_IP:HOST:GUEST (e.g. 8000:80, 127.0.0.1:8000:80)")]
    Malformed(String),
    /// A port that is not 1 to 65535.
    #[error("{0:?}: ports are 1 to 65535")]
    BadPort(String),
    /// A host address that is not an IPv4 address.
    #[error("{0:?}: the host address must be an IPv4 address such as 127.0.0.1")]
    BadAddress(String),
}

fn port(s: &str, whole: &str) -> Result<u16, PortError> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() => {
            Err(PortError::BadPort(whole.to_string()))
        }
        Ok(p) => Ok(p),
        Err(_) => Err(PortError::Malformed(whole.to_string())),
    }
}

impl std::str::FromStr for PortForward {
    type Err = PortError;

    fn from_str(s: &str) -> Result<Self, PortError> {
        let parts: Vec<&str> = s.trim().trim_end_matches("/tcp").split(':').collect();
        let (ip, h, g) = match parts.as_slice() {
            [h, g] => (Ipv4Addr::LOCALHOST, *h, *g),
            [ip, h, g] => (
                ip.parse()
                    .map_err(|_| PortError::BadAddress(s.to_string()))?,
                *h,
                *g,
            ),
            _ => return Err(PortError::Malformed(s.to_string())),
        };
        Ok(PortForward {
            host_ip: ip,
            host_port: port(h, s)?,
            guest_port: port(g, s)?,
        })
    }
}

impl std::fmt::Display for PortForward {
    /// `127.0.0.1:8000->80/tcp`, as `docker ps` shows it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}->{}/tcp",
            self.host_ip, self.host_port, self.guest_port
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_syntax() {
        let p: PortForward = "8000:80".parse().unwrap();
        assert_eq!(
            p,
            PortForward {
                host_ip: Ipv4Addr::LOCALHOST,
                host_port: 8000,
                guest_port: 80
            }
        );
        let p: PortForward = "0.0.0.0:8443:443/tcp".parse().unwrap();
        assert_eq!(p.host_ip, Ipv4Addr::UNSPECIFIED);
        assert_eq!(p.to_string(), "0.0.0.0:8443->443/tcp");
    }

    #[test]
    fn refuses_what_is_not_a_mapping() {
        assert!(matches!(
            "80".parse::<PortForward>(),
            Err(PortError::Malformed(_))
        ));
        assert!(matches!(
            "0:80".parse::<PortForward>(),
            Err(PortError::BadPort(_))
        ));
        assert!(matches!(
            "70000:80".parse::<PortForward>(),
            Err(PortError::BadPort(_))
        ));
        assert!(matches!(
            "x:1:2".parse::<PortForward>(),
            Err(PortError::BadAddress(_))
        ));
        assert!(matches!(
            "a:b".parse::<PortForward>(),
            Err(PortError::Malformed(_))
        ));
        assert!("1:2:3:4".parse::<PortForward>().is_err());
    }
}
