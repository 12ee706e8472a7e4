//! The step author's SDK for [Sluice](https://example.invalid/sluice).
//!
//! A Sluice step is a WebAssembly component exporting the `sluice:step` world
//! (see `wit/step.wit`). This crate hides the generated bindings behind a
//! plain-Rust API: inputs are [`std::io::Read`], outputs are
//! [`std::io::Write`], parameters are parsed with [`std::str::FromStr`], and
//! one macro, [`export_step!`], exports your function.
//!
//! It is not a host crate: it only compiles usefully for `wasm32-wasip2` and
//! never sees a host path. Start with [`Ctx`].
//!
//! # A complete step
//!
//! Copies its input `in` to its output `out`, appending the parameter `line`:
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use sluice_guest::{Ctx, Result};
//!
//! fn run(ctx: &mut Ctx) -> Result<()> {
//!     let line: String = ctx.param("line")?;
//!     let mut text = Vec::new();
//!     ctx.input("in")?.read_to_end(&mut text)?;
//!     let mut out = ctx.output("out", "text/plain")?;
//!     out.write_all(&text)?;
//!     writeln!(out, "{line}")?;
//!     let artifact = out.finish()?;
//!     ctx.metric("bytes_out", artifact.size as f64);
//!     Ok(())
//! }
//!
//! sluice_guest::export_step!(run);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (or let
//! `sluice run` build the crate on demand) and wire it in a pipeline:
//!
//! ```toml
//! [steps.append]
//! component = "../steps/append"
//! inputs = { in = "sources.text" }
//! params = { line = "hello" }
//! outputs = ["out"]
//! ```

#![warn(missing_docs)]

use std::fmt;
use std::io;
use std::str::FromStr;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "step",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_step_world",
        default_bindings_module: "sluice_guest::bindings",
    });
}

use bindings::sluice::step::{artifacts, gpu as wit_gpu, metrics, params, types};

#[cfg(feature = "arrow")]
pub mod table;
#[cfg(feature = "arrow")]
pub use table::{TableArtifact, TableReader, TableWriter};

/// The Apache Arrow crates the table I/O is built on (feature `arrow`),
/// re-exported so a step uses the same versions.
#[cfg(feature = "arrow")]
pub mod arrow {
    pub use arrow_array as array;
    pub use arrow_ipc as ipc;
    pub use arrow_schema as schema;
    pub use arrow_select as select;
}

/// The largest chunk one host read returns (the host's own cap).
const HOST_CHUNK_MAX: usize = 1 << 20;

/// Size of the read and write buffers: large enough that host calls stay
/// coarse (a boundary crossing costs ~0.2 µs), small enough for tiny steps.
const CHUNK_BYTES: usize = 64 * 1024;

/// The error a step returns. Anything that implements
/// [`std::error::Error`] converts into it with `?`, as do strings.
pub struct Error(String);

impl Error {
    /// An error with the given message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error(message.to_string())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Error(e.to_string())
    }
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Returns early from a step with a formatted [`Error`].
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err($crate::Error::msg(::std::format!($($arg)*)))
    };
}

/// An artifact as the engine sees it: logical name, digest, size, media type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    /// The input or output name.
    pub name: String,
    /// `"sha256:<hex>"`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type, e.g. `text/csv`.
    pub media_type: String,
}

impl From<types::Artifact> for Artifact {
    fn from(a: types::Artifact) -> Self {
        Artifact {
            name: a.name,
            digest: a.digest,
            size: a.size,
            media_type: a.media_type,
        }
    }
}

fn host_error(e: types::Error) -> io::Error {
    let (kind, msg) = match e {
        types::Error::NotFound(m) => (io::ErrorKind::NotFound, m),
        types::Error::Denied(m) => (io::ErrorKind::PermissionDenied, m),
        types::Error::Quota(m) => (io::ErrorKind::QuotaExceeded, m),
        types::Error::Invalid(m) => (io::ErrorKind::InvalidInput, m),
        types::Error::Io(m) => (io::ErrorKind::Other, m),
    };
    io::Error::new(kind, msg)
}

/// The step's view of its run: inputs, outputs, parameters, metrics, GPU.
///
/// One is handed to the function exported with [`export_step!`].
pub struct Ctx {
    _private: (),
}

impl Ctx {
    #[doc(hidden)]
    pub fn __new() -> Self {
        Ctx { _private: () }
    }

    /// Opens the input wired as `name` for streaming reads.
    pub fn input(&self, name: &str) -> Result<Input> {
        let reader = artifacts::open(name).map_err(host_error)?;
        Ok(Input {
            name: name.to_owned(),
            reader,
            buf: Vec::new(),
            pos: 0,
            eof: false,
            host_pos: 0,
            size: None,
        })
    }

    /// Opens the input `name` afresh on each call: for a library that reads
    /// an input more than once (type inference then conversion, training
    /// epochs), without knowing about [`Ctx`].
    pub fn opener<'a>(&'a self, name: &'a str) -> impl FnMut() -> io::Result<Input> + 'a {
        move || {
            self.input(name)
                .map_err(|e| io::Error::other(format!("input `{name}`: {e}")))
        }
    }

    /// Reads the whole input `name` into a string (UTF-8 checked).
    pub fn input_string(&self, name: &str) -> Result<String> {
        let mut s = String::new();
        io::Read::read_to_string(&mut self.input(name)?, &mut s)
            .map_err(|e| Error::msg(format_args!("input {name}: {e}")))?;
        Ok(s)
    }

    /// The wired inputs with their digests and sizes.
    pub fn inputs(&self) -> Vec<Artifact> {
        artifacts::inputs()
            .into_iter()
            .map(Artifact::from)
            .collect()
    }

    /// The members of a fan-in input (`inputs = { models = "train[*].model" }`
    /// arrives as inputs `models.0`, `models.1`, ...), in combination order.
    pub fn collection(&self, name: &str) -> Vec<Artifact> {
        let prefix = format!("{name}.");
        let mut members: Vec<(usize, Artifact)> = self
            .inputs()
            .into_iter()
            .filter_map(|a| {
                let k = a.name.strip_prefix(&prefix)?.parse::<usize>().ok()?;
                Some((k, a))
            })
            .collect();
        members.sort_by_key(|(k, _)| *k);
        members.into_iter().map(|(_, a)| a).collect()
    }

    /// The output names the spec declares for this step.
    pub fn declared_outputs(&self) -> Vec<String> {
        artifacts::outputs()
    }

    /// Starts the declared output `name`. Call [`Output::finish`] to learn
    /// its digest; dropping it also finishes it.
    pub fn output(&self, name: &str, media_type: &str) -> Result<Output> {
        let writer = artifacts::create(name, media_type).map_err(host_error)?;
        Ok(Output {
            writer: Some(writer),
            buf: Vec::with_capacity(CHUNK_BYTES),
        })
    }

    /// Declares the output `name` to be `artifact`, an output of a GPU job
    /// this attempt submitted and that succeeded (see [`JobResult::output`]).
    /// The bytes are already in the engine's store; none cross the sandbox
    /// boundary. `name` must be a declared output not yet written; anything
    /// that is not a succeeded job's output is refused (permission denied).
    ///
    /// ```no_run
    /// # fn run(ctx: &mut sluice_guest::Ctx, spec: sluice_guest::JobSpec) -> sluice_guest::Result<()> {
    /// let result = ctx.gpu().submit(&spec)?.wait();
    /// let model = result.output("model").ok_or_else(|| sluice_guest::Error::msg("no model"))?;
    /// ctx.publish("model", model)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn publish(&self, name: &str, artifact: &Artifact) -> Result<Artifact> {
        let wit = types::Artifact {
            name: artifact.name.clone(),
            digest: artifact.digest.clone(),
            size: artifact.size,
            media_type: artifact.media_type.clone(),
        };
        Ok(artifacts::publish(name, &wit).map_err(host_error)?.into())
    }

    /// The parameter `name`, parsed as `T`; an error names the parameter when
    /// it is missing or does not parse.
    pub fn param<T: FromStr>(&self, name: &str) -> Result<T>
    where
        T::Err: fmt::Display,
    {
        match self.param_opt(name)? {
            Some(v) => Ok(v),
            None => Err(Error::msg(format_args!("missing parameter `{name}`"))),
        }
    }

    /// The parameter `name` parsed as `T`, or `default` when it is not set.
    pub fn param_or<T: FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: fmt::Display,
    {
        Ok(self.param_opt(name)?.unwrap_or(default))
    }

    /// The parameter `name` parsed as `T`, if set.
    pub fn param_opt<T: FromStr>(&self, name: &str) -> Result<Option<T>>
    where
        T::Err: fmt::Display,
    {
        match params::get(name) {
            None => Ok(None),
            Some(raw) => raw
                .trim()
                .parse::<T>()
                .map(Some)
                .map_err(|e| Error::msg(format_args!("parameter `{name}` = {raw:?}: {e}"))),
        }
    }

    /// Every parameter as (name, raw value), sorted by name.
    pub fn params(&self) -> Vec<(String, String)> {
        params::all()
    }

    /// Records the final value of metric `name`.
    pub fn metric(&self, name: &str, value: f64) {
        metrics::scalar(name, value, None);
    }

    /// Records one point (`step`) of the metric series `name`.
    pub fn metric_at(&self, name: &str, step: u64, value: f64) {
        metrics::scalar(name, value, Some(step));
    }

    /// Attaches a tag to the step's result.
    pub fn tag(&self, key: &str, value: &str) {
        metrics::tag(key, value);
    }

    /// GPU jobs: hands heavy work to a native worker through the host.
    pub fn gpu(&self) -> Gpu {
        Gpu { _private: () }
    }
}

/// A streamed input artifact; implements [`std::io::Read`],
/// [`std::io::BufRead`] and [`std::io::Seek`] (random access, e.g. to a
/// Parquet footer: a seek inside the buffered chunk costs no host call).
pub struct Input {
    name: String,
    reader: artifacts::Reader,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    /// The host reader's position: the offset just past `buf`.
    host_pos: u64,
    /// The artifact's size, looked up on the first seek from the end.
    size: Option<u64>,
}

impl Input {
    /// The artifact's size in bytes (from [`Ctx::inputs`], asked once).
    pub fn size(&mut self) -> io::Result<u64> {
        if let Some(size) = self.size {
            return Ok(size);
        }
        let size = artifacts::inputs()
            .into_iter()
            .find(|a| a.name == self.name)
            .map(|a| a.size)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("input `{}` is no longer wired", self.name),
                )
            })?;
        self.size = Some(size);
        Ok(size)
    }

    /// The logical read position: the host's, less what is still buffered.
    fn position(&self) -> u64 {
        self.host_pos - (self.buf.len() - self.pos) as u64
    }
}

impl io::Seek for Input {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let here = self.position();
        let target = match to {
            io::SeekFrom::Start(n) => Some(n),
            io::SeekFrom::Current(d) => here.checked_add_signed(d),
            io::SeekFrom::End(d) => self.size()?.checked_add_signed(d),
        }
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "input `{}`: seek to {to:?} from byte {here} is out of range",
                    self.name
                ),
            )
        })?;
        let buf_start = self.host_pos - self.buf.len() as u64;
        if (buf_start..=self.host_pos).contains(&target) {
            // Inside the chunk already read: no host call.
            self.pos = (target - buf_start) as usize;
            return Ok(target);
        }
        self.reader.seek(target).map_err(host_error)?;
        self.buf.clear();
        self.pos = 0;
        self.eof = false;
        self.host_pos = target;
        Ok(target)
    }

    fn stream_position(&mut self) -> io::Result<u64> {
        Ok(self.position())
    }
}

impl io::BufRead for Input {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.buf.len() && !self.eof {
            self.buf = self.reader.read(CHUNK_BYTES as u64).map_err(host_error)?;
            self.pos = 0;
            self.eof = self.buf.is_empty();
            self.host_pos += self.buf.len() as u64;
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.buf.len());
    }
}

impl io::Read for Input {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.buf.len() && !self.eof && out.len() >= CHUNK_BYTES {
            // A large read (a `BufReader` refilling): one host call of up
            // to the host's cap, straight into the caller's buffer.
            let want = out.len().min(HOST_CHUNK_MAX) as u64;
            // The buffered chunk is behind the position now: forget it, so a
            // later seek does not take it for the bytes before `host_pos`.
            self.buf.clear();
            self.pos = 0;
            let chunk = self.reader.read(want).map_err(host_error)?;
            self.eof = chunk.is_empty();
            self.host_pos += chunk.len() as u64;
            out[..chunk.len()].copy_from_slice(&chunk);
            return Ok(chunk.len());
        }
        let avail = io::BufRead::fill_buf(self)?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        io::BufRead::consume(self, n);
        Ok(n)
    }
}

/// A streamed output artifact; implements [`std::io::Write`].
pub struct Output {
    writer: Option<artifacts::Writer>,
    buf: Vec<u8>,
}

impl Output {
    fn flush_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let writer = self
            .writer
            .as_ref()
            .ok_or_else(|| io::Error::other("output already finished"))?;
        writer.write(&self.buf).map_err(host_error)?;
        self.buf.clear();
        Ok(())
    }

    /// Flushes and seals the output, returning its digest and size.
    pub fn finish(mut self) -> Result<Artifact> {
        self.flush_buf()?;
        let writer = self.writer.take().expect("writer present until finish");
        Ok(writer.finish().map_err(host_error)?.into())
    }
}

impl io::Write for Output {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buf.len() + bytes.len() > CHUNK_BYTES {
            self.flush_buf()?;
        }
        if bytes.len() >= CHUNK_BYTES {
            let writer = self
                .writer
                .as_ref()
                .ok_or_else(|| io::Error::other("output already finished"))?;
            writer.write(bytes).map_err(host_error)?;
        } else {
            self.buf.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_buf()
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        // Dropping the host handle finishes the artifact; flush what is
        // buffered first so nothing written is lost. Errors here surface as
        // the step's failure on the host side.
        let _ = self.flush_buf();
    }
}

/// Re-exported WIT types for GPU jobs.
pub use wit_gpu::{GpuUsage, JobSpec, JobState};

/// The outcome of a GPU job (see [`Job::wait`]).
#[derive(Clone, Debug)]
pub struct JobResult {
    /// The final state.
    pub state: JobState,
    /// Output artifacts, verified and already in the engine's store; publish
    /// one as a step output with [`Ctx::publish`].
    pub outputs: Vec<Artifact>,
    /// Metrics the worker reported, as a JSON object.
    pub metrics_json: String,
    /// GPU telemetry summary, absent when none is available.
    pub usage: Option<GpuUsage>,
    /// Wall time of the job, milliseconds.
    pub wall_ms: u64,
    /// Why the job did not succeed, if it did not.
    pub message: Option<String>,
}

impl JobResult {
    /// The output named `name`, if the job produced one.
    pub fn output(&self, name: &str) -> Option<&Artifact> {
        self.outputs.iter().find(|a| a.name == name)
    }

    /// `Ok(self)` if the job succeeded, else an error with its state and message.
    pub fn succeeded(self) -> Result<Self> {
        if self.state == JobState::Succeeded {
            return Ok(self);
        }
        Err(Error::msg(format_args!(
            "gpu job {:?}: {}",
            self.state,
            self.message.as_deref().unwrap_or("no message")
        )))
    }
}

impl From<wit_gpu::JobResult> for JobResult {
    fn from(r: wit_gpu::JobResult) -> Self {
        JobResult {
            state: r.state,
            outputs: r.outputs.into_iter().map(Artifact::from).collect(),
            metrics_json: r.metrics_json,
            usage: r.usage,
            wall_ms: r.wall_ms,
            message: r.message,
        }
    }
}

/// GPU job submission; see [`Ctx::gpu`].
pub struct Gpu {
    _private: (),
}

impl Gpu {
    /// Submits a job to a native worker. Without a `gpu` grant in the spec
    /// this fails with a permission-denied error naming the missing grant.
    pub fn submit(&self, spec: &JobSpec) -> Result<Job> {
        let job = wit_gpu::submit(spec).map_err(host_error)?;
        Ok(Job { job })
    }

    /// The GPUs the engine can see (one line each); empty without any.
    pub fn devices(&self) -> Vec<String> {
        wit_gpu::devices()
    }
}

/// A submitted GPU job. Dropping it before it ends cancels it.
pub struct Job {
    job: wit_gpu::Job,
}

impl Job {
    /// The job id.
    pub fn id(&self) -> String {
        self.job.id()
    }

    /// The current state.
    pub fn state(&self) -> JobState {
        self.job.state()
    }

    /// Blocks until the job ends.
    pub fn wait(self) -> JobResult {
        self.job.wait().into()
    }

    /// Asks the worker to stop.
    pub fn cancel(&self) {
        self.job.cancel()
    }
}

#[doc(hidden)]
pub fn __run(f: fn(&mut Ctx) -> Result<()>) -> std::result::Result<(), String> {
    let mut ctx = Ctx::__new();
    f(&mut ctx).map_err(|e| e.0)
}

/// Exports a function `fn(&mut Ctx) -> Result<()>` as the step's `run`.
///
/// ```no_run
/// fn run(_ctx: &mut sluice_guest::Ctx) -> sluice_guest::Result<()> {
///     Ok(())
/// }
/// sluice_guest::export_step!(run);
/// ```
#[macro_export]
macro_rules! export_step {
    ($run:path) => {
        const _: () = {
            struct __SluiceStep;
            impl $crate::bindings::Guest for __SluiceStep {
                fn run() -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__run($run)
                }
            }
    $crate::bindings::__export_step_world!(__SluiceStep with_types_in $crate::bindings);
        };
    };
}
