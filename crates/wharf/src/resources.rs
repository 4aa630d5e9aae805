//! What this node offers: detected from the OS, overridable by flags.

use anyhow::{bail, Context};
use model::Resources;
use std::collections::BTreeMap;
use std::path::Path;

pub fn detect(data_dir: &Path) -> Resources {
    let cpus = std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| (kb / 1024.0).floor())
        .unwrap_or(1024.0);
    let disk = nix::sys::statvfs::statvfs(data_dir)
        .map(|s| (s.blocks_available() as f64 * s.fragment_size() as f64 / (1024.0 * 1024.0)).floor())
        .unwrap_or(0.0);
    Resources { cpus, mem, disk, gpus: 0 }
}

/// Applies `"cpus:N;mem:MB;disk:MB;gpus:N"` over `base`.
pub fn apply_override(base: Resources, spec: &str) -> anyhow::Result<Resources> {
    let mut r = base;
    for (k, v) in pairs(spec, "--resources")? {
        let num: f64 = v.parse().with_context(|| format!("--resources: '{k}' needs a number, got '{v}'"))?;
        if num < 0.0 {
            bail!("--resources: '{k}' must not be negative");
        }
        match k.as_str() {
            "cpus" => r.cpus = num,
            "mem" => r.mem = num,
            "disk" => r.disk = num,
            "gpus" => r.gpus = num as u32,
            other => bail!("--resources: unknown resource '{other}' (use cpus, mem, disk, gpus)"),
        }
    }
    Ok(r)
}

pub fn attributes(spec: &str) -> anyhow::Result<BTreeMap<String, String>> {
    Ok(pairs(spec, "--attributes")?.into_iter().collect())
}

fn pairs(spec: &str, flag: &str) -> anyhow::Result<Vec<(String, String)>> {
    spec.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once(':') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
            _ => bail!("{flag}: '{kv}' is not key:value"),
        })
        .collect()
}

pub fn port_range(spec: &str) -> anyhow::Result<(u16, u16)> {
    let (lo, hi) = spec.split_once('-').with_context(|| format!("--ports: '{spec}' is not LO-HI"))?;
    let lo: u16 = lo.trim().parse().with_context(|| format!("--ports: bad low port '{lo}'"))?;
    let hi: u16 = hi.trim().parse().with_context(|| format!("--ports: bad high port '{hi}'"))?;
    if lo == 0 || lo > hi {
        bail!("--ports: '{spec}' must be LO-HI with 0 < LO <= HI");
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_and_errors_name_the_field() {
        let r = apply_override(Resources::default(), "cpus:4; mem:2048").expect("valid");
        assert_eq!((r.cpus, r.mem), (4.0, 2048.0));
        let e = apply_override(Resources::default(), "cpus:x").expect_err("bad number");
        assert!(e.to_string().contains("cpus"));
        assert!(apply_override(Resources::default(), "ram:1").is_err());
        assert_eq!(port_range("31000-31010").expect("valid"), (31000, 31010));
        assert!(port_range("5-1").is_err());
        assert_eq!(attributes("rack:r1;zone:a").expect("valid").get("rack").map(String::as_str), Some("r1"));
    }
}
