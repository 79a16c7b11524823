//! HTTP digest authentication for SIP (RFC 3261 22, RFC 8760): MD5 and SHA-256, `qop=auth`
//! or none, both as a client (answering a 401/407) and as a server (challenging and checking).

use core::fmt::Write;

use thiserror::Error;
use zeroize::Zeroizing;

use super::uri::split_list;

/// Why a challenge or credentials cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum AuthError {
    /// The header is not a Digest challenge or lacks realm or nonce.
    #[error("malformed digest header: {0}")]
    Malformed(&'static str),
    /// None of the offered algorithms is one we implement (MD5, SHA-256).
    #[error("no supported digest algorithm offered (we support SHA-256 and MD5)")]
    UnsupportedAlgorithm,
    /// The challenge requires a qop we do not implement (only `auth`).
    #[error("no supported qop offered (we support auth)")]
    UnsupportedQop,
}

/// A digest hash algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5 (RFC 2617), the default when a challenge names none.
    Md5,
    /// SHA-256 (RFC 8760), preferred when offered.
    Sha256,
}

impl Algorithm {
    /// The name in headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn parse(s: &str) -> Option<Algorithm> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    fn hex(self, data: &[u8]) -> String {
        let mut out = String::with_capacity(64);
        match self {
            Algorithm::Md5 => {
                use md5::Digest;
                for b in md5::Md5::digest(data) {
                    let _ = write!(out, "{b:02x}");
                }
            }
            Algorithm::Sha256 => {
                for b in ring::digest::digest(&ring::digest::SHA256, data).as_ref() {
                    let _ = write!(out, "{b:02x}");
                }
            }
        }
        out
    }
}

/// A `WWW-Authenticate` or `Proxy-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Realm.
    pub realm: String,
    /// Server nonce.
    pub nonce: String,
    /// Opaque, echoed back.
    pub opaque: Option<String>,
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Whether `qop=auth` is offered.
    pub qop_auth: bool,
    /// The nonce was stale (retry with the new one without asking the user).
    pub stale: bool,
}

fn digest_params(v: &str) -> Result<Vec<(String, String)>, AuthError> {
    let v = v.trim();
    let rest = v
        .get(..6)
        .filter(|s| s.eq_ignore_ascii_case("Digest"))
        .map(|_| &v[6..])
        .ok_or(AuthError::Malformed("scheme is not Digest"))?;
    Ok(split_list(rest)
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            (k.trim().to_ascii_lowercase(), v.to_owned())
        })
        .collect())
}

fn get<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

impl Challenge {
    /// Parses one challenge header value.
    pub fn parse(v: &str) -> Result<Challenge, AuthError> {
        let p = digest_params(v)?;
        let algorithm = match get(&p, "algorithm") {
            None => Algorithm::Md5,
            Some(a) => Algorithm::parse(a).ok_or(AuthError::UnsupportedAlgorithm)?,
        };
        let qop_auth = match get(&p, "qop") {
            None => false,
            Some(q) => {
                if !q.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth")) {
                    return Err(AuthError::UnsupportedQop);
                }
                true
            }
        };
        Ok(Challenge {
            realm: get(&p, "realm")
                .ok_or(AuthError::Malformed("no realm"))?
                .to_owned(),
            nonce: get(&p, "nonce")
                .ok_or(AuthError::Malformed("no nonce"))?
                .to_owned(),
            opaque: get(&p, "opaque").map(str::to_owned),
            algorithm,
            qop_auth,
            stale: get(&p, "stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    /// Picks the strongest usable challenge among several headers (RFC 8760 2.4: a server
    /// may offer SHA-256 and MD5; the client uses the first it supports, preferring
    /// SHA-256).
    pub fn pick<'a>(values: impl Iterator<Item = &'a str>) -> Result<Challenge, AuthError> {
        let mut best: Option<Challenge> = None;
        let mut err = AuthError::Malformed("no challenge");
        for v in values {
            match Challenge::parse(v) {
                Ok(c) => {
                    if best.as_ref().is_none_or(|b| b.algorithm == Algorithm::Md5) {
                        best = Some(c);
                    }
                }
                Err(e) => err = e,
            }
        }
        best.ok_or(err)
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        let mut s = format!(
            "Digest realm=\"{}\", nonce=\"{}\", algorithm={}",
            self.realm,
            self.nonce,
            self.algorithm.as_str()
        );
        if self.qop_auth {
            s.push_str(", qop=\"auth\"");
        }
        if let Some(o) = &self.opaque {
            let _ = write!(s, ", opaque=\"{o}\"");
        }
        if self.stale {
            s.push_str(", stale=TRUE");
        }
        s
    }

    /// Answers this challenge: the `Authorization` (or `Proxy-Authorization`) value for a
    /// request. `nc` counts uses of this nonce; `cnonce` is fresh random text.
    pub fn respond(
        &self,
        user: &str,
        password: &str,
        method: &str,
        uri: &str,
        cnonce: &str,
        nc: u32,
    ) -> String {
        let ha1 = Zeroizing::new(
            self.algorithm
                .hex(Zeroizing::new(format!("{user}:{}:{password}", self.realm)).as_bytes()),
        );
        let nc = format!("{nc:08x}");
        let response = compute(
            self.algorithm,
            &ha1,
            &self.nonce,
            self.qop_auth.then_some((&nc, cnonce)),
            method,
            uri,
        );
        let mut s = format!(
            "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}",
            self.realm,
            self.nonce,
            self.algorithm.as_str()
        );
        if self.qop_auth {
            let _ = write!(s, ", qop=auth, nc={nc}, cnonce=\"{cnonce}\"");
        }
        if let Some(o) = &self.opaque {
            let _ = write!(s, ", opaque=\"{o}\"");
        }
        s
    }
}

fn compute(
    alg: Algorithm,
    ha1: &str,
    nonce: &str,
    qop: Option<(&str, &str)>,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = alg.hex(format!("{method}:{uri}").as_bytes());
    let data = Zeroizing::new(match qop {
        Some((nc, cnonce)) => format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"),
        None => format!("{ha1}:{nonce}:{ha2}"),
    });
    alg.hex(data.as_bytes())
}

/// A received `Authorization` header, for a server to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// User name.
    pub username: String,
    /// Realm.
    pub realm: String,
    /// Nonce being answered.
    pub nonce: String,
    /// The digest URI.
    pub uri: String,
    /// Algorithm.
    pub algorithm: Algorithm,
    response: String,
    qop: Option<(String, String)>,
}

impl Authorization {
    /// Parses an `Authorization` value.
    pub fn parse(v: &str) -> Result<Authorization, AuthError> {
        let p = digest_params(v)?;
        let need = |k: &'static str| get(&p, k).map(str::to_owned).ok_or(AuthError::Malformed(k));
        let algorithm = match get(&p, "algorithm") {
            None => Algorithm::Md5,
            Some(a) => Algorithm::parse(a).ok_or(AuthError::UnsupportedAlgorithm)?,
        };
        let qop = match get(&p, "qop") {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => Some((need("nc")?, need("cnonce")?)),
            Some(_) => return Err(AuthError::UnsupportedQop),
        };
        Ok(Authorization {
            username: need("username")?,
            realm: need("realm")?,
            nonce: need("nonce")?,
            uri: need("uri")?,
            algorithm,
            response: need("response")?,
            qop,
        })
    }

    /// Whether the response proves knowledge of `password` for this request method (the
    /// comparison runs in constant time).
    pub fn verify(&self, password: &str, method: &str) -> bool {
        let ha1 = Zeroizing::new(self.algorithm.hex(
            Zeroizing::new(format!("{}:{}:{password}", self.username, self.realm)).as_bytes(),
        ));
        let want = compute(
            self.algorithm,
            &ha1,
            &self.nonce,
            self.qop.as_ref().map(|(nc, c)| (nc.as_str(), c.as_str())),
            method,
            &self.uri,
        );
        use subtle::ConstantTimeEq;
        want.len() == self.response.len()
            && bool::from(want.as_bytes().ct_eq(self.response.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 3.5 (an HTTP example; the computation is the same for SIP).
    #[test]
    fn rfc2617_md5_vector() {
        let c = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert!(c.qop_auth);
        let a = c.respond(
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "0a4f113b",
            1,
        );
        assert!(
            a.contains("response=\"6629fae49393a05397450978507c4ef1\""),
            "{a}"
        );
        let parsed = Authorization::parse(&a).unwrap();
        assert!(parsed.verify("Circle Of Life", "GET"));
        assert!(!parsed.verify("circle of life", "GET"));
        assert!(!parsed.verify("Circle Of Life", "POST"));
    }

    /// RFC 7616 3.9.1: the SHA-256 example.
    #[test]
    fn rfc7616_sha256_vector() {
        let c = Challenge::parse(
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=SHA-256, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
        )
        .unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha256);
        let a = c.respond(
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            1,
        );
        assert!(
            a.contains(
                "response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\""
            ),
            "{a}"
        );
    }

    #[test]
    fn prefers_sha256_and_rejects_unknown() {
        let md5 = "Digest realm=\"r\", nonce=\"n\", algorithm=MD5";
        let sha = "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256";
        assert_eq!(
            Challenge::pick([md5, sha].into_iter()).unwrap().algorithm,
            Algorithm::Sha256
        );
        assert_eq!(
            Challenge::pick([sha, md5].into_iter()).unwrap().algorithm,
            Algorithm::Sha256
        );
        assert_eq!(
            Challenge::pick(["Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256"].into_iter())
                .unwrap_err(),
            AuthError::UnsupportedAlgorithm
        );
        assert_eq!(
            Challenge::parse("Basic realm=\"r\"").unwrap_err(),
            AuthError::Malformed("scheme is not Digest")
        );
        assert_eq!(
            Challenge::parse("Digest nonce=\"n\"").unwrap_err(),
            AuthError::Malformed("no realm")
        );
        assert_eq!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\"").unwrap_err(),
            AuthError::UnsupportedQop
        );
        // Round trip of our own challenge, answered without qop.
        let c = Challenge {
            realm: "lab".into(),
            nonce: "abc".into(),
            opaque: None,
            algorithm: Algorithm::Sha256,
            qop_auth: false,
            stale: false,
        };
        assert_eq!(Challenge::parse(&c.to_header()).unwrap(), c);
        let a = Authorization::parse(&c.respond("u", "p", "REGISTER", "sip:lab", "x", 1)).unwrap();
        assert!(a.verify("p", "REGISTER"));
    }
}
