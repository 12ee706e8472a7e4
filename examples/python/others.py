"""The other example pipelines of examples/pipelines/, defined in Python
(the tests check each generates a spec equal to its TOML file).

    python3 examples/python/others.py drift-retrain   # runs one with the local engine
"""

import sys

import sluice

ROWS = sluice.Limits(memory_mib=256, fuel=2_000_000_000_000)


def _ingest(p, name, csv, label, **extra):
    return p.step(
        name,
        "../steps/ingest",
        inputs={"csv": csv},
        params={"label": label, "eval_fraction": "0.2"},
        outputs=["train", "eval"],
        **extra,
    )


def drift_retrain() -> sluice.Pipeline:
    """Measure drift between reference and current data; retrain, evaluate
    and push only when features have drifted."""
    p = sluice.Pipeline(
        "drift-retrain",
        description=(
            "Retraining loop: measure data drift between reference and current penguins; "
            "retrain, evaluate and push only when features have drifted."
        ),
    )
    current_csv = p.path_param("current", "../data/penguins-shifted.csv")
    p.param("min_drifted", "1")
    label = p.param("label", "species")
    learning_rate = p.param("learning_rate", "0.5")
    epochs = p.param("epochs", "300")
    threshold = p.param("threshold", "0.9")
    reference = p.source("reference", "../data/penguins.csv")
    current = p.source("current", current_csv)
    small = sluice.Limits(memory_mib=256, timeout_s=60)
    ref = _ingest(p, "ingest_reference", reference, label, limits=small)
    cur = _ingest(p, "ingest_current", current, label, limits=small)
    p.step(
        "drift",
        "../steps/drift",
        inputs={"reference": ref.outputs.train, "current": cur.outputs.train},
        params={"psi_threshold": "0.2", "ks_threshold": "0.3", "js_threshold": "0.3", "bins": "10"},
        outputs=["report"],
    )
    transform = p.step(
        "transform",
        "../steps/transform",
        when="drift.metrics.drifted >= params.min_drifted",
        inputs={"train": cur.outputs.train, "eval": cur.outputs.eval},
        outputs=["train", "eval", "transform"],
    )
    train = p.step(
        "train",
        "../steps/train",
        inputs={"train": transform.outputs.train},
        params={"learning_rate": learning_rate, "epochs": epochs},
        outputs=["model"],
    )
    evaluate = p.step(
        "evaluate",
        "../steps/evaluate",
        inputs={"model": train.outputs.model, "eval": transform.outputs.eval},
        params={"threshold": threshold},
        outputs=["evaluation", "blessing"],
    )
    p.step(
        "push",
        "../steps/push",
        when="evaluate.outputs.blessing.blessed == true",
        inputs={"model": train.outputs.model, "blessing": evaluate.outputs.blessing},
        outputs=["model"],
    )
    return p


def tabular_gpu() -> sluice.Pipeline:
    """Training handed to a native worker (`--param worker=torch` for CUDA)."""
    p = sluice.Pipeline(
        "tabular-gpu",
        description=(
            "Penguin species classifier trained as an MLP on a native worker (CPU or "
            "PyTorch/CUDA), scored and pushed like the tabular example."
        ),
    )
    label = p.param("label", "species")
    worker = p.param("worker", "cpu")
    hyper = {k: p.param(k, v) for k, v in [
        ("hidden_layers", "2"), ("width", "32"), ("learning_rate", "0.01"), ("epochs", "50"), ("batch_size", "32"),
    ]}
    threshold = p.param("threshold", "0.9")
    raw = p.source("raw", "../data/penguins.csv")
    ingest = _ingest(p, "ingest", raw, label, limits=sluice.Limits(memory_mib=256, timeout_s=60))
    transform = p.step(
        "transform",
        "../steps/transform",
        inputs={"train": ingest.outputs.train, "eval": ingest.outputs.eval},
        outputs=["train", "eval", "transform"],
    )
    train = p.step(
        "train",
        "../steps/train-gpu",
        inputs={"train": transform.outputs.train},
        params={"worker": worker, **hyper},
        outputs=["model"],
        gpu=sluice.Gpu(worker, max_jobs=1),
        limits=sluice.Limits(timeout_s=900),
    )
    evaluate = p.step(
        "evaluate",
        "../steps/evaluate",
        inputs={"model": train.outputs.model, "eval": transform.outputs.eval},
        params={"threshold": threshold},
        outputs=["evaluation", "blessing"],
    )
    p.step(
        "push",
        "../steps/push",
        inputs={"model": train.outputs.model, "blessing": evaluate.outputs.blessing},
        outputs=["model"],
    )
    return p


def tabular_polyglot() -> sluice.Pipeline:
    """The tabular example plus a Python data profile and a JavaScript report."""
    import tabular

    p = tabular.pipeline()
    p.name = "tabular-polyglot"
    p.description = (
        "Penguin species classifier (Rust steps) with a data-quality profile of the raw data "
        "in Python and a Markdown report in JavaScript."
    )
    profile = p.step(
        "profile",
        "../steps-py/profile",
        inputs={"csv": p.sources["raw"]},
        params={"label": p.params["label"]},
        outputs=["profile"],
        limits=ROWS,
    )
    p.step(
        "report",
        "../steps-js/report",
        inputs={
            "evaluation": p.steps["evaluate"].outputs.evaluation,
            "statistics": p.steps["stats"].outputs.statistics,
            "anomalies": p.steps["validate"].outputs.anomalies,
            "profile": profile.outputs.profile,
        },
        outputs=["report"],
        limits=sluice.Limits(memory_mib=256),
    )
    return p


EXAMPLES = {
    "drift-retrain": drift_retrain,
    "tabular-gpu": tabular_gpu,
    "tabular-polyglot": tabular_polyglot,
}

if __name__ == "__main__":
    result = sluice.local.run(EXAMPLES[sys.argv[1]]())
    print(result["run_id"], result["status"])
    sys.exit(0 if result["status"] == "succeeded" else 1)
