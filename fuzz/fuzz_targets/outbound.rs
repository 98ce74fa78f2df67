//! `allowed_outbound_hosts` patterns (`sandbox::outbound`), as a manifest or
//! `CAIRN_OUTBOUND_HOSTS` (comma-separated) gives them, checked against
//! destinations. The first line holds the patterns, each later line a
//! `HOST[:PORT]`. Reading never panics; a pattern read is shown as written;
//! and a request to a non-public address is allowed only by a pattern that
//! names that very address.

#![no_main]

use cairn::sandbox::outbound::{AllowList, Destination, Scheme, is_public};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (patterns, hosts) = text.split_once('\n').unwrap_or((text, ""));
    let written: Vec<&str> = patterns.split(',').collect();
    let Ok(list) = AllowList::parse(&written) else { return };
    assert_eq!(list.patterns().len(), written.len());
    let _ = list.describe();
    for line in hosts.lines().take(64) {
        let (host, port) = match line.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') => (host, port.parse().ok()),
            _ => (line, None),
        };
        for scheme in [Scheme::Http, Scheme::Https] {
            let to = Destination::new(scheme, host, port);
            let _ = to.to_string();
            if !list.allows(&to) {
                continue;
            }
            if let Some(address) = to.address()
                && !is_public(address)
            {
                assert!(
                    list.patterns().iter().any(|p| p.address() == Some(address) && p.allows(&to)),
                    "{to} (not public) allowed by {}",
                    list.describe()
                );
            }
        }
    }
});
