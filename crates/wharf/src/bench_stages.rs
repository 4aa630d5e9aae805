//! Where a durable write's time goes, for `wharf bench cluster --vs-etcd`:
//! each node's `/metrics` is read before and after a load run, and the mean
//! of every step's histogram over the run is printed (API answer, proposal,
//! log flush, AppendEntries round trip, a follower's append, apply), with
//! the entries per flush and per AppendEntries that say how well writes
//! were grouped.

use std::collections::BTreeMap;

/// The steps shown, in the order a write passes them: (series, label).
const STEPS: [(&str, &str); 7] = [
    ("wharf_http_request_duration_seconds", "API answer (POST)"),
    ("wharf_store_propose_seconds", "propose -> applied"),
    ("wharf_store_log_flush_seconds", "log flush (fsync)"),
    ("wharf_store_append_rpc_seconds", "AppendEntries round trip"),
    ("wharf_store_append_served_seconds", "follower append+fsync"),
    ("wharf_store_apply_seconds", "apply (per batch)"),
    ("wharf_store_log_flush_entries", "entries per flush"),
];

/// Extra series that are counts, not seconds.
const COUNTS: [(&str, &str); 1] = [("wharf_store_append_rpc_entries", "entries per AppendEntries")];

/// Sums and counts of every histogram on one node, by series name.
#[derive(Default, Clone)]
pub struct Scrape(BTreeMap<String, (f64, f64)>);

/// Reads `/metrics` at `base` (`http://host:port`); an empty scrape when
/// the node does not answer (the breakdown is a help, not the result).
pub async fn scrape(http: &reqwest::Client, base: &str) -> Scrape {
    let text = match http.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    parse(&text)
}

fn parse(text: &str) -> Scrape {
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name_labels, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = name_labels.split_once('{').unwrap_or((name_labels, ""));
        // Only POSTs count for the API's series: scrapes are requests too.
        if name.starts_with("wharf_http_request_duration") && !labels.contains("POST") {
            continue;
        }
        if let Some(series) = name.strip_suffix("_sum") {
            out.entry(series.to_string()).or_default().0 += value;
        } else if let Some(series) = name.strip_suffix("_count") {
            out.entry(series.to_string()).or_default().1 += value;
        }
    }
    Scrape(out)
}

/// Mean of `series` between two scrapes (sum over count of the difference).
fn mean(before: &Scrape, after: &Scrape, series: &str) -> Option<(f64, f64)> {
    let (s1, c1) = after.0.get(series).copied()?;
    let (s0, c0) = before.0.get(series).copied().unwrap_or_default();
    let n = c1 - c0;
    (n > 0.0).then(|| ((s1 - s0) / n, n))
}

/// One line per step: the leader's mean and each follower's.
pub fn print(nodes: &[(String, Scrape, Scrape)], leader: &str) {
    println!("    where the time went (means over the run; leader first):");
    let mut order: Vec<&(String, Scrape, Scrape)> = nodes.iter().collect();
    order.sort_by_key(|(addr, _, _)| !addr.contains(leader));
    for (series, label) in STEPS.iter().chain(COUNTS.iter()) {
        let is_count = series.ends_with("_entries");
        let cells: Vec<String> = order
            .iter()
            .map(|(_, before, after)| match mean(before, after, series) {
                Some((m, n)) if is_count => format!("{m:>7.1} (n={n:.0})"),
                Some((m, n)) => format!("{:>7.2} ms (n={n:.0})", m * 1000.0),
                None => format!("{:>7}", "-"),
            })
            .collect();
        println!("      {label:<26} {}", cells.join(" | "));
    }
}

#[cfg(test)]
mod tests {
    use super::{mean, parse};

    #[test]
    fn means_come_from_the_difference_of_two_scrapes() {
        let before = parse(
            "# HELP x\nwharf_store_log_flush_seconds_sum 1.0\nwharf_store_log_flush_seconds_count 10\n\
             wharf_http_request_duration_seconds_sum{method=\"GET\",route=\"/metrics\"} 5.0\n\
             wharf_http_request_duration_seconds_count{method=\"GET\",route=\"/metrics\"} 1\n",
        );
        let after = parse(
            "wharf_store_log_flush_seconds_sum 1.5\nwharf_store_log_flush_seconds_count 110\n\
             wharf_http_request_duration_seconds_sum{method=\"POST\",route=\"/v2/apps\"} 2.0\n\
             wharf_http_request_duration_seconds_count{method=\"POST\",route=\"/v2/apps\"} 100\n",
        );
        let (m, n) = mean(&before, &after, "wharf_store_log_flush_seconds").expect("a mean");
        assert!((m - 0.005).abs() < 1e-9 && n == 100.0);
        let (m, n) = mean(&before, &after, "wharf_http_request_duration_seconds").expect("POSTs only");
        assert!((m - 0.02).abs() < 1e-9 && n == 100.0);
        assert!(mean(&before, &after, "wharf_store_apply_seconds").is_none());
    }
}
