"""``tools/monailabel_check.py --load N`` without MONAI Label: the load phase against a stub ``/infer`` server on
127.0.0.1 (N requests released at once, every answer compared with the sequential label, latencies, peak RSS of a
process tree). The real server run is the opt-in ``tests/tools/test_monailabel_server.py``."""

from __future__ import annotations

import itertools
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

from tools.monailabel_check import PeakRSS, _percentile, _tree_rss_bytes, load_and_check


def _serve(label_bytes: list[bytes], seen: list[float]):
    order = itertools.count()  # next() is atomic: request k gets label_bytes[k % len]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(time.perf_counter())
            body = label_bytes[next(order) % len(label_bytes)]
            time.sleep(0.2)
            self.send_response(200)
            self.send_header("Content-Disposition", 'attachment; filename="label.png"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 64  # the default listen backlog of 5 would delay a burst by a SYN retry (uvicorn: 2048)

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _png(tmp_path, arr, name):
    Image.fromarray(arr).save(tmp_path / name)
    return (tmp_path / name).read_bytes()


def test_concurrent_requests_are_sent_together_and_compared(tmp_path):
    label = np.zeros((24, 32), np.uint8)
    label[4:10, 6:20] = 1
    reference = tmp_path / "reference.png"
    good = _png(tmp_path, label, "reference.png")
    seen: list[float] = []
    server = _serve([good], seen)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        check, row = load_and_check(base, "cdal", "image only", {}, "img", reference, 8, timeout=60)
    finally:
        server.shutdown()
    assert check.ok and row["ok"] == row["equal"] == 8, check.detail
    assert max(seen) - min(seen) < 0.5, "the 8 requests were not in flight together"
    assert 0.2 <= row["p50_s"] <= row["p95_s"] <= row["max_s"] < 5

    other = label.copy()
    other[0, 0] = 1
    seen.clear()
    server = _serve([good, _png(tmp_path, other, "other.png")], seen)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        check, row = load_and_check(base, "cdal", "image only", {}, "img", reference, 4, timeout=60)
    finally:
        server.shutdown()
    assert not check.ok and row["ok"] == 4 and row["equal"] == 2
    assert "label differs from the sequential one" in check.detail


def test_percentiles_and_process_tree_memory():
    assert _percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0 and _percentile([1.0, 2.0], 95) == 2.0
    own = _tree_rss_bytes(os.getpid())
    assert own > 10 * 2**20
    with PeakRSS(os.getpid(), interval=0.01) as rss:
        block = np.ones(64 * 2**20, np.uint8)  # 64 MiB more while sampled
        time.sleep(0.2)
    assert rss.peak >= own + 32 * 2**20 and block.sum() > 0
