//! Aligned text tables.

/// Columns padded to their widest cell; `right` holds the columns of
/// numbers, aligned right. The last column is never padded.
pub fn table(header: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            width[i] = width[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            let w = width[i];
            if i == last {
                out.push_str(cell);
            } else if right.contains(&i) {
                out.push_str(&format!("{cell:>w$}  "));
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_aligns_columns() {
        let rows =
            vec![vec!["a".to_string(), "1/2".into(), "x".into()], vec!["long".into(), "10/20".into(), "".into()]];
        let t = super::table(&["NAME", "CPUS", "ATTRS"], &rows, &[1]);
        assert_eq!(t, "NAME   CPUS  ATTRS\na       1/2  x\nlong  10/20\n");
    }
}
