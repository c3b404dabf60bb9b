//! Checks on `run`'s flags that need no IO beyond reading the files named.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "refusing to listen on {addr}: the sidecar serves only its own pod over loopback, and any other \
         address would let other hosts use the gateway's broker credential; pass --allow-non-loopback to override"
    )]
    NonLoopback { addr: SocketAddr },
    #[error("--upstream is empty: give at least one broker as host:port")]
    NoUpstream,
    #[error("--upstream entry {0:?} is not host:port")]
    BadUpstream(String),
    #[error("--node-id-min {min} is greater than --node-id-max {max}")]
    NodeRange { min: i32, max: i32 },
    #[error("the node-id range {min}..={max} maps past port 65535 from listen port {port}")]
    PortRange { min: i32, max: i32, port: u16 },
    #[error("--upstream-credentials and --upstream-sasl-mechanism go together")]
    HalfSasl,
}

/// Only loopback unless explicitly forced.
pub fn check_loopback(addr: SocketAddr, allow_non_loopback: bool) -> Result<(), ConfigError> {
    if addr.ip().is_loopback() || allow_non_loopback {
        Ok(())
    } else {
        Err(ConfigError::NonLoopback { addr })
    }
}

/// Split `host:port[,host:port]` and check each entry.
pub fn parse_upstream(list: &str) -> Result<Vec<String>, ConfigError> {
    let entries: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if entries.is_empty() {
        return Err(ConfigError::NoUpstream);
    }
    for e in &entries {
        let ok = e
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return Err(ConfigError::BadUpstream(e.clone()));
        }
    }
    Ok(entries)
}

/// The whole node-id range must map to valid ports.
pub fn check_node_range(min: i32, max: i32, listen_port: u16) -> Result<(), ConfigError> {
    if min > max {
        return Err(ConfigError::NodeRange { min, max });
    }
    if min < 0 || i64::from(listen_port) + 1 + i64::from(max) > 65535 {
        return Err(ConfigError::PortRange {
            min,
            max,
            port: listen_port,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_listen_is_refused_with_the_reason_unless_forced() {
        let any: SocketAddr = "0.0.0.0:9092".parse().unwrap();
        let err = check_loopback(any, false).unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        assert!(check_loopback(any, true).is_ok());
        assert!(check_loopback("127.0.0.1:9092".parse().unwrap(), false).is_ok());
        assert!(check_loopback("[::1]:9092".parse().unwrap(), false).is_ok());
    }

    #[test]
    fn upstream_lists_are_checked() {
        assert_eq!(parse_upstream("a:1, b:2").unwrap(), vec!["a:1", "b:2"]);
        assert_eq!(parse_upstream(" , "), Err(ConfigError::NoUpstream));
        assert_eq!(
            parse_upstream("a"),
            Err(ConfigError::BadUpstream("a".into()))
        );
        assert_eq!(
            parse_upstream("a:x"),
            Err(ConfigError::BadUpstream("a:x".into()))
        );
    }

    #[test]
    fn node_ranges_must_fit_the_port_space() {
        assert!(check_node_range(0, 1023, 9092).is_ok());
        assert!(check_node_range(5, 1, 9092).is_err());
        assert!(check_node_range(0, 1000, 65000).is_err());
        assert!(check_node_range(-1, 10, 9092).is_err());
    }
}
