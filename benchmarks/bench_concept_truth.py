"""Concept truth beside caption quality: does the model name what is there, and only that?

    python benchmarks/bench_concept_truth.py --model streamcap/assets/default.pt [--model runs/x/model.pt:1]
        [--backend onnxruntime-cpu] [--input-size 320] [--sets flickr8k,coco_subset,clip_frames,cctv_clips] [--json out.json]

For each model (CHECKPOINT[:BEAM]) and each dev set it captions every image
through the real captioner (the backend the pipeline would pick, grounded
decoding included) and reports, per concept, recall (present and named) and
false mention (absent but named), with counts, and BLEU-4 / CIDEr from the
COCO scorer against the set's own references (Flickr8k 5, COCO subset 2,
clip frames 2), and object hallucination (CHAIRs: share of captions naming an
object category no reference names; CHAIRi: share of named objects that are),
with a human caption scored the same way (`human` rows: every reference
against the image's others) as the reference point. Labels: see
streamcap/train/concept_eval.py. The dev sets are the splits fixed in
streamcap/train/data.py, never trained on. The clip sets are also broken down
by clip. With a concept head, the head's own decisions at its 0.5 threshold
are reported too (`head` rows).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from streamcap.backends.select import load_captioner
from streamcap.model.images import read_image
from streamcap.train.concept_eval import concept_truth, format_rate, hallucination, human_hallucination, image_labels
from streamcap.train.data import clip_of, load_corpora
from streamcap.train.evaluate import official_scores

SETS = ("flickr8k", "coco_subset", "clip_frames", "cctv_clips")
CLIP_SETS = ("clip_frames", "cctv_clips")


def describe_all(captioner, paths: list[Path], batch: int = 8) -> tuple[list[str], list[dict[str, float]]]:
    texts, concepts = [], []
    for start in range(0, len(paths), batch):
        frames = [read_image(p) for p in paths[start : start + batch]]
        for result in captioner.describe(frames):
            texts.append(result.text)
            concepts.append(result.concepts)
    return texts, concepts


def truth_cells(labels, captions) -> list[str]:
    truth = concept_truth(labels, captions)
    cells = []
    for name in ("person", "vehicle", "animal"):
        t = truth[name]
        cells += [format_rate(t.recall, t.present), format_rate(t.false_mention, t.absent)]
    return cells


def chair_cells(result) -> list[str]:
    return [f"{result.chair_s:.3f}" if result.chair_s is not None else "-",
            f"{result.chair_i:.3f}" if result.chair_i is not None else "-"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("STREAMCAP_DATA", "../shared/data"))
    p.add_argument("--model", action="append", help="CHECKPOINT[:BEAM] (default: the shipped model at its beam)")
    p.add_argument("--backend", default="onnxruntime-cpu")
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--input-size", type=int, help="encoder input side (default: the checkpoint's for this backend)")
    p.add_argument("--limit", type=int, default=0, help="first N images of each set (quick looks)")
    p.add_argument("--corrections", default="data/caption_corrections.tsv", help="caption corrections applied to the references")
    p.add_argument("--json", help="write every row and every caption here")
    args = p.parse_args()
    root = Path(args.data)
    if not (root / "flickr8k").is_dir():
        print(f"skipped: no shared data at {root} (set STREAMCAP_DATA)")
        return 0
    sets = {name: load_corpora([root / name], corrections=args.corrections) for name in args.sets.split(",")}
    head = ["person recall", "person false", "vehicle recall", "vehicle false", "animal recall", "animal false"]
    print("| model | beam | set | images | " + " | ".join(head) + " | CHAIRs | CHAIRi | BLEU-4 | CIDEr |")
    print("|---|---|---|---|" + "---|" * (len(head) + 4))
    for set_name, corpus in sets.items():  # the human reference point, once per set
        ids = corpus.split("dev")[: args.limit or None]
        human = human_hallucination([corpus.captions[i] for i in ids])
        print(f"| human (each ref vs the others) | | {set_name} | {human.captions} | " + " | ".join(["-"] * len(head))
              + " | " + " | ".join(chair_cells(human)) + " | | |")
    report = []
    for spec in args.model or [""]:
        path, _, beam = spec.partition(":")
        captioner = load_captioner(path or None, backend=args.backend, beam_size=int(beam) if beam else None,
                                   input_size=args.input_size)
        name = f"{Path(path).parent.name}/{Path(path).name}" if path else "shipped default"
        name += f" @{args.input_size}px" if args.input_size else ""
        for set_name, corpus in sets.items():
            ids = corpus.split("dev")[: args.limit or None]
            t0 = time.perf_counter()
            captions, concepts = describe_all(captioner, [corpus.image_paths[i] for i in ids])
            elapsed = time.perf_counter() - t0
            labels = [image_labels(corpus, i) for i in ids]
            references = [corpus.captions[i] for i in ids]
            chair = hallucination(captions, references)
            scores = official_scores({i: corpus.captions[i] for i in ids}, {i: [c or "empty"] for i, c in zip(ids, captions)})
            row = f"| {name} | {captioner.options.beam_size} | {set_name} | {len(ids)} | " + " | ".join(truth_cells(labels, captions))
            print(row + " | " + " | ".join(chair_cells(chair)) + f" | {scores['BLEU-4']:.3f} | {scores['CIDEr']:.3f} |", flush=True)
            if any(concepts):
                decided = [" ".join(c for c, p in probs.items() if p >= 0.5) for probs in concepts]
                print(f"| {name} head@0.5 | | {set_name} | {len(ids)} | " + " | ".join(truth_cells(labels, decided)) + " | | | | |")
            by_clip: dict[str, list[int]] = {}
            if set_name in CLIP_SETS:
                for k, image_id in enumerate(ids):
                    by_clip.setdefault(clip_of(image_id), []).append(k)
            for clip, members in by_clip.items():
                cells = truth_cells([labels[k] for k in members], [captions[k] for k in members])
                clip_chair = hallucination([captions[k] for k in members], [references[k] for k in members])
                print(f"| {name} | | {clip} | {len(members)} | " + " | ".join(cells) + " | " + " | ".join(chair_cells(clip_chair)) + " | | |")
            print(f"  {name} on {set_name}: {len(ids)} images in {elapsed:.0f} s ({captioner.name}); most hallucinated: "
                  + ", ".join(f"{o} {n}" for o, n in chair.worst()), file=sys.stderr)
            report.append({"model": name, "beam": captioner.options.beam_size, "set": set_name, "scores": scores,
                           "truth": {c: vars(t) for c, t in concept_truth(labels, captions).items()},
                           "chair": {"chair_s": chair.chair_s, "chair_i": chair.chair_i, "by_object": chair.by_object},
                           "by_clip": {clip: [ids[k] for k in members] for clip, members in by_clip.items()},
                           "captions": dict(zip(ids, captions)), "concepts": dict(zip(ids, concepts))})
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
