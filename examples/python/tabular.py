"""The example tabular pipeline (examples/pipelines/tabular.toml), defined
in Python with the Sluice SDK (`pip install ./sdk/python`).

    python3 examples/python/tabular.py            # runs it with the local engine
    python3 examples/python/tabular.py --toml     # prints the spec it generates

Paths are relative to this file, as they are to a TOML spec.
"""

import sys

import sluice

# Steps that touch every row get 2*10^12 fuel (see tabular.toml).
ROWS = sluice.Limits(memory_mib=256, fuel=2_000_000_000_000)


def pipeline() -> sluice.Pipeline:
    p = sluice.Pipeline(
        "tabular",
        description=(
            "Penguin species classifier: ingest CSV, statistics, validation, feature transform, "
            "softmax regression, evaluation, a blessing-gated push and a Parquet export of the "
            "training set."
        ),
    )
    label = p.param("label", "species")
    learning_rate = p.param("learning_rate", "0.5")
    epochs = p.param("epochs", "10")
    threshold = p.param("threshold", "0.9")
    raw = p.source("raw", "../data/penguins.csv")

    ingest = p.step(
        "ingest",
        "../steps/ingest",
        inputs={"csv": raw},
        params={"label": label, "eval_fraction": "0.2"},
        outputs=["train", "eval"],
        limits=sluice.Limits(memory_mib=256, fuel=2_000_000_000_000, timeout_s=600),
        retries=1,
    )
    stats = p.step(
        "stats",
        "../steps/stats",
        inputs={"examples": ingest.outputs.train},
        outputs=["statistics"],
        limits=ROWS,
    )
    p.step(
        "validate",
        "../steps/validate",
        inputs={"train": ingest.outputs.train, "eval": ingest.outputs.eval},
        outputs=["schema", "anomalies"],
        limits=ROWS,
    )
    transform = p.step(
        "transform",
        "../steps/transform",
        inputs={
            "train": ingest.outputs.train,
            "eval": ingest.outputs.eval,
            "statistics": stats.outputs.statistics,
        },
        outputs=["train", "eval", "transform"],
        limits=ROWS,
    )
    train = p.step(
        "train",
        "../steps/train",
        inputs={"train": transform.outputs.train},
        params={"learning_rate": learning_rate, "epochs": epochs},
        outputs=["model"],
        limits=ROWS,
    )
    evaluate = p.step(
        "evaluate",
        "../steps/evaluate",
        inputs={"model": train.outputs.model, "eval": transform.outputs.eval},
        params={"threshold": threshold},
        outputs=["evaluation", "blessing"],
        limits=ROWS,
    )
    p.step(
        "push",
        "../steps/push",
        inputs={"model": train.outputs.model, "blessing": evaluate.outputs.blessing},
        outputs=["model"],
        limits=sluice.Limits(memory_mib=256),
    )
    p.step(
        "export",
        "../steps/export",
        inputs={"table": transform.outputs.train},
        params={"compression": "snappy"},
        outputs=["parquet"],
        limits=ROWS,
    )
    return p


def sweep() -> sluice.Pipeline:
    """examples/pipelines/tabular-sweep.toml: training swept over learning
    rate and epochs, one evaluation per combination."""
    p = sluice.Pipeline(
        "tabular-sweep",
        description="Softmax regression on Palmer Penguins, swept over learning rate and epochs.",
    )
    label = p.param("label", "species")
    learning_rate = p.param("learning_rate", "0.5")
    epochs = p.param("epochs", "300")
    threshold = p.param("threshold", "0.9")
    p.sweep(learning_rate=[0.05, 0.5], epochs=[10, 100, 300])
    raw = p.source("raw", "../data/penguins.csv")
    ingest = p.step(
        "ingest",
        "../steps/ingest",
        inputs={"csv": raw},
        params={"label": label, "eval_fraction": "0.2"},
        outputs=["train", "eval"],
    )
    transform = p.step(
        "transform",
        "../steps/transform",
        inputs={"train": ingest.outputs.train, "eval": ingest.outputs.eval},
        outputs=["train", "eval", "transform"],
    )
    train = p.step(
        "train",
        "../steps/train",
        inputs={"train": transform.outputs.train},
        params={"learning_rate": learning_rate, "epochs": epochs},
        outputs=["model"],
    )
    p.step(
        "evaluate",
        "../steps/evaluate",
        inputs={"model": train.outputs.model, "eval": transform.outputs.eval},
        params={"threshold": threshold},
        outputs=["evaluation", "blessing"],
    )
    return p


if __name__ == "__main__":
    if "--toml" in sys.argv:
        print(pipeline().to_toml(), end="")
    else:
        result = sluice.local.run(pipeline())
        for step in result["steps"]:
            print(f"{step['name']:<10} {step['status']:<10} {step.get('metrics', {})}")
        sys.exit(0 if result["status"] == "succeeded" else 1)
