"""streamcap: live CCTV captioning with CNN-LSTM caption models."""

__version__ = "0.1.0"
