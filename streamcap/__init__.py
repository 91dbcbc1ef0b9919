"""streamcap: live CCTV captioning with CNN-LSTM caption models."""
import os

__version__ = "0.1.0"

# OpenMP's threads (PyTorch's intra-op pool) spin while they wait for work by default. On a CPU that
# other processes, or this box's own camera decoders, also want, a spinning thread burns the slice its
# partner needs: measured on this 2-core box at load 10, a caption cost 1.6-3.7 s of CPU (2.5-5.7 s)
# spinning, 0.13 s (0.24 s) waiting passively, and a start-up under load took minutes. libgomp reads
# this once, when torch loads it, so it is set here, before anything of streamcap imports torch; an
# explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
