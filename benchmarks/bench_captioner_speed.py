"""Captioner speed on this machine: encoder alone, decoder alone, end to end.

    python benchmarks/bench_captioner_speed.py [--model CKPT] [--repeats 7]

Reports medians over repeats (the machine is shared and noisy) at batch 1 and
8: images/s of the encoder, captions/s end to end (preprocess + encode +
decode) for greedy and beam 3, and the decoder's share: decode time as a
percentage of encode time for the same batch (target: beam 3 < 25%). PyTorch
backend; see bench_backends.py for ONNX Runtime.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from bench_backends import median_seconds
from streamcap.model.captioner import Captioner, DecodeOptions
from streamcap.model.images import read_image
from streamcap.train.data import load_flickr8k


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model")
    p.add_argument("--data", default=os.environ.get("STREAMCAP_DATA", "../shared/data") + "/flickr8k")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--batches", default="1,8")
    args = p.parse_args()
    if not Path(args.data).exists():
        print(f"skipped: no data at {args.data} (set STREAMCAP_DATA)")
        return 0
    corpus = load_flickr8k(args.data)
    ids = corpus.split("dev")[:16]
    frames = [read_image(corpus.image_paths[i]) for i in ids]
    captioner = Captioner.load(args.model)
    print(f"model {captioner.model_path} ({captioner.spec.encoder} + {captioner.spec.decoder.kind}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| batch | encoder img/s | greedy captions/s | beam-3 captions/s | greedy decode / encode | beam-3 decode / encode |")
    print("|---|---|---|---|---|---|")
    for batch in [int(b) for b in args.batches.split(",")]:
        chunk = frames[:batch]
        with torch.no_grad():
            t_enc = median_seconds(lambda: captioner.encode(chunk), args.repeats)
            grid = captioner.encode(chunk)
            shares, e2e = {}, {}
            for beam in (1, 3):
                captioner.options = DecodeOptions(beam_size=beam, length_penalty=captioner.options.length_penalty, max_len=captioner.spec.max_len)
                t_dec = median_seconds(lambda: captioner.decode(grid), args.repeats)
                t_all = median_seconds(lambda: captioner.caption(chunk), args.repeats)
                shares[beam], e2e[beam] = t_dec / t_enc, batch / t_all
        print(f"| {batch} | {batch / t_enc:.1f} | {e2e[1]:.1f} | {e2e[3]:.1f} | {100 * shares[1]:.0f}% | {100 * shares[3]:.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
