"""benchmarks/bench_gpu.py (the GPU check): a CPU smoke run of its sections so it cannot rot here. The real
run on CUDA is tools/gpu_check.sh itself, which runs bench_gpu.py and fails on its exit code (no pytest
wrapper around it: that would run the whole benchmark a second time on the GPU)."""
import json
import sys

from tests.procs import ROOT, child_env, run

BENCH = str(ROOT / "benchmarks" / "bench_gpu.py")
GPU_CHECK_TIMEOUT_S = 1200


def test_bench_gpu_smoke_on_cpu(tmp_path):
    """Every section but the compile table (tests/pretrain/test_kernels_compile.py) at tiny shapes:
    kernels interpreted against float64, the three attention paths, the trainer's command lines
    parsed by today's CLI, the throughput loop. ~45 s here."""
    out = tmp_path / "smoke.json"
    env = child_env(OMP_NUM_THREADS=1)
    env.pop("TRITON_INTERPRET", None)
    cp = run([sys.executable, BENCH, "--device", "cpu", "--tiny", "--sections", "env,kernels,parity,trainer,speed",
              "--trainer-dry-run", "--json", str(out)], timeout=600, env=env, check=False)
    assert cp.returncode == 0, cp.stdout[-5000:]
    report = json.loads(out.read_text())
    statuses = {k: v["status"] for k, v in report["sections"].items()}
    assert statuses == {k: "pass" for k in ("env", "kernels", "parity", "trainer", "speed")}, statuses
    kernels = report["sections"]["kernels"]["results"]
    assert {r["name"] for r in kernels} == {"bias_gelu", "add_layer_norm", "linear_ce[triton]"}
    assert all(r["finite"] and r["err_triton"] < 1e-2 for r in kernels)
    runs = report["sections"]["trainer"]["runs"]  # the GPU run's command lines, parsed by today's CLI
    assert {k: (v["zero_stage"], v["precision"]) for k, v in runs.items() if k != "zero2_fp32"} == {
        "zero2_bf16": (2, "bf16"), "zero2_fp16": (2, "fp16"), "zero3_bf16": (3, "bf16"), "zero0_fp32": (0, "fp32"),
        "zero2_offload": (2, "bf16"), "slurm": (2, "fp32")}
    assert runs["zero2_fp16"]["env"] == {"LINKBERT_FAULT_NAN_STEPS": "3,4"}
    assert "summary" in cp.stdout and "no section failed" in cp.stdout


def test_bench_gpu_failing_section_does_not_hide_the_others(tmp_path):
    """A section that raises is reported as FAIL, the next still runs, and the exit code is 1."""
    out = tmp_path / "r.json"
    code = ("import sys; sys.argv = ['bench_gpu']; sys.path.insert(0, {b!r}); import bench_gpu\n"
            "def boom(args, device): raise RuntimeError('planted')\n"
            "bench_gpu.section_env = boom\n"
            "sys.exit(bench_gpu.main(['--device', 'cpu', '--tiny', '--sections', 'env,speed', '--json', {o!r}]))\n"
            ).format(b=str(ROOT / "benchmarks"), o=str(out))
    cp = run([sys.executable, "-c", code], timeout=300, check=False)
    assert cp.returncode == 1, cp.stdout[-3000:]
    report = json.loads(out.read_text())
    assert report["sections"]["env"]["status"] == "FAIL" and "planted" in report["sections"]["env"]["reason"]
    assert report["sections"]["speed"]["status"] == "pass"


def test_gpu_check_without_torch_is_one_line(tmp_path):
    """`make gpu-check` with a python3 that has no torch and no .venv: one line, exit 2, no traceback."""
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "gpu_check.sh").write_text((ROOT / "tools" / "gpu_check.sh").read_text())
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\necho 'Traceback (most recent call last):' >&2\nexit 1\n")   # a python without torch
    fake.chmod(0o755)
    cp = run(["bash", str(tools / "gpu_check.sh")], timeout=60, env=child_env(GPU_PYTHON=str(fake)), check=False)
    assert cp.returncode == 2, cp.stdout
    assert "Traceback" not in cp.stdout and cp.stdout.strip().count("\n") == 0, cp.stdout
    assert "has no torch" in cp.stdout
