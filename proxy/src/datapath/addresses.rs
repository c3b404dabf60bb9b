//! Where each broker appears to live, seen from the client: one loopback port
//! per broker, `listen port + 1 + node id`, so a client that cached metadata
//! before a proxy restart still reaches the same broker. Pure: no IO here;
//! the listener side binds the ports these functions hand out.

use kafka_protocol::protocol::StrBytes;
use std::net::IpAddr;

/// The mapping from broker node ids to the proxy's loopback endpoints.
#[derive(Debug, Clone)]
pub struct AddressPlan {
    /// The address clients connect to (the bootstrap listener's IP).
    pub listen_ip: IpAddr,
    /// The bootstrap port; broker `n` gets `listen_port + 1 + n`.
    pub listen_port: u16,
    /// Lowest node id the proxy maps (inclusive).
    pub node_id_min: i32,
    /// Highest node id the proxy maps (inclusive).
    pub node_id_max: i32,
}

/// A broker endpoint as the upstream advertised it, learned from a response.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamBroker {
    pub node_id: i32,
    pub host: String,
    pub port: u16,
}

/// Why a broker cannot be given a local port.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error(
        "broker node id {node_id} is outside the mapped range {min}..={max} (set --node-id-min/--node-id-max)"
    )]
    OutOfRange { node_id: i32, min: i32, max: i32 },
    #[error(
        "broker node id {node_id} maps to port {port}, beyond 65535 (lower --listen's port or the node-id range)"
    )]
    PortOverflow { node_id: i32, port: i64 },
    #[error("broker {node_id} advertised an invalid port {port}")]
    BadUpstreamPort { node_id: i32, port: i32 },
}

impl AddressPlan {
    /// The local port for a broker node id.
    pub fn local_port(&self, node_id: i32) -> Result<u16, AddressError> {
        if node_id < self.node_id_min || node_id > self.node_id_max {
            return Err(AddressError::OutOfRange {
                node_id,
                min: self.node_id_min,
                max: self.node_id_max,
            });
        }
        let port = i64::from(self.listen_port) + 1 + i64::from(node_id);
        u16::try_from(port).map_err(|_| AddressError::PortOverflow { node_id, port })
    }

    /// The host string written into rewritten responses.
    pub fn local_host(&self) -> StrBytes {
        StrBytes::from_string(self.listen_ip.to_string())
    }

    /// Rewrite one advertised endpoint in place to its loopback stand-in and
    /// return where it really lives. On error the fields are left untouched
    /// and the caller drops the entry, so no client is pointed around the gate.
    pub fn rewrite(
        &self,
        node_id: i32,
        host: &mut StrBytes,
        port: &mut i32,
    ) -> Result<UpstreamBroker, AddressError> {
        let upstream_port = u16::try_from(*port).map_err(|_| AddressError::BadUpstreamPort {
            node_id,
            port: *port,
        })?;
        let local = self.local_port(node_id)?;
        let found = UpstreamBroker {
            node_id,
            host: host.to_string(),
            port: upstream_port,
        };
        *host = self.local_host();
        *port = i32::from(local);
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> AddressPlan {
        AddressPlan {
            listen_ip: "127.0.0.1".parse().unwrap(),
            listen_port: 9092,
            node_id_min: 0,
            node_id_max: 1023,
        }
    }

    #[test]
    fn broker_ports_are_listen_plus_one_plus_node_id_and_invert() {
        let plan = plan();
        assert_eq!(plan.local_port(0).unwrap(), 9093);
        assert_eq!(plan.local_port(111).unwrap(), 9204);
    }

    #[test]
    fn ids_outside_the_range_or_past_port_65535_are_refused() {
        let plan = plan();
        assert!(matches!(
            plan.local_port(1024),
            Err(AddressError::OutOfRange { .. })
        ));
        assert!(matches!(
            plan.local_port(-1),
            Err(AddressError::OutOfRange { .. })
        ));
        let high = AddressPlan {
            listen_port: 65000,
            ..plan
        };
        assert!(matches!(
            high.local_port(1000),
            Err(AddressError::PortOverflow { .. })
        ));
    }

    #[test]
    fn rewrite_swaps_host_and_port_and_reports_the_upstream() {
        let plan = plan();
        let mut host = StrBytes::from_static_str("broker-1.kafka.svc");
        let mut port = 29092;
        let found = plan.rewrite(1, &mut host, &mut port).unwrap();
        assert_eq!(
            found,
            UpstreamBroker {
                node_id: 1,
                host: "broker-1.kafka.svc".into(),
                port: 29092
            }
        );
        assert_eq!((host.as_str(), port), ("127.0.0.1", 9094));
        let mut host = StrBytes::from_static_str("b");
        let mut port = 1;
        assert!(plan.rewrite(5000, &mut host, &mut port).is_err());
        assert_eq!(
            (host.as_str(), port),
            ("b", 1),
            "refused entries are left as they were"
        );
    }
}
