//! `lb::l4::splice` between real sockets: a half-close from either side
//! reaches the other while the opposite direction keeps flowing, and
//! connections one after another (sharing the thread's spare buffers) each
//! get exactly their own bytes. Both EOFs in at once end the splice with
//! each side's bytes and EOF delivered.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A client connected through `splice` to a server socket: (client, server).
async fn spliced() -> (TcpStream, TcpStream) {
    let (client, server, inside, upstream) = pair().await;
    tokio::spawn(lb::l4::splice(inside, upstream, Duration::from_secs(30)));
    (client, server)
}

/// A client and a server socket, and the proxy's two ends between them
/// (not yet spliced): (client, server, inside, upstream).
async fn pair() -> (TcpStream, TcpStream, TcpStream, TcpStream) {
    let front = TcpListener::bind("127.0.0.1:0").await.expect("bind front");
    let back = TcpListener::bind("127.0.0.1:0").await.expect("bind back");
    let back_addr = back.local_addr().expect("back addr");
    let client = TcpStream::connect(front.local_addr().expect("front addr"));
    let (client, accepted) = tokio::join!(client, front.accept());
    let (inside, _) = accepted.expect("accept client");
    let (upstream, accepted) = tokio::join!(TcpStream::connect(back_addr), back.accept());
    let (server, _) = accepted.expect("accept upstream");
    (client.expect("connect client"), server, inside, upstream.expect("connect upstream"))
}

#[tokio::test]
async fn client_half_close_reaches_the_server_and_the_answer_comes_back() {
    for i in 0..20 {
        let (mut client, mut server) = spliced().await;
        let ask = format!("question {i}");
        client.write_all(ask.as_bytes()).await.expect("write");
        client.shutdown().await.expect("half-close");
        let mut got = String::new();
        server.read_to_string(&mut got).await.expect("server reads to EOF");
        assert_eq!(got, ask);
        let answer = format!("answer {i} ").repeat(10_000);
        server.write_all(answer.as_bytes()).await.expect("answer");
        drop(server);
        let mut back = String::new();
        client.read_to_string(&mut back).await.expect("client reads to EOF");
        assert_eq!(back, answer);
    }
}

#[tokio::test]
async fn server_half_close_reaches_the_client_which_can_still_send() {
    let (mut client, mut server) = spliced().await;
    server.write_all(b"banner").await.expect("banner");
    server.shutdown().await.expect("server half-closes");
    let mut got = String::new();
    client.read_to_string(&mut got).await.expect("client reads to EOF");
    assert_eq!(got, "banner");
    let upload = vec![7u8; 300_000];
    client.write_all(&upload).await.expect("client still sends");
    drop(client);
    let mut received = Vec::new();
    server.read_to_end(&mut received).await.expect("server reads to EOF");
    assert_eq!(received, upload);
}

/// Both sides' bytes and FINs are in before the splice first looks: it
/// passes each side's bytes and EOF on and ends by itself.
#[tokio::test]
async fn both_eofs_at_once_end_the_splice_with_everything_delivered() {
    for i in 0..20 {
        let (mut client, mut server, inside, upstream) = pair().await;
        let ask = format!("question {i}");
        let answer = format!("answer {i}");
        client.write_all(ask.as_bytes()).await.expect("ask");
        client.shutdown().await.expect("client half-closes");
        server.write_all(answer.as_bytes()).await.expect("answer");
        server.shutdown().await.expect("server half-closes");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let spliced = tokio::spawn(lb::l4::splice(inside, upstream, Duration::from_secs(30)));
        let (mut got_ask, mut got_answer) = (String::new(), String::new());
        server.read_to_string(&mut got_ask).await.expect("server reads to EOF");
        client.read_to_string(&mut got_answer).await.expect("client reads to EOF");
        assert_eq!((got_ask.as_str(), got_answer.as_str()), (ask.as_str(), answer.as_str()));
        let moved = tokio::time::timeout(Duration::from_secs(5), spliced).await.expect("splice ends").expect("join");
        assert_eq!(moved, (ask.len() + answer.len()) as u64);
    }
}
