//! The address classifier: which kind of destination an IP address is.
//!
//! Owns the table of special-purpose ranges (IANA IPv4/IPv6 special-purpose registries). The
//! invariant: anything not positively known to be globally routable unicast is *not*
//! [`AddrClass::Public`]. IPv6 outside `2000::/3` is [`AddrClass::Reserved`]; IPv6 forms that
//! embed an IPv4 address (v4-mapped `::ffff:0:0/96`, v4-compatible `::/96`, NAT64
//! `64:ff9b::/96`, 6to4 `2002::/16`) are classified by the embedded address, so
//! `[::ffff:127.0.0.1]` is loopback. Pure: no I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// What kind of destination an address is. Only [`AddrClass::Public`] is reachable without an
/// allowlist entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddrClass {
    /// Globally routable unicast.
    Public,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918: `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// `169.254.0.0/16` (cloud metadata lives here), `fe80::/10`.
    LinkLocal,
    /// Carrier-grade NAT, `100.64.0.0/10`.
    Cgnat,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `0.0.0.0`, `::` (connecting to it reaches the local host on Linux).
    Unspecified,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`.
    Documentation,
    /// IPv6 unique local `fc00::/7` (and the deprecated site-local `fec0::/10`).
    UniqueLocal,
    /// `0.0.0.0/8` other than `0.0.0.0` ("this network").
    ThisNetwork,
    /// Other special-purpose space: `192.0.0/24`, `192.88.99/24`, `198.18/15`, `240/4`,
    /// IPv6 outside `2000::/3`, Teredo `2001::/32`, ORCHID, discard-only `100::/64`.
    Reserved,
}

impl AddrClass {
    pub fn as_str(self) -> &'static str {
        match self {
            AddrClass::Public => "public",
            AddrClass::Loopback => "loopback",
            AddrClass::Private => "private",
            AddrClass::LinkLocal => "link-local",
            AddrClass::Cgnat => "cgnat",
            AddrClass::Multicast => "multicast",
            AddrClass::Unspecified => "unspecified",
            AddrClass::Broadcast => "broadcast",
            AddrClass::Documentation => "documentation",
            AddrClass::UniqueLocal => "unique-local",
            AddrClass::ThisNetwork => "this-network",
            AddrClass::Reserved => "reserved",
        }
    }

    /// Classes that are never a destination, whatever the allowlist says: `0.0.0.0`/`::`
    /// aliases the local host, and multicast/broadcast are not unicast peers.
    pub fn never_connectable(self) -> bool {
        matches!(
            self,
            AddrClass::Unspecified | AddrClass::Multicast | AddrClass::Broadcast
        )
    }
}

impl std::fmt::Display for AddrClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classify an address. IPv6 addresses that embed an IPv4 address classify as that address.
pub fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: u32, net: [u8; 4], prefix: u32) -> bool {
    let net = u32::from_be_bytes(net);
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    ip & mask == net & mask
}

fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    let n = u32::from(ip);
    let table: &[([u8; 4], u32, AddrClass)] = &[
        ([0, 0, 0, 0], 32, AddrClass::Unspecified),
        ([255, 255, 255, 255], 32, AddrClass::Broadcast),
        ([0, 0, 0, 0], 8, AddrClass::ThisNetwork),
        ([10, 0, 0, 0], 8, AddrClass::Private),
        ([100, 64, 0, 0], 10, AddrClass::Cgnat),
        ([127, 0, 0, 0], 8, AddrClass::Loopback),
        ([169, 254, 0, 0], 16, AddrClass::LinkLocal),
        ([172, 16, 0, 0], 12, AddrClass::Private),
        ([192, 0, 0, 0], 24, AddrClass::Reserved),
        ([192, 0, 2, 0], 24, AddrClass::Documentation),
        ([192, 88, 99, 0], 24, AddrClass::Reserved),
        ([192, 168, 0, 0], 16, AddrClass::Private),
        ([198, 18, 0, 0], 15, AddrClass::Reserved),
        ([198, 51, 100, 0], 24, AddrClass::Documentation),
        ([203, 0, 113, 0], 24, AddrClass::Documentation),
        ([224, 0, 0, 0], 4, AddrClass::Multicast),
        ([240, 0, 0, 0], 4, AddrClass::Reserved),
    ];
    table
        .iter()
        .find(|(net, prefix, _)| in_v4(n, *net, *prefix))
        .map_or(AddrClass::Public, |(_, _, class)| *class)
}

fn in_v6(ip: u128, net: u128, prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    ip & mask == net & mask
}

fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    let n = u128::from(ip);
    if ip.is_unspecified() {
        return AddrClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddrClass::Loopback;
    }
    // Forms that carry an IPv4 address: judge the address they would reach.
    let low32 = Ipv4Addr::from((n & 0xffff_ffff) as u32);
    if in_v6(n, 0xffff_u128 << 32, 96) // ::ffff:a.b.c.d (mapped)
        || in_v6(n, 0, 96) // ::a.b.c.d (compatible, deprecated)
        || in_v6(n, 0x0064_ff9b_u128 << 96, 96)
    // NAT64 well-known prefix
    {
        return classify_v4(low32);
    }
    if in_v6(n, 0x2002_u128 << 112, 16) {
        // 6to4: the IPv4 address sits in bits 16..48.
        return classify_v4(Ipv4Addr::from(((n >> 80) & 0xffff_ffff) as u32));
    }
    let table: &[(u128, u32, AddrClass)] = &[
        (0xff00_u128 << 112, 8, AddrClass::Multicast),
        (0xfe80_u128 << 112, 10, AddrClass::LinkLocal),
        (0xfec0_u128 << 112, 10, AddrClass::UniqueLocal),
        (0xfc00_u128 << 112, 7, AddrClass::UniqueLocal),
        (0x2001_0db8_u128 << 96, 32, AddrClass::Documentation),
        (0x3fff_u128 << 112, 20, AddrClass::Documentation),
        (0x2001_u128 << 112, 32, AddrClass::Reserved), // Teredo
        (0x2001_0010_u128 << 96, 28, AddrClass::Reserved), // ORCHID
        (0x2001_0020_u128 << 96, 28, AddrClass::Reserved), // ORCHIDv2
        (0x0100_u128 << 112, 64, AddrClass::Reserved), // discard-only
    ];
    if let Some((_, _, class)) = table.iter().find(|(net, p, _)| in_v6(n, *net, *p)) {
        return *class;
    }
    if in_v6(n, 0x2000_u128 << 112, 3) {
        AddrClass::Public
    } else {
        AddrClass::Reserved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> AddrClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn ipv4_table() {
        let cases = [
            ("8.8.8.8", AddrClass::Public),
            ("1.1.1.1", AddrClass::Public),
            ("0.0.0.0", AddrClass::Unspecified),
            ("0.1.2.3", AddrClass::ThisNetwork),
            ("10.0.0.1", AddrClass::Private),
            ("172.16.0.1", AddrClass::Private),
            ("172.31.255.255", AddrClass::Private),
            ("172.32.0.1", AddrClass::Public),
            ("192.168.1.1", AddrClass::Private),
            ("100.64.0.1", AddrClass::Cgnat),
            ("100.127.255.255", AddrClass::Cgnat),
            ("100.128.0.1", AddrClass::Public),
            ("127.0.0.1", AddrClass::Loopback),
            ("127.255.0.2", AddrClass::Loopback),
            ("169.254.169.254", AddrClass::LinkLocal),
            ("192.0.0.8", AddrClass::Reserved),
            ("192.0.2.1", AddrClass::Documentation),
            ("198.51.100.1", AddrClass::Documentation),
            ("203.0.113.1", AddrClass::Documentation),
            ("198.18.0.1", AddrClass::Reserved),
            ("224.0.0.1", AddrClass::Multicast),
            ("239.255.255.250", AddrClass::Multicast),
            ("240.0.0.1", AddrClass::Reserved),
            ("255.255.255.255", AddrClass::Broadcast),
        ];
        for (ip, want) in cases {
            assert_eq!(c(ip), want, "{ip}");
        }
    }

    #[test]
    fn ipv6_table() {
        let cases = [
            ("2606:4700:4700::1111", AddrClass::Public),
            ("::", AddrClass::Unspecified),
            ("::1", AddrClass::Loopback),
            ("fe80::1", AddrClass::LinkLocal),
            ("fc00::1", AddrClass::UniqueLocal),
            ("fd12:3456::1", AddrClass::UniqueLocal),
            ("fec0::1", AddrClass::UniqueLocal),
            ("ff02::1", AddrClass::Multicast),
            ("2001:db8::1", AddrClass::Documentation),
            ("2001::1", AddrClass::Reserved),
            ("100::1", AddrClass::Reserved),
            ("4000::1", AddrClass::Reserved),
            ("::ffff:127.0.0.1", AddrClass::Loopback),
            ("::ffff:169.254.169.254", AddrClass::LinkLocal),
            ("::ffff:10.1.2.3", AddrClass::Private),
            ("::ffff:8.8.8.8", AddrClass::Public),
            ("::127.0.0.1", AddrClass::Loopback),
            ("64:ff9b::a00:1", AddrClass::Private),
            ("2002:7f00:1::", AddrClass::Loopback),
            ("2002:0808:0808::1", AddrClass::Public),
        ];
        for (ip, want) in cases {
            assert_eq!(c(ip), want, "{ip}");
        }
    }
}
