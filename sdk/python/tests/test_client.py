"""The client against a server that lies or breaks: what it must refuse."""

import http.server
import json
import os
import tempfile
import threading
import unittest

import harness  # noqa: F401  (puts the package on the path when not installed)

import sluice

DIGEST = "sha256:" + "ab" * 32


class Liar(http.server.BaseHTTPRequestHandler):
    """Serves other bytes than the digest asked for, and event streams that
    end without an event."""

    def do_GET(self):
        if self.path.startswith("/v1/artifacts/"):
            body = b"not the bytes you asked for"
            self.send_response(200)
            self.send_header("content-type", "application/octet-stream")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.endswith("/events"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", "0")
            self.end_headers()
        else:
            body = json.dumps({"error": {"code": "not_found", "message": "no run `x`"}}).encode()
            self.send_response(404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args):
        pass


class AgainstALiar(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Liar)
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        cls.client = sluice.Client(f"http://127.0.0.1:{cls.server.server_port}", token="t" * 20)

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()

    def test_bytes_that_do_not_hash_to_their_digest_are_refused_and_leave_no_file(self):
        with self.assertRaises(sluice.DigestMismatch) as e:
            self.client.artifact(DIGEST)
        self.assertIn(f"artifact {DIGEST}: the bytes received hash to sha256:", str(e.exception))
        with tempfile.TemporaryDirectory() as tmp:
            target = os.path.join(tmp, "model.bin")
            with self.assertRaises(sluice.DigestMismatch):
                self.client.download(DIGEST, target)
            self.assertEqual(os.listdir(tmp), [])

    def test_an_event_stream_that_keeps_closing_empty_is_an_error_not_a_hang(self):
        with self.assertRaises(sluice.SluiceError) as e:
            list(self.client.run("x").events())
        self.assertIn("closed 5 times in a row without an event", str(e.exception))

    def test_error_bodies_become_typed_exceptions(self):
        with self.assertRaises(sluice.NotFound) as e:
            self.client.run("x").get()
        self.assertEqual((e.exception.status, e.exception.code, e.exception.message), (404, "not_found", "no run `x`"))

    def test_an_unreachable_service_is_named(self):
        c = sluice.Client("http://127.0.0.1:9", token="t" * 20)
        with self.assertRaises(sluice.SluiceError) as e:
            c.runs()
        self.assertIn("cannot reach http://127.0.0.1:9", str(e.exception))


if __name__ == "__main__":
    unittest.main()
