"""The protocol side of worker.py, run as the engine runs it: a subprocess
fed JSON lines on stdin. Standard library only; torch is hidden from the
worker (a stub package that fails to import), so these tests mean the same
on a machine with PyTorch. The training dataset is an Arrow IPC stream when
pyarrow is importable here, else the JSON Lines form the worker also reads;
the tests of the Arrow reader itself run only with pyarrow.

    python3 -m unittest workers/torch/test_protocol.py
"""

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import unittest

try:
    import pyarrow
    import pyarrow.ipc
except ImportError:
    pyarrow = None

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
# Generous: a hung worker fails the test instead of hanging the suite.
TIMEOUT_S = 60


def arrow_dataset(features, classes, x, y):
    """The dataset stream sluice_tabular::dataset writes: Float64 features,
    a Utf8 label last, the classes in the schema metadata."""
    fields = [pyarrow.field(f, pyarrow.float64(), nullable=False) for f in features]
    fields.append(pyarrow.field("y", pyarrow.string(), nullable=False))
    schema = pyarrow.schema(fields, metadata={"sluice.classes": json.dumps(classes)})
    columns = [pyarrow.array([row[j] for row in x], pyarrow.float64())
               for j in range(len(features))]
    columns.append(pyarrow.array(y, pyarrow.string()))
    sink = pyarrow.BufferOutputStream()
    with pyarrow.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(pyarrow.record_batch(columns, schema=schema))
    return sink.getvalue().to_pybytes()


class WorkerProtocolTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        stub = os.path.join(self.tmp.name, "stub", "torch")
        os.makedirs(stub)
        with open(os.path.join(stub, "__init__.py"), "w") as f:
            f.write('raise ImportError("torch hidden by test_protocol")\n')
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in [os.path.dirname(stub), os.environ.get("PYTHONPATH")] if p
        )
        self.train = os.path.join(self.tmp.name, "train.dataset")
        self.x = [[1.0, 0.5], [-1.0, 0.25]]
        self.y = ["a", "b"]
        if pyarrow is not None:
            body = arrow_dataset(["x", "y"], ["a", "b"], self.x, self.y)
        else:
            rows = [{"features": ["x", "y"], "classes": ["a", "b"]}]
            rows += [{"x": x, "y": y} for x, y in zip(self.x, self.y)]
            body = "".join(json.dumps(r) + "\n" for r in rows).encode()
        self.digest = self.write(self.train, body)

    @staticmethod
    def write(path, body):
        """Writes `body` to `path`; returns its digest."""
        with open(path, "wb") as f:
            f.write(body)
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def hide(self, package):
        """Makes `package` fail to import in the worker, as torch does."""
        stub = os.path.join(self.tmp.name, "stub", package)
        os.makedirs(stub)
        with open(os.path.join(stub, "__init__.py"), "w") as f:
            f.write(f'raise ImportError("{package} hidden by test_protocol")\n')

    def start(self):
        proc = subprocess.Popen(
            [sys.executable, WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        self.addCleanup(self.stop, proc)
        return proc

    @staticmethod
    def stop(proc):
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream and not stream.closed:
                stream.close()

    def exchange(self, lines):
        """Sends `lines` (dicts or raw bytes), then end of input; returns
        (messages on stdout, stderr text, exit status)."""
        proc = self.start()
        data = b"".join(
            line if isinstance(line, bytes) else json.dumps(line).encode() + b"\n"
            for line in lines
        )
        out, err = proc.communicate(data, timeout=TIMEOUT_S)
        messages = [json.loads(line) for line in out.decode().splitlines()]
        return messages, err.decode(), proc.returncode

    def run_message(self, job_id, **overrides):
        message = {
            "type": "run", "id": job_id, "op": "train-mlp",
            "params": {"hidden_layers": 1, "width": 4, "epochs": 3},
            "inputs": {"train": {"path": self.train, "digest": self.digest}},
            "output_dir": os.path.join(self.tmp.name, job_id), "seed": 1,
            "deterministic": True, "deadline_ms": 60000,
        }
        message.update(overrides)
        return message

    def result_message(self, messages, job_id):
        results = [m for m in messages if m.get("type") == "result" and m.get("id") == job_id]
        self.assertEqual(len(results), 1, messages)
        return results[0]

    def test_hello_is_sent_first_even_without_torch(self):
        messages, _, code = self.exchange([])
        self.assertEqual(code, 0)
        self.assertEqual(len(messages), 1, messages)
        hello = messages[0]
        self.assertEqual(hello["type"], "hello")
        self.assertEqual(hello["protocol"], 1)
        self.assertEqual(hello["worker"], "torch")
        self.assertEqual(hello["ops"], ["train-mlp"])
        self.assertEqual(hello["versions"], {
            "sluice-torch-worker": "0.1.0",
            "python": platform.python_version(),
            "torch": "not installed",
        })
        self.assertEqual(hello["device"]["kind"], "cpu")
        self.assertIsNone(hello["device"]["uuid"])
        self.assertTrue(hello["device"]["name"].startswith(platform.machine() + " ("))

    def test_unknown_op_fails_naming_it(self):
        messages, _, code = self.exchange([self.run_message("j1", op="train-gpt")])
        self.assertEqual(code, 0)
        self.assertEqual(self.result_message(messages, "j1"), {
            "type": "result", "id": "j1", "status": "failed", "outputs": {}, "metrics": {},
            "message": "unknown op `train-gpt`; this worker implements train-mlp",
        })

    def test_train_mlp_without_torch_fails_saying_so(self):
        messages, err, code = self.exchange([self.run_message("j1")])
        self.assertEqual(code, 0)
        result = self.result_message(messages, "j1")
        self.assertEqual(result["status"], "failed")
        self.assertTrue(result["message"].startswith("torch is not installed"), result)
        self.assertIn("job j1: failed: torch is not installed", err)
        self.assertFalse(os.path.exists(os.path.join(self.tmp.name, "j1")))

    def test_params_and_inputs_are_checked_before_torch_is_needed(self):
        wrong = "sha256:" + "0" * 64
        messages, _, _ = self.exchange([
            self.run_message("w", params={"width": 0}),
            self.run_message("p", params={"dropout": 0.1}),
            self.run_message("d", inputs={"train": {"path": self.train, "digest": wrong}}),
            self.run_message("m", inputs={}),
        ])
        expected = {
            "w": "bad params: width must be within 1..=4096, got 0",
            "p": "bad params: unknown param `dropout` (expected hidden_layers, width, "
                 "learning_rate, epochs or batch_size)",
            "d": f"input `train`: digest mismatch: expected {wrong}, {self.train} has {self.digest}",
            "m": "missing input `train`",
        }
        for job_id, message in expected.items():
            result = self.result_message(messages, job_id)
            self.assertEqual((result["status"], result["message"]), ("failed", message))

    def test_shutdown_exits_zero_with_input_still_open(self):
        proc = self.start()
        proc.stdin.write(b'{"type":"shutdown"}\n')
        proc.stdin.flush()
        self.assertEqual(proc.wait(timeout=TIMEOUT_S), 0)
        lines = proc.stdout.read().decode().splitlines()
        self.assertEqual([json.loads(line)["type"] for line in lines], ["hello"])

    def test_malformed_lines_go_to_stderr_and_the_worker_keeps_going(self):
        messages, err, code = self.exchange([
            b"this is not json\n",
            b'{"type":"dance"}\n',
            b"x" * (1 << 20) + b"y" * 10 + b"\n",
            {"type": "run", "id": "bad", "output_dir": "/nowhere"},
            self.run_message("j2", op="nope"),
        ])
        self.assertEqual(code, 0)
        self.assertIn("input line 1: not a JSON line", err)
        self.assertIn('input line 2: unusable message (type "dance", id null)', err)
        self.assertIn("input line 3: longer than 1048576 bytes, skipped", err)
        self.assertEqual(self.result_message(messages, "bad")["message"],
                         "malformed run message: missing field `op`")
        self.assertEqual(self.result_message(messages, "j2")["status"], "failed")
        # Only protocol lines on stdout: hello and the two results.
        self.assertEqual([m["type"] for m in messages], ["hello", "result", "result"])

    def test_an_arrow_dataset_without_pyarrow_fails_naming_it(self):
        self.hide("pyarrow")
        path = os.path.join(self.tmp.name, "arrow.dataset")
        digest = self.write(path, b"\xff\xff\xff\xff" + b"\x00" * 12)
        messages, _, code = self.exchange([
            self.run_message("j1", inputs={"train": {"path": path, "digest": digest}}),
        ])
        self.assertEqual(code, 0)
        result = self.result_message(messages, "j1")
        self.assertEqual(result["status"], "failed")
        self.assertTrue(result["message"].startswith(
            "pyarrow is not installed; datasets are Arrow IPC streams"), result)

    @unittest.skipIf(pyarrow is None, "pyarrow is not installed")
    def test_a_truncated_or_malformed_arrow_dataset_fails_naming_where(self):
        body = arrow_dataset(["x", "y"], ["a", "b"], self.x, self.y)
        bad_label = arrow_dataset(["x", "y"], ["a", "b"], self.x, ["a", "z"])
        cases = {
            "t": (body[:-8], f"input `train`: dataset at byte {len(body) - 8}: the Arrow "
                             "stream is truncated: it ends without its end-of-stream marker"),
            "l": (bad_label, "input `train`: dataset row 2: label `z` is not among the "
                             "dataset's classes"),
        }
        runs = []
        for job_id, (data, _) in cases.items():
            path = os.path.join(self.tmp.name, f"{job_id}.dataset")
            digest = self.write(path, data)
            runs.append(self.run_message(job_id, inputs={"train": {"path": path, "digest": digest}}))
        messages, _, _ = self.exchange(runs)
        for job_id, (_, message) in cases.items():
            result = self.result_message(messages, job_id)
            self.assertEqual((result["status"], result["message"]), ("failed", message))

    @unittest.skipIf(pyarrow is None, "pyarrow is not installed")
    def test_the_arrow_reader_reads_rows_in_order(self):
        sys.path.insert(0, os.path.dirname(WORKER))
        self.addCleanup(sys.path.remove, os.path.dirname(WORKER))
        import worker  # noqa: PLC0415 -- the module under test, by path

        data = worker.read_dataset(self.train)
        self.assertEqual((data.features, data.classes), (["x", "y"], ["a", "b"]))
        self.assertEqual(list(data.x), [1.0, 0.5, -1.0, 0.25])
        self.assertEqual(data.y, [0, 1])


if __name__ == "__main__":
    unittest.main()
