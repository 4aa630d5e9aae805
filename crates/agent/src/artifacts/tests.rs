//! The fetcher against real files, archives and a loopback HTTP server.

use super::*;
use model::Artifact;
use std::io::Write;
use tokio::io::AsyncReadExt;

fn art(uri: &str) -> Artifact {
    Artifact::from_uri(uri)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wharf-fetch-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

/// A `.tgz` with `dir/data.txt` and an executable `dir/run.sh`.
fn tgz(path: &Path) {
    let gz = flate2::write::GzEncoder::new(File::create(path).expect("create"), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, body, mode) in
        [("dir/data.txt", &b"payload\n"[..], 0o644), ("dir/run.sh", b"#!/bin/sh\necho hi\n", 0o755)]
    {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(mode);
        h.set_cksum();
        b.append_data(&mut h, name, body).expect("append");
    }
    b.into_inner().expect("tar").finish().expect("gz");
}
use std::fs::File;

/// A tar whose one entry is named `name` verbatim (the builder refuses `..`).
fn raw_tar(path: &Path, name: &str) {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(4);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut f = File::create(path).expect("create");
    f.write_all(h.as_bytes()).expect("header");
    f.write_all(b"evil").expect("body");
    f.write_all(&[0u8; 508]).expect("pad");
    f.write_all(&[0u8; 1024]).expect("end");
}

fn zipfile(path: &Path, entries: &[(&str, &[u8])]) {
    let mut z = zip::ZipWriter::new(File::create(path).expect("create"));
    for (name, body) in entries {
        let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o644);
        z.start_file(*name, opts).expect("start");
        z.write_all(body).expect("write");
    }
    z.finish().expect("finish");
}

#[tokio::test]
async fn local_files_are_copied_marked_and_unpacked() {
    let (src, sandbox) = (tmp("src"), tmp("sandbox"));
    tgz(&src.join("bundle.tgz"));
    std::fs::write(src.join("tool"), "#!/bin/sh\n").expect("tool");
    zipfile(&src.join("z.zip"), &[("zdir/a.txt", b"from zip")]);
    let tool = Artifact { executable: true, ..art(&format!("file://{}/tool", src.display())) };
    let renamed = Artifact { dest_path: Some("sub/copy.bin".into()), ..art(&format!("{}/tool", src.display())) };
    let arts = [art(&format!("{}/bundle.tgz", src.display())), art(&format!("{}/z.zip", src.display())), tool, renamed];
    Fetcher::default().fetch_all(&sandbox, &arts, None).await.expect("fetched");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| std::fs::metadata(sandbox.join(p)).expect(p).permissions().mode() & 0o777;
    assert_eq!(std::fs::read_to_string(sandbox.join("dir/data.txt")).expect("data"), "payload\n");
    assert_eq!(mode("dir/run.sh"), 0o755);
    assert!(sandbox.join("bundle.tgz").is_file(), "the archive is kept");
    assert_eq!(std::fs::read_to_string(sandbox.join("zdir/a.txt")).expect("zip"), "from zip");
    assert_eq!(mode("tool"), 0o755);
    assert_eq!(mode("sub/copy.bin") & 0o111, 0, "not executable unless asked");
}

#[tokio::test]
async fn entries_leaving_the_sandbox_fail_the_fetch() {
    let (src, sandbox) = (tmp("evil-src"), tmp("evil-sandbox"));
    raw_tar(&src.join("evil.tar"), "../escaped.txt");
    let e = Fetcher::default()
        .fetch_all(&sandbox, &[art(&format!("{}/evil.tar", src.display()))], None)
        .await
        .expect_err("refused");
    assert!(e.to_string().contains("leaves the sandbox"), "{e}");
    assert!(!sandbox.parent().expect("parent").join("escaped.txt").exists());
    zipfile(&src.join("evil.zip"), &[("../../zescaped.txt", b"x")]);
    let e = Fetcher::default()
        .fetch_all(&sandbox, &[art(&format!("{}/evil.zip", src.display()))], None)
        .await
        .expect_err("refused");
    assert!(e.to_string().contains("leaves the sandbox"), "{e}");
    // A symlink an archive made is not a way out for a later destPath.
    std::os::unix::fs::symlink("/tmp", sandbox.join("link")).expect("symlink");
    std::fs::write(src.join("f"), "x").expect("f");
    let through = Artifact { dest_path: Some("link/f".into()), ..art(&format!("{}/f", src.display())) };
    let e = Fetcher::default().fetch_all(&sandbox, &[through], None).await.expect_err("refused");
    assert!(e.to_string().contains("symlink"), "{e}");
}

#[tokio::test]
async fn limits_and_missing_files_are_reported_with_the_uri() {
    let (src, sandbox) = (tmp("lim-src"), tmp("lim-sandbox"));
    std::fs::write(src.join("big"), vec![0u8; 4096]).expect("big");
    let small = Fetcher::new(FetchLimits { max_bytes: 1024, ..FetchLimits::default() });
    let uri = format!("{}/big", src.display());
    let e = small.fetch_all(&sandbox, &[art(&uri)], None).await.expect_err("too big");
    assert!(e.to_string().contains(&uri) && e.to_string().contains("limit"), "{e}");
    tgz(&src.join("b.tgz"));
    let tight = Fetcher::new(FetchLimits { max_unpacked: 10, ..FetchLimits::default() });
    let e = tight.fetch_all(&sandbox, &[art(&format!("{}/b.tgz", src.display()))], None).await.expect_err("too big");
    assert!(e.to_string().contains("unpacked"), "{e}");
    let e = Fetcher::default().fetch_all(&sandbox, &[art("/nonexistent/x")], None).await.expect_err("missing");
    assert!(e.to_string().contains("/nonexistent/x") && e.to_string().contains("No such file"), "{e}");
}

/// Serves one canned answer per connection on loopback.
async fn serve(answer: &'static str) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn http_downloads_and_their_failures() {
    let sandbox = tmp("http");
    let base = serve("HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n").await;
    Fetcher::default().fetch_all(&sandbox, &[art(&format!("{base}/x/hello.txt?v=1"))], None).await.expect("200");
    assert_eq!(std::fs::read_to_string(sandbox.join("hello.txt")).expect("file"), "hello\n");
    let base = serve("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
    let uri = format!("{base}/missing.tgz");
    let e = Fetcher::default().fetch_all(&sandbox, &[art(&uri)], None).await.expect_err("404");
    assert_eq!(e.to_string(), format!("fetching artifact {uri} failed: HTTP 404 Not Found"));
    assert!(!sandbox.join("missing.tgz").exists() && !sandbox.join("missing.tgz.part").exists());
    // Nothing listens on a port just released.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    let uri = format!("http://127.0.0.1:{port}/a.sh");
    let e = Fetcher::default().fetch_all(&sandbox, &[art(&uri)], None).await.expect_err("refused");
    assert!(e.to_string().contains(&uri) && e.to_string().contains("Connection refused"), "{e}");
}
