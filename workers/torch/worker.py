#!/usr/bin/env python3
"""The PyTorch reference worker of the Sluice worker protocol, version 1.

See workers/PROTOCOL.md (the contract) and README.md beside this
file. The engine starts this process, sends JSON lines on stdin and reads
JSON lines on stdout; stderr is the job log.

It implements the op `train-mlp` exactly as the CPU worker
(workers/cpu) does -- same params and limits, same architecture
(ReLU hidden layers, He-uniform init, Adam, mean cross-entropy, seeded
shuffles), same model document (`sluice_tabular::mlp`) -- on CUDA when a GPU
is visible, else on the CPU, in float32.

Only the standard library, pyarrow (to read datasets, which are Arrow IPC
streams) and torch. Both are imported lazily, so the protocol side (hello,
parsing, validation, input verification) works and is tested without them; a
job then fails with "pyarrow is not installed" or "torch is not installed".
"""

import array
import ctypes
import hashlib
import json
import math
import os
import platform
import queue
import sys
import threading
import time

WORKER_VERSION = "0.1.0"
PROTOCOL_VERSION = 1
WORKER_KIND = "torch"
TRAIN_MLP = "train-mlp"
OPS = [TRAIN_MLP]

# The protocol's limit on one line, either way.
LINE_BYTES_MAX = 1 << 20
# Runs read ahead of the job loop; the engine sends one at a time.
QUEUED_MESSAGES_MAX = 64
PROGRESS_MESSAGES_MAX = 10

# The limits of sluice_tabular (lib.rs and mlp.rs), so both workers accept
# and reject the same jobs.
HIDDEN_LAYERS_MAX = 8
WIDTH_MAX = 4096
EPOCHS_MAX = 100_000
BATCH_SIZE_MAX = 1_000_000
PARAMS_MAX = 10_000_000
ROWS_MAX = 1_000_000
FEATURES_MAX = 100_000
CLASSES_MAX = 1_000
DATASET_VALUES_MAX = 50_000_000
DATASET_LINE_BYTES_MAX = 16 << 20
# Rows per forward pass when scoring the trained model on the training set.
EVAL_CHUNK_ROWS = 65_536

DEFAULT_PARAMS = {
    "hidden_layers": 2,
    "width": 32,
    "learning_rate": 0.01,
    "epochs": 50,
    "batch_size": 32,
}
INT_RANGES = {
    "hidden_layers": (0, HIDDEN_LAYERS_MAX),
    "width": (1, WIDTH_MAX),
    "epochs": (1, EPOCHS_MAX),
    "batch_size": (1, BATCH_SIZE_MAX),
}

MODEL_OUTPUT = "model"
MODEL_FILE = "model.json"
TRAIN_INPUT = "train"
JSON_MEDIA_TYPE = "application/json"

TORCH_MISSING = (
    "torch is not installed; install PyTorch for this Python "
    "(https://pytorch.org) or use the cpu worker"
)


class JobFailed(Exception):
    """A job ends `failed` with this message."""


class JobCancelled(Exception):
    """A job ends `cancelled` with this message."""


def log(message):
    print(message, file=sys.stderr, flush=True)


# --- torch, lazily ---------------------------------------------------------

_torch = None
_torch_tried = False


def load_torch():
    """The torch module, or None when it cannot be imported."""
    global _torch, _torch_tried
    if not _torch_tried:
        _torch_tried = True
        # cuBLAS needs this for deterministic matmuls; the engine sets it too.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        try:
            import torch  # noqa: PLC0415 -- lazy on purpose

            _torch = torch
        except ImportError as e:
            log(f"worker: torch unavailable: {e}")
            _torch = None
    return _torch


def nvidia_driver_version():
    """The NVIDIA driver version via NVML (ctypes), or None."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    try:
        if nvml.nvmlInit_v2() != 0:
            return None
        try:
            buf = ctypes.create_string_buffer(96)
            if nvml.nvmlSystemGetDriverVersion(buf, ctypes.c_uint(len(buf))) != 0:
                return None
            return buf.value.decode("ascii", "replace")
        finally:
            nvml.nvmlShutdown()
    except AttributeError:
        return None


def gpu_uuid(props):
    uuid = getattr(props, "uuid", None)
    if uuid is None:
        return None
    text = str(uuid)
    return text if text.startswith("GPU-") else f"GPU-{text}"


def hello():
    versions = {
        "sluice-torch-worker": WORKER_VERSION,
        "python": platform.python_version(),
    }
    threads = os.cpu_count() or 1
    device = {
        "kind": "cpu",
        "name": f"{platform.machine()} ({threads} thread{'' if threads == 1 else 's'})",
        "uuid": None,
    }
    torch = load_torch()
    if torch is None:
        versions["torch"] = "not installed"
    else:
        versions["torch"] = str(torch.__version__)
        try:
            if torch.cuda.is_available():
                props = torch.cuda.get_device_properties(0)
                device = {"kind": "cuda", "name": props.name, "uuid": gpu_uuid(props)}
                if torch.version.cuda:
                    versions["cuda"] = str(torch.version.cuda)
                cudnn = torch.backends.cudnn.version()
                if cudnn is not None:
                    versions["cudnn"] = str(cudnn)
                driver = nvidia_driver_version()
                if driver is not None:
                    versions["driver"] = driver
        except Exception as e:  # a broken CUDA setup must not stop hello
            log(f"worker: CUDA unavailable: {e}")
    return {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "worker": WORKER_KIND,
        "ops": OPS,
        "versions": versions,
        "device": device,
    }


# --- validation ------------------------------------------------------------


def parse_params(params):
    """The op's params with defaults; JobFailed naming the first bad one."""
    if not isinstance(params, dict):
        raise JobFailed(f"bad params: params must be a JSON object, got {json.dumps(params)}")
    out = dict(DEFAULT_PARAMS)
    for name, value in params.items():
        if name in INT_RANGES:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise JobFailed(
                    f"bad params: {name} must be a non-negative integer, got {json.dumps(value)}"
                )
            out[name] = value
        elif name == "learning_rate":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise JobFailed(
                    f"bad params: learning_rate must be a number, got {json.dumps(value)}"
                )
            out[name] = float(value)
        else:
            raise JobFailed(
                f"bad params: unknown param `{name}` (expected hidden_layers, width, "
                "learning_rate, epochs or batch_size)"
            )
    for name, (low, high) in INT_RANGES.items():
        if not low <= out[name] <= high:
            raise JobFailed(f"bad params: {name} must be within {low}..={high}, got {out[name]}")
    lr = out["learning_rate"]
    if not (math.isfinite(lr) and lr > 0):
        raise JobFailed(
            f"bad params: learning_rate must be a positive finite number, got {format_number(lr)}"
        )
    return out


def format_number(x):
    """Like Rust's Display for f64: 0 not 0.0, -0.5, NaN, inf."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return str(int(x)) if x == int(x) else repr(x)


def layer_sizes(params, features, classes):
    return [features] + [params["width"]] * params["hidden_layers"] + [classes]


def param_count(sizes):
    return sum((a + 1) * b for a, b in zip(sizes, sizes[1:]))


def verify_digest(path, digest):
    """JobFailed unless the file at `path` hashes to `digest`."""
    hex_part = digest[len("sha256:"):] if isinstance(digest, str) else ""
    if not (
        isinstance(digest, str)
        and digest.startswith("sha256:")
        and len(hex_part) == 64
        and all(c in "0123456789abcdef" for c in hex_part)
    ):
        raise JobFailed(
            f"input `{TRAIN_INPUT}`: digest `{digest}` is not `sha256:` and 64 lowercase hex digits"
        )
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 16)
                if not chunk:
                    break
                h.update(chunk)
    except OSError as e:
        raise JobFailed(f"input `{TRAIN_INPUT}`: cannot read {path}: {e.strerror or e}") from e
    actual = "sha256:" + h.hexdigest()
    if actual != digest:
        raise JobFailed(
            f"input `{TRAIN_INPUT}`: digest mismatch: expected {digest}, {path} has {actual}"
        )


class Dataset:
    """A transform-step dataset: features, classes, x (row-major doubles), y (class indices)."""

    def __init__(self, features, classes, x, y):
        self.features = features
        self.classes = classes
        self.x = x
        self.y = y

    @property
    def rows(self):
        return len(self.y)


def read_dataset(path):
    """Reads a dataset of sluice_tabular::dataset: an Arrow IPC stream (read
    with pyarrow), or the JSON Lines form datasets had before Arrow, told
    apart by the first byte (`{` starts a JSON header; an Arrow stream starts
    with 0xFF)."""
    with open(path, "rb") as f:
        head = f.read(1)
    if head == b"{":
        return read_dataset_json_lines(path)
    return read_dataset_arrow(path)


# The Arrow IPC end-of-stream marker: a continuation token and a zero length.
ARROW_END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"
# The schema metadata key holding the dataset's classes (a JSON array).
ARROW_CLASSES_KEY = b"sluice.classes"

PYARROW_MISSING = (
    "pyarrow is not installed; datasets are Arrow IPC streams -- install it "
    "for this Python (pip install pyarrow) or use the cpu worker"
)

_pyarrow = None
_pyarrow_tried = False


def load_pyarrow():
    """The pyarrow module (with pyarrow.ipc loaded), or None when it cannot
    be imported."""
    global _pyarrow, _pyarrow_tried
    if not _pyarrow_tried:
        _pyarrow_tried = True
        try:
            import pyarrow  # noqa: PLC0415 -- lazy on purpose
            import pyarrow.ipc  # noqa: PLC0415,F401

            _pyarrow = pyarrow
        except ImportError as e:
            log(f"worker: pyarrow unavailable: {e}")
            _pyarrow = None
    return _pyarrow


def read_dataset_arrow(path):
    """Reads the Arrow IPC stream of sluice_tabular::dataset: one non-null
    Float64 column per feature, then a Utf8 label column, the classes in the
    schema metadata `sluice.classes`. Like the Rust reader it is strict: a
    stream without its end-of-stream marker is truncated."""
    pa = load_pyarrow()
    if pa is None:
        raise JobFailed(PYARROW_MISSING)

    def bad(where, message):
        return JobFailed(f"input `{TRAIN_INPUT}`: dataset {where}: {message}")

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if size >= 8:
            f.seek(size - 8)
        if size < 8 or f.read(8) != ARROW_END_OF_STREAM:
            raise bad(f"at byte {size}",
                      "the Arrow stream is truncated: it ends without its end-of-stream marker")
        f.seek(0)
        try:
            reader = pa.ipc.open_stream(f)
        except (pa.ArrowException, OSError) as e:
            raise bad("at byte 0", f"no Arrow IPC stream schema: {e}") from e
        schema = reader.schema
        raw = (schema.metadata or {}).get(ARROW_CLASSES_KEY)
        if raw is None:
            raise bad("at byte 0", "the Arrow schema has no `sluice.classes` metadata; "
                      "is it a dataset stream?")
        try:
            classes = json.loads(raw)
        except ValueError as e:
            raise bad("at byte 0", f"`sluice.classes` is not JSON: {e}") from e
        if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
            raise bad("at byte 0", "`sluice.classes` is not a JSON array of strings")
        if len(classes) > CLASSES_MAX:
            raise bad("at byte 0", f"more than {CLASSES_MAX} classes")
        if len(set(classes)) != len(classes):
            raise bad("at byte 0", "classes are not distinct")
        if len(schema) == 0 or schema.field(len(schema) - 1).type != pa.string():
            raise bad("at byte 0", "the last column, the label, must be Utf8")
        d = len(schema) - 1
        if d > FEATURES_MAX:
            raise bad("at byte 0", f"more than {FEATURES_MAX} features")
        features = [schema.field(j).name for j in range(d)]
        for j in range(d):
            if schema.field(j).type != pa.float64():
                raise bad("at byte 0", f"feature `{features[j]}` has Arrow type "
                          f"{schema.field(j).type}; features are Float64")
        index = {c: i for i, c in enumerate(classes)}
        x = array.array("d")
        y = []
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except (pa.ArrowException, OSError) as e:
                raise bad(f"after row {len(y)}", f"malformed batch: {e}") from e
            n = batch.num_rows
            first = len(y) + 1
            if len(y) + n > ROWS_MAX or len(x) + n * d > DATASET_VALUES_MAX:
                raise bad(f"row {first}", f"more than {ROWS_MAX} rows or "
                          f"{DATASET_VALUES_MAX} values")
            # Row-major, column by column: a strided slice assignment per
            # feature, no Python loop over values.
            block = array.array("d", bytes(8 * n * d))
            for j in range(d):
                column = batch.column(j)
                values = column_doubles(column)
                # One C-speed sum finds a NaN or infinity (or an overflow,
                # which the scan below clears).
                if column.null_count or not math.isfinite(sum(values)):
                    for i in range(n):
                        if not column[i].is_valid:
                            raise bad(f"row {first + i}", f"feature `{features[j]}` is missing")
                        if not math.isfinite(values[i]):
                            raise bad(f"row {first + i}", f"feature `{features[j]}` is "
                                      f"{values[i]}; features must be finite")
                block[j::d] = values
            labels = batch.column(d)
            if labels.null_count:
                i = next(i for i in range(n) if not labels[i].is_valid)
                raise bad(f"row {first + i}", "the label is missing")
            for i, label in enumerate(labels.to_pylist()):
                c = index.get(label)
                if c is None:
                    raise bad(f"row {first + i}",
                              f"label `{label}` is not among the dataset's classes")
                y.append(c)
            x.extend(block)
    return Dataset(features, classes, x, y)


def column_doubles(column):
    """A Float64 Arrow array's values as array('d'), without a Python loop."""
    values = array.array("d")
    if len(column):
        data = column.buffers()[1]
        start = column.offset * 8
        values.frombytes(memoryview(data)[start:start + 8 * len(column)])
    if sys.byteorder != "little":
        values.byteswap()
    return values


def read_dataset_json_lines(path):
    """Reads the JSON Lines dataset form (a header, then one row per line)."""

    def bad(line_no, message):
        return JobFailed(f"input `{TRAIN_INPUT}`: dataset line {line_no}: {message}")

    x = array.array("d")
    y = []
    header = None
    index = {}
    with open(path, "rb") as f:
        line_no = 0
        while True:
            raw = f.readline(DATASET_LINE_BYTES_MAX + 1)
            if not raw:
                break
            line_no += 1
            if len(raw) > DATASET_LINE_BYTES_MAX:
                raise bad(line_no, f"line longer than {DATASET_LINE_BYTES_MAX} bytes")
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except ValueError as e:
                raise bad(line_no, f"not JSON: {e}") from e
            if header is None:
                if not (
                    isinstance(value, dict)
                    and isinstance(value.get("features"), list)
                    and isinstance(value.get("classes"), list)
                    and all(isinstance(s, str) for s in value["features"] + value["classes"])
                ):
                    raise bad(line_no, 'expected {"features":[…],"classes":[…]}')
                header = value
                if len(header["features"]) > FEATURES_MAX:
                    raise bad(line_no, f"more than {FEATURES_MAX} features")
                if len(header["classes"]) > CLASSES_MAX:
                    raise bad(line_no, f"more than {CLASSES_MAX} classes")
                index = {c: i for i, c in enumerate(header["classes"])}
                continue
            d = len(header["features"])
            if not (isinstance(value, dict) and isinstance(value.get("x"), list)
                    and isinstance(value.get("y"), str)):
                raise bad(line_no, 'expected {"x":[…],"y":"label"}')
            row = value["x"]
            if len(row) != d:
                raise bad(line_no, f"row has {len(row)} values for {d} features")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       and math.isfinite(v) for v in row):
                raise bad(line_no, "values must be finite numbers")
            label = value["y"]
            if label not in index:
                raise JobFailed(
                    f"train-mlp: training row {len(y)}: label `{label}` is not among "
                    "the dataset's classes"
                )
            if len(y) >= ROWS_MAX or len(x) + d > DATASET_VALUES_MAX:
                raise bad(line_no, f"more than {ROWS_MAX} rows or {DATASET_VALUES_MAX} values")
            x.extend(float(v) for v in row)
            y.append(index[label])
    if header is None:
        raise bad(1, "empty input: no header line")
    return Dataset(header["features"], header["classes"], x, y)


# --- the op ----------------------------------------------------------------


class Control:
    """What may stop a running job: a cancel, or its deadline."""

    def __init__(self, cancel, deadline, deadline_ms):
        self.cancel = cancel
        self.deadline = deadline
        self.deadline_ms = deadline_ms

    def check(self, epoch, epochs):
        if self.cancel.is_set():
            raise JobCancelled(f"cancelled in epoch {epoch + 1} of {epochs}")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise JobFailed(
                f"deadline of {self.deadline_ms} ms exceeded in epoch {epoch + 1} of {epochs}"
            )


def run_job(req, control, emit):
    """Runs a validated `run` message; returns (outputs, metrics) or raises."""
    if req["op"] != TRAIN_MLP:
        raise JobFailed(f"unknown op `{req['op']}`; this worker implements {', '.join(OPS)}")
    params = parse_params(req["params"])
    inputs = req["inputs"]
    for name in inputs:
        if name != TRAIN_INPUT:
            raise JobFailed(f"unknown input `{name}`; {TRAIN_MLP} reads only `{TRAIN_INPUT}`")
    if TRAIN_INPUT not in inputs:
        raise JobFailed(f"missing input `{TRAIN_INPUT}`")
    train = inputs[TRAIN_INPUT]
    verify_digest(train["path"], train["digest"])
    data = read_dataset(train["path"])
    if data.rows == 0:
        raise JobFailed("train-mlp: training dataset has no rows")
    if not data.classes:
        raise JobFailed("train-mlp: training dataset has no classes")
    sizes = layer_sizes(params, len(data.features), len(data.classes))
    count = param_count(sizes)
    if count > PARAMS_MAX:
        raise JobFailed(
            f"train-mlp: the network would have {count} parameters (limit {PARAMS_MAX}); "
            "lower width or hidden_layers"
        )
    torch = load_torch()
    if torch is None:
        raise JobFailed(TORCH_MISSING)
    if control.cancel.is_set():
        raise JobCancelled("cancelled before training started")
    if control.deadline is not None and time.monotonic() >= control.deadline:
        raise JobFailed(f"deadline of {control.deadline_ms} ms exceeded before training started")
    return train_mlp(torch, req, params, data, sizes, control, emit)


def train_mlp(torch, req, params, data, sizes, control, emit):
    seed = req["seed"]
    deterministic = req["deterministic"]
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.manual_seed(seed)
    # One CPU generator for the init and every shuffle, as the CPU worker
    # draws both from one stream: the same on every device.
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)

    n, d, k = data.rows, len(data.features), len(data.classes)
    log(
        f"job {req['id']}: {TRAIN_MLP} on {n} rows × {d} features, {k} classes, "
        f"{param_count(sizes)} parameters, seed {seed}, device {device}, "
        f"deterministic {deterministic}"
    )
    modules = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        linear = torch.nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            limit = math.sqrt(6.0 / max(fan_in, 1))
            linear.weight.uniform_(-limit, limit, generator=gen)
            linear.bias.zero_()
        modules.append(linear)
        if i + 2 < len(sizes):
            modules.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*modules).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=params["learning_rate"])

    if n * d > 0:
        x = torch.frombuffer(data.x, dtype=torch.float64).reshape(n, d)
    else:
        x = torch.zeros((n, d), dtype=torch.float64)
    x = x.to(device=device, dtype=torch.float32)
    y = torch.tensor(data.y, dtype=torch.long, device=device)
    classes = torch.arange(k, device=device)

    def cross_entropy_sum(logits, labels):
        # -Σ log softmax(logits)[label], by a one-hot mask rather than
        # nll_loss/gather, whose CUDA kernels use atomics.
        mask = (labels.unsqueeze(1) == classes.unsqueeze(0)).to(logits.dtype)
        return -(torch.log_softmax(logits, dim=1) * mask).sum()

    epochs, batch = params["epochs"], min(params["batch_size"], n)
    stride = -(-epochs // PROGRESS_MESSAGES_MAX)
    losses = []
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen).to(device)
        total = torch.zeros((), dtype=torch.float64, device=device)
        for start in range(0, n, batch):
            control.check(epoch, epochs)
            idx = order[start:start + batch]
            loss_sum = cross_entropy_sum(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            (loss_sum / idx.numel()).backward()
            optimizer.step()
            total += loss_sum.detach().to(torch.float64)
        loss = (total / n).item()
        if not math.isfinite(loss):
            raise JobFailed(
                f"train-mlp: training diverged in epoch {epoch} (loss is not finite); "
                "lower learning_rate"
            )
        losses.append(loss)
        done = epoch + 1
        if done % stride == 0 or done == epochs:
            emit({"type": "progress", "id": req["id"], "message": f"epoch {done}/{epochs}",
                  "metrics": {"loss": loss, "epoch": done}})
    if cuda:
        torch.cuda.synchronize()
    elapsed = max(time.perf_counter() - started, 1e-9)

    with torch.no_grad():
        loss_total, correct = 0.0, 0
        for start in range(0, n, EVAL_CHUNK_ROWS):
            logits = model(x[start:start + EVAL_CHUNK_ROWS])
            labels = y[start:start + EVAL_CHUNK_ROWS]
            loss_total += cross_entropy_sum(logits.double(), labels).item()
            correct += int((logits.argmax(dim=1) == labels).sum().item())
    train_loss = loss_total / n
    if not math.isfinite(train_loss):
        raise JobFailed("train-mlp: training diverged (final loss is not finite); "
                        "lower learning_rate")

    layers = []
    for module in model:
        if isinstance(module, torch.nn.Linear):
            layers.append({
                "weights": module.weight.detach().to("cpu", torch.float64).tolist(),
                "bias": module.bias.detach().to("cpu", torch.float64).tolist(),
            })
    document = {
        "kind": "mlp",
        "features": data.features,
        "classes": data.classes,
        "activation": "relu",
        "layers": layers,
        "hyper_params": {
            "hidden_layers": params["hidden_layers"],
            "width": params["width"],
            "learning_rate": params["learning_rate"],
            "epochs": epochs,
            "batch_size": params["batch_size"],
        },
        "seed": seed,
        "train_rows": n,
        "train_loss": train_loss,
        "train_accuracy": correct / n,
    }
    output = write_output(req["output_dir"], document)
    count = param_count(sizes)
    metrics = {
        "loss": losses,
        "final_loss": train_loss,
        "train_accuracy": correct / n,
        "samples_per_s": n * epochs / elapsed,
        "model_flops": 6.0 * count * n * epochs,
        "params": count,
    }
    return {MODEL_OUTPUT: output}, metrics


def write_output(output_dir, document):
    try:
        body = (json.dumps(document, indent=2, allow_nan=False) + "\n").encode()
    except ValueError as e:
        raise JobFailed(f"output `{MODEL_OUTPUT}`: {e}") from e
    path = os.path.join(output_dir, MODEL_FILE)
    try:
        os.makedirs(output_dir, exist_ok=True)
        with open(path, "wb") as f:
            f.write(body)
    except OSError as e:
        raise JobFailed(f"output `{MODEL_OUTPUT}`: cannot write {path}: {e.strerror or e}") from e
    return {
        "file": MODEL_FILE,
        "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
        "size": len(body),
        "media_type": JSON_MEDIA_TYPE,
    }


# --- the loop --------------------------------------------------------------


def parse_run(msg):
    """A `run` message with defaults filled in, or JobFailed saying what is wrong."""

    def need(name, kind, what):
        if name not in msg:
            raise JobFailed(f"malformed run message: missing field `{name}`")
        if not isinstance(msg[name], kind) or isinstance(msg[name], bool) and kind is not bool:
            raise JobFailed(f"malformed run message: `{name}` must be {what}")
        return msg[name]

    run = {
        "id": msg["id"],
        "op": need("op", str, "a string"),
        "output_dir": need("output_dir", str, "a string"),
        "params": msg.get("params", {}),
        "inputs": msg.get("inputs", {}),
        "seed": msg.get("seed", 0),
        "deterministic": msg.get("deterministic", True),
        "deadline_ms": msg.get("deadline_ms"),
    }
    if not isinstance(run["inputs"], dict) or not all(
        isinstance(v, dict) and isinstance(v.get("path"), str) and isinstance(v.get("digest"), str)
        for v in run["inputs"].values()
    ):
        raise JobFailed('malformed run message: `inputs` must map names to {"path","digest"}')
    if isinstance(run["seed"], bool) or not isinstance(run["seed"], int) or not 0 <= run["seed"] < 2**64:
        raise JobFailed("malformed run message: `seed` must be an integer in 0..2^64")
    if not isinstance(run["deterministic"], bool):
        raise JobFailed("malformed run message: `deterministic` must be true or false")
    deadline = run["deadline_ms"]
    if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, int)
                                 or deadline < 0):
        raise JobFailed("malformed run message: `deadline_ms` must be a non-negative integer")
    return run


class LineReader:
    """Lines from a file descriptor by os.read, so the reader thread holds
    no lock of sys.stdin's buffer that interpreter shutdown would wait for
    while the thread is still blocked reading."""

    def __init__(self, fd):
        self.fd = fd
        self.buf = bytearray()
        self.eof = False

    def readline(self, limit):
        """Up to `limit` bytes through the next newline (kept); b"" at the end."""
        while True:
            end = self.buf.find(b"\n", 0, limit)
            if end >= 0 or len(self.buf) >= limit or self.eof:
                take = end + 1 if end >= 0 else min(limit, len(self.buf))
                line = bytes(self.buf[:take])
                del self.buf[:take]
                return line
            chunk = os.read(self.fd, 1 << 16)
            if chunk:
                self.buf.extend(chunk)
            else:
                self.eof = True


class Worker:
    def __init__(self, stdin, stdout):
        self.stdin = stdin
        self.stdout = stdout
        self.jobs = queue.Queue(maxsize=QUEUED_MESSAGES_MAX)
        # Jobs queued or running: id -> cancel event.
        self.live = {}
        self.lock = threading.Lock()

    def send(self, message):
        line = json.dumps(message, allow_nan=False, separators=(",", ":")) + "\n"
        self.stdout.write(line.encode())
        self.stdout.flush()

    def read_line(self):
        """(bytes or None at end of input, too_long)."""
        raw = self.stdin.readline(LINE_BYTES_MAX + 1)
        if not raw:
            return None, False
        if len(raw) > LINE_BYTES_MAX and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = self.stdin.readline(LINE_BYTES_MAX + 1)
            return b"", True
        return raw, False

    def reader(self):
        """Parses lines; flags cancels itself; queues runs and the end."""
        line_no = 0
        try:
            while True:
                raw, too_long = self.read_line()
                if raw is None:
                    break
                line_no += 1
                received = time.monotonic()
                if too_long:
                    log(f"worker: input line {line_no}: longer than {LINE_BYTES_MAX} bytes, skipped")
                    continue
                if not raw.strip():
                    continue
                try:
                    msg = json.loads(raw)
                except ValueError as e:
                    log(f"worker: input line {line_no}: not a JSON line: {e}; skipped")
                    continue
                kind = msg.get("type") if isinstance(msg, dict) else None
                job_id = msg.get("id") if isinstance(msg, dict) else None
                if kind == "shutdown":
                    break
                if kind == "cancel" and isinstance(job_id, str):
                    with self.lock:
                        event = self.live.get(job_id)
                    if event is None:
                        log(f"worker: input line {line_no}: cancel of `{job_id}` ignored: "
                            "no such job queued or running")
                    else:
                        event.set()
                    continue
                if kind == "run" and isinstance(job_id, str):
                    with self.lock:
                        if job_id in self.live:
                            log(f"worker: input line {line_no}: run `{job_id}` ignored: "
                                "a job with that id is queued or running")
                            continue
                        self.live[job_id] = threading.Event()
                    self.jobs.put(("run", msg, received))
                    continue
                log(f"worker: input line {line_no}: unusable message "
                    f"(type {json.dumps(kind)}, id {json.dumps(job_id)}); skipped")
        except (OSError, ValueError) as e:
            log(f"worker: reading input failed, shutting down: {e}")
        self.jobs.put(("shutdown",))

    def serve(self):
        self.send(hello())
        threading.Thread(target=self.reader, name="sluice-worker-input", daemon=True).start()
        while True:
            item = self.jobs.get()
            if item[0] == "shutdown":
                return
            _, msg, received = item
            job_id = msg["id"]
            with self.lock:
                cancel = self.live[job_id]
            try:
                self.send_result(job_id, *self.run(msg, received, cancel))
            finally:
                with self.lock:
                    self.live.pop(job_id, None)

    def run(self, msg, received, cancel):
        """(status, outputs, metrics, message) of one job."""
        try:
            req = parse_run(msg)
            deadline_ms = req["deadline_ms"]
            deadline = None if deadline_ms is None else received + deadline_ms / 1000.0
            control = Control(cancel, deadline, deadline_ms)
            outputs, metrics = run_job(req, control, self.send)
            return "succeeded", outputs, metrics, None
        except JobFailed as e:
            return "failed", {}, {}, str(e)
        except JobCancelled as e:
            return "cancelled", {}, {}, str(e)
        except Exception as e:  # a bug or a torch error: fail the job, keep serving
            log(f"job {msg['id']}: unexpected {type(e).__name__}")
            return "failed", {}, {}, f"train-mlp: {type(e).__name__}: {e}"

    def send_result(self, job_id, status, outputs, metrics, message):
        if message is not None:
            log(f"job {job_id}: {status}: {message}")
        self.send({"type": "result", "id": job_id, "status": status, "outputs": outputs,
                   "metrics": metrics, "message": message})


def main():
    # Only protocol lines may reach stdout: keep the real one for them and
    # point fd 1 at stderr, so a stray print (ours, torch's, a C library's)
    # lands in the job log instead of corrupting the protocol.
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    Worker(LineReader(0), protocol_out).serve()
    protocol_out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
