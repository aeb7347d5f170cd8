//! Property tests of pure functions: SigV4 canonicalisation invariants, DER <-> raw ECDSA
//! conversion round trips, and the retry schedule.

use std::time::Duration;

use hybridboot::aws::sigv4::{
    canonical_headers, canonical_query, normalize_header_value, uri_encode,
};
use hybridboot::key::{ecdsa_raw_to_der, ecdsa_scalars_to_der};
use hybridboot::retry::{ceiling, delay, RetryPolicy};
use percent_encoding::percent_decode_str;
use proptest::prelude::*;

fn header_name() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9-]{0,15}"
}

fn header_value() -> impl Strategy<Value = String> {
    "[ \t]{0,3}[!-~]{0,8}([ \t]{1,4}[!-~]{1,8}){0,4}[ \t]{0,3}"
}

/// Flips the ASCII case of every other letter.
fn scramble_case(s: &str) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Canonical headers do not depend on the order of distinct headers nor on name case.
    #[test]
    fn canonical_headers_ignore_order_and_name_case(
        headers in proptest::collection::btree_map(header_name().prop_map(|n| n.to_ascii_lowercase()), header_value(), 1..8),
        rotate in 0usize..8,
    ) {
        let list: Vec<(String, String)> = headers.into_iter().collect();
        let mut other: Vec<(String, String)> =
            list.iter().map(|(k, v)| (scramble_case(k), v.clone())).collect();
        let r = rotate % other.len();
        other.rotate_left(r);
        other.reverse();
        let a = canonical_headers(&list);
        let b = canonical_headers(&other);
        prop_assert_eq!(&a, &b);
        // Names lowercase and sorted; each line one header.
        let names: Vec<&str> = a.signed.split(';').collect();
        let mut sorted = names.clone();
        sorted.sort();
        prop_assert_eq!(&names, &sorted);
        prop_assert_eq!(a.canonical.lines().count(), names.len());
        prop_assert!(a.signed.chars().all(|c| !c.is_ascii_uppercase()));
    }

    /// Whitespace folding: trimmed, no tabs, no double spaces, idempotent, words preserved.
    #[test]
    fn header_values_fold_whitespace(v in header_value()) {
        let n = normalize_header_value(&v);
        prop_assert_eq!(n.trim(), n.as_str());
        prop_assert!(!n.contains('\t') && !n.contains("  "));
        prop_assert_eq!(normalize_header_value(&n), n.clone());
        let words: Vec<&str> = v.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
        prop_assert_eq!(n, words.join(" "));
    }

    /// URI encoding: only unreserved characters stay, uppercase hex, and decoding gives back the
    /// input (any Unicode string).
    #[test]
    fn uri_encoding_round_trips(s in any::<String>(), keep_slash in any::<bool>()) {
        let e = uri_encode(&s, keep_slash);
        prop_assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b) || (keep_slash && b == b'/')));
        prop_assert!(!e.contains('+') && !e.contains(' '));
        // Every escape is `%` and two uppercase hex digits.
        prop_assert!(e.split('%').skip(1).all(|esc| esc.len() >= 2
            && esc[..2].chars().all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))));
        let back = percent_decode_str(&e).decode_utf8().unwrap();
        prop_assert_eq!(back.as_ref(), s.as_str());
    }

    /// Query canonicalisation: independent of parameter order; each pair encoded once.
    #[test]
    fn canonical_query_is_order_independent(
        params in proptest::collection::vec((any::<String>(), any::<String>()), 0..6),
        rotate in 0usize..6,
    ) {
        let mut other = params.clone();
        if !other.is_empty() {
            let r = rotate % other.len();
            other.rotate_left(r);
        }
        other.reverse();
        let q = canonical_query(&params);
        prop_assert_eq!(&q, &canonical_query(&other));
        if !params.is_empty() {
            let mut decoded: Vec<(String, String)> = q
                .split('&')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (
                        percent_decode_str(k).decode_utf8().unwrap().into_owned(),
                        percent_decode_str(v).decode_utf8().unwrap().into_owned(),
                    )
                })
                .collect();
            let mut want = params.clone();
            decoded.sort();
            want.sort();
            prop_assert_eq!(decoded, want);
        }
    }

    /// raw r||s -> DER -> raw is the identity for every valid scalar pair, and stripping
    /// leading zeros from the scalars (as TPMs do) gives the same DER.
    #[test]
    fn ecdsa_raw_der_round_trip(r in proptest::array::uniform32(any::<u8>()), s in proptest::array::uniform32(any::<u8>()), strip in 0usize..32) {
        let mut raw = [0u8; 64];
        raw[..32].copy_from_slice(&r);
        raw[32..].copy_from_slice(&s);
        match ecdsa_raw_to_der(&raw) {
            Ok(der) => {
                let sig = p256::ecdsa::Signature::from_der(&der).expect("our DER parses");
                let bytes: Vec<u8> = sig.to_bytes().to_vec();
                prop_assert_eq!(bytes, raw.to_vec());
                // Leading-zero stripped scalars (only zeros removed) encode the same.
                let rz = r.iter().take(strip).take_while(|b| **b == 0).count();
                let sz = s.iter().take(strip).take_while(|b| **b == 0).count();
                prop_assert_eq!(ecdsa_scalars_to_der(&r[rz..], &s[sz..]).unwrap(), der);
            }
            // Zero or >= n scalars are not signatures: refused, never mis-encoded.
            Err(_) => prop_assert!(p256::ecdsa::Signature::from_slice(&raw).is_err()),
        }
    }

    /// Scalars longer than 32 significant bytes are refused.
    #[test]
    fn ecdsa_overlong_scalars_refused(hi in 1u8..=255, rest in proptest::array::uniform32(any::<u8>())) {
        let mut r = vec![hi];
        r.extend_from_slice(&rest);
        prop_assert!(ecdsa_scalars_to_der(&r, &rest).is_err());
    }

    /// The retry schedule: every delay within [0, min(cap, base*2^n)], Retry-After a floor,
    /// ceilings monotone and bounded by the cap.
    #[test]
    fn retry_delays_are_bounded_and_jittered(
        base_ms in 1u64..10_000, cap_ms in 1u64..600_000, retry in 0u32..100,
        unit in 0.0f64..1.0, after_ms in proptest::option::of(0u64..100_000),
    ) {
        let policy = RetryPolicy { base: Duration::from_millis(base_ms), cap: Duration::from_millis(cap_ms), ..RetryPolicy::default() };
        let c = ceiling(&policy, retry);
        prop_assert!(c <= policy.cap);
        prop_assert!(ceiling(&policy, retry + 1) >= c);
        let after = after_ms.map(Duration::from_millis);
        let d = delay(&policy, retry, unit, after);
        match after {
            Some(a) => { prop_assert!(d >= a); prop_assert!(d <= c.max(a)); }
            None => prop_assert!(d <= c),
        }
        // Full jitter: the delay scales with the draw.
        prop_assert_eq!(delay(&policy, retry, 0.0, None), Duration::ZERO);
    }
}

/// Never synchronised: nodes drawing independent jitter spread their retries instead of
/// retrying together (the thundering-herd case after a Vault or AWS outage).
#[test]
fn retry_delays_are_not_synchronised_across_nodes() {
    use hybridboot::retry::{Clock, RealClock};
    let policy = RetryPolicy {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(60),
        ..RetryPolicy::default()
    };
    for retry in [0u32, 3, 10] {
        let delays: Vec<Duration> = (0..200)
            .map(|_| delay(&policy, retry, RealClock.unit(), None))
            .collect();
        let mut distinct = delays.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() > 190,
            "retry {retry}: {} distinct of 200",
            distinct.len()
        );
        // Spread over the window: both halves of [0, ceiling) are used.
        let c = ceiling(&policy, retry);
        let low = delays.iter().filter(|d| **d < c / 2).count();
        assert!(
            (40..=160).contains(&low),
            "retry {retry}: {low} of 200 in the lower half"
        );
    }
}
