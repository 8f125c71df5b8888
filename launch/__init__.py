"""Cluster job submission: local, torchrun, DeepSpeed hostfile, MPI, SLURM (docs/launch.md)."""
