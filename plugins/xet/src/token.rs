//! CAS tokens: the Hub's short-lived Xet read token of a repository at a revision, fetched from
//! the Hub's `xet-read-token` route (an `api`-bucket request, metered by the Hub) once per run and
//! shared by every call, batch and segment of the backend.
//!
//! Renewal is single-flight: however many segments find the token about to expire (or refused
//! by the CAS) at once, one request goes to the Hub and the others wait for its answer; the
//! renewed token is stored for every later caller.

use std::collections::HashMap;
use std::sync::Mutex;

use hubget_hub_http::{HubApi, XetToken};
use hubget_plugin_api::{CancelToken, ErrorKind, PluginError, RepoType};

/// (repo type, repo id, revision).
pub type Key = (u32, String, String);

/// The tokens of one backend.
pub struct Tokens {
    hub: HubApi,
    cached: Mutex<HashMap<Key, XetToken>>,
    /// Held while a token is fetched from the Hub.
    renewing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").finish_non_exhaustive()
    }
}

/// The key of a repository at a revision.
pub fn key(repo_type: RepoType, repo_id: &str, revision: &str) -> Key {
    (repo_type.0, repo_id.to_owned(), revision.to_owned())
}

impl Tokens {
    /// No token yet.
    pub fn new(hub: HubApi) -> Self {
        Self {
            hub,
            cached: Mutex::new(HashMap::new()),
            renewing: tokio::sync::Mutex::new(()),
        }
    }

    /// Starting from `token` for `key`.
    pub fn seeded(hub: HubApi, key: Key, token: XetToken) -> Self {
        let tokens = Self::new(hub);
        tokens.store(key, token);
        tokens
    }

    /// A token for `key` with more than `min_left_secs` seconds left, other than `refused` (a
    /// token the CAS answered 401 to): the stored one, or one fetched from the Hub by exactly
    /// one of the callers that need it at the same time.
    pub async fn get(
        &self,
        key: &Key,
        min_left_secs: u64,
        refused: Option<&str>,
        cancel: &CancelToken,
    ) -> Result<XetToken, PluginError> {
        if let Some(t) = self.usable(key, min_left_secs, refused) {
            return Ok(t);
        }
        let _one = hubget_hub_http::cancellable(cancel, self.renewing.lock()).await?;
        // Another caller may have renewed it while this one waited.
        if let Some(t) = self.usable(key, min_left_secs, refused) {
            return Ok(t);
        }
        let (repo_type, repo_id, revision) = key;
        let token = self
            .hub
            .xet_read_token(RepoType(*repo_type), repo_id, revision, cancel)
            .await
            .map_err(|e| e.context("getting a Xet CAS token"))?;
        if token.cas_url.trim().is_empty() || token.access_token.is_empty() {
            return Err(PluginError::new(
                ErrorKind::PROTOCOL,
                "the xet-read-token answer has no casUrl or accessToken",
            ));
        }
        log::debug!(
            "Xet CAS token for {repo_id}@{revision} (expires at {})",
            token.exp
        );
        self.store(key.clone(), token.clone());
        Ok(token)
    }

    fn usable(&self, key: &Key, min_left_secs: u64, refused: Option<&str>) -> Option<XetToken> {
        let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        cached
            .get(key)
            .filter(|t| t.exp > crate::unix_now() + min_left_secs)
            .filter(|t| refused != Some(t.access_token.as_str()))
            .cloned()
    }

    fn store(&self, key: Key, token: XetToken) {
        self.cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, token);
    }
}
