"""`examples/steps/train-gpu` in Python, for the SDK's gpu tests.

Submits one `train-mlp` job (`workers/PROTOCOL.md`) for input `train` to
worker `worker` (default `cpu`, which asks for no GPU), with the same job
spec the Rust step sends for the same params (so the same spec digest and,
the CPU worker being deterministic, the same model bytes); waits for it,
records the worker's metrics as the Rust step does, and publishes the
worker's `model` as output `model` without its bytes crossing the sandbox.

Params: `worker`, `hidden_layers` (2), `width` (32), `learning_rate`
(0.01), `epochs` (50), `batch_size` (32), `timeout_s` (600),
`deterministic` (true), `seed` (0, meaning 42). Tags: `worker`, `job`,
`state`, `devices` (how many GPUs the engine sees), `published` (the
published output's name and digest).
"""

from sluice_step import Ctx, step

OP = "train-mlp"
DEFAULT_WORKER = "cpu"


@step
def run(ctx: Ctx) -> None:
    params = {
        "hidden_layers": ctx.param("hidden_layers", 2, int),
        "width": ctx.param("width", 32, int),
        "learning_rate": ctx.param("learning_rate", 0.01, float),
        "epochs": ctx.param("epochs", 50, int),
        "batch_size": ctx.param("batch_size", 32, int),
    }
    worker = ctx.param("worker", DEFAULT_WORKER)
    timeout_s = ctx.param("timeout_s", 600, int)
    if not 1 <= timeout_s <= 86_400:
        raise ValueError(f"timeout_s must be within 1..=86400, got {timeout_s}")
    ctx.tag("devices", str(len(ctx.gpu.devices())))

    job = ctx.gpu.submit(
        worker,
        OP,
        params=params,
        inputs={"train": ctx.artifact("train")},
        gpus=0 if worker == DEFAULT_WORKER else 1,
        timeout_ms=timeout_s * 1000,
        seed=ctx.param("seed", 0, int) or 42,
        deterministic=ctx.param("deterministic", True, bool),
    )
    ctx.tag("worker", worker)
    ctx.tag("job", job.id)
    result = job.wait()
    ctx.tag("state", result.state)
    ctx.metric("job_wall_ms", result.wall_ms)
    result.check()

    m = result.metrics
    for epoch, loss in enumerate(m["loss"]):
        ctx.metric("loss", loss, step=epoch)
    for name in ("final_loss", "train_accuracy", "samples_per_s", "model_flops", "params"):
        ctx.metric(name, m[name])
    if result.usage is not None:
        ctx.metric("gpu_util_mean", result.usage.util_mean)
        ctx.metric("gpu_fb_used_max_bytes", result.usage.fb_used_max_bytes)

    model = result.output("model")
    if model.media_type != "application/json":
        raise ValueError(f"{OP} job {job.id}: output `model` is `{model.media_type}`, expected `application/json`")
    published = ctx.publish("model", model)
    ctx.tag("published", f"{published.name} {published.digest}")
