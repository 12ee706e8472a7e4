"""Definition: the Python form yields exactly the specs the engine reads."""

import os
import subprocess
import tempfile
import tomllib
import unittest

from harness import REPO, sluice_bin

import others
import sluice
import tabular


def toml_file(rel: str) -> dict:
    with open(os.path.join(REPO, rel), "rb") as f:
        return tomllib.load(f)


class Examples(unittest.TestCase):
    def test_the_python_examples_are_the_toml_examples(self):
        self.assertEqual(tomllib.loads(tabular.pipeline().to_toml()), toml_file("examples/pipelines/tabular.toml"))
        self.assertEqual(tomllib.loads(tabular.sweep().to_toml()), toml_file("examples/pipelines/tabular-sweep.toml"))
        for name, make in others.EXAMPLES.items():
            with self.subTest(example=name):
                self.assertEqual(tomllib.loads(make().to_toml()), toml_file(f"examples/pipelines/{name}.toml"))

    def test_a_path_param_is_rebased_like_a_source_and_a_template_is_not(self):
        d = others.drift_retrain().to_dict(paths_relative_to=REPO)
        self.assertEqual(d["params"]["current"], "examples/data/penguins-shifted.csv")
        self.assertEqual(d["sources"]["current"], "${params.current}")
        self.assertEqual(d["sources"]["reference"], "examples/data/penguins.csv")

    def test_paths_are_relative_to_the_defining_file_and_rebase(self):
        p = tabular.pipeline()
        self.assertEqual(p.base_dir, os.path.join(REPO, "examples", "python"))
        rebased = p.to_dict(paths_relative_to=REPO)
        self.assertEqual(rebased["sources"]["raw"], "examples/data/penguins.csv")
        self.assertEqual(rebased["steps"]["train"]["component"], "examples/steps/train")


def every_field() -> sluice.Pipeline:
    p = sluice.Pipeline(
        "everything",
        description='quotes " and \\ and a newline\nand a tab\tand a bell \x07',
        seed=42,
        executor="process",
        schedule="0 3 * * *",
        base_dir=os.path.join(REPO, "examples", "pipelines"),
    )
    rate = p.param("rate", "0.5")
    p.param("epochs", 10)
    p.param("flag", True)
    p.sweep(rate=[0.1, 0.5])
    raw = p.source("raw", "../data/penguins.csv")
    ingest = p.step(
        "ingest",
        "../steps/ingest",
        description="reads the csv",
        inputs={"csv": raw},
        params={"label": "species", "note": f"rate={rate}"},
        outputs=["train", "eval"],
        limits=sluice.Limits(memory_mib=128, fuel=10**9, timeout_s=30, output_mib=64, log_kib=32),
        retries=2,
        cache=False,
        executor="local",
    )
    train = p.step(
        "train",
        "../steps/train",
        inputs={"train": ingest.outputs.train},
        params={"learning_rate": rate},
        outputs=["model"],
        gpu=sluice.Gpu(worker="cpu", max_jobs=2, min_free_memory_mib=0),
        when="params.epochs > 0",
    )
    p.step(
        "report",
        "../steps/stats",
        inputs={"examples": ingest["eval"]},
        outputs=["statistics"],
        after=[train, "ingest"],
        on=sluice.ALWAYS,
    )
    p.step("models", "../steps/append", inputs={"in": train.every("model")}, outputs=["out"], on=sluice.ON_FAILURE)
    return p


class EveryField(unittest.TestCase):
    def test_every_field_is_written_and_reads_back_the_same(self):
        p = every_field()
        d = p.to_dict()
        self.assertEqual(tomllib.loads(p.to_toml()), d)
        self.assertEqual(d["steps"]["ingest"]["limits"], {"memory_mib": 128, "fuel": 10**9, "timeout_s": 30, "output_mib": 64, "log_kib": 32})
        self.assertEqual(d["steps"]["train"]["gpu"], {"worker": "cpu", "max_jobs": 2, "min_free_memory_mib": 0})
        self.assertEqual(d["steps"]["ingest"]["params"]["note"], "rate=${params.rate}")
        self.assertEqual(d["steps"]["train"]["params"]["learning_rate"], "${params.rate}")
        self.assertEqual(d["steps"]["report"]["after"], ["train", "ingest"])
        self.assertEqual(d["steps"]["models"]["inputs"]["in"], "train[*].model")
        self.assertEqual(d["sweep"], {"rate": [0.1, 0.5]})
        self.assertEqual(d["schedule"], {"cron": "0 3 * * *"})
        self.assertEqual(d["executor"], {"kind": "process"})
        self.assertEqual(tomllib.loads(p.to_toml())["description"], p.description)

    def test_the_engine_accepts_the_spec_of_every_field(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = every_field().write(os.path.join(tmp, "everything.toml"))
            r = subprocess.run([sluice_bin(), "validate", path], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_wrong_references_fail_where_they_are_written(self):
        p = sluice.Pipeline("p")
        s = p.step("a", "x", outputs=["out"])
        with self.assertRaises(sluice.SpecError) as e:
            s.outputs.missing
        self.assertIn("step `a` declares no output `missing` (it declares: out)", str(e.exception))
        with self.assertRaises(sluice.SpecError) as e:
            p.step("a", "y")
        self.assertIn("step `a` is defined twice", str(e.exception))
        with self.assertRaises(sluice.SpecError):
            p.step("b", "y", on="sometimes")
        with self.assertRaises(sluice.SpecError) as e:
            p.step("c", "y", executor="slurm")
        self.assertIn("unknown executor 'slurm'", str(e.exception))
        with self.assertRaises(TypeError):
            p.step("d", "y", inputs={"x": 3})


class FindingTheEngine(unittest.TestCase):
    def test_local_mode_finds_the_checkouts_build_when_nothing_else_names_one(self):
        with tempfile.TemporaryDirectory() as tmp:
            os.makedirs(os.path.join(tmp, "engine"))
            open(os.path.join(tmp, "engine", "Cargo.toml"), "w").close()
            os.makedirs(os.path.join(tmp, "target", "debug"))
            exe = os.path.join(tmp, "target", "debug", "sluice")
            with open(exe, "w") as f:
                f.write("#!/bin/sh\n")
            os.chmod(exe, 0o755)
            os.makedirs(os.path.join(tmp, "examples", "python"))
            saved = (os.getcwd(), os.environ.pop("SLUICE_BIN", None), os.environ.get("PATH", ""))
            try:
                os.chdir(os.path.join(tmp, "examples", "python"))
                os.environ["PATH"] = "/nonexistent"
                self.assertEqual(os.path.realpath(sluice.local.binary()), os.path.realpath(exe))
                os.remove(exe)
                with self.assertRaises(sluice.SluiceError) as e:
                    sluice.local.binary()
                self.assertIn("no `sluice` binary", str(e.exception))
                self.assertEqual(sluice.local.binary("/opt/sluice"), "/opt/sluice")
            finally:
                os.chdir(saved[0])
                if saved[1] is not None:
                    os.environ["SLUICE_BIN"] = saved[1]
                os.environ["PATH"] = saved[2]


class EngineErrors(unittest.TestCase):
    def test_an_invalid_spec_names_the_python_line_that_made_it(self):
        p = sluice.Pipeline("broken", base_dir=REPO)
        p.step("ok", "examples/steps/append", outputs=["out"])
        line = _line() + 1
        p.step("bad", "examples/steps/no-such-step", outputs=["out"])
        with tempfile.TemporaryDirectory() as home:
            with self.assertRaises(sluice.SpecError) as e:
                sluice.local.run(p, home=home, sluice=sluice_bin())
        err = e.exception
        self.assertEqual(len(err.errors), 1, err.errors)
        self.assertIn("step `bad`: component", err.errors[0])
        self.assertIn("does not exist", err.errors[0])
        self.assertEqual(err.locations[0], (__file__, line))
        self.assertIn(f"(defined at {__file__}:{line})", str(err))


def _line() -> int:
    import sys

    return sys._getframe(1).f_lineno


if __name__ == "__main__":
    unittest.main()
