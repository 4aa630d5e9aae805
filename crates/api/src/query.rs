//! Query-string helpers: repeated keys (`embed=a&embed=b`) and Marathon's
//! case-insensitive booleans (`force=True`).

use crate::error::HttpError;
use marathon::ApiError;

pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(raw: Option<&str>) -> Params {
        let pairs =
            raw.map(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default()).unwrap_or_default();
        Params(pairs)
    }

    pub fn all(&self, key: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A boolean flag; absent means `false`, a bad value is a 400.
    pub fn flag(&self, key: &str) -> Result<bool, HttpError> {
        match self.get(key) {
            None => Ok(false),
            Some(v) => marathon::parse_bool_param(v).ok_or_else(|| {
                HttpError(ApiError::bad_request(format!("Query parameter '{key}' must be true or false, got '{v}'")))
            }),
        }
    }
}
