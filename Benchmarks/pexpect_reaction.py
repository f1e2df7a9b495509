#!/usr/bin/env python3
"""The pexpect side of the reaction benchmark: what a labgrid/pexpect script does to catch the
iPXE prompt. Opens the DUT's tty raw (as pyserial would), waits for "Ctrl-B" with expect() and
answers with the key, SAMPLES times. The DUT program does the timing. With a third argument (a
FIFO), a byte is written to it each time expect() is about to wait: the DUT prompts only then."""
import os
import sys
import tty

import pexpect.fdpexpect

path, samples = sys.argv[1], int(sys.argv[2])
armed = os.open(sys.argv[3], os.O_WRONLY) if len(sys.argv) > 3 else None
fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
tty.setraw(fd)
child = pexpect.fdpexpect.fdspawn(fd, timeout=10)
os.write(fd, b"R")
for _ in range(samples):
    if armed is not None:
        os.write(armed, b"a")
    child.expect(b"Ctrl-B")
    child.send(b"\x02")
