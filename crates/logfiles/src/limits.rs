//! How large a log file may grow and how many are kept.

use serde::{Deserialize, Serialize};

/// Size limits of one stream's log files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLimits {
    /// Bytes after which the file being written is rotated.
    pub max_size: u64,
    /// Files kept per stream, the one being written included (at least 1;
    /// with 1 the file starts over when full).
    pub files: u32,
}

impl Default for LogLimits {
    /// 10 MiB and 5 files: at most 50 MiB per stream, as Nomad's and
    /// Mesos' log rotation default to about that much.
    fn default() -> Self {
        LogLimits { max_size: 10 << 20, files: 5 }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LimitsError {
    #[error("'{0}' is not a size: use bytes or a number with K, M or G (e.g. 10M)")]
    BadSize(String),
    #[error("the log size must be at least 1 byte")]
    ZeroSize,
    #[error("at least one log file must be kept")]
    ZeroFiles,
}

impl LogLimits {
    pub fn new(max_size: u64, files: u32) -> Result<LogLimits, LimitsError> {
        if max_size == 0 {
            return Err(LimitsError::ZeroSize);
        }
        if files == 0 {
            return Err(LimitsError::ZeroFiles);
        }
        Ok(LogLimits { max_size, files })
    }

    /// `4096`, `64K`, `10M`, `1G` (binary units; a trailing `B`/`iB` is allowed).
    pub fn parse_size(s: &str) -> Result<u64, LimitsError> {
        let t = s.trim();
        let t = t.strip_suffix("iB").or_else(|| t.strip_suffix('B')).unwrap_or(t);
        let (num, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
            Some('K') => (&t[..t.len() - 1], 10),
            Some('M') => (&t[..t.len() - 1], 20),
            Some('G') => (&t[..t.len() - 1], 30),
            _ => (t, 0),
        };
        let n: u64 = num.trim().parse().map_err(|_| LimitsError::BadSize(s.to_string()))?;
        n.checked_mul(1 << shift).ok_or_else(|| LimitsError::BadSize(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(LogLimits::parse_size("4096"), Ok(4096));
        assert_eq!(LogLimits::parse_size("64K"), Ok(64 << 10));
        assert_eq!(LogLimits::parse_size("10M"), Ok(10 << 20));
        assert_eq!(LogLimits::parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(LogLimits::parse_size("1g"), Ok(1 << 30));
        assert!(LogLimits::parse_size("ten").is_err());
        assert!(LogLimits::parse_size("").is_err());
        assert_eq!(LogLimits::new(0, 3), Err(LimitsError::ZeroSize));
        assert_eq!(LogLimits::new(1, 0), Err(LimitsError::ZeroFiles));
    }
}
