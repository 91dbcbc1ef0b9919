#!/usr/bin/env python3
"""Refit a trained model's concept head on other data, keeping its concepts, and write the model with it.

    .venv/bin/python scripts/refit_concept_head.py --model runs/cctv2/model.pt --out runs/cctv3/model.pt \\
        --data ../shared/data/flickr8k --data overlay:../shared/data/coco_subset:1500 ... \\
        --corrections data/caption_corrections.tsv --input-sizes 224,320 --camera-weight 3 --folds 3

The decoder reads the head's probabilities, concept by concept, so the refit
learns exactly the model's concepts in the model's order; only the head's
weights and calibration change (`streamcap train`'s head fitting: clip-held-out
folds, weighted Platt calibration on their out-of-fold predictions). Used when
the head learned a shortcut the decoder did not need retraining for: the CCTV
default's head read camera text (a timestamp) as "a vehicle".
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamcap.train.train import TrainConfig, fit_concept_head, prepare_data  # noqa: E402

log = logging.getLogger("refit_concept_head")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a checkpoint written by `streamcap train` (a .last.pt too)")
    p.add_argument("--out", required=True)
    p.add_argument("--data", action="append", required=True, help="as `streamcap train --data` (overlay:FOLDER:COUNT too)")
    p.add_argument("--corrections")
    p.add_argument("--input-sizes", default="224")
    p.add_argument("--camera-weight", type=float, default=3.0)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--cache-dir", help="as `streamcap train --cache-dir` (the feature cache)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    checkpoint = torch.load(args.model, map_location="cpu", weights_only=False)
    head_spec = checkpoint["decoder"].get("concept_head")
    if not head_spec:
        print(f"{args.model}: this model has no concept head to refit", file=sys.stderr)
        return 2
    config = TrainConfig(data=args.data, out=args.out, corrections=args.corrections, input_sizes=args.input_sizes,
                         camera_weight=args.camera_weight, concept_folds=args.folds, concept_epochs=args.epochs,
                         encoder=checkpoint["encoder"], **({"cache_dir": args.cache_dir} if args.cache_dir else {}))
    t0 = time.time()
    data = prepare_data(config)
    head, _ = fit_concept_head(config, data, data.features[0].shape[-1], names=head_spec["concepts"])
    state = checkpoint["state_dict"]
    for key, value in head.state_dict().items():
        state[f"concept_head.{key}"] = value.to(state[f"concept_head.{key}"].dtype)
    checkpoint["info"] = {**checkpoint.get("info", {}),
                          "concept_head_refit": " ".join(["scripts/refit_concept_head.py", *sys.argv[1:]])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, args.out)
    log.info("%s: %s with its concept head refitted (%d concepts) in %.0f s", args.out, args.model,
             len(head_spec["concepts"]), time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
