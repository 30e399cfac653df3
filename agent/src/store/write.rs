//! What every write to S3 carries besides the bytes: server-side encryption (S3_SSE,
//! S3_SSE_KMS_KEY_ID, or SSE-C with S3_SSE_CUSTOMER_KEY), a storage class (S3_STORAGE_CLASS) and
//! tags (S3_OBJECT_TAGS).
//!
//! In: the settings' strings, checked once at start. Out: [`WriteOptions`], which the transfer
//! stage applies to every PutObject, CreateMultipartUpload and CopyObject (renames included);
//! UploadPart and HeadObject carry the SSE-C key too, since the store needs it for those.
//!
//! Under SSE-KMS and SSE-C the ETag is not the MD5 of the bytes. Nothing here relies on it:
//! change detection uses the catalog's MD5, and `verify` falls back to `md5chksum`.

use md5::{Digest, Md5};

/// Server-side encryption of every object written.
#[derive(Clone, PartialEq, Eq)]
pub enum Sse {
    /// S3_SSE=AES256: keys managed by the store.
    S3,
    /// S3_SSE=aws:kms, with S3_SSE_KMS_KEY_ID or the account's default key.
    Kms {
        /// The KMS key id or ARN.
        key_id: Option<String>,
    },
    /// S3_SSE_CUSTOMER_KEY: SSE-C, a 256-bit key the agent sends with every request.
    Customer {
        /// The key, base64.
        key_b64: String,
        /// Its MD5, base64 (the store checks it).
        key_md5_b64: String,
    },
}

impl std::fmt::Debug for Sse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sse::S3 => write!(f, "AES256"),
            Sse::Kms { key_id } => write!(f, "aws:kms({key_id:?})"),
            // Never print the key.
            Sse::Customer { .. } => write!(f, "SSE-C"),
        }
    }
}

/// What every write carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Encryption, if any.
    pub sse: Option<Sse>,
    /// The storage class, if not the bucket's default.
    pub storage_class: Option<aws_sdk_s3::types::StorageClass>,
    /// Tags, URL-encoded `k=v&k2=v2`.
    pub tags: Option<String>,
}

/// The storage classes S3 knows.
pub const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "OUTPOSTS",
    "EXPRESS_ONEZONE",
];

/// Classes whose objects must be restored (RestoreObject) before they can be read (shared
/// with the url-service, which refuses links to them).
pub use portail_core::catalog::ARCHIVE_CLASSES;

/// Builds the SSE setting; the error names the variable.
pub fn sse(
    mode: Option<&str>,
    kms_key_id: Option<&str>,
    customer_key: Option<&str>,
) -> Result<Option<Sse>, (&'static str, String)> {
    if kms_key_id.is_some() && mode != Some("aws:kms") {
        return Err(("S3_SSE_KMS_KEY_ID", "set only with S3_SSE=aws:kms".into()));
    }
    match (mode, kms_key_id, customer_key) {
        (Some(_), _, Some(_)) => Err((
            "S3_SSE_CUSTOMER_KEY",
            "SSE-C cannot be combined with S3_SSE; set one of them".into(),
        )),
        (None, _, Some(key)) => customer(key).map(Some),
        (Some("AES256"), None, None) => Ok(Some(Sse::S3)),
        (Some("aws:kms"), key, None) => Ok(Some(Sse::Kms {
            key_id: key.map(String::from),
        })),
        (Some(other), _, _) => Err(("S3_SSE", format!("{other:?}: use AES256 or aws:kms"))),
        (None, _, None) => Ok(None),
    }
}

fn customer(key: &str) -> Result<Sse, (&'static str, String)> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let bytes = b64.decode(key.trim()).map_err(|_| {
        (
            "S3_SSE_CUSTOMER_KEY",
            "not base64: give 32 random bytes in base64, e.g. `openssl rand -base64 32`".into(),
        )
    })?;
    if bytes.len() != 32 {
        return Err((
            "S3_SSE_CUSTOMER_KEY",
            format!(
                "{} bytes; SSE-C needs exactly 32 (a 256-bit key)",
                bytes.len()
            ),
        ));
    }
    Ok(Sse::Customer {
        key_b64: b64.encode(&bytes),
        key_md5_b64: b64.encode(Md5::digest(&bytes)),
    })
}

/// Checks a storage class name.
pub fn storage_class(s: &str) -> Result<aws_sdk_s3::types::StorageClass, String> {
    if STORAGE_CLASSES.contains(&s) {
        Ok(aws_sdk_s3::types::StorageClass::from(s))
    } else {
        Err(format!("{s:?}: use one of {}", STORAGE_CLASSES.join(", ")))
    }
}

/// Checks a tag string `k=v&k2=v2` against S3's limits: at most 10 tags, keys of 1 to 128
/// characters, values of at most 256, no key twice. Returns it URL-encoded, as the header wants.
pub fn tags(s: &str) -> Result<String, String> {
    let mut keys = Vec::new();
    let mut out = form_urlencoded::Serializer::new(String::new());
    for pair in s.split('&') {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not key=value"))?;
        let chars = |x: &str| x.chars().count();
        if k.is_empty() || chars(k) > 128 {
            return Err(format!("tag key {k:?}: 1 to 128 characters"));
        }
        if chars(v) > 256 {
            return Err(format!("tag {k:?}: values have at most 256 characters"));
        }
        if keys.contains(&k) {
            return Err(format!("tag key {k:?} given twice"));
        }
        keys.push(k);
        out.append_pair(k, v);
    }
    if keys.len() > 10 {
        return Err(format!("{} tags; S3 allows at most 10", keys.len()));
    }
    Ok(out.finish())
}

/// Applies [`WriteOptions`] to a PutObject, CreateMultipartUpload or CopyObject builder (their
/// setters share names but not a trait).
macro_rules! apply_write_options {
    ($builder:expr, $opts:expr) => {{
        use $crate::store::write::Sse;
        let o: &$crate::store::write::WriteOptions = $opts;
        // SSE-C: the same three headers a part or a HEAD carries.
        let mut b = $crate::store::write::apply_sse_c!($builder, o);
        match &o.sse {
            Some(Sse::S3) => {
                b = b.server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
            }
            Some(Sse::Kms { key_id }) => {
                b = b
                    .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                    .set_ssekms_key_id(key_id.clone())
            }
            Some(Sse::Customer { .. }) | None => {}
        }
        b.set_storage_class(o.storage_class.clone())
            .set_tagging(o.tags.clone())
    }};
}

/// Applies the SSE-C key (if any) to a builder that reads or extends an object: UploadPart,
/// HeadObject.
macro_rules! apply_sse_c {
    ($builder:expr, $opts:expr) => {{
        let o: &$crate::store::write::WriteOptions = $opts;
        match &o.sse {
            Some($crate::store::write::Sse::Customer {
                key_b64,
                key_md5_b64,
            }) => $builder
                .sse_customer_algorithm("AES256")
                .sse_customer_key(key_b64)
                .sse_customer_key_md5(key_md5_b64),
            _ => $builder,
        }
    }};
}

pub(crate) use {apply_sse_c, apply_write_options};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_settings_are_checked_together() {
        assert_eq!(sse(None, None, None), Ok(None));
        assert_eq!(sse(Some("AES256"), None, None), Ok(Some(Sse::S3)));
        assert_eq!(
            sse(Some("aws:kms"), Some("k1"), None),
            Ok(Some(Sse::Kms {
                key_id: Some("k1".into())
            }))
        );
        assert_eq!(
            sse(None, Some("k1"), None).unwrap_err().0,
            "S3_SSE_KMS_KEY_ID"
        );
        assert_eq!(
            sse(Some("AES256"), Some("k1"), None).unwrap_err().0,
            "S3_SSE_KMS_KEY_ID"
        );
        assert_eq!(sse(Some("rot13"), None, None).unwrap_err().0, "S3_SSE");
        let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
        assert!(matches!(
            sse(None, None, Some(key)),
            Ok(Some(Sse::Customer { .. }))
        ));
        assert_eq!(
            sse(Some("AES256"), None, Some(key)).unwrap_err().0,
            "S3_SSE_CUSTOMER_KEY"
        );
        let short = sse(None, None, Some("c2hvcnQ=")).unwrap_err();
        assert!(short.1.contains("exactly 32"), "{short:?}");
        assert!(sse(None, None, Some("not base64!"))
            .unwrap_err()
            .1
            .contains("not base64"));
        assert_eq!(
            format!("{:?}", sse(None, None, Some(key)).unwrap()),
            "Some(SSE-C)"
        );
    }

    #[test]
    fn tags_follow_s3_limits_and_are_encoded() {
        assert_eq!(tags("team=ops&tier=cold").unwrap(), "team=ops&tier=cold");
        assert_eq!(tags("path=a b/c").unwrap(), "path=a+b%2Fc");
        assert!(tags("novalue").unwrap_err().contains("key=value"));
        assert!(tags("=v").unwrap_err().contains("1 to 128"));
        assert!(tags(&format!("k={}", "v".repeat(257)))
            .unwrap_err()
            .contains("256"));
        assert!(tags("a=1&a=2").unwrap_err().contains("twice"));
        let eleven: Vec<String> = (0..11).map(|i| format!("k{i}=v")).collect();
        assert!(tags(&eleven.join("&")).unwrap_err().contains("at most 10"));
    }

    #[test]
    fn storage_classes_are_s3_s() {
        assert!(storage_class("STANDARD_IA").is_ok());
        assert!(storage_class("standard").unwrap_err().contains("one of"));
    }
}
