//! The real client address: the TCP peer, unless the peer is a configured trusted
//! proxy, in which case the right-most `X-Forwarded-For` entry that is not itself a
//! trusted proxy. A client cannot pick its own rate-limit bucket by sending the header.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    extract::ConnectInfo,
    http::{HeaderMap, Request},
};
use tower_governor::{GovernorError, key_extractor::KeyExtractor};

pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let chain: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| part.trim().parse().ok())
        .collect();
    chain
        .iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .or(chain.first())
        .copied()
        .unwrap_or(peer)
}

/// tower-governor's key: the resolved client address.
#[derive(Clone)]
pub struct ClientIpKey {
    pub trusted: Arc<Vec<IpAddr>>,
}

impl KeyExtractor for ClientIpKey {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<Self::Key, GovernorError> {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .ok_or(GovernorError::UnableToExtractKey)?;
        Ok(resolve(peer, req.headers(), &self.trusted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_only_counts_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let spoof = headers("198.51.100.1, 203.0.113.9");
        // Direct client: the header is ignored.
        assert_eq!(resolve(client, &spoof, &[proxy]), client);
        // Behind the proxy: the right-most untrusted entry (the proxy saw 203.0.113.9;
        // the left part was sent by the client and proves nothing).
        assert_eq!(resolve(proxy, &spoof, &[proxy]), client);
        // Behind the proxy with no header: the proxy itself.
        assert_eq!(resolve(proxy, &HeaderMap::new(), &[proxy]), proxy);
    }
}
