//! How many sessions each browser cookie and each client address has, against their limits,
//! so that one client cannot fill the server with sessions.

use std::hash::Hash;
use std::net::IpAddr;

use rustc_hash::FxHashMap;

use crate::client_id::Id;
use crate::config::Config;
use crate::errors::bayeux;
use crate::shrink::ShrinkIfSparse;

/// A client address as the limit counts it: an IPv4 address, or the /64 network of an IPv6
/// address (one host is usually given a whole /64, so counting single IPv6 addresses would
/// not bound anything).
pub type Address = u128;

/// The key under which `text` (an IP address, as the transport reports it) is counted;
/// `None` when it is not an IP address (a Unix socket, say), which no limit applies to.
pub fn address_key(text: &str) -> Option<Address> {
    match text.parse::<IpAddr>().ok()?.to_canonical() {
        IpAddr::V4(v4) => Some(u128::from(v4.to_bits())),
        IpAddr::V6(v6) => Some(v6.to_bits() & !u128::from(u64::MAX)),
    }
}

/// Counts per key that forget a key at zero and give memory back once mostly empty.
pub struct Counts<K> {
    counts: FxHashMap<K, u32>,
}

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Self {
            counts: FxHashMap::default(),
        }
    }
}

impl<K: Hash + Eq> Counts<K> {
    pub fn get(&self, key: &K) -> u32 {
        self.counts.get(key).copied().unwrap_or(0)
    }

    pub fn add(&mut self, key: K) {
        *self.counts.entry(key).or_default() += 1;
    }

    pub fn remove(&mut self, key: &K) {
        if let Some(count) = self.counts.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(key);
                self.counts.shrink_if_sparse();
            }
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// Which limit a new session would exceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    Browser,
    Address,
}

impl Exceeded {
    /// The handshake's error string.
    pub fn error(self) -> &'static str {
        match self {
            Exceeded::Browser => bayeux::TOO_MANY_SESSIONS_PER_BROWSER,
            Exceeded::Address => bayeux::TOO_MANY_SESSIONS_PER_ADDRESS,
        }
    }
}

/// The sessions of each browser cookie and of each address.
#[derive(Default)]
pub struct Quotas {
    per_browser: Counts<Id>,
    per_address: Counts<Address>,
}

impl Quotas {
    /// Counts a new session, unless it would take its browser or address past its limit.
    pub fn admit(
        &mut self,
        browser: Id,
        address: Option<Address>,
        config: &Config,
    ) -> Result<(), Exceeded> {
        if at_limit(
            self.per_browser.get(&browser),
            config.max_sessions_per_cookie,
        ) {
            return Err(Exceeded::Browser);
        }
        if let Some(address) = address {
            if at_limit(
                self.per_address.get(&address),
                config.max_sessions_per_address,
            ) {
                return Err(Exceeded::Address);
            }
            self.per_address.add(address);
        }
        self.per_browser.add(browser);
        Ok(())
    }

    /// Counts a session that exists already (taken over from another process), whatever the
    /// limits say.
    pub fn count(&mut self, browser: Id, address: Option<Address>) {
        if let Some(address) = address {
            self.per_address.add(address);
        }
        self.per_browser.add(browser);
    }

    /// A session counted by `admit` or `count` ended.
    pub fn release(&mut self, browser: &Id, address: Option<Address>) {
        self.per_browser.remove(browser);
        if let Some(address) = address {
            self.per_address.remove(&address);
        }
    }
}

fn at_limit(count: u32, limit: Option<usize>) -> bool {
    limit.is_some_and(|limit| count as usize >= limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_count_ipv4_alone_and_ipv6_by_network() {
        let a = address_key("203.0.113.7").unwrap();
        assert_eq!(address_key("::ffff:203.0.113.7"), Some(a));
        assert_ne!(address_key("203.0.113.8"), Some(a));
        let v6 = address_key("2001:db8:1:2::1").unwrap();
        assert_eq!(address_key("2001:db8:1:2:ffff::9"), Some(v6));
        assert_ne!(address_key("2001:db8:1:3::1"), Some(v6));
        assert_eq!(address_key("/tmp/socket"), None);
        assert_eq!(address_key(""), None);
    }

    #[test]
    fn admits_up_to_each_limit_and_again_after_a_release() {
        let config = Config {
            max_sessions_per_cookie: Some(2),
            max_sessions_per_address: Some(3),
            ..Config::default()
        };
        let mut quotas = Quotas::default();
        let (one, two) = (Id::generate(), Id::generate());
        let here = address_key("10.0.0.1");
        assert_eq!(quotas.admit(one, here, &config), Ok(()));
        assert_eq!(quotas.admit(one, here, &config), Ok(()));
        assert_eq!(quotas.admit(one, here, &config), Err(Exceeded::Browser));
        assert_eq!(quotas.admit(two, here, &config), Ok(()));
        assert_eq!(quotas.admit(two, here, &config), Err(Exceeded::Address));
        assert_eq!(
            quotas.admit(two, None, &config),
            Ok(()),
            "no address, no limit"
        );
        quotas.release(&one, here);
        assert_eq!(quotas.admit(two, here, &config), Err(Exceeded::Browser));
        quotas.release(&two, None);
        assert_eq!(quotas.admit(two, here, &config), Ok(()));
    }

    #[test]
    fn no_limit_admits_everything_and_counts_are_forgotten_at_zero() {
        let config = Config {
            max_sessions_per_cookie: None,
            max_sessions_per_address: None,
            ..Config::default()
        };
        let mut quotas = Quotas::default();
        let browser = Id::generate();
        for _ in 0..1000 {
            quotas.admit(browser, address_key("::1"), &config).unwrap();
        }
        for _ in 0..1000 {
            quotas.release(&browser, address_key("::1"));
        }
        assert!(quotas.per_browser.is_empty() && quotas.per_address.is_empty());
    }
}
