"""Captioner speed on this machine: encoder alone, decoder alone, end to end.

    python benchmarks/bench_captioner_speed.py [--model CKPT[@SIZE] [--model CKPT2[@SIZE]]] [--repeats 7] [--backends torch-cpu,onnxruntime-cpu]

Reports medians over repeats (the machine is shared and noisy) at batch 1 and
8, per backend: images/s of the encoder, captions/s end to end (preprocess +
encode + decode) for greedy and beam 3, and the decoder's share: decode time
as a percentage of encode time for the same batch (target: beam 3 < 25%).
The last column decodes the same batch with the exhaustive beam search
(`prune=False`: every image until all have beam-size finished captions) in
the same process, so its ratio to the pruned search survives a noisy machine.
The "default" column decodes as the checkpoint ships (its own beam and
grounding thresholds); "vs today's search" decodes the same grid with the
search as it was before it moved to the device (`streamcap.model.search_reference`)
in the same process, alternating with it repeat by repeat: the ratio of its
decode time to the device search's (above 1: the device search is faster),
and end-to-end captions/s with each search. With several --model, the models' rows alternate in
one process and the last column gives each one's default captions/s as a
ratio to the first model's (the honest comparison on a shared, noisy machine). Every row is
warmed up (two full captionings) before it is timed.
bench_backends.py has the encoder precisions (INT8) and ResNet50.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from bench_backends import median_seconds
from streamcap.backends.select import load_captioner
from streamcap.model.decoding import DecodeOptions
from streamcap.model.images import read_image
from streamcap.model.grounding import StepRules
from streamcap.model.search import beam_search
from streamcap.model.search_reference import reference_decode
from streamcap.train.data import load_flickr8k


@torch.no_grad()
def _exhaustive_beam(captioner, grid: torch.Tensor, beam: int):
    vocab = captioner.spec.vocab
    memory, concepts = captioner.prepare(grid)
    rules = StepRules(vocab, captioner.spec.concept_names, concepts, captioner.options.grounding)
    return beam_search(captioner.step, captioner.init_state(memory), memory, vocab.start_index, vocab.end_index,
                       captioner.spec.max_len, beam_size=beam, rules=rules, prune=False)


def alternating_medians(fns, repeats: int) -> list[float]:
    """Median seconds of each function, running them in turn within every repeat (after one warm-up each)."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def _row(captioner, frames, batch: int, repeats: int) -> tuple[str, float]:
    chunk = frames[:batch]
    with torch.no_grad():
        for _ in range(2):  # warm-up: first-run allocations and ONNX Runtime's planning, at this batch size
            captioner.caption(chunk)
        t_enc = median_seconds(lambda: captioner.encode(chunk), repeats)
        grid = captioner.encode(chunk)
        shares, e2e = {}, {}
        default_beam = captioner.spec.beam_size
        for beam in sorted({1, 3, default_beam}):
            captioner.options = DecodeOptions.for_model(captioner.spec, beam, captioner.options.length_penalty)
            t_dec = median_seconds(lambda: captioner.decode(grid), repeats)
            t_all = median_seconds(lambda: captioner.caption(chunk), repeats)
            shares[beam], e2e[beam] = t_dec / t_enc, batch / t_all
        t_exhaustive = median_seconds(lambda: _exhaustive_beam(captioner, grid, 3), repeats)
        options = captioner.options = DecodeOptions.for_model(captioner.spec, default_beam, captioner.options.length_penalty)
        names = captioner.spec.concept_names
        # Alternated repeat by repeat, so a load that comes and goes on a shared box hits both alike.
        t_new, t_old, t_all_new, t_all_old = alternating_medians([
            lambda: captioner.decode(grid),
            lambda: reference_decode(captioner, captioner.spec.vocab, grid, options, names),
            lambda: captioner.caption(chunk),
            lambda: reference_decode(captioner, captioner.spec.vocab, captioner.encode(chunk), options, names),
        ], repeats)
        e2e[default_beam] = batch / t_all_new
    return (f"| {captioner.name} | {batch} | {batch / t_enc:.1f} | {e2e[1]:.1f} | {e2e[3]:.1f} | {100 * shares[1]:.0f}% "
            f"| {100 * shares[3]:.0f}% | {t_exhaustive / (shares[3] * t_enc):.2f} | {e2e[default_beam]:.1f} (beam {default_beam}) "
            f"| {batch / t_all_old:.1f} | {t_old / t_new:.2f} |"), e2e[default_beam]


def _load(model: str | None, backend: str):
    """`runs/x/model.pt@320`: the checkpoint with its encoder on a 320 px square."""
    path, _, size = (model or "").partition("@")
    return load_captioner(path or None, backend=backend, input_size=int(size) if size else None)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append",
                   help="checkpoint[@INPUT_SIZE] (repeat to compare; default: the shipped model at its own size)")
    p.add_argument("--data", default=os.environ.get("STREAMCAP_DATA", "../shared/data") + "/flickr8k")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--backends", default="torch-cpu,onnxruntime-cpu")
    args = p.parse_args()
    if not Path(args.data).exists():
        print(f"skipped: no data at {args.data} (set STREAMCAP_DATA)")
        return 0
    corpus = load_flickr8k(args.data)
    frames = [read_image(corpus.image_paths[i]) for i in corpus.split("dev")[:16]]
    models = args.model or [None]
    print(f"models {', '.join(m or 'shipped default' for m in models)}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| model | backend | batch | encoder img/s | greedy captions/s | beam-3 captions/s | greedy decode / encode "
          "| beam-3 decode / encode | exhaustive beam-3 / pruned | default captions/s | default captions/s, today's search "
          "| default decode: today's search / device search | default vs first model |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for backend in args.backends.split(","):
        captioners = [_load(m, backend) for m in models]
        for batch in [int(b) for b in args.batches.split(",")]:
            base = None
            for model, captioner in zip(models, captioners):
                row, default = _row(captioner, frames, batch, args.repeats)
                base = base or default
                print(f"| {Path(model).name if model else 'shipped'} {row} {default / base:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
