//! Reloading TLS with real certificates (rcgen) and a real rustls client.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use latchkey_edge::tls::{ReloadingTls, TlsError, TlsFile};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

struct Generated {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn generate() -> Generated {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
    Generated {
        cert_pem: generated.cert.pem(),
        key_pem: generated.signing_key.serialize_pem(),
        der: generated.cert.der().clone(),
    }
}

fn install(dir: &Path, cert: &str, key: &str) {
    std::fs::write(dir.join("cert.pem"), cert).expect("write cert");
    std::fs::write(dir.join("key.pem"), key).expect("write key");
}

/// A TLS echo server: reads one chunk and writes it back.
async fn serve(tls: ReloadingTls) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = tls.acceptor();
            tokio::spawn(async move {
                if let Ok(mut stream) = acceptor.accept(tcp).await {
                    let mut buffer = [0u8; 64];
                    if let Ok(n) = stream.read(&mut buffer).await {
                        let _ = stream.write_all(&buffer[..n]).await;
                        let _ = stream.shutdown().await;
                    }
                }
            });
        }
    });
    address
}

/// Connects trusting `trusted`, echoes a message and returns the served certificate.
async fn served_certificate(
    address: SocketAddr,
    trusted: &[&CertificateDer<'static>],
) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add((*cert).clone()).expect("trust anchor");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(address).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut stream = connector.connect(name, tcp).await.expect("handshake");
    let (_, connection) = stream.get_ref();
    assert_eq!(connection.alpn_protocol(), Some(&b"http/1.1"[..]));
    let served = connection.peer_certificates().expect("peer certificates")[0].clone();
    stream.write_all(b"ping").await.expect("write");
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).await.expect("read");
    assert_eq!(echoed, b"ping");
    served
}

/// Longer than the resolver's check interval.
async fn wait_for_check() {
    tokio::time::sleep(latchkey_edge::tls::CHECK_INTERVAL + Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_and_follows_certificate_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second, third) = (generate(), generate(), generate());
    let trusted = [&first.der, &second.der, &third.der];
    install(dir.path(), &first.cert_pem, &first.key_pem);
    let tls =
        ReloadingTls::new(dir.path().join("cert.pem"), dir.path().join("key.pem")).expect("load");
    let address = serve(tls.clone()).await;

    assert_eq!(served_certificate(address, &trusted).await, first.der);
    assert_eq!(tls.current_certificate(), first.der);

    // Renewal: new files, no restart.
    install(dir.path(), &second.cert_pem, &second.key_pem);
    wait_for_check().await;
    assert_eq!(served_certificate(address, &trusted).await, second.der);

    // A corrupt certificate keeps the previous one.
    std::fs::write(
        dir.path().join("cert.pem"),
        "-----BEGIN CERTIFICATE-----\n!!!\n",
    )
    .expect("corrupt");
    wait_for_check().await;
    assert_eq!(served_certificate(address, &trusted).await, second.der);

    // A truncated key keeps the previous one too.
    install(dir.path(), &second.cert_pem, &second.key_pem[..40]);
    wait_for_check().await;
    assert_eq!(served_certificate(address, &trusted).await, second.der);

    // A new certificate written before its key: the mismatched pair is refused...
    install(dir.path(), &third.cert_pem, &second.key_pem);
    wait_for_check().await;
    assert_eq!(served_certificate(address, &trusted).await, second.der);
    // ...and the complete pair is picked up once the key arrives.
    std::fs::write(dir.path().join("key.pem"), &third.key_pem).expect("key");
    wait_for_check().await;
    assert_eq!(served_certificate(address, &trusted).await, third.der);
    assert_eq!(tls.current_certificate(), third.der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second) = (generate(), generate());
    install(dir.path(), &first.cert_pem, &first.key_pem);
    let tls =
        ReloadingTls::new(dir.path().join("cert.pem"), dir.path().join("key.pem")).expect("load");
    assert!(!tls.reload().expect("unchanged"));
    install(dir.path(), &second.cert_pem, &second.key_pem);
    assert!(tls.reload().expect("reloaded"));
    assert_eq!(tls.current_certificate(), second.der);
    // Served immediately, without waiting for the check interval.
    let address = serve(tls.clone()).await;
    assert_eq!(
        served_certificate(address, &[&second.der]).await,
        second.der
    );
    std::fs::write(dir.path().join("key.pem"), "junk").expect("junk");
    assert!(tls.reload().is_err());
    assert_eq!(tls.current_certificate(), second.der);
}

#[test]
fn errors_name_the_file_and_never_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    let good = generate();
    let other = generate();

    let missing = ReloadingTls::new(&cert_path, &key_path).expect_err("missing");
    assert!(matches!(
        missing,
        TlsError::Read {
            file: TlsFile::Certificate,
            ..
        }
    ));
    assert!(missing.to_string().contains("cert.pem"), "{missing}");

    install(dir.path(), &good.cert_pem, "no key here");
    let error = ReloadingTls::new(&cert_path, &key_path).expect_err("no key");
    assert!(matches!(
        error,
        TlsError::Invalid {
            file: TlsFile::PrivateKey,
            ..
        }
    ));
    assert!(error.to_string().contains("key.pem"), "{error}");

    let secret_key =
        "-----BEGIN PRIVATE KEY-----\nU0VDUkVUU0VDUkVUU0VDUkVU\n-----END PRIVATE KEY-----\n";
    install(dir.path(), &good.cert_pem, secret_key);
    let error = ReloadingTls::new(&cert_path, &key_path).expect_err("bad key");
    let text = format!("{error} {error:?}");
    assert!(!text.contains("U0VDUkVU"), "{text}");

    let corrupt_body: String = good.key_pem.replace('A', "*");
    install(dir.path(), &good.cert_pem, &corrupt_body);
    let error = ReloadingTls::new(&cert_path, &key_path).expect_err("corrupt key");
    let text = format!("{error} {error:?}");
    for line in good.key_pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!text.contains(line), "{text}");
    }

    install(dir.path(), "", &good.key_pem);
    let error = ReloadingTls::new(&cert_path, &key_path).expect_err("empty cert");
    assert!(matches!(
        error,
        TlsError::Invalid {
            file: TlsFile::Certificate,
            ..
        }
    ));

    install(dir.path(), &good.cert_pem, &other.key_pem);
    let error = ReloadingTls::new(&cert_path, &key_path).expect_err("mismatch");
    assert!(matches!(error, TlsError::Rejected { .. }), "{error}");
    assert!(!format!("{error:?}").contains(other.key_pem.lines().nth(1).unwrap_or("-")));
}
