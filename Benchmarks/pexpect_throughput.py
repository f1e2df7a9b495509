#!/usr/bin/env python3
"""pexpect on the throughput benchmark's log: waits for PROMPT, which is only at the end.

--mode expect_exact: the whole log once (expect_exact searches only the new bytes).
--mode expect: expect() with default settings (regex, searchwindowsize=None: the whole buffer is
searched again after every 2000-byte read) on prefixes of 1, 2, 4, ... MB, each ending with the
prompt, until one takes longer than --budget seconds or the whole log is done.
The timeout is disabled (None) so that a slow search is measured rather than cut off.
Prints one `RESULT mb=... seconds=... mbps=...` line per run."""
import argparse
import os
import tempfile
import time

import pexpect.fdpexpect

p = argparse.ArgumentParser()
p.add_argument("log")
p.add_argument("prompt")
p.add_argument("--mode", choices=["expect", "expect_exact"], required=True)
p.add_argument("--budget", type=float, default=60.0)
a = p.parse_args()
data = open(a.log, "rb").read()
prompt = a.prompt.encode()


def measure(blob):
    with tempfile.TemporaryFile() as f:
        f.write(blob)
        f.seek(0)
        child = pexpect.fdpexpect.fdspawn(f.fileno(), timeout=None)
        start = time.monotonic()
        if a.mode == "expect":
            child.expect(prompt)
        else:
            child.expect_exact(prompt)
        seconds = time.monotonic() - start
        assert child.after == prompt and len(child.before) == len(blob) - len(prompt)
    mb = len(blob) / 1e6
    print(f"RESULT mb={mb:.3f} seconds={seconds:.3f} mbps={mb / seconds:.3f}", flush=True)
    return seconds


if a.mode == "expect_exact":
    measure(data)
else:
    body = data[: -len(prompt)]
    size = 1 << 20
    while True:
        blob = data if size >= len(body) else body[:size] + prompt
        if measure(blob) > a.budget or blob is data:
            break
        size *= 2
