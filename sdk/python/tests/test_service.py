"""The client against a real `sluice serve`: define -> submit -> follow ->
metrics and artifacts (verified) -> verify, lineage; typed errors; the same
pipeline in local mode gives the same bytes."""

import hashlib
import os
import tempfile
import unittest

from harness import REPO, Service, sluice_bin

import sluice
import tabular


class AgainstAService(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.service = Service()
        cls.alice = sluice.Client(cls.service.url, token=cls.service.tokens["ALICE"])
        cls.bob = sluice.Client(cls.service.url, token=cls.service.tokens["BOB"])
        cls.carol = sluice.Client(cls.service.url, token=cls.service.tokens["CAROL"])
        # One run of the example for the whole class.
        cls.served = cls.alice.submit(tabular.pipeline(), root=REPO)
        cls.events = list(cls.served.events())
        cls.final = cls.served.get()

    @classmethod
    def tearDownClass(cls):
        cls.service.close()

    def test_the_example_defined_in_python_runs_and_is_followed_to_its_end(self):
        self.assertEqual(self.final["status"], "succeeded", self.service.log())
        kinds = [k for k, _ in self.events]
        self.assertEqual(kinds[-1], "end")
        self.assertEqual(self.events[-1][1]["status"], "succeeded")
        finished = {d["name"] for k, d in self.events if k == "step" and d["status"] == "succeeded"}
        self.assertEqual(finished, {"ingest", "stats", "validate", "transform", "train", "evaluate", "push", "export"})
        metrics = [d for k, d in self.events if k == "metric"]
        self.assertIn(("ingest", "rows_train", 277.0), {(m["step"], m["name"], m["value"]) for m in metrics})
        self.assertEqual(self.served.metrics()["ingest"]["rows_train"], 277.0)
        self.assertEqual(self.served.metrics()["ingest"]["rows_eval"], 67.0)
        # Followed again after the end: the same outcome, from the start.
        again = list(self.served.events())
        self.assertEqual(again[-1], ("end", {"status": "succeeded"}))
        self.assertEqual(
            {d["name"] for k, d in again if k == "step" and d["status"] == "succeeded"}, finished
        )

    def test_artifacts_download_verified_and_lineage_reaches_the_csv(self):
        model = self.served.output("push", "model")
        with tempfile.TemporaryDirectory() as tmp:
            path = self.served.download("push", "model", os.path.join(tmp, "model.bin"))
            with open(path, "rb") as f:
                data = f.read()
        self.assertEqual(f"sha256:{hashlib.sha256(data).hexdigest()}", model["digest"])
        self.assertEqual(len(data), model["size"])
        self.assertEqual(self.served.artifact("push", "model"), data)
        with open(os.path.join(REPO, "examples", "data", "penguins.csv"), "rb") as f:
            csv = f"sha256:{hashlib.sha256(f.read()).hexdigest()}"
        lineage = self.bob.lineage(model["digest"])
        self.assertEqual(lineage["roots"], [csv])
        made = {o.get("step") for o in lineage["upstream"].values()}
        self.assertTrue({"ingest", "stats", "transform", "train"} <= made, made)

    def test_verify_and_provenance(self):
        report = self.bob.run(self.served.id).verify()
        self.assertIsNone(report.get("reason"), report)
        envelope = self.served.provenance()
        self.assertEqual(envelope["payloadType"], "application/vnd.in-toto+json")

    def test_logs_replay_and_cancelling_an_ended_run(self):
        self.assertIsInstance(self.served.logs("ingest"), str)
        with self.assertRaises(sluice.ApiError) as e:
            self.served.logs("ingest", stream="stdin")
        self.assertEqual(e.exception.code, "bad_request")
        replay = self.served.replay()
        self.assertEqual(replay["verdict"], "identical", replay)
        with self.assertRaises(sluice.Conflict) as e:
            self.served.cancel()
        self.assertEqual(e.exception.message, f"run `{self.served.id}` already ended (succeeded)")

    def test_compare_and_listing(self):
        self.assertEqual(self.served.compare(self.served), {})
        ids = [r["id"] for r in self.bob.runs(pipeline="tabular")]
        self.assertIn(self.served.id, ids)
        self.assertEqual(self.carol.runs(), [])

    def test_errors_are_typed_with_the_services_code_and_message(self):
        with self.assertRaises(sluice.Unauthorized) as e:
            sluice.Client(self.service.url, token="wrong-token-0000000000").runs()
        self.assertEqual((e.exception.status, e.exception.code), (401, "unauthorized"))
        # Another tenant's run and artifact look like nothing at all.
        with self.assertRaises(sluice.NotFound) as e:
            self.carol.run(self.served.id).get()
        self.assertEqual(e.exception.code, "not_found")
        with self.assertRaises(sluice.NotFound):
            self.carol.artifact(self.served.output("push", "model")["digest"])
        with self.assertRaises(sluice.NotFound):
            self.carol.lineage(self.served.output("push", "model")["digest"])
        # A viewer cannot submit.
        with self.assertRaises(sluice.Forbidden) as e:
            self.bob.submit(tabular.pipeline(), root=REPO)
        self.assertIn("`runner` role", e.exception.message)
        # An invalid spec: the service's message, and the Python line.
        p = sluice.Pipeline("broken", base_dir=REPO)
        line = _line() + 1
        p.step("bad", "examples/steps/no-such-step", outputs=["out"])
        with self.assertRaises(sluice.InvalidSpec) as e:
            self.alice.submit(p, root=REPO)
        err = e.exception
        self.assertEqual((err.status, err.code), (422, "invalid"))
        self.assertIn("step `bad`: component", err.message)
        self.assertEqual(err.locations, [(__file__, line)])
        # The token never shows.
        self.assertNotIn(self.service.tokens["ALICE"], repr(self.alice))

    def test_local_mode_gives_the_same_bytes_as_the_service(self):
        with tempfile.TemporaryDirectory() as home:
            local = sluice.local.run(tabular.pipeline(), home=home, sluice=sluice_bin(), raise_on_failure=True)
        served = self.served.steps()
        for step in local["steps"]:
            self.assertEqual(step["status"], "succeeded")
            self.assertEqual(step["outputs"], served[step["name"]]["outputs"], step["name"])
            self.assertEqual(step["cache_key"], served[step["name"]]["cache_key"], step["name"])


def _line() -> int:
    import sys

    return sys._getframe(1).f_lineno


if __name__ == "__main__":
    unittest.main()
