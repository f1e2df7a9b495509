#!/usr/bin/env python3
"""The pexpect side of the reaction benchmark: what a labgrid/pexpect script does to catch the
iPXE prompt. Opens the DUT's tty raw (as pyserial would), waits for "Ctrl-B" with expect() and
answers with the key, SAMPLES times. The DUT program does the timing."""
import os
import sys
import tty

import pexpect.fdpexpect

path, samples = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
tty.setraw(fd)
child = pexpect.fdpexpect.fdspawn(fd, timeout=10)
os.write(fd, b"R")
for _ in range(samples):
    child.expect(b"Ctrl-B")
    child.send(b"\x02")
