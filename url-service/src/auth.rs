//! Bearer-token authentication and scopes.
//!
//! In: the `Authorization: Bearer <token>` header. Out: the caller's [`Caller`] (its token row
//! and scope), or a 401. Tokens are looked up by their SHA-256, so the database never holds
//! a usable token and the lookup time does not depend on how much of a guess was right.
//!
//! A token found in the catalog is believed for [`TOKEN_CACHE_TTL`] (one second) without
//! asking again ([`TokenCache`]): a revoked token keeps working for at most that long. This
//! saves a query on every API request (case 7 of `scripts/bench`). Unknown tokens are never
//! cached, so a new token works at once.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use portail_core::catalog::{self, ApiToken, FileWithBucket};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::AppState;

/// Prefix of every API token, so leaked tokens are easy to recognise and grep for.
pub const TOKEN_PREFIX: &str = "ptl_";

/// A new random API token: the prefix and 256 random bits in hex.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// A new random share-link token: 256 random bits in hex. It goes in the link URL.
pub fn generate_link_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Whether a string has the shape of a link token (64 lowercase hex characters).
pub fn is_link_token(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The hex SHA-256 of a token: what the database stores.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// An authenticated API caller.
#[derive(Debug, Clone)]
pub struct Caller(pub ApiToken);

impl Caller {
    /// Whether the caller may see this file. Outside the scope, a file does not exist (404).
    pub fn can_see(&self, f: &FileWithBucket) -> bool {
        let prefix_ok = self
            .0
            .path_prefix
            .as_deref()
            .is_none_or(|p| f.file.path.starts_with(p));
        let agent_ok = self
            .0
            .agent_name
            .as_deref()
            .is_none_or(|a| a == f.agent_name);
        prefix_ok && agent_ok
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let hash = token_hash(token);
        if let Some(found) = state.tokens.get(&hash) {
            return Ok(Caller(found));
        }
        let found = catalog::token_by_hash(&state.pool, &hash)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        state.tokens.put(hash, found.clone());
        Ok(Caller(found))
    }
}

/// How long a token found in the catalog is believed without asking it again.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(1);
/// Tokens kept at most; past it, the expired ones go (all of them, if none has expired).
const TOKEN_CACHE_MAX: usize = 10_000;

/// Live API tokens by SHA-256, each with the moment it was read from the catalog.
#[derive(Debug, Default)]
pub struct TokenCache(Mutex<HashMap<String, (Instant, ApiToken)>>);

impl TokenCache {
    /// The token, if it was read from the catalog less than [`TOKEN_CACHE_TTL`] ago.
    pub fn get(&self, hash: &str) -> Option<ApiToken> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(hash)
            .filter(|(at, _)| at.elapsed() < TOKEN_CACHE_TTL)
            .map(|(_, token)| token.clone())
    }

    /// Keeps a token just read from the catalog.
    pub fn put(&self, hash: String, token: ApiToken) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= TOKEN_CACHE_MAX {
            map.retain(|_, (at, _)| at.elapsed() < TOKEN_CACHE_TTL);
            if map.len() >= TOKEN_CACHE_MAX {
                map.clear();
            }
        }
        map.insert(hash, (Instant::now(), token));
    }
}
