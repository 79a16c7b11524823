//! A dialog (RFC 3261 12): the peer-to-peer relationship an INVITE sets up, and everything a
//! request inside it needs: the route set learnt from `Record-Route`, the remote target from
//! `Contact`, the tags, and both CSeq spaces.
//!
//! Built by the caller from its INVITE and the 2xx ([`Dialog::as_uac`]) and by the answerer
//! from the INVITE ([`Dialog::as_uas`]); requests inside it come from [`Dialog::request`],
//! which applies loose routing (`lr`, RFC 3261 16.12) or the strict-router rewrite of RFC 2543
//! proxies (12.2.1.1), and says where the request goes next (8.1.2).

use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

use crate::sip::message::{Message, Method, ParseError};
use crate::sip::transport::Protocol;
use crate::sip::uri::{NameAddr, Uri};
use crate::sip::via_header;

/// Why a dialog could not be made from a message.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DialogError {
    /// A header the dialog needs is missing or unreadable.
    #[error("{0}")]
    Header(#[from] ParseError),
    /// The peer's tag is missing (a 2xx without a To tag).
    #[error("the peer's response carries no To tag")]
    NoRemoteTag,
}

/// One entry of a route set: the header value as received (unknown parameters such as
/// Kamailio's `ftag`, `did` or `r2` travel back untouched) and its URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// The `Record-Route` value, verbatim.
    pub raw: String,
    /// Its URI.
    pub uri: Uri,
}

impl RouteEntry {
    fn parse(v: &str) -> Result<RouteEntry, ParseError> {
        Ok(RouteEntry {
            raw: v.trim().to_owned(),
            uri: NameAddr::parse(v)?.uri,
        })
    }

    /// Whether the proxy is a loose router (`lr`, RFC 3261 19.1.1).
    pub fn loose(&self) -> bool {
        self.uri.param("lr").is_some()
    }
}

/// A confirmed dialog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dialog {
    /// Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
    /// Our From (UAC) or To (UAS) value, with our tag.
    pub local_uri: NameAddr,
    /// The peer's address, with its tag.
    pub remote_uri: NameAddr,
    /// Where requests inside the dialog are addressed (the peer's Contact).
    pub remote_target: Uri,
    /// The route set, in the order our requests visit it.
    pub route_set: Vec<RouteEntry>,
    /// The last CSeq number we used.
    pub local_cseq: u32,
    /// The last CSeq number the peer used (None until it sends a request).
    pub remote_cseq: Option<u32>,
}

/// A request built inside a dialog and where it goes first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routed {
    /// The request.
    pub msg: Message,
    /// The URI whose host and port are the next hop: the first route, or the remote target.
    pub next_hop: Uri,
}

fn record_routes(msg: &Message) -> Result<Vec<RouteEntry>, ParseError> {
    msg.header_values("Record-Route")
        .map(RouteEntry::parse)
        .collect()
}

impl Dialog {
    /// The caller's dialog from its INVITE and a 2xx (12.1.2): the route set is the
    /// response's Record-Route in reverse order, the remote target its Contact.
    pub fn as_uac(invite: &Message, resp: &Message) -> Result<Dialog, DialogError> {
        let local_uri = invite.from()?;
        let remote_uri = resp.to()?;
        let remote_tag = remote_uri.tag().ok_or(DialogError::NoRemoteTag)?.to_owned();
        let mut route_set = record_routes(resp)?;
        route_set.reverse();
        let remote_target = match resp.contact() {
            Some(c) => c.uri,
            None => remote_uri.uri.clone(),
        };
        Ok(Dialog {
            call_id: invite.call_id()?.to_owned(),
            local_tag: local_uri.tag().unwrap_or_default().to_owned(),
            remote_tag,
            local_uri,
            remote_uri,
            remote_target,
            route_set,
            local_cseq: invite.cseq()?.seq,
            remote_cseq: None,
        })
    }

    /// The answerer's dialog from the INVITE it answers with `local_tag` (12.1.1): the route
    /// set is the request's Record-Route in order, the remote target its Contact.
    pub fn as_uas(invite: &Message, local_tag: &str) -> Result<Dialog, DialogError> {
        let remote_uri = invite.from()?;
        let mut local_uri = invite.to()?;
        local_uri.set_param("tag", Some(local_tag));
        let remote_target = match invite.contact() {
            Some(c) => c.uri,
            None => remote_uri.uri.clone(),
        };
        Ok(Dialog {
            call_id: invite.call_id()?.to_owned(),
            local_tag: local_tag.to_owned(),
            remote_tag: remote_uri.tag().unwrap_or_default().to_owned(),
            local_uri,
            remote_uri,
            remote_target,
            route_set: record_routes(invite)?,
            local_cseq: 0,
            remote_cseq: Some(invite.cseq()?.seq),
        })
    }

    /// A new request inside the dialog with the next CSeq (12.2.1.1). ACK and CANCEL do not
    /// take one: see [`Dialog::ack`].
    pub fn request(&mut self, method: Method, protocol: Protocol, local: SocketAddr) -> Routed {
        self.local_cseq += 1;
        let seq = self.local_cseq;
        self.build(method, seq, protocol, local)
    }

    /// The ACK for a 2xx to the INVITE with CSeq `seq` (13.2.2.4): built from the dialog, its
    /// own branch, the INVITE's CSeq number.
    pub fn ack(&self, seq: u32, protocol: Protocol, local: SocketAddr) -> Routed {
        self.build(Method::Ack, seq, protocol, local)
    }

    fn build(&self, method: Method, seq: u32, protocol: Protocol, local: SocketAddr) -> Routed {
        let (uri, routes, next_hop) = match self.route_set.first() {
            None => (
                self.remote_target.clone(),
                Vec::new(),
                self.remote_target.clone(),
            ),
            Some(first) if first.loose() => (
                self.remote_target.clone(),
                self.route_set.iter().map(|r| r.raw.clone()).collect(),
                first.uri.clone(),
            ),
            Some(first) => {
                // A strict router (RFC 2543): it is the Request-URI, the rest of the route
                // set follows as Route, and the remote target goes last (12.2.1.1).
                let mut uri = first.uri.clone();
                uri.params
                    .retain(|(n, _)| !matches!(n.as_str(), "method" | "ttl" | "maddr" | "lr"));
                uri.headers = None;
                let mut routes: Vec<String> =
                    self.route_set[1..].iter().map(|r| r.raw.clone()).collect();
                routes.push(format!("<{}>", self.remote_target));
                (uri.clone(), routes, uri)
            }
        };
        let mut msg = Message::request(method.clone(), uri);
        msg.push("Via", via_header(protocol, local))
            .push("Max-Forwards", "70");
        for r in routes {
            msg.push("Route", r);
        }
        msg.push("From", self.local_uri.to_string())
            .push("To", self.remote_uri.to_string())
            .push("Call-ID", self.call_id.clone())
            .push("CSeq", format!("{seq} {method}"));
        Routed { msg, next_hop }
    }

    /// Checks a request the peer sent inside the dialog (12.2.2): its CSeq must grow. A
    /// target refresh (re-INVITE, UPDATE) with a Contact moves the remote target. `Err` is the
    /// status to answer with.
    pub fn accept_request(&mut self, req: &Message) -> Result<(), (u16, &'static str)> {
        let cseq = req.cseq().map_err(|_| (400, "Bad Request"))?;
        if let Some(last) = self.remote_cseq
            && cseq.seq < last
        {
            return Err((500, "Server Internal Error"));
        }
        self.remote_cseq = Some(cseq.seq);
        if matches!(cseq.method, Method::Invite | Method::Update)
            && let Some(c) = req.contact()
        {
            self.remote_target = c.uri;
        }
        Ok(())
    }
}

/// The address a next-hop URI names (RFC 3263 without DNS): its IP literal and port, the
/// port defaulting by transport (5061 for TLS and `sips:`). `None` for a host name.
pub fn next_hop_addr(uri: &Uri, protocol: Protocol) -> Option<SocketAddr> {
    let ip: IpAddr = uri.host.parse().ok()?;
    let default = if uri.secure || protocol == Protocol::Tls {
        5061
    } else {
        5060
    };
    Some(SocketAddr::new(ip, uri.port.unwrap_or(default)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite() -> Message {
        let mut m = Message::request(Method::Invite, Uri::parse("sip:bob@example.org").unwrap());
        m.push("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa")
            .push("From", "<sip:alice@127.0.0.1>;tag=ta")
            .push("To", "<sip:bob@example.org>")
            .push("Call-ID", "c1")
            .push("CSeq", "1 INVITE")
            .push("Contact", "<sip:alice@127.0.0.1:5070>");
        m
    }

    fn ok(rr: &[&str]) -> Message {
        let mut r = Message::response_to(&invite(), 200, "OK", Some("tb"));
        r.remove("Record-Route");
        for v in rr {
            r.push("Record-Route", *v);
        }
        r.push("Contact", "<sip:bob@127.0.0.2:5080;transport=udp>");
        r
    }

    const L: &str = "127.0.0.1:5070";

    fn routes(m: &Message) -> Vec<&str> {
        m.header_values("Route").collect()
    }

    fn ruri(m: &Message) -> String {
        match &m.start {
            crate::sip::message::StartLine::Request { uri, .. } => uri.to_string(),
            _ => unreachable!("a request"),
        }
    }

    /// RFC 3261 12.1.2 and 12.2.1.1, a loose router: the caller reverses the response's
    /// Record-Route, addresses the remote target, and sends to the first route.
    #[test]
    fn uac_with_a_loose_router() {
        let rr = [
            "<sip:127.0.0.3:5090;lr;ftag=ta;did=1a>",
            "<sip:127.0.0.9:5060;lr;r2=on>",
        ];
        let mut d = Dialog::as_uac(&invite(), &ok(&rr)).unwrap();
        assert_eq!(d.remote_tag, "tb");
        assert_eq!(
            d.remote_target.to_string(),
            "sip:bob@127.0.0.2:5080;transport=udp"
        );
        let bye = d.request(Method::Bye, Protocol::Udp, L.parse().unwrap());
        assert_eq!(ruri(&bye.msg), "sip:bob@127.0.0.2:5080;transport=udp");
        assert_eq!(routes(&bye.msg), vec![rr[1], rr[0]], "reversed, verbatim");
        assert_eq!(bye.next_hop.to_string(), "sip:127.0.0.9:5060;lr;r2=on");
        assert_eq!(bye.msg.cseq().unwrap().seq, 2);
        assert_eq!(bye.msg.to().unwrap().tag(), Some("tb"));
        assert_eq!(bye.msg.from().unwrap().tag(), Some("ta"));
        // The ACK takes the INVITE's CSeq number and the same route.
        let ack = d.ack(1, Protocol::Udp, L.parse().unwrap());
        assert_eq!(ack.msg.cseq().unwrap().seq, 1);
        assert_eq!(ack.msg.method(), Some(Method::Ack));
        assert_eq!(routes(&ack.msg), vec![rr[1], rr[0]]);
        assert_ne!(
            ack.msg.top_via().unwrap().branch,
            bye.msg.top_via().unwrap().branch
        );
    }

    /// 12.2.1.1, a strict router (no `lr`): it becomes the Request-URI, and the remote target
    /// is appended as the last Route.
    #[test]
    fn uac_with_a_strict_router() {
        let mut d = Dialog::as_uac(&invite(), &ok(&["<sip:127.0.0.3:5090;maddr=x>"])).unwrap();
        let bye = d.request(Method::Bye, Protocol::Udp, L.parse().unwrap());
        assert_eq!(ruri(&bye.msg), "sip:127.0.0.3:5090");
        assert_eq!(
            routes(&bye.msg),
            vec!["<sip:bob@127.0.0.2:5080;transport=udp>"]
        );
        assert_eq!(
            next_hop_addr(&bye.next_hop, Protocol::Udp),
            Some("127.0.0.3:5090".parse().unwrap())
        );
    }

    /// Without Record-Route the request goes straight to the remote target.
    #[test]
    fn uac_without_a_proxy() {
        let mut d = Dialog::as_uac(&invite(), &ok(&[])).unwrap();
        let bye = d.request(Method::Bye, Protocol::Udp, L.parse().unwrap());
        assert!(routes(&bye.msg).is_empty());
        assert_eq!(
            next_hop_addr(&bye.next_hop, Protocol::Udp),
            Some("127.0.0.2:5080".parse().unwrap())
        );
    }

    /// 12.1.1: the answerer keeps the request's Record-Route in order; its BYE goes back
    /// through the same proxies to the caller's Contact.
    #[test]
    fn uas_keeps_record_route_in_order() {
        let mut inv = invite();
        inv.push("Record-Route", "<sip:127.0.0.9:5060;lr;r2=on>");
        inv.push("Record-Route", "<sip:127.0.0.3:5090;lr>");
        let mut d = Dialog::as_uas(&inv, "tb").unwrap();
        let bye = d.request(Method::Bye, Protocol::Udp, L.parse().unwrap());
        assert_eq!(ruri(&bye.msg), "sip:alice@127.0.0.1:5070");
        assert_eq!(
            routes(&bye.msg),
            vec!["<sip:127.0.0.9:5060;lr;r2=on>", "<sip:127.0.0.3:5090;lr>"]
        );
        assert_eq!(bye.msg.from().unwrap().tag(), Some("tb"));
        assert_eq!(bye.msg.to().unwrap().tag(), Some("ta"));
        assert_eq!(bye.msg.cseq().unwrap().seq, 1, "our own CSeq space");
    }

    /// 12.2.2: a request with a lower CSeq than the last is refused with 500; a re-INVITE's
    /// Contact is the new remote target.
    #[test]
    fn peer_requests_are_ordered_and_refresh_the_target() {
        let mut d = Dialog::as_uas(&invite(), "tb").unwrap();
        let mut re = invite();
        re.set("CSeq", "2 INVITE");
        re.set("Contact", "<sip:alice@127.0.0.1:6000>");
        assert_eq!(d.accept_request(&re), Ok(()));
        assert_eq!(d.remote_target.port, Some(6000));
        let mut old = invite();
        old.set("CSeq", "1 BYE");
        assert_eq!(d.accept_request(&old), Err((500, "Server Internal Error")));
    }

    #[test]
    fn a_2xx_without_a_tag_makes_no_dialog() {
        let mut r = ok(&[]);
        r.set("To", "<sip:bob@example.org>");
        assert_eq!(
            Dialog::as_uac(&invite(), &r).unwrap_err(),
            DialogError::NoRemoteTag
        );
    }

    #[test]
    fn next_hop_ports_default_by_transport() {
        let u = Uri::parse("sip:[::1]").unwrap();
        assert_eq!(
            next_hop_addr(&u, Protocol::Tls),
            Some("[::1]:5061".parse().unwrap())
        );
        assert_eq!(
            next_hop_addr(&u, Protocol::Udp),
            Some("[::1]:5060".parse().unwrap())
        );
        assert_eq!(
            next_hop_addr(&Uri::parse("sip:proxy.example").unwrap(), Protocol::Udp),
            None
        );
    }
}
