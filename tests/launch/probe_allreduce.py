"""Rank probe for launcher tests: joins the group through pretrain.dist_env and all-reduces rank+1.

Prints one line per rank: PROBE rank=R world=W local=L node=HOST addr=IP sum=S launcher=NAME ifname=IF END
(addr: the local address this rank uses to reach the master, i.e. the one its traffic really leaves from).
"""
import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from pretrain.dist_env import init_process_group  # noqa: E402

torch.set_num_threads(1)
de = init_process_group("gloo")
t = torch.tensor([float(de.rank + 1)])
dist.all_reduce(t)
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.connect((socket.gethostbyname(de.master_addr), 9))
    addr = s.getsockname()[0]
print(f"PROBE rank={de.rank} world={de.world_size} local={de.local_rank} node={socket.gethostname()} "
      f"addr={addr} sum={t.item():g} launcher={de.launcher} ifname={os.environ.get('GLOO_SOCKET_IFNAME', '-')} END",
      flush=True)
dist.barrier()
dist.destroy_process_group()
