"""Cluster job submission: local, torchrun, DeepSpeed hostfile, MPI, SLURM (SPEC section 5)."""
