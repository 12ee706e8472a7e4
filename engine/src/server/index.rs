//! The service's run index in SQLite (`<home>/server/index.sqlite`): runs
//! with their tenant, status and request, and which tenant may read which
//! component and artifact digests.
//!
//! Invariant: a run is acknowledged (`201`) only after its row is durable
//! (WAL, `synchronous = FULL`), so a crash after the answer loses nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// A run's state in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Acknowledged, waiting for a run slot.
    Queued,
    /// Executing.
    Running,
    /// Every step succeeded, was cached or was skipped by a condition.
    Succeeded,
    /// A step failed, or the run could not start or resume.
    Failed,
    /// Cancelled by a user or by shutdown.
    Cancelled,
}

impl Status {
    /// The status as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses a stored or requested status.
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "queued" => Status::Queued,
            "running" => Status::Running,
            "succeeded" => Status::Succeeded,
            "failed" => Status::Failed,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }

    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Status::Queued | Status::Running)
    }

    /// Every status, for metrics.
    pub const ALL: [Status; 5] = [
        Status::Queued,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
    ];
}

/// What was submitted, kept so the run can start (or resume) after a
/// restart.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Request {
    /// A spec file on the server, as given (relative to the root).
    Path {
        /// The path as requested.
        pipeline: String,
        /// Param overrides.
        params: BTreeMap<String, String>,
    },
    /// A spec sent as text.
    Inline {
        /// TOML text.
        spec: String,
        /// Param overrides.
        params: BTreeMap<String, String>,
    },
}

/// A step of the run's DAG as submitted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DagStep {
    /// Step name.
    pub name: String,
    /// Names of the steps it waits for.
    pub deps: Vec<String>,
}

/// An error recorded on a run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunError {
    /// Stable code.
    pub code: String,
    /// Human message.
    pub message: String,
}

/// One run row.
#[derive(Clone, Debug)]
pub struct Row {
    /// Insertion order (the pagination cursor).
    pub seq: i64,
    /// Run id.
    pub id: String,
    /// Owner.
    pub tenant: String,
    /// Pipeline name.
    pub pipeline: String,
    /// State.
    pub status: Status,
    /// What started it: `api`, `hook:NAME`, `schedule:PATH`.
    pub trigger: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339.
    pub finished_at: Option<String>,
    /// Wall time, ms.
    pub wall_ms: Option<u64>,
    /// Resolved params.
    pub params: BTreeMap<String, String>,
    /// The DAG.
    pub dag: Vec<DagStep>,
    /// The request (`None` when the stored JSON is corrupt).
    pub request: Option<Request>,
    /// Why it failed or was cancelled.
    pub error: Option<RunError>,
    /// Columns that failed to decode, for quarantine.
    pub corrupt: Option<String>,
}

/// A new run to insert.
#[derive(Debug)]
pub struct NewRun<'a> {
    /// Run id.
    pub id: &'a str,
    /// Owner.
    pub tenant: &'a str,
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Trigger.
    pub trigger: &'a str,
    /// Resolved params.
    pub params: &'a BTreeMap<String, String>,
    /// DAG.
    pub dag: &'a [DagStep],
    /// Request.
    pub request: &'a Request,
}

/// Filters for listing runs.
#[derive(Debug, Default)]
pub struct Filter<'a> {
    /// Only this tenant (always set for non-admin callers).
    pub tenant: Option<&'a str>,
    /// Only this status.
    pub status: Option<Status>,
    /// Only this pipeline name.
    pub pipeline: Option<&'a str>,
    /// Rows with `seq` below this.
    pub before: Option<i64>,
    /// At most this many.
    pub limit: usize,
}

/// The SQLite index.
pub struct Index {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Index")
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    status TEXT NOT NULL,
    trigger TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    wall_ms INTEGER,
    params TEXT NOT NULL,
    dag TEXT NOT NULL,
    request TEXT NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_tenant ON runs (tenant, seq);
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT NOT NULL,
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (digest, tenant, kind)
) WITHOUT ROWID;
";

type Result<T> = std::result::Result<T, rusqlite::Error>;

/// An armed [`crate::fault`] point as the error SQLite itself would give
/// for a full (`SQLITE_FULL`) or failing (`SQLITE_IOERR`) disk.
fn injected_fault(point: &str) -> Result<()> {
    crate::fault::point(point).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::StorageFull {
            rusqlite::ffi::SQLITE_FULL
        } else {
            rusqlite::ffi::SQLITE_IOERR
        };
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some(e.to_string()))
    })
}

impl Index {
    /// Opens (creating) the index at `path`.
    pub fn open(path: &Path) -> Result<Index> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Index {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inserts a queued run; durable when this returns.
    pub fn insert(&self, run: &NewRun<'_>, created_at: &str) -> Result<()> {
        injected_fault("index")?;
        self.conn().execute(
            "INSERT INTO runs (id, tenant, pipeline, status, trigger, created_at, params, dag, request)
             VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8)",
            params![
                run.id,
                run.tenant,
                run.pipeline,
                run.trigger,
                created_at,
                json(run.params),
                json(&run.dag),
                json(run.request),
            ],
        )?;
        Ok(())
    }

    /// Marks a run running.
    pub fn started(&self, id: &str, at: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE runs SET status = 'running', started_at = COALESCE(started_at, ?2) WHERE id = ?1",
            params![id, at],
        )?;
        Ok(())
    }

    /// Marks a run ended.
    ///
    /// A failure here leaves the row `running`; a restart resumes or
    /// quarantines it from its record.
    pub fn finished(
        &self,
        id: &str,
        status: Status,
        at: &str,
        wall_ms: Option<u64>,
        error: Option<&RunError>,
    ) -> Result<()> {
        let error = error.map(|e| serde_json::to_string(e).expect("errors serialize"));
        self.conn().execute(
            "UPDATE runs SET status = ?2, finished_at = ?3, wall_ms = COALESCE(?4, wall_ms), error = ?5 WHERE id = ?1",
            params![id, status.as_str(), at, wall_ms.map(|w| w as i64), error],
        )?;
        Ok(())
    }

    /// One run.
    pub fn get(&self, id: &str) -> Result<Option<Row>> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM runs WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()
    }

    /// Runs matching `filter`, newest first.
    pub fn list(&self, filter: &Filter<'_>) -> Result<Vec<Row>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM runs
             WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR status = ?2)
               AND (?3 IS NULL OR pipeline = ?3) AND (?4 IS NULL OR seq < ?4)
             ORDER BY seq DESC LIMIT ?5"
        ))?;
        let rows = stmt.query_map(
            params![
                filter.tenant,
                filter.status.map(Status::as_str),
                filter.pipeline,
                filter.before,
                filter.limit as i64
            ],
            row,
        )?;
        rows.collect()
    }

    /// Runs not yet ended, oldest first (restart recovery).
    pub fn unfinished(&self) -> Result<Vec<Row>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM runs WHERE status IN ('queued', 'running') ORDER BY seq"
        ))?;
        let rows = stmt.query_map([], row)?;
        rows.collect()
    }

    /// Run counts by status.
    pub fn counts(&self) -> Result<BTreeMap<String, u64>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT status, COUNT(*) FROM runs GROUP BY status")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        rows.collect()
    }

    /// Lets `tenant` read `digest` (a component, output, log, source).
    pub fn grant(&self, tenant: &str, kind: &str, digests: &[String]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO blobs (digest, tenant, kind) VALUES (?1, ?2, ?3)",
            )?;
            for d in digests {
                stmt.execute(params![d, tenant, kind])?;
            }
        }
        tx.commit()
    }

    /// Whether `tenant` may read `digest` (as `kind`, or any kind).
    pub fn granted(&self, tenant: &str, digest: &str, kind: Option<&str>) -> Result<bool> {
        self.conn()
            .query_row(
                "SELECT 1 FROM blobs WHERE digest = ?1 AND tenant = ?2 AND (?3 IS NULL OR kind = ?3) LIMIT 1",
                params![digest, tenant, kind],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
    }
}

const COLUMNS: &str = "seq, id, tenant, pipeline, status, trigger, created_at, started_at, finished_at, wall_ms, params, dag, request, error";

/// A value as stored in a JSON column.
fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("index values serialize")
}

fn row(r: &rusqlite::Row<'_>) -> Result<Row> {
    let mut corrupt = Vec::new();
    let status_text: String = r.get(4)?;
    let status = Status::parse(&status_text).unwrap_or_else(|| {
        corrupt.push(format!("status {status_text:?}"));
        Status::Failed
    });
    let mut decode = |col: usize, name: &str| -> Result<Option<serde_json::Value>> {
        let text: Option<String> = r.get(col)?;
        Ok(match text {
            None => None,
            Some(t) => match serde_json::from_str(&t) {
                Ok(v) => Some(v),
                Err(e) => {
                    corrupt.push(format!("{name}: {e}"));
                    None
                }
            },
        })
    };
    let params = decode(10, "params")?;
    let dag = decode(11, "dag")?;
    let request = decode(12, "request")?;
    let error = decode(13, "error")?;
    let mut typed = |v: Option<serde_json::Value>, name: &str| -> Option<serde_json::Value> {
        v.filter(|v| {
            let ok = !v.is_null();
            if !ok {
                corrupt.push(format!("{name}: null"));
            }
            ok
        })
    };
    let params = typed(params, "params").and_then(|v| serde_json::from_value(v).ok());
    let dag = typed(dag, "dag").and_then(|v| serde_json::from_value(v).ok());
    let request: Option<Request> = request.and_then(|v| match serde_json::from_value(v) {
        Ok(r) => Some(r),
        Err(e) => {
            corrupt.push(format!("request: {e}"));
            None
        }
    });
    let error = error.and_then(|v| serde_json::from_value(v).ok());
    if params.is_none() {
        corrupt.push("params".to_string());
    }
    if dag.is_none() {
        corrupt.push("dag".to_string());
    }
    Ok(Row {
        seq: r.get(0)?,
        id: r.get(1)?,
        tenant: r.get(2)?,
        pipeline: r.get(3)?,
        status,
        trigger: r.get(5)?,
        created_at: r.get(6)?,
        started_at: r.get(7)?,
        finished_at: r.get(8)?,
        wall_ms: r.get::<_, Option<i64>>(9)?.map(|w| w as u64),
        params: params.unwrap_or_default(),
        dag: dag.unwrap_or_default(),
        request,
        error,
        corrupt: (!corrupt.is_empty()).then(|| corrupt.join("; ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_run<'a>(
        id: &'a str,
        tenant: &'a str,
        request: &'a Request,
        dag: &'a [DagStep],
        params: &'a BTreeMap<String, String>,
    ) -> NewRun<'a> {
        NewRun {
            id,
            tenant,
            pipeline: "p",
            trigger: "api",
            params,
            dag,
            request,
        }
    }

    #[test]
    fn insert_list_paginate_and_filter() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("i.sqlite")).unwrap();
        let request = Request::Inline {
            spec: "name = \"p\"".into(),
            params: BTreeMap::new(),
        };
        let params = BTreeMap::from([("a".to_string(), "1".to_string())]);
        for (i, tenant) in ["x", "y", "x", "x"].iter().enumerate() {
            let id = format!("r{i}");
            index
                .insert(
                    &new_run(&id, tenant, &request, &[], &params),
                    "2026-01-01T00:00:00Z",
                )
                .unwrap();
        }
        index
            .finished(
                "r0",
                Status::Failed,
                "t",
                Some(5),
                Some(&RunError {
                    code: "step".into(),
                    message: "m".into(),
                }),
            )
            .unwrap();
        let page = index
            .list(&Filter {
                tenant: Some("x"),
                limit: 2,
                ..Filter::default()
            })
            .unwrap();
        assert_eq!(
            page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["r3", "r2"]
        );
        let rest = index
            .list(&Filter {
                tenant: Some("x"),
                before: Some(page[1].seq),
                limit: 2,
                ..Filter::default()
            })
            .unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].status, Status::Failed);
        assert_eq!(rest[0].error.as_ref().unwrap().code, "step");
        assert_eq!(rest[0].params, params);
        assert_eq!(rest[0].request.as_ref(), Some(&request));
        assert_eq!(index.unfinished().unwrap().len(), 3);
        assert_eq!(index.counts().unwrap()["queued"], 3);
    }

    #[test]
    fn a_corrupt_row_is_flagged_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("i.sqlite")).unwrap();
        let request = Request::Path {
            pipeline: "p.toml".into(),
            params: BTreeMap::new(),
        };
        let params = BTreeMap::new();
        index
            .insert(&new_run("good", "t", &request, &[], &params), "t")
            .unwrap();
        index
            .insert(&new_run("bad", "t", &request, &[], &params), "t")
            .unwrap();
        index
            .conn()
            .execute("UPDATE runs SET request = '{not json' WHERE id = 'bad'", [])
            .unwrap();
        let rows = index.unfinished().unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].corrupt.is_none());
        assert!(
            rows[1].corrupt.as_deref().unwrap().starts_with("request:"),
            "{:?}",
            rows[1].corrupt
        );
    }

    #[test]
    fn grants_are_per_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("i.sqlite")).unwrap();
        index
            .grant("a", "artifact", &["sha256:1".to_string()])
            .unwrap();
        assert!(index.granted("a", "sha256:1", None).unwrap());
        assert!(!index.granted("b", "sha256:1", None).unwrap());
        assert!(!index.granted("a", "sha256:1", Some("component")).unwrap());
    }
}
