//! TLS fixtures for the tests of production connections (ADR 0208): a CA each test generates
//! (with `openssl`), a Postgres and a Redis that accept only TLS, and a TLS terminator that puts
//! TLS — optionally demanding a client certificate, optionally after Postgres' SSLRequest — in
//! front of a plain TCP service (Temporal's dev server, an OTLP receiver, a Postgres).
//!
//! The certificates: a CA; a server certificate for the name `localhost` only (so a client that
//! dials `127.0.0.1` with full verification must refuse it); a client certificate for mutual TLS.
//! [`TestCa::generate`] twice gives two unrelated CAs: the second one plays the impostor.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::BoxError;
use crate::stores::{
    TempDir, kill_child, log_file, postgres_command, postgres_owner_of, signal, tail, wait_until_up,
};

/// A CA and the certificates it signed, as PEM files in a temp dir of their own.
pub struct TestCa {
    dir: TempDir,
}

impl TestCa {
    /// A fresh CA (P-256 keys, valid two days) with a server certificate for `localhost` and a
    /// client certificate `pa-client`.
    pub fn generate(name: &str) -> Result<TestCa, BoxError> {
        let dir = TempDir::new("pa-test-ca")?;
        let ca = TestCa { dir };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        ca.openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN={name}"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        )?;
        for (who, subject, ext) in [
            (
                "server",
                "/CN=localhost",
                "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "client",
                "/CN=pa-client",
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=clientAuth\n",
            ),
        ] {
            std::fs::write(ca.dir.0.join(format!("{who}.ext")), ext)?;
            let (key, csr, pem, extfile) = (
                format!("{who}.key"),
                format!("{who}.csr"),
                format!("{who}.pem"),
                format!("{who}.ext"),
            );
            ca.openssl(
                &[
                    &["req"][..],
                    &ec,
                    &["-keyout", &key, "-out", &csr, "-subj", subject],
                ]
                .concat(),
            )?;
            ca.openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &pem,
                "-extfile",
                &extfile,
            ])?;
        }
        Ok(ca)
    }

    fn openssl(&self, args: &[&str]) -> Result<(), BoxError> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir.0)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run openssl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(())
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    /// The CA's certificate (what a client trusts).
    pub fn ca_pem(&self) -> PathBuf {
        self.file("ca.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.file("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.file("server.key")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.file("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.file("client.key")
    }

    /// The contents of one of its files.
    pub fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap_or_default()
    }

    fn server_config(
        &self,
        require_client_cert: bool,
        alpn: &[&[u8]],
    ) -> Result<rustls::ServerConfig, BoxError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let chain =
            CertificateDer::pem_file_iter(self.server_cert())?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(self.server_key())?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(self.ca_pem())? {
                roots.add(cert?)?;
            }
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()?,
            )
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(chain, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

/// What a [`TlsTerminator`] demands and speaks.
#[derive(Clone, Copy, Debug, Default)]
pub struct TerminatorOptions {
    /// Mutual TLS: a client without a certificate signed by the CA is refused in the handshake.
    pub require_client_cert: bool,
    /// Postgres' way in: the client first sends an SSLRequest and is answered `S`.
    pub postgres: bool,
    /// Offer HTTP/2 by ALPN (gRPC clients need it).
    pub h2: bool,
}

/// TLS on `localhost:PORT` in front of a plain TCP `upstream`: each accepted connection is
/// decrypted and piped to its own upstream connection.
pub struct TlsTerminator {
    addr: SocketAddr,
    refused: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsTerminator {
    pub async fn start(
        ca: &TestCa,
        upstream: &str,
        options: TerminatorOptions,
    ) -> Result<TlsTerminator, BoxError> {
        let alpn: &[&[u8]] = if options.h2 { &[b"h2"] } else { &[] };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
            ca.server_config(options.require_client_cert, alpn)?,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let refused = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let upstream = upstream.to_string();
        let (r, a) = (refused.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (acceptor, upstream, refused, accepted) =
                    (acceptor.clone(), upstream.clone(), r.clone(), a.clone());
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    if options.postgres {
                        // SSLRequest: length 8, code 80877103.
                        let mut request = [0u8; 8];
                        if socket.read_exact(&mut request).await.is_err()
                            || request != [0, 0, 0, 8, 4, 210, 22, 47]
                        {
                            refused.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        if socket.write_all(b"S").await.is_err() {
                            return;
                        }
                    }
                    let mut tls = match acceptor.accept(socket).await {
                        Ok(tls) => tls,
                        Err(_) => {
                            refused.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = plain.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        Ok(TlsTerminator {
            addr,
            refused,
            accepted,
            task,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `localhost:PORT`: the name its certificate carries.
    pub fn address(&self) -> String {
        format!("localhost:{}", self.addr.port())
    }

    /// Connections whose handshake failed (or that did not start as Postgres' SSLRequest).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// Connections that completed the handshake.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A redis-server that listens only on TLS (`--port 0 --tls-port …`), whose only user is an
/// ACL user with a password (the `default` user is off).
pub struct TlsRedis {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// The server's arguments after `--tls-port`, for a restart with the same ones.
    args: Vec<std::ffi::OsString>,
}

impl TlsRedis {
    pub async fn start(
        ca: &TestCa,
        user: &str,
        password: &str,
        require_client_cert: bool,
    ) -> Result<TlsRedis, BoxError> {
        let dir = TempDir::new("pa-tls-redis")?;
        let port = crate::port_below_ephemeral_range()?;
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        for arg in ["--bind", "127.0.0.1", "--tls-cert-file"] {
            args.push(arg.into());
        }
        args.push(ca.server_cert().into());
        args.push("--tls-key-file".into());
        args.push(ca.server_key().into());
        args.push("--tls-ca-cert-file".into());
        args.push(ca.ca_pem().into());
        for arg in [
            "--tls-auth-clients",
            if require_client_cert { "yes" } else { "no" },
            "--dir",
        ] {
            args.push(arg.into());
        }
        args.push(dir.0.clone().into());
        for arg in [
            "--appendonly",
            "no",
            "--save",
            "",
            "--daemonize",
            "no",
            "--user",
            "default",
            "off",
            "--user",
            user,
            "on",
            &format!(">{password}"),
            "~*",
            "&*",
            "+@all",
        ] {
            args.push(arg.into());
        }
        let mut redis = TlsRedis {
            port,
            dir,
            child: None,
            args,
        };
        redis.spawn().await?;
        Ok(redis)
    }

    async fn spawn(&mut self) -> Result<(), BoxError> {
        let log = self.dir.0.join("redis.log");
        // A restart's server must say it is ready again: the log starts over.
        let _ = std::fs::remove_file(&log);
        let program = std::env::var_os("PA_REDIS_SERVER")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "redis-server".into());
        let child = Command::new(program)
            .args(["--port", "0", "--tls-port", &self.port.to_string()])
            .args(&self.args)
            .current_dir(&self.dir.0)
            .stdin(Stdio::null())
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?)
            .spawn()
            .map_err(|e| format!("cannot start redis-server (PA_REDIS_SERVER or PATH): {e}"))?;
        self.child = Some(child);
        let log_path = log.clone();
        wait_until_up("redis-server (TLS)", &mut self.child, &log, || {
            let log = log_path.clone();
            async move {
                std::fs::read_to_string(&log)
                    .is_ok_and(|t| t.contains("Ready to accept connections"))
            }
        })
        .await
    }

    /// `kill -9` of the server, then the same server started again on the same port (its data
    /// is gone: it keeps nothing on disk).
    pub async fn kill_and_restart(&mut self) -> Result<(), BoxError> {
        kill_child(&mut self.child);
        self.spawn().await
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rediss://USER:PASSWORD@localhost:PORT`.
    pub fn url(&self, user: &str, password: &str) -> String {
        format!("rediss://{user}:{password}@localhost:{}", self.port)
    }

    pub fn log(&self) -> String {
        tail(&self.dir.0.join("redis.log"))
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// The password of [`SslPostgres`]' superuser `pa`.
pub const SSL_POSTGRES_PASSWORD: &str = "pa-tls-secret";

/// A Postgres with `ssl = on` that refuses every connection not made over TLS (`hostnossl …
/// reject`); its superuser `pa` logs in with a password (SCRAM), the application role `pa_app`
/// over TLS without one. It needs binaries built with OpenSSL: `PA_SSL_PG_BIN`, else Debian's
/// (`/usr/lib/postgresql/<newest>/bin`) — the pgvector build of the stack has no SSL.
pub struct SslPostgres {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl SslPostgres {
    fn bin() -> Result<PathBuf, BoxError> {
        if let Some(bin) = std::env::var_os("PA_SSL_PG_BIN").filter(|b| !b.is_empty()) {
            return Ok(bin.into());
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|_| "no Postgres with SSL: install Debian's postgresql or set PA_SSL_PG_BIN")?
            .filter_map(|e| {
                let e = e.ok()?;
                let v = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("postgres").exists().then_some((v, bin))
            })
            .collect();
        versions.sort();
        versions
            .pop()
            .map(|(_, bin)| bin)
            .ok_or_else(|| "no Postgres with SSL under /usr/lib/postgresql (PA_SSL_PG_BIN)".into())
    }

    pub async fn start(ca: &TestCa) -> Result<SslPostgres, BoxError> {
        use std::os::unix::fs::PermissionsExt;
        let bin = Self::bin()?;
        let dir = TempDir::new("pa-ssl-pg")?;
        let data = dir.0.join("data");
        std::fs::create_dir(&data)?;
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))?;
        let pwfile = dir.0.join("pw");
        std::fs::write(&pwfile, SSL_POSTGRES_PASSWORD)?;
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o644))?;
        let run_as = postgres_owner_of(&data)?;
        let command = |program: &str| postgres_command(&bin, program, run_as);
        let log = dir.0.join("postgres.log");
        let mut initdb = command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "pa",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?);
        let status = tokio::task::spawn_blocking(move || initdb.status()).await??;
        if !status.success() {
            return Err(format!("initdb failed: {}", tail(&log)).into());
        }
        for (from, to, mode) in [
            (ca.server_cert(), "server.pem", 0o644),
            (ca.server_key(), "server.key", 0o600),
        ] {
            let target = data.join(to);
            std::fs::copy(from, &target)?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
            if let Some((uid, gid)) = run_as {
                std::os::unix::fs::chown(&target, Some(uid), Some(gid))?;
            }
        }
        // The application role gets in without a password, but only over TLS: what this
        // Postgres proves is the transport.
        std::fs::write(
            data.join("pg_hba.conf"),
            "hostssl all pa_app 127.0.0.1/32 trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostnossl all all 0.0.0.0/0 reject\n",
        )?;
        let port = crate::port_below_ephemeral_range()?;
        let conf = format!(
            "\n# tests_e2e::SslPostgres\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = ''\nfsync = off\nssl = on\n\
             ssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n"
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))?;
        let child = command("postgres")
            .arg("-D")
            .arg(&data)
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?)
            .spawn()?;
        let mut pg = SslPostgres {
            port,
            dir,
            child: Some(child),
        };
        let log_path = log.clone();
        wait_until_up("postgres (SSL)", &mut pg.child, &log, || {
            let log = log_path.clone();
            async move {
                std::fs::read_to_string(&log)
                    .is_ok_and(|t| t.contains("database system is ready to accept connections"))
            }
        })
        .await?;
        Ok(pg)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's URL of database `postgres` at `host`, with `params` (`sslmode=…`).
    pub fn url(&self, host: &str, params: &str) -> String {
        format!(
            "postgres://pa:{SSL_POSTGRES_PASSWORD}@{host}:{}/postgres?{params}",
            self.port
        )
    }

    pub fn log(&self) -> String {
        tail(&self.dir.0.join("postgres.log"))
    }
}

impl Drop for SslPostgres {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGQUIT: immediate shutdown, the backends go too.
            signal(c.id(), "-QUIT");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
