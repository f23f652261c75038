//! A stored response and its wire format in Redis: `[u32 meta length][meta JSON][body]`. The
//! body stays raw bytes (no base64); the meta is small.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use serde::{Deserialize, Serialize};

/// Response headers that are never stored: the cache sets them per answer, or they describe
/// one connection.
const NOT_STORED: [&str; 10] = [
    "age",
    "cache-control",
    "connection",
    "content-length",
    "date",
    "etag",
    "set-cookie",
    "transfer-encoding",
    "x-cache",
    "keep-alive",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    /// Status code.
    s: u16,
    /// Headers as (name, value).
    h: Vec<(String, String)>,
    /// Strong ETag, quotes included.
    e: String,
    /// `Vary` header names with the SHA-1 of the request's values when stored.
    v: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub etag: HeaderValue,
    pub body: Bytes,
    vary: Vec<(String, String)>,
}

impl Entry {
    /// `None` when a header cannot be stored as text or the response varies on everything.
    pub fn new(
        status: StatusCode,
        response_headers: &HeaderMap,
        request_headers: &HeaderMap,
        body: Bytes,
    ) -> Option<Self> {
        let mut headers = Vec::new();
        let mut vary = Vec::new();
        for (name, value) in response_headers {
            if name == actix_web::http::header::VARY {
                for n in value.to_str().ok()?.split(',') {
                    let n = n.trim().to_ascii_lowercase();
                    if n == "*" {
                        return None;
                    }
                    if !n.is_empty() {
                        vary.push((n.clone(), request_values(request_headers, &n)));
                    }
                }
            }
            if NOT_STORED.contains(&name.as_str()) {
                continue;
            }
            value.to_str().ok()?;
            headers.push((name.clone(), value.clone()));
        }
        let etag = response_headers
            .get(actix_web::http::header::ETAG)
            .cloned()
            .or_else(|| {
                let sha = fred::util::sha1_hash(&String::from_utf8_lossy(&body));
                HeaderValue::from_str(&format!("\"{}\"", sha.get(..32).unwrap_or(&sha))).ok()
            })?;
        Some(Self {
            status,
            headers,
            etag,
            body,
            vary,
        })
    }

    /// Whether `request_headers` ask for the same representation as the one stored.
    pub fn matches_vary(&self, request_headers: &HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(name, hash)| request_values(request_headers, name) == *hash)
    }

    pub fn encode(&self) -> Vec<u8> {
        let meta = Meta {
            s: self.status.as_u16(),
            h: self
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            e: self.etag.to_str().unwrap_or("").to_owned(),
            v: self.vary.clone(),
        };
        let meta = serde_json::to_vec(&meta).unwrap_or_default();
        let mut out = Vec::with_capacity(4 + meta.len() + self.body.len());
        out.extend_from_slice(&u32::try_from(meta.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&self.body);
        out
    }

    /// `None` for anything this version did not write (the entry is then refreshed).
    pub fn decode(bytes: Bytes) -> Option<Self> {
        let len = usize::try_from(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?)).ok()?;
        let meta: Meta = serde_json::from_slice(bytes.get(4..4 + len)?).ok()?;
        let headers = meta
            .h
            .iter()
            .map(|(n, v)| {
                Some((
                    HeaderName::from_bytes(n.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            status: StatusCode::from_u16(meta.s).ok()?,
            headers,
            etag: HeaderValue::from_str(&meta.e).ok()?,
            body: bytes.slice(4 + len..),
            vary: meta.v,
        })
    }

    /// `If-None-Match` names this entry's ETag (weak comparison, `*` matches).
    pub fn not_modified(&self, if_none_match: Option<&HeaderValue>) -> bool {
        let Some(value) = if_none_match.and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let ours = self.etag.to_str().unwrap_or("");
        let ours = ours.strip_prefix("W/").unwrap_or(ours);
        value
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours)
    }
}

fn request_values(headers: &HeaderMap, name: &str) -> String {
    let joined: Vec<&[u8]> = headers.get_all(name).map(HeaderValue::as_bytes).collect();
    fred::util::sha1_hash(&String::from_utf8_lossy(&joined.join(&b'\n')))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_etag() {
        let mut response = HeaderMap::new();
        response.insert(
            actix_web::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response.insert(actix_web::http::header::DATE, HeaderValue::from_static("x"));
        let e = Entry::new(
            StatusCode::OK,
            &response,
            &HeaderMap::new(),
            Bytes::from_static(b"{\"a\":1}"),
        )
        .unwrap();
        let d = Entry::decode(Bytes::from(e.encode())).unwrap();
        assert_eq!(d.body, e.body);
        assert_eq!(d.headers.len(), 1, "Date is not stored");
        assert_eq!(d.etag, e.etag);
        assert!(d.not_modified(Some(&e.etag)));
        assert!(d.not_modified(Some(&HeaderValue::from_static("\"x\", *"))));
        assert!(!d.not_modified(Some(&HeaderValue::from_static("\"x\""))));
        assert!(Entry::decode(Bytes::from_static(b"\0\0\0\x09junk")).is_none());
    }
}
