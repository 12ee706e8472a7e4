//! The baseline for `bench/scale.sh`: the `append` step component run in a
//! loop by a bare wasmtime host, with no scheduler, store, cache, record or
//! seal. It links plain WASI and the smallest possible `sluice:step` host
//! (inputs and outputs are plain files, nothing is hashed or fsynced; gpu
//! calls are denied) with the engine features Sluice relies on (fuel, paced
//! in slices the guest yields after on its fiber, the pooling allocator),
//! compiles the component once, then instantiates it afresh for each step
//! as Sluice does.
//!
//! ```sh
//! cargo run --release --example bare_host -- COMPONENT.wasm INPUT WORKDIR N [chain|fan [PREFIX]]
//! ```
//!
//! `chain`: step i reads the output of step i-1; `fan`: every step reads
//! INPUT. Step i's `line` parameter is `PREFIX i` (PREFIX `line` by
//! default; an empty PREFIX makes it empty), as `bench/chain.sh` writes it. Prints one line: `steps N loop_ns T` (the loop only, not the
//! compilation).

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use wasmtime::component::{Component, HasData, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "step",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "sluice:step/artifacts.reader": super::Reader,
            "sluice:step/artifacts.writer": super::Writer,
            "sluice:step/gpu.job": super::Job,
        },
    });
}

use bindings::sluice::step::types::{Artifact, Error as WitError};
use bindings::sluice::step::{artifacts, gpu, metrics, params, types};

/// An open input.
pub struct Reader(File);
/// An output being written.
pub struct Writer(File, u64);
/// Never created: every submission is denied.
pub struct Job;

/// Fuel per step: far more than `append` needs, as in Sluice's default.
const FUEL_PER_STEP: u64 = 10_000_000_000;
/// Fuel between two yields of the guest (the sandbox's slice).
const FUEL_SLICE: u64 = sluice_engine::sandbox::FUEL_SLICE;

struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
    input: PathBuf,
    output: PathBuf,
    line: String,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn artifact(name: &str, size: u64) -> Artifact {
    Artifact {
        name: name.to_string(),
        digest: format!("sha256:{}", "0".repeat(64)),
        size,
        media_type: "text/plain".to_string(),
    }
}

impl types::Host for Host {}

impl artifacts::Host for Host {
    fn inputs(&mut self) -> wasmtime::Result<Vec<Artifact>> {
        let size = std::fs::metadata(&self.input)?.len();
        Ok(vec![artifact("in", size)])
    }
    fn outputs(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(vec!["out".to_string()])
    }
    fn open(&mut self, name: String) -> wasmtime::Result<Result<Resource<Reader>, WitError>> {
        if name != "in" {
            return Ok(Err(WitError::NotFound(name)));
        }
        let f = File::open(&self.input)?;
        Ok(Ok(self.table.push(Reader(f))?))
    }
    fn create(
        &mut self,
        name: String,
        _media_type: String,
    ) -> wasmtime::Result<Result<Resource<Writer>, WitError>> {
        if name != "out" {
            return Ok(Err(WitError::Invalid(name)));
        }
        let f = File::create(&self.output)?;
        Ok(Ok(self.table.push(Writer(f, 0))?))
    }
    fn publish(
        &mut self,
        name: String,
        _artifact: Artifact,
    ) -> wasmtime::Result<Result<Artifact, WitError>> {
        Ok(Err(WitError::Denied(name)))
    }
}

impl artifacts::HostReader for Host {
    fn read(
        &mut self,
        reader: Resource<Reader>,
        max: u64,
    ) -> wasmtime::Result<Result<Vec<u8>, WitError>> {
        let mut buf = vec![0u8; max.min(1 << 20) as usize];
        let n = self.table.get_mut(&reader)?.0.read(&mut buf)?;
        buf.truncate(n);
        Ok(Ok(buf))
    }
    fn seek(
        &mut self,
        reader: Resource<Reader>,
        offset: u64,
    ) -> wasmtime::Result<Result<(), WitError>> {
        use std::io::{Seek, SeekFrom};
        self.table
            .get_mut(&reader)?
            .0
            .seek(SeekFrom::Start(offset))?;
        Ok(Ok(()))
    }
    fn drop(&mut self, reader: Resource<Reader>) -> wasmtime::Result<()> {
        self.table.delete(reader)?;
        Ok(())
    }
}

impl artifacts::HostWriter for Host {
    fn write(
        &mut self,
        writer: Resource<Writer>,
        bytes: Vec<u8>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let w = self.table.get_mut(&writer)?;
        w.0.write_all(&bytes)?;
        w.1 += bytes.len() as u64;
        Ok(Ok(()))
    }
    fn finish(&mut self, writer: Resource<Writer>) -> wasmtime::Result<Result<Artifact, WitError>> {
        let size = self.table.get(&writer)?.1;
        Ok(Ok(artifact("out", size)))
    }
    fn drop(&mut self, writer: Resource<Writer>) -> wasmtime::Result<()> {
        self.table.delete(writer)?;
        Ok(())
    }
}

impl params::Host for Host {
    fn get(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok((name == "line").then(|| self.line.clone()))
    }
    fn all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(vec![("line".to_string(), self.line.clone())])
    }
}

impl metrics::Host for Host {
    fn scalar(&mut self, _name: String, _value: f64, _step: Option<u64>) -> wasmtime::Result<()> {
        Ok(())
    }
    fn tag(&mut self, _key: String, _value: String) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl gpu::Host for Host {
    fn submit(&mut self, _spec: gpu::JobSpec) -> wasmtime::Result<Result<Resource<Job>, WitError>> {
        Ok(Err(WitError::Denied("no gpu grant".to_string())))
    }
    fn devices(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(Vec::new())
    }
}

impl gpu::HostJob for Host {
    fn id(&mut self, _job: Resource<Job>) -> wasmtime::Result<String> {
        wasmtime::bail!("no jobs exist")
    }
    fn state(&mut self, _job: Resource<Job>) -> wasmtime::Result<gpu::JobState> {
        wasmtime::bail!("no jobs exist")
    }
    fn wait(&mut self, _job: Resource<Job>) -> wasmtime::Result<gpu::JobResult> {
        wasmtime::bail!("no jobs exist")
    }
    fn cancel(&mut self, _job: Resource<Job>) -> wasmtime::Result<()> {
        wasmtime::bail!("no jobs exist")
    }
    fn drop(&mut self, _job: Resource<Job>) -> wasmtime::Result<()> {
        Ok(())
    }
}

struct HasHost;
impl HasData for HasHost {
    type Data<'a> = &'a mut Host;
}

fn main() -> wasmtime::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: bare_host COMPONENT.wasm INPUT WORKDIR N [chain|fan [PREFIX]]");
        std::process::exit(2);
    }
    let (wasm, input, work) = (&args[1], PathBuf::from(&args[2]), PathBuf::from(&args[3]));
    let n: usize = args[4].parse()?;
    let fan = args.get(5).map(String::as_str) == Some("fan");
    let prefix = args.get(6).map_or("line", String::as_str);

    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(8)
        .total_core_instances(64)
        .total_memories(16)
        .total_tables(32)
        .total_stacks(8)
        .max_memory_size(4 << 30);
    let mut config = Config::new();
    config
        .consume_fuel(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config)?;
    let component = Component::from_file(&engine, wasm)?;
    let mut linker: Linker<Host> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    types::add_to_linker::<Host, HasHost>(&mut linker, |h| h)?;
    artifacts::add_to_linker::<Host, HasHost>(&mut linker, |h| h)?;
    params::add_to_linker::<Host, HasHost>(&mut linker, |h| h)?;
    metrics::add_to_linker::<Host, HasHost>(&mut linker, |h| h)?;
    gpu::add_to_linker::<Host, HasHost>(&mut linker, |h| h)?;
    let pre = bindings::StepPre::new(linker.instantiate_pre(&component)?)?;
    std::fs::create_dir_all(&work)?;

    let t0 = Instant::now();
    for i in 0..n {
        let step_input = if fan || i == 0 {
            input.clone()
        } else {
            work.join(format!("{}", i - 1))
        };
        let host = Host {
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
            input: step_input,
            output: work.join(format!("{i}")),
            line: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix} {i}")
            },
        };
        let mut store = Store::new(&engine, host);
        store.set_fuel(FUEL_PER_STEP)?;
        store.fuel_async_yield_interval(Some(FUEL_SLICE))?;
        let call = async {
            let step = pre.instantiate_async(&mut store).await?;
            step.call_run(&mut store).await
        };
        // Polled to completion on this thread, as the sandbox does (which
        // looks at the deadline between polls).
        let mut call = std::pin::pin!(call);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let result = loop {
            if let std::task::Poll::Ready(r) = call.as_mut().poll(&mut cx) {
                break r;
            }
        };
        if let Err(e) = result? {
            wasmtime::bail!("step {i} failed: {e}");
        }
    }
    println!("steps {n} loop_ns {}", t0.elapsed().as_nanos());
    Ok(())
}
