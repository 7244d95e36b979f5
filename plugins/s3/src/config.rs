//! `[plugins.s3]`, the destination URL, and where the credentials come from.
//!
//! Credentials follow the standard AWS chain, so no secret needs to be in hubget's config:
//! 1. the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`);
//! 2. the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`),
//!    profile `profile` from the table, else `AWS_PROFILE`, else `default`;
//! 3. the shared config file (`AWS_CONFIG_FILE`, else `~/.aws/config`, section `[profile x]` or
//!    `[default]`), which may also give `region` and `endpoint_url`;
//! 4. else object_store's own chain (web identity, ECS and EC2 instance metadata).
//!
//! Errors name the bucket and the source of the credentials, never a secret.

use std::path::PathBuf;

use hubget_plugin_api::{ErrorKind, PluginError};
use serde::Deserialize;

/// The plugin's table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The bucket and prefix to read from: `s3://bucket/prefix`. Empty: the backend is inert
    /// (it still exports to the URL `hubget export --to` names).
    pub url: String,
    /// An S3-compatible endpoint (`http://127.0.0.1:9000`, `https://<account>.r2...`); empty:
    /// AWS (or `endpoint_url` of the shared config's profile).
    pub endpoint: String,
    /// The region (empty: the profile's, `AWS_REGION`, else `us-east-1`).
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`); default: on with a custom endpoint.
    pub path_style: Option<bool>,
    /// The profile of the shared files (empty: `AWS_PROFILE`, else `default`).
    pub profile: String,
    /// Extra trusted CA certificates (PEM) for the store; empty: the host's `ca_bundle`.
    pub ca_bundle: Option<PathBuf>,
}

impl Config {
    /// Parses the table.
    pub fn parse(toml_text: &str) -> Result<Self, PluginError> {
        hubget_plugin_api::sdk::parse_config("s3", toml_text)
    }
}

/// `s3://bucket/prefix`, split.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The bucket.
    pub bucket: String,
    /// The key prefix (no leading or trailing `/`; may be empty).
    pub prefix: String,
}

impl Location {
    /// Parses `s3://bucket[/prefix]`.
    pub fn parse(url: &str) -> Result<Self, PluginError> {
        let bad = |why: &str| {
            PluginError::new(
                ErrorKind::CONFIG,
                format!("`{url}` is not an object store URL ({why}); expected s3://bucket/prefix"),
            )
        };
        let rest = url
            .trim()
            .strip_prefix("s3://")
            .ok_or_else(|| bad("no s3:// scheme"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty()
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err(bad("bad bucket name"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|s| s == ".." || s == ".") {
            return Err(bad("`.` or `..` in the prefix"));
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// `prefix/key` (or `key`).
    pub fn key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// `s3://bucket/prefix/key`, for messages.
    pub fn url_of(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(key))
    }
}

/// Credentials and where they came from.
#[derive(Clone)]
pub struct Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret (never printed).
    pub secret_access_key: String,
    /// Session token, if any (never printed).
    pub session_token: Option<String>,
    /// Where they were found, for messages: `environment (AWS_ACCESS_KEY_ID)`,
    /// `~/.aws/credentials [default]`.
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// What the shared files and the environment say.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// Static credentials, if found (else object_store's instance chain).
    pub credentials: Option<Credentials>,
    /// Region from the profile or the environment.
    pub region: Option<String>,
    /// `endpoint_url` from the profile or `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Resolves the AWS chain for `profile` (empty: `AWS_PROFILE`, else `default`).
pub fn resolve_chain(profile: &str) -> Resolved {
    let profile = if profile.is_empty() {
        env("AWS_PROFILE").unwrap_or_else(|| "default".to_owned())
    } else {
        profile.to_owned()
    };
    let mut out = Resolved {
        region: env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")),
        endpoint: env("AWS_ENDPOINT_URL"),
        credentials: None,
    };
    if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        out.credentials = Some(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: env("AWS_SESSION_TOKEN"),
            source: "environment (AWS_ACCESS_KEY_ID)".to_owned(),
        });
    }
    let credentials_file = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".aws/credentials")));
    let config_file = env("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".aws/config")));
    let from_file = |path: &Option<PathBuf>, section: &str| {
        let path = path.as_ref()?;
        let ini = ini::Ini::load_from_file(path).ok()?;
        let props = ini.section(Some(section))?.clone();
        Some((path.display().to_string(), props))
    };
    let keys = |props: &ini::Properties| {
        Some((
            props.get("aws_access_key_id")?.trim().to_owned(),
            props.get("aws_secret_access_key")?.trim().to_owned(),
            props.get("aws_session_token").map(|t| t.trim().to_owned()),
        ))
    };
    if out.credentials.is_none()
        && let Some((path, props)) = from_file(&credentials_file, &profile)
        && let Some((id, secret, token)) = keys(&props)
    {
        out.credentials = Some(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: token,
            source: format!("{path} [{profile}]"),
        });
    }
    let config_section = if profile == "default" {
        "default".to_owned()
    } else {
        format!("profile {profile}")
    };
    if let Some((path, props)) = from_file(&config_file, &config_section) {
        if out.credentials.is_none()
            && let Some((id, secret, token)) = keys(&props)
        {
            out.credentials = Some(Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: token,
                source: format!("{path} [{config_section}]"),
            });
        }
        if out.region.is_none() {
            out.region = props.get("region").map(str::to_owned);
        }
        if out.endpoint.is_none() {
            out.endpoint = props.get("endpoint_url").map(str::to_owned);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_bucket_and_prefix() {
        let l = Location::parse("s3://models/team/hub/").unwrap();
        assert_eq!(l.bucket, "models");
        assert_eq!(l.prefix, "team/hub");
        assert_eq!(l.key("a/b"), "team/hub/a/b");
        assert_eq!(Location::parse("s3://b").unwrap().key("k"), "k");
        for bad in ["http://x/y", "s3://", "s3://Bad_Bucket/x", "s3://b/../x"] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_debug_shows_no_secret() {
        let c = Credentials {
            access_key_id: "AKIA".into(),
            secret_access_key: "s3cr3t".into(),
            session_token: Some("t0k3n".into()),
            source: "env".into(),
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("t0k3n"),
            "{shown}"
        );
    }
}
