"""Drives the shipped labgrid environment (deploy/labgrid/env.yaml) against a running agent, for
FleetTests. Steps print one marker line each; where the test checks the interlock from outside,
the script waits for the file $SESSION_GO to appear (at most 10 minutes).

  session.py boot   RTEStrategy → shell (the agent boots to the menu entry, ShellDriver logs in),
                    two commands, READY, (go), RTEStrategy → off, DONE
  session.py hold   RTEAgentDriver only: HOLDING, (go), released on exit
"""
import os
import sys
import time

from labgrid import Environment


def wait_for_go():
    deadline = time.monotonic() + 600
    while not os.path.exists(os.environ["SESSION_GO"]) and time.monotonic() < deadline:
        time.sleep(0.1)


env = Environment(os.environ["LG_ENV"])
target = env.get_target("main")
mode = sys.argv[1]

try:
    if mode == "hold":
        agent = target.get_driver("RTEAgentDriver")
        print("HOLDING", agent.lease["id"], agent.lease["holder"], agent.lease["expires_in_s"], flush=True)
        wait_for_go()
    elif mode == "boot":
        strategy = target.get_driver("RTEStrategy")
        strategy.transition("shell")
        shell = target.get_driver("ShellDriver")
        print("CMDLINE", shell.run_check("cat /proc/cmdline")[0], flush=True)
        print("UNAME", shell.run_check("uname -sr")[0], flush=True)
        power = target.get_driver("NetworkPowerDriver")
        print("POWER", "on" if power.get() else "off", flush=True)
        print("READY", flush=True)
        wait_for_go()
        strategy.transition("off")
        print("POWER", "on" if power.get() else "off", flush=True)
    print("DONE", flush=True)
finally:
    target.cleanup()
    print("CLEANED", flush=True)
