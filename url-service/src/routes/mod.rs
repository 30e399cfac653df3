//! HTTP routes. Each submodule owns one resource; [`IdParam`] parses numeric path ids.

pub mod audit;
pub mod content;
pub mod files;
pub mod health;
pub mod links;
pub mod openapi;
pub mod versions;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::ApiError;

/// A numeric `{id}` path segment; anything else is a JSON 400, not axum's plain-text rejection.
#[derive(Debug, Clone, Copy)]
pub struct IdParam(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for IdParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::BadRequest("missing id".into()))?;
        raw.parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(IdParam)
            .ok_or_else(|| ApiError::BadRequest("id must be a positive integer".into()))
    }
}

/// Parses a JSON request body; malformed JSON, wrong types and unknown fields are a 400.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Cuts a page fetched with one row more than `limit` (keyset pagination: the extra row only
/// says that another page follows) back to `limit` rows, and says whether one follows.
pub fn split_page<T>(rows: &mut Vec<T>, limit: i64) -> bool {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit.max(0) as usize);
    more
}

/// The JSON 404 for routes that do not exist.
pub async fn fallback() -> ApiError {
    ApiError::NotFound("route")
}

#[cfg(test)]
mod tests {
    use super::split_page;

    #[test]
    fn a_page_with_its_extra_row_is_cut_and_says_more_follow() {
        let mut rows = vec![1, 2, 3];
        assert!(split_page(&mut rows, 2));
        assert_eq!(rows, [1, 2]);
        let mut rows = vec![1, 2];
        assert!(!split_page(&mut rows, 2), "no extra row: the last page");
        assert_eq!(rows, [1, 2]);
        let mut rows: Vec<i32> = vec![];
        assert!(!split_page(&mut rows, 2));
    }
}
