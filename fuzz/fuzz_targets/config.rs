//! Configuration loading: TOML text and `FASTCHAT_*` variables (read as
//! the environment is) → figment → each service's `Config` → its
//! validation. Input: a selector byte (bit 0: send-service or
//! all-messages-service), the TOML, 0xFF, then `NAME=value` lines.
//!
//! Holds beyond "no panic": a configuration that loads and validates
//! survives serializing and loading again unchanged, and validates again.

#![no_main]

use fastchat_fuzz::{fields, text};
use fastchat_runtime::config::{Validate, load_str};
use figment::{Figment, providers::Serialized};
use libfuzzer_sys::fuzz_target;

fn check<T>(toml: &str, env: &[(&str, &str)])
where
    T: serde::Serialize
        + serde::de::DeserializeOwned
        + Default
        + Validate
        + PartialEq
        + std::fmt::Debug,
{
    let Ok(config) = load_str::<T>(toml, env) else {
        return;
    };
    let again: T = Figment::from(Serialized::defaults(&config))
        .extract()
        .unwrap_or_else(|e| panic!("a loaded configuration does not load again: {e}"));
    assert_eq!(again, config);
    assert_eq!(again.validate(), Ok(()));
}

fuzz_target!(|data: &[u8]| {
    let (selector, parts) = fields(data, 2);
    let (Some(toml), Some(env)) = (text(parts[0]), text(parts[1])) else {
        return;
    };
    let env: Vec<(&str, &str)> = env
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    if selector & 1 == 0 {
        check::<send_service::Config>(toml, &env);
    } else {
        check::<all_messages_service::Config>(toml, &env);
    }
});
