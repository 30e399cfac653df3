//! `GET /openapi.json`: the API contract as an OpenAPI 3.1 document.
//!
//! Written by hand next to the routes it describes; a test checks every path listed here is
//! served, and docs/http-api.md lists the same routes.

use axum::Json;
use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn id_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1}})
}

/// The OpenAPI document.
pub fn document() -> Value {
    let bearer = json!([{"bearer": []}]);
    let mut paths = service_paths();
    for more in [file_paths(&bearer), link_and_audit_paths(&bearer)] {
        if let (Value::Object(all), Value::Object(more)) = (&mut paths, more) {
            all.extend(more);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "portail-url-service", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Presigned downloads and revocable share links over the portail catalog."},
        "components": components(),
        "paths": paths,
    })
}

/// The security scheme and the schemas the answers refer to.
fn components() -> Value {
    json!({
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "required": ["error", "message"],
                      "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
            "PresignedUrl": {"type": "object", "properties": {
                "url": {"type": "string"}, "method": {"const": "GET"}, "expires_at": {"type": "string", "format": "date-time"}}},
            "CreatedLink": {"type": "object", "properties": {
                "id": {"type": "integer"}, "url": {"type": "string"},
                "expires_at": {"type": "string", "format": "date-time"}, "max_downloads": {"type": ["integer", "null"]}}}
        }
    })
}

/// The routes without a token: health, metrics and this document.
fn service_paths() -> Value {
    json!({
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
        "/readyz": {"get": {"summary": "Readiness: PostgreSQL and S3 answer",
            "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition format"}}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}}
    })
}

/// `/v1/files` and below.
fn file_paths(bearer: &Value) -> Value {
    json!({
        "/v1/files": {"get": {"summary": "List files (keyset pagination)", "security": bearer,
            "parameters": [
                {"name": "agent", "in": "query", "schema": {"type": "string"}},
                {"name": "path_prefix", "in": "query", "schema": {"type": "string"}},
                {"name": "q", "in": "query", "description": "paths containing this text anywhere, ignoring case", "schema": {"type": "string", "minLength": 1, "maxLength": 256}},
                {"name": "status", "in": "query", "schema": {"enum": ["synced", "pending", "deleted", "error", "any"], "default": "synced"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "{\"files\": [...], \"next_cursor\"}"}, "400": error_response("bad filter"), "401": error_response("no valid token")}}},
        "/v1/files/{id}": {"get": {"summary": "A file's catalog row and recent history", "security": bearer,
            "parameters": [id_param("id")],
            "responses": {"200": {"description": "{\"file\", \"events\"}"}, "401": error_response("no valid token"), "404": error_response("unknown or out of scope")}}},
        "/v1/files/{id}/versions": {"get": {"summary": "A file's stored contents, newest first", "security": bearer,
            "parameters": [id_param("id")],
            "responses": {"200": {"description": "{\"versions\": [{\"id\", \"valid_from\", \"valid_to\", \"size_bytes\", \"md5\", \"mtime\", \"mode\", \"event\", \"ended_by\", \"restorable\"}]}"},
                "401": error_response("no valid token"), "404": error_response("unknown or out of scope")}}},
        "/v1/files/{id}/url": {"post": {"summary": "Presign a GET URL for a synced file", "security": bearer,
            "parameters": [id_param("id")],
            "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false, "properties": {
                "expires_in_seconds": {"type": "integer", "minimum": 1, "maximum": 604800},
                "disposition": {"enum": ["inline", "attachment"]}, "filename": {"type": "string"},
                "version_id": {"type": "integer", "description": "a past version, from /v1/files/{id}/versions"}}}}}},
            "responses": {"201": {"description": "presigned", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PresignedUrl"}}}},
                "400": error_response("bad request"), "401": error_response("no valid token"),
                "404": error_response("unknown or out of scope"), "409": error_response("deleted or not yet synced")}}},
        "/v1/files/{id}/content": {"get": {"summary": "Download a synced file: 302 to a presigned URL (DOWNLOAD_MODE=redirect) or the bytes streamed (proxy)", "security": bearer,
            "parameters": [id_param("id"), {"name": "Range", "in": "header", "required": false, "schema": {"type": "string"}, "description": "proxy mode: one bytes= range (several ranges or another unit: the whole object)"}],
            "responses": {"200": {"description": "proxy mode: the whole object"}, "206": {"description": "proxy mode: the asked range, with Content-Range"},
                "302": {"description": "redirect mode: a presigned URL (attachment) valid for DEFAULT_URL_TTL"},
                "401": error_response("no valid token"), "404": error_response("unknown, out of scope, or object missing from S3"),
                "409": error_response("deleted or not yet synced"), "416": error_response("range starts past the end, or malformed")}}}
    })
}

/// Share links, the audit log, and following a link.
fn link_and_audit_paths(bearer: &Value) -> Value {
    json!({
        "/v1/links": {
            "post": {"summary": "Create a revocable share link", "security": bearer,
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false, "required": ["file_id"], "properties": {
                    "file_id": {"type": "integer"}, "expires_in_seconds": {"type": "integer", "minimum": 1, "maximum": 31536000},
                    "max_downloads": {"type": "integer", "minimum": 1}}}}}},
                "responses": {"201": {"description": "created; the URL is shown only once", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreatedLink"}}}},
                    "400": error_response("bad request"), "401": error_response("no valid token"),
                    "404": error_response("unknown or out of scope"), "409": error_response("deleted or not yet synced")}},
            "get": {"summary": "List a file's links", "security": bearer,
                "parameters": [{"name": "file_id", "in": "query", "required": true, "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "{\"links\": [...]}"}, "401": error_response("no valid token"), "404": error_response("unknown or out of scope")}}},
        "/v1/links/{id}": {"delete": {"summary": "Revoke a link", "security": bearer, "parameters": [id_param("id")],
            "responses": {"204": {"description": "revoked"}, "401": error_response("no valid token"), "404": error_response("unknown or out of scope")}}},
        "/v1/audit": {"get": {"summary": "The audit log of presigned URLs and share-link clicks, newest first (keyset pagination)", "security": bearer,
            "parameters": [
                {"name": "file_id", "in": "query", "schema": {"type": "integer"}},
                {"name": "actor", "in": "query", "description": "an API token's name, or link:<id>", "schema": {"type": "string"}},
                {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "{\"entries\": [{\"id\", \"at\", \"file_id\", \"actor\", \"channel\", \"outcome\", \"client_ip\", \"user_agent\"}], \"next_cursor\"}"},
                "400": error_response("bad filter"), "401": error_response("no valid token")}}},
        "/l/{token}": {"get": {"summary": "Follow a share link (the token is the secret)",
            "parameters": [{"name": "token", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": {"302": {"description": "redirect to a presigned URL valid for LINK_PRESIGN_TTL"},
                "200": {"description": "proxy mode: the object streamed (206 for a range, 416 for an unsatisfiable one)"},
                "404": error_response("unknown link"), "410": error_response("revoked, expired, used up, or file deleted")}}}
    })
}

/// `GET /openapi.json`.
pub async fn openapi() -> Json<Value> {
    Json(document())
}
