//! Shared helpers for the benchmarks.

/// A PostgreSQL database created for one bench run (`CREATE DATABASE` through the admin
/// URL of the postgres suite) and dropped, with everything in it, when this value is
/// dropped.
///
/// ```no_run
/// # async fn f() {
/// let db = wgm_benches::PgDatabase::create("postgres://postgres@127.0.0.1/postgres", "wgm_bench").await;
/// let url = db.url(); // postgres://postgres@127.0.0.1/wgm_bench_<pid>_<random>
/// # let _ = url;
/// # }
/// ```
pub struct PgDatabase {
    admin: String,
    name: String,
}

impl PgDatabase {
    /// Create `PREFIX_<pid>_<random>` through `admin`. Panics when that fails: a bench
    /// whose suite is on must not run without its database.
    pub async fn create(admin: &str, prefix: &str) -> PgDatabase {
        use sqlx::Connection;
        let name = format!("{prefix}_{}_{}", std::process::id(), rand::random::<u32>());
        let mut c = sqlx::PgConnection::connect(admin)
            .await
            .expect("connect to WGM_TEST_POSTGRES_URL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .expect("CREATE DATABASE");
        c.close().await.expect("close the admin connection");
        PgDatabase {
            admin: admin.to_owned(),
            name,
        }
    }

    /// The admin URL with its database replaced by this one.
    pub fn url(&self) -> String {
        let (base, query) = self
            .admin
            .split_once('?')
            .map_or((self.admin.as_str(), None), |(b, q)| (b, Some(q)));
        let host_start = base.find("://").map_or(0, |i| i + 3);
        let base = match base[host_start..].find('/') {
            Some(i) => &base[..host_start + i],
            None => base,
        };
        match query {
            Some(q) => format!("{base}/{}?{q}", self.name),
            None => format!("{base}/{}", self.name),
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop may run inside a runtime: do the async work on a thread of its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(&admin).await.ok()?;
                let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut c)
                    .await
                    .is_ok();
                let _ = c.close().await;
                dropped.then_some(())
            })
        })
        .join();
        if !matches!(done, Ok(Some(()))) {
            eprintln!("warning: could not drop bench database {}", self.name);
        }
    }
}
