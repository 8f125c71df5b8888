"""Test helper (tests/data_prep/test_interrupts.py): fork one worker, record both pids, sleep."""
import os
import time

pid = os.fork()
if pid == 0:
    time.sleep(120)
    os._exit(0)
with open(os.environ["SLEEPER_PIDS"], "w") as f:
    f.write(f"{os.getpid()} {pid}\n")
time.sleep(120)
