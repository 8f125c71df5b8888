"""Generated commands, hostfiles and sbatch scripts, checked structurally (nothing is started)."""
import shlex
import socket
import sys
from pathlib import Path

import pytest

from launch.cli import build_parser, request_from_args
from launch.errors import LaunchError
from launch.hosts import format_hostfile, local_gpu_count, parse_hostfile
from launch.runner import make_plan
from launch.schedulers import mpi_flavor, plan_mpi
from launch.slurm import parse_job_id, render_script

PY = sys.executable


def req(tmp_path, *argv, command=(PY, "-c", "pass")):
    args = build_parser().parse_args(list(argv))
    r = request_from_args(args, list(command))
    r.workdir = str(tmp_path)
    return r


def opt(argv, name):
    """Value following `name` in an argv list."""
    return argv[argv.index(name) + 1]


def hostfile(tmp_path, text):
    p = tmp_path / "hosts"
    p.write_text(text)
    return str(p)


# ---------------------------------------------------------------- hostfiles

def test_hostfile_dialects_are_read(tmp_path):
    hosts = parse_hostfile(hostfile(tmp_path, "# cluster\nlocalhost slots=4\n127.0.0.1:2  # mpich\nnode3\n\n"))
    assert [(h.name, h.slots) for h in hosts] == [("localhost", 4), ("127.0.0.1", 2), ("node3", None)]


def test_hostfile_bad_line_names_file_and_line(tmp_path):
    p = hostfile(tmp_path, "localhost slots=2\nnode2 gpus=three\n")
    with pytest.raises(LaunchError, match=r"hosts:2: cannot read 'node2 gpus=three'"):
        parse_hostfile(p)


def test_hostfile_duplicate_host(tmp_path):
    with pytest.raises(LaunchError, match="listed twice"):
        parse_hostfile(hostfile(tmp_path, "a\na\n"))


def test_unresolvable_host_is_an_error(tmp_path):
    p = hostfile(tmp_path, "localhost slots=1\nno-such-node.invalid slots=1\n")
    r = req(tmp_path, "--scheduler", "mpi", "--nodes", "2", "--hostfile", p, "--mpi-flavor", "mpich")
    with pytest.raises(LaunchError, match="'no-such-node.invalid' does not resolve"):
        make_plan(r)


def test_too_few_hosts_or_slots(tmp_path):
    p = hostfile(tmp_path, "localhost slots=2\n")
    with pytest.raises(LaunchError, match="lists 1 host"):
        make_plan(req(tmp_path, "--scheduler", "deepspeed", "--nodes", "2", "--hostfile", p))
    with pytest.raises(LaunchError, match="slots=2 but --procs-per-node 4"):
        make_plan(req(tmp_path, "--scheduler", "deepspeed", "--procs-per-node", "4", "--hostfile", p))


def test_format_hostfile_round_trips(tmp_path):
    hosts = parse_hostfile(hostfile(tmp_path, "a slots=3\nb slots=3\n"))
    assert format_hostfile(hosts, "slots") == "a slots=3\nb slots=3\n"
    assert format_hostfile(hosts, "mpich") == "a:3\nb:3\n"


def test_gpu_count_from_visible_devices():
    assert local_gpu_count({"CUDA_VISIBLE_DEVICES": "0,1,3"}) == 3
    assert local_gpu_count({"CUDA_VISIBLE_DEVICES": ""}) == 0


# ---------------------------------------------------------------- local / torchrun / deepspeed

def test_local_single_rank_runs_command_directly(tmp_path):
    plan = make_plan(req(tmp_path, "--scheduler", "local"))
    assert plan.argv == [PY, "-c", "pass"]


def test_local_multi_rank_uses_standalone_torchrun(tmp_path):
    plan = make_plan(req(tmp_path, "--scheduler", "local", "--procs-per-node", "3"))
    assert plan.argv[:3] == [PY, "-m", "torch.distributed.run"]
    assert "--standalone" in plan.argv and opt(plan.argv, "--nproc-per-node") == "3"
    assert plan.argv[plan.argv.index("--no-python") + 1:] == [PY, "-c", "pass"]


def test_local_refuses_several_nodes(tmp_path):
    with pytest.raises(LaunchError, match="this machine only"):
        make_plan(req(tmp_path, "--scheduler", "local", "--nodes", "2"))


def test_gpus_asked_where_none_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(LaunchError, match="--gpus-per-node 2 asked but this machine has 0 GPU"):
        make_plan(req(tmp_path, "--scheduler", "local", "--gpus-per-node", "2"))


def test_default_gpus_is_procs_where_gpus_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    plan = make_plan(req(tmp_path, "--scheduler", "local", "--procs-per-node", "2"))
    assert plan.env["CUDA_VISIBLE_DEVICES"] == "0,1"  # G defaults to P=2 of the 4 visible
    plan = make_plan(req(tmp_path, "--scheduler", "local", "--procs-per-node", "2", "--gpus-per-node", "0"))
    assert plan.env["CUDA_VISIBLE_DEVICES"] == ""


def test_inherited_visible_devices_are_kept(tmp_path, monkeypatch):
    # a shared node where the allocation gave us GPUs 4-7: ranks must stay on those, not 0,1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    plan = make_plan(req(tmp_path, "--scheduler", "local", "--procs-per-node", "2"))
    assert plan.env["CUDA_VISIBLE_DEVICES"] == "4,5"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa, GPU-bbbb,GPU-cccc")
    plan = make_plan(req(tmp_path, "--scheduler", "local", "--procs-per-node", "1"))
    assert plan.env["CUDA_VISIBLE_DEVICES"] == "GPU-aaaa"
    # all of them wanted: the inherited value is left alone (not rewritten)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    plan = make_plan(req(tmp_path, "--scheduler", "local", "--procs-per-node", "2"))
    assert "CUDA_VISIBLE_DEVICES" not in plan.env


def test_torchrun_node_commands(tmp_path):
    r = req(tmp_path, "--scheduler", "torchrun", "--nodes", "3", "--procs-per-node", "2", "--master-addr",
            "10.9.9.9", "--master-port", "29123", "--node-rank", "2")
    plan = make_plan(r)
    a = plan.argv
    assert (opt(a, "--nnodes"), opt(a, "--node-rank"), opt(a, "--nproc-per-node")) == ("3", "2", "2")
    assert (opt(a, "--master-addr"), opt(a, "--master-port")) == ("10.9.9.9", "29123")
    assert plan.wait_for == ("10.9.9.9", 29123)
    # every node's command is printed, each parseable back into the same request but its own rank
    lines = [n.split(": ", 1)[1] for n in plan.notes if n.startswith("#   node")]
    assert len(lines) == 3
    for rank, line in enumerate(lines):
        argv = shlex.split(line)
        i = argv.index("--")
        a2 = build_parser().parse_args(argv[1:i])
        assert a2.node_rank == rank and a2.master_addr == "10.9.9.9" and argv[i + 1:] == r.command


def test_torchrun_node_rank_from_hostfile(tmp_path):
    p = hostfile(tmp_path, f"203.0.113.7 slots=1\n{socket.gethostname()} slots=1\n")
    plan = make_plan(req(tmp_path, "--scheduler", "torchrun", "--nodes", "2", "--hostfile", p))
    assert opt(plan.argv, "--node-rank") == "1" and opt(plan.argv, "--master-addr") == "203.0.113.7"


def test_torchrun_unknown_node_rank_is_explained(tmp_path):
    with pytest.raises(LaunchError, match="pass --node-rank R on each node"):
        make_plan(req(tmp_path, "--scheduler", "torchrun", "--nodes", "2", "--master-addr", "203.0.113.7"))
    with pytest.raises(LaunchError, match="needs --master-addr"):
        make_plan(req(tmp_path, "--scheduler", "torchrun", "--nodes", "2", "--node-rank", "1"))


def test_deepspeed_hostfile_env_file_and_flags(tmp_path):
    p = hostfile(tmp_path, "203.0.113.7:4\n203.0.113.8:4\n")
    r = req(tmp_path, "--scheduler", "deepspeed", "--nodes", "2", "--procs-per-node", "2", "--hostfile", p,
            "--env", "NCCL_DEBUG=INFO", "--env", "MY_FLAG=a b")
    plan = make_plan(r)
    a = plan.argv
    assert a[:3] == [PY, "-m", "deepspeed.launcher.runner"]
    for flag in ("--force_multi", "--no_ssh_check", "--no_python", "--no_local_rank"):
        assert flag in a
    assert opt(a, "--master_addr") == "203.0.113.7" and opt(a, "--launcher") == "pdsh"
    assert Path(opt(a, "--hostfile")).name == "hostfile"
    assert plan.files[opt(a, "--hostfile")] == "203.0.113.7 slots=2\n203.0.113.8 slots=2\n"
    env_file = plan.env["DS_ENV_FILE"]
    pairs = dict(line.split("=", 1) for line in plan.files[env_file].splitlines())
    assert pairs["NCCL_DEBUG"] == "INFO" and pairs["MY_FLAG"] == "a b"
    assert pairs["PATH"].split(":")[0] == str(Path(PY).parent)  # the venv first, for ranks started over ssh
    assert a[-3:] == [PY, "-c", "pass"]


def test_deepspeed_several_nodes_need_a_hostfile(tmp_path):
    with pytest.raises(LaunchError, match="needs --hostfile"):
        make_plan(req(tmp_path, "--scheduler", "deepspeed", "--nodes", "2"))


# ---------------------------------------------------------------- MPI

def test_mpi_flavor_detection(tmp_path):
    fake = tmp_path / "mpirun"
    fake.write_text("#!/bin/sh\necho 'mpirun (Open MPI) 4.1.4'\n")
    fake.chmod(0o755)
    assert mpi_flavor(str(fake)) == "openmpi"
    fake.write_text("#!/bin/sh\necho 'HYDRA build details:'\n")
    assert mpi_flavor(str(fake)) == "mpich"
    fake.write_text("#!/bin/sh\necho 'something else'\n")
    with pytest.raises(LaunchError, match="--mpi-flavor"):
        mpi_flavor(str(fake))


def test_mpich_command(tmp_path):
    p = hostfile(tmp_path, "127.0.0.1 slots=8\nlocalhost slots=8\n")
    r = req(tmp_path, "--scheduler", "mpi", "--nodes", "2", "--procs-per-node", "4", "--hostfile", p)
    plan = plan_mpi(r, mpirun="/opt/mpich/bin/mpirun", flavor="mpich")
    a = plan.argv
    assert (opt(a, "-n"), opt(a, "-ppn")) == ("8", "4")
    assert plan.files[opt(a, "-f")] == "127.0.0.1:4\nlocalhost:4\n"
    genv = {a[i + 1]: a[i + 2] for i, x in enumerate(a) if x == "-genv"}
    assert genv["MASTER_ADDR"] == "127.0.0.1" and genv["MASTER_PORT"] == "29500"
    assert a[-3:] == [PY, "-c", "pass"]


def test_openmpi_command(tmp_path):
    p = hostfile(tmp_path, "127.0.0.1:8\nlocalhost:8\n")
    r = req(tmp_path, "--scheduler", "mpi", "--nodes", "2", "--procs-per-node", "4", "--hostfile", p,
            "--master-port", "29777", "--env", "NCCL_IB_DISABLE=1")
    plan = plan_mpi(r, mpirun="/usr/bin/mpirun", flavor="openmpi")
    a = plan.argv
    assert opt(a, "-np") == "8" and opt(a, "--map-by") == "ppr:4:node" and opt(a, "--bind-to") == "none"
    assert plan.files[opt(a, "--hostfile")] == "127.0.0.1 slots=4\nlocalhost slots=4\n"
    xs = dict(a[i + 1].split("=", 1) for i, x in enumerate(a) if x == "-x")
    assert xs["MASTER_ADDR"] == "127.0.0.1" and xs["MASTER_PORT"] == "29777" and xs["NCCL_IB_DISABLE"] == "1"
    assert "PATH" in xs and "-genv" not in a


def test_mpirun_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(LaunchError, match="mpirun not found"):
        plan_mpi(req(tmp_path, "--scheduler", "mpi"))


# ---------------------------------------------------------------- SLURM

def sbatch_lines(script: str) -> dict:
    out = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH "):
            k, _, v = line[len("#SBATCH "):].partition("=")
            out[k] = v
    return out


def test_sbatch_script_for_base_on_4x8_gpus(tmp_path):
    r = req(tmp_path, "--scheduler", "slurm", "--nodes", "4", "--procs-per-node", "8", "--gpus-per-node", "8",
            "--partition", "gpu", "--time", "4-00:00:00", "--account", "nlp", "--cpus-per-task", "12",
            "--mem", "400G", "--after", "1234", "--container-image", "nvcr.io#nvidia/pytorch:24.01-py3",
            "--sbatch-arg=--qos=high", "--env", "NCCL_DEBUG=WARN")
    script = render_script(r, 8, r.command)
    s = sbatch_lines(script)
    assert s["--nodes"] == "4" and s["--ntasks-per-node"] == "8" and s["--gpus-per-node"] == "8"
    assert s["--partition"] == "gpu" and s["--time"] == "4-00:00:00" and s["--account"] == "nlp"
    assert s["--cpus-per-task"] == "12" and s["--mem"] == "400G"
    assert s["--signal"] == "B:USR1@120" and "--requeue" in s and s["--open-mode"] == "append"
    assert s["--dependency"] == "afterok:1234" and s["--qos"] == "high"
    assert s["--output"] == f"{tmp_path}/slurm_logs/%x-%j.out"
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    assert "--container-image=nvcr.io#nvidia/pytorch:24.01-py3" in srun
    assert shlex.split(srun)[-4:-1] == [PY, "-c", "pass"] and srun.endswith("&")
    assert "export NCCL_DEBUG=WARN" in script and "trap 'forward USR1 1' USR1" in script and "trap 'forward TERM 0' TERM" in script
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script


def test_sbatch_cpu_job_has_no_gpu_line_and_no_requeue(tmp_path):
    r = req(tmp_path, "--scheduler", "slurm", "--nodes", "2", "--no-requeue", "--signal", "TERM@300")
    s = sbatch_lines(render_script(r, 0, r.command))
    assert "--gpus-per-node" not in s and "--no-requeue" in s and s["--signal"] == "B:TERM@300"


def test_sbatch_script_is_valid_bash(tmp_path):
    import subprocess

    r = req(tmp_path, "--scheduler", "slurm", "--nodes", "2", "--env", "A=it's \"quoted\"")
    script = tmp_path / "job.sh"
    script.write_text(render_script(r, 0, r.command))
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_slurm_bad_time_and_signal(tmp_path):
    with pytest.raises(LaunchError, match="--time 'two days'"):
        render_script(req(tmp_path, "--scheduler", "slurm", "--time", "two days"), 0, ["x"])
    with pytest.raises(LaunchError, match="--signal"):
        render_script(req(tmp_path, "--scheduler", "slurm", "--signal", "USR1@soon"), 0, ["x"])


def test_sbatch_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LaunchError, match="sbatch not found"):
        make_plan(req(tmp_path, "--scheduler", "slurm"))


def test_dry_run_works_without_sbatch(tmp_path, monkeypatch, capsys):
    from launch.runner import launch

    monkeypatch.setenv("PATH", str(tmp_path))
    r = req(tmp_path, "--scheduler", "slurm", "--nodes", "2", "--dry-run", command=["linkbert-pretrain", "--x"])
    assert launch(r) == 0
    out = capsys.readouterr().out
    assert out.startswith("#!/bin/bash") and sbatch_lines(out)["--nodes"] == "2"
    assert not list(tmp_path.rglob("*.sbatch"))  # a dry run writes nothing


def test_parse_job_id():
    assert parse_job_id("4242\n") == "4242"
    assert parse_job_id("4243;cluster2\n") == "4243"
    with pytest.raises(LaunchError, match="did not print a job id"):
        parse_job_id("sbatch: error: Batch job submission failed")


# ---------------------------------------------------------------- CLI

def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    from launch.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["--scheduler", "local", "--nodes", "2", "--", PY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("linkbert-launch: error: --scheduler local runs on this machine")
    assert main(["--scheduler", "local"]) == 2
    assert "no command given" in capsys.readouterr().err
    assert main(["--scheduler", "local", "--", "no-such-program-xyz"]) == 2
    assert "'no-such-program-xyz' not found" in capsys.readouterr().err


def test_env_flag_parses_pairs(capsys):
    for bad in ("NOEQUALS", "=1"):   # no '=' / no name: argparse's usage error naming the flag
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--scheduler", "local", "--env", bad])
        assert f"--env expects KEY=VALUE, got {bad!r}" in capsys.readouterr().err
    a = build_parser().parse_args(["--scheduler", "local", "--env", "A=1=2", "--env", "B=", "--env", "A=3"])
    assert a.env == [("A", "1=2"), ("B", ""), ("A", "3")]   # split at the first '=', repeatable, in order
    assert build_parser().parse_args(["--scheduler", "local"]).env == []


def test_chosen_mpirun_must_exist(tmp_path):
    with pytest.raises(LaunchError, match="--mpirun /nope/mpirun does not exist"):
        make_plan(req(tmp_path, "--scheduler", "mpi", "--mpirun", "/nope/mpirun"))


def test_launch_waits_for_node0_on_its_own_and_says_where(tmp_path):
    """launch stands alone (no pretrain import): its own bounded TCP wait, one LaunchError naming addr:port."""
    import socket as sk

    from launch.rendezvous import wait_for_endpoint
    with sk.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(LaunchError, match=f"nothing answered at 127.0.0.1:{port}"):
            wait_for_endpoint("127.0.0.1", port, timeout_s=0.3, poll_s=0.1)
        s.listen()
        wait_for_endpoint("127.0.0.1", port, timeout_s=5, poll_s=0.1)
    # and no module of launch imports another package of the project
    import ast
    from pathlib import Path
    for f in (Path(__file__).resolve().parents[2] / "launch").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.split(".")[0] in ("pretrain", "data_prep", "finetune")], (f, names)


def test_cli_defaults_are_the_request_defaults():
    from launch.cli import build_parser
    from launch.request import LaunchRequest
    args = build_parser().parse_args(["--scheduler", "local"])
    want = LaunchRequest(scheduler="local", command=["x"])
    for name in ("nodes", "procs_per_node", "rendezvous_timeout", "job_name", "log_dir", "signal"):
        assert getattr(args, name) == getattr(want, name), name
