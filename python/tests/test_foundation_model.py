"""Tests of hone.foundation_model against a real `hone serve`.

cmd/hone's TestPythonClient starts the server on a tiny model and runs these
with Debian's python3. Environment: HONE_SERVER, HONE_TOKEN, and
HONE_TEST_MODEL, HONE_TEST_TRAIN, HONE_TEST_EVAL, HONE_TEST_REGISTER (a base
model id, two JSONL paths and a catalog.schema).
"""

import datetime as dt
import os
import time
import unittest
import warnings

from hone import HoneError
from hone import foundation_model as fm

MODEL = os.environ.get("HONE_TEST_MODEL", "")
TRAIN = os.environ.get("HONE_TEST_TRAIN", "")
EVAL = os.environ.get("HONE_TEST_EVAL", "")
REGISTER = os.environ.get("HONE_TEST_REGISTER", "")


def wait(run, *states, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        run = fm.get(run)
        if run.status in states:
            return run
        if time.monotonic() > deadline:
            raise AssertionError("run %s is %s after %ss, want one of %s; events: %s"
                                 % (run.name, run.status, timeout, states, run.get_events()))
        time.sleep(0.1)


@unittest.skipUnless(os.environ.get("HONE_SERVER") and MODEL, "needs a hone server (run by cmd/hone TestPythonClient)")
class FoundationModelTest(unittest.TestCase):

    def test_1_create_follow_get_list(self):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run = fm.create(model=MODEL, train_data_path=TRAIN, register_to=REGISTER + ".sdk",
                            task_type="CHAT_COMPLETION", training_duration="4ba", learning_rate=3e-3,
                            context_length=256, eval_data_path=EVAL, eval_prompts=["What is 12 + 30?"],
                            data_prep_cluster_id="0123-456789-abcdefgh", seed=5, checkpoint_every=2)
        unsupported = [w for w in caught if issubclass(w.category, fm.UnsupportedArgumentWarning)]
        self.assertEqual(len(unsupported), 1, [str(w.message) for w in caught])
        self.assertIn("data_prep_cluster_id", str(unsupported[0].message))

        self.assertIsInstance(run, fm.Run)
        self.assertIn(run.status, (fm.RunStatus.QUEUED, fm.RunStatus.STARTING, fm.RunStatus.RUNNING))
        self.assertEqual((run.model, run.train_data_path, run.register_to, run.training_duration, run.learning_rate,
                          run.context_length, run.eval_data_path, run.eval_prompts),
                         (MODEL, TRAIN, REGISTER + ".sdk", "4ba", 3e-3, 256, EVAL, ["What is 12 + 30?"]))
        self.assertEqual(run.created_at.tzinfo, dt.timezone.utc)
        self.assertTrue(run.experiment_path.startswith("/Users/"))

        done = wait(run, fm.RunStatus.COMPLETED, fm.RunStatus.FAILED)
        self.assertEqual(done.status, fm.RunStatus.COMPLETED, done.error)
        self.assertEqual(done.status, "COMPLETED")  # compares as the product's strings too
        self.assertTrue(done.status.is_terminal())
        self.assertEqual(done.registered_model, REGISTER + ".sdk/1")
        self.assertTrue(done.created_at <= done.started_at <= done.completed_at, done)
        self.assertEqual(done.metrics["step"], 4)
        self.assertEqual([c["step"] for c in done.checkpoints], [2, 4])

        events = done.get_events()
        self.assertEqual(events, fm.get_events(done.name))
        types = [e.type for e in events]
        for want in ("PENDING", "QUEUED", "STARTING", "RUNNING", "CHECKPOINT", "EVAL", "COMPLETED"):
            self.assertIn(want, types)
        self.assertEqual(types[-1], "COMPLETED")
        self.assertEqual([e.time for e in events], sorted(e.time for e in events))

        self.assertEqual(fm.get(done), fm.get(done.name))
        self.assertEqual(fm.list(finetuning_runs=[done.name]), [done])
        self.assertEqual(fm.list(finetuning_runs=[done]), [done])
        self.assertIn(done, fm.list(after=done.created_at - dt.timedelta(seconds=1)))
        self.assertNotIn(done, fm.list(before=done.created_at - dt.timedelta(hours=1)))
        self.assertNotIn(done, fm.list(before="2023-01-01", limit=50))
        self.assertIn(done, fm.list(user_emails=[done.created_by]))
        self.assertEqual(fm.list(user_emails=["nobody@example.com"]), [])
        self.assertEqual(len(fm.list(limit=1)), 1)

    def test_2_cancel_and_delete(self):
        runs = [fm.create(model=MODEL, train_data_path=TRAIN, register_to=REGISTER, training_duration="100000ba",
                          experiment_path="/Users/hone/cancel-test") for _ in range(3)]
        self.assertEqual(fm.cancel(runs[0]), 1)
        self.assertEqual(fm.cancel(runs=[runs[1].name]), 1)
        self.assertEqual(fm.cancel(experiment_id="/Users/hone/cancel-test"), 1)
        for r in runs:
            self.assertEqual(wait(r, fm.RunStatus.STOPPED).status, fm.RunStatus.STOPPED)
        self.assertEqual(fm.delete(runs[0]), 1)
        self.assertEqual(fm.delete([r.name for r in runs[1:]]), 2)
        with self.assertRaises(HoneError) as cm:
            fm.get(runs[0].name)
        self.assertEqual(cm.exception.status, 404)
        with self.assertRaises(ValueError):
            fm.cancel()
        with self.assertRaises(ValueError):
            fm.cancel(experiment_id="12345")  # the product's numeric ids name nothing in hone

    def test_3_refusals(self):
        with self.assertRaises(HoneError) as cm:
            fm.create(model=MODEL, train_data_path=TRAIN, register_to=REGISTER, training_duration="3 weeks")
        self.assertEqual(cm.exception.status, 400)
        self.assertIn("training_duration", str(cm.exception))
        with self.assertRaises(HoneError) as cm:
            fm.create(model=MODEL, train_data_path="/etc/passwd", register_to=REGISTER)
        self.assertEqual(cm.exception.status, 400)
        self.assertIn("outside", str(cm.exception))
        with self.assertRaises(TypeError):
            fm.create(MODEL, TRAIN, REGISTER, trainig_duration="1ep")  # a misspelt argument is not dropped
        with self.assertRaises(HoneError) as cm:
            fm.list(server=os.environ["HONE_SERVER"], token="wrong-token-0123456789")
        self.assertEqual(cm.exception.status, 401)


if __name__ == "__main__":
    unittest.main()


class HelpersTest(unittest.TestCase):
    """What needs no server: times both ways, states."""

    def test_times(self):
        t = fm._time("2026-12-07T02:06:19.123456789Z")
        self.assertEqual(t, dt.datetime(2026, 12, 7, 2, 6, 19, 123456, tzinfo=dt.timezone.utc))
        self.assertEqual(fm._time("2026-12-07T03:06:19.5+01:00"), dt.datetime(2026, 12, 7, 2, 6, 19, 500000, tzinfo=dt.timezone.utc))
        self.assertIsNone(fm._time(None))
        self.assertEqual(fm._rfc3339("before", "2023-01-01"), "2023-01-01T00:00:00Z")
        self.assertEqual(fm._rfc3339("before", dt.date(2023, 1, 1)), "2023-01-01T00:00:00Z")
        self.assertEqual(fm._rfc3339("after", dt.datetime(2023, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))),
                         "2023-01-01T10:00:00Z")
        with self.assertRaises(ValueError) as cm:
            fm._rfc3339("before", "last tuesday")
        self.assertIn("before", str(cm.exception))

    def test_status(self):
        self.assertEqual(fm.RunStatus("STOPPED"), "STOPPED")
        self.assertEqual(str(fm.RunStatus.RUNNING), "RUNNING")
        self.assertTrue(fm.RunStatus.FAILED.is_terminal())
        self.assertFalse(fm.RunStatus.STOPPING.is_terminal())

    def test_arguments(self):
        with self.assertRaises(ValueError):
            fm.cancel(runs=["a"], experiment_id="/Users/ann/hone")
        with self.assertRaises(ValueError):
            fm.list(limit=0)
        with self.assertRaises(TypeError):
            fm.get(None)
        with self.assertRaises(ValueError):
            fm.get("x", server="no-scheme:8080")
