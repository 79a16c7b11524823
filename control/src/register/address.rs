//! A registrar's addressing from configuration: `host:port` (a name, an IPv4 address or an
//! IPv6 address in brackets), the domain of the address of record, the Request-URI and the
//! TLS name, each with its default ([`RegistrarSpec::at`]). The fleet file, the load-run
//! scenario and `srtp-control call/answer --register` all read registrars through this.

use std::net::{SocketAddr, ToSocketAddrs};

use super::endpoint::{OutboundProxy, RegistrarSpec};
use crate::sip::transport::Protocol;
use crate::sip::uri::{Uri, split_host_port};

/// What a registrar is configured with. Only `address` is required.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistrarAddress<'a> {
    /// A name for reports (empty: the address).
    pub name: &'a str,
    /// `host:port`; a host name is resolved.
    pub address: &'a str,
    /// The domain of the address of record (`host` or `host:port`; default: the host).
    pub domain: Option<&'a str>,
    /// The Request-URI of REGISTER and probes (default: `sip:<host>:<port>`).
    pub request_uri: Option<&'a str>,
    /// The name the registrar's TLS certificate must carry (default: the host).
    pub tls_name: Option<&'a str>,
}

/// Splits and resolves `host:port`: the host as written (brackets removed) and the address.
pub fn resolve(
    what: &str,
    address: &str,
    protocol: Protocol,
) -> Result<(String, SocketAddr), String> {
    let (host, port) = split_host_port(address).map_err(|e| format!("{what} {address:?}: {e}"))?;
    let port = port.unwrap_or(if protocol == Protocol::Tls {
        5061
    } else {
        5060
    });
    let addr = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("{what} {address:?}: cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{what} {address:?}: {host} has no address"))?,
    };
    Ok((host, addr))
}

impl RegistrarAddress<'_> {
    /// The registrar, checked and resolved.
    pub fn spec(&self, protocol: Protocol) -> Result<RegistrarSpec, String> {
        let (host, addr) = resolve("registrar", self.address, protocol)?;
        let name = if self.name.is_empty() {
            self.address
        } else {
            self.name
        };
        let mut spec = RegistrarSpec::at(name, &host, addr, protocol);
        if let Some(d) = self.domain {
            let (h, p) = split_host_port(d).map_err(|e| format!("domain {d:?}: {e}"))?;
            spec.domain = Uri::new(None, &h, p);
        }
        if let Some(u) = self.request_uri {
            spec.request_uri = Uri::parse(u).map_err(|e| format!("request_uri {u:?}: {e}"))?;
        }
        if let Some(n) = self.tls_name {
            spec.tls_name = n.to_owned();
        }
        Ok(spec)
    }
}

/// An outbound proxy from `host:port`.
pub fn outbound_proxy(address: &str, protocol: Protocol) -> Result<OutboundProxy, String> {
    let (host, addr) = resolve("outbound proxy", address, protocol)?;
    let mut route = Uri::new(None, &host, Some(addr.port()));
    if protocol != Protocol::Udp {
        route.set_param("transport", Some(&protocol.via().to_ascii_lowercase()));
    }
    route.set_param("lr", None);
    Ok(OutboundProxy {
        addr,
        route,
        tls_name: host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(address: &str, domain: Option<&str>, p: Protocol) -> RegistrarSpec {
        RegistrarAddress {
            address,
            domain,
            ..RegistrarAddress::default()
        }
        .spec(p)
        .unwrap()
    }

    /// Issue 24: a registrar on a non-default port is addressed with its port, so that it
    /// answers our probes itself; `domain = "127.0.0.1:5070"` is a host and a port, not an
    /// IPv6 address (`sip:[127.0.0.1:5070]`); IPv6 prints in brackets.
    #[test]
    fn hosts_ports_and_ipv6_print_right() {
        let r = spec("127.0.0.1:5070", None, Protocol::Udp);
        assert_eq!(r.request_uri.to_string(), "sip:127.0.0.1:5070");
        assert_eq!(r.aor(Some("phone1")).to_string(), "sip:phone1@127.0.0.1");
        assert_eq!(r.tls_name, "127.0.0.1");
        let r = spec("127.0.0.1:5070", Some("127.0.0.1:5070"), Protocol::Udp);
        assert_eq!(r.aor(Some("p")).to_string(), "sip:p@127.0.0.1:5070");
        let r = spec("[::1]:5071", None, Protocol::Tls);
        assert_eq!(r.request_uri.to_string(), "sip:[::1]:5071;transport=tls");
        assert_eq!(r.addr, "[::1]:5071".parse().unwrap());
        assert_eq!(r.tls_name, "::1");
        let r = spec("127.0.0.1:5060", Some("lab.test"), Protocol::Udp);
        assert_eq!(
            r.request_uri.to_string(),
            "sip:127.0.0.1",
            "default port left out"
        );
        assert_eq!(r.aor(None).to_string(), "sip:lab.test");
        let r = spec("localhost:5071", None, Protocol::Tls);
        assert_eq!(
            r.tls_name, "localhost",
            "the name as configured, not its address"
        );
        assert!(r.addr.ip().is_loopback());
        let o = outbound_proxy("[::1]:5080", Protocol::Tcp).unwrap();
        assert_eq!(o.route.to_string(), "sip:[::1]:5080;transport=tcp;lr");
        assert!(
            RegistrarAddress {
                address: "127.0.0.1:99999",
                ..RegistrarAddress::default()
            }
            .spec(Protocol::Udp)
            .unwrap_err()
            .contains("bad port")
        );
    }
}
