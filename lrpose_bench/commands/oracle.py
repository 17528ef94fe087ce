"""``lrpose-bench oracle``: the AP ceiling each codec's quantization allows at each resolution.

Ground truth is encoded with each method's codec, the target itself is decoded (a perfect network),
mapped back to the image with the same inverse crop and scored with the same COCO evaluation.
What is lost here is lost to the codec, not to learning (beyond the paper).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from lrpose_bench.data.dataset import ImageCache
from lrpose_bench.data.sources import load_data
from lrpose_bench.engine.cell import CellSpec, build_method, score_predictions
from lrpose_bench.engine.evaluator import Predictions, build_eval_dataset, heatmap_to_image
from lrpose_bench.oracle import oracle_outputs
from lrpose_bench.resolution import parse_resolution_list
from lrpose_bench.store import ensure_writable_folder, write_json

HELP = "codec oracle: AP of each codec decoding its own ground-truth target (quantization ceiling)"
DEFAULT_METHODS = "hrnet,dark,udp,cal,simcc,rle,integral"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", default=DEFAULT_METHODS, help=f"methods to score (default {DEFAULT_METHODS})")
    parser.add_argument("--res", default="64x48,128x96,256x192", help="resolutions HxW (default 64x48,128x96,256x192)")
    parser.add_argument(
        "--out", default="runs/latest", help="run folder to write oracle.json into (default runs/latest)"
    )
    parser.epilog = "example:\n  lrpose-bench oracle --res 64x48,128x96,256x192 --out runs/quick"


def oracle_rows(cfg, methods: list[str], resolutions, progress: bool = True) -> list[dict]:
    bundle = load_data(cfg.data, progress=progress)
    cache = ImageCache(cfg.data.image_cache_mb)
    rows = []
    for res in resolutions:
        for name in methods:
            method = build_method(CellSpec(name, cfg.model.backbone, res), cfg)
            if method.train_resolution() != res:
                continue  # pipelines (SPSR+pose) have no codec of their own at this size
            dataset = build_eval_dataset(bundle.val, method, res, cfg, cache)
            parts: dict[str, list[np.ndarray]] = {k: [] for k in ("coords", "scores", "matrix", "gt", "vis", "index")}
            for batch in DataLoader(dataset, batch_size=256, shuffle=False):
                outputs = oracle_outputs(method, batch["joints"], batch["visible"])
                with torch.no_grad():
                    coords, scores = method.decode(outputs)
                parts["coords"].append(coords.numpy().astype(np.float64))
                parts["scores"].append(scores.numpy().astype(np.float64))
                parts["matrix"].append(batch["matrix"].numpy())
                parts["gt"].append(batch["joints"].numpy().astype(np.float64))
                parts["vis"].append(batch["visible"].numpy())
                parts["index"].append(batch["index"].numpy())
            cat = {k: np.concatenate(v) for k, v in parts.items()}
            instances = [bundle.val.instances[i] for i in cat["index"]]
            preds = Predictions(
                image_ids=np.array([i.image_id for i in instances]),
                keypoints=heatmap_to_image(cat["coords"], cat["matrix"], res.size, res.heatmap),
                confidences=np.where(cat["vis"] > 0, 1.0, 0.0),
                box_scores=np.ones(len(instances)),
                box_areas=dataset.nms_box_areas()[cat["index"]],
                coarse_hm=cat["coords"],
                final_hm=cat["coords"],
                gt_hm=cat["gt"],
                visible=cat["vis"],
            )
            metrics, _ = score_predictions(bundle, preds, cfg)
            vis = cat["vis"] > 0
            error = np.linalg.norm(cat["coords"] - cat["gt"], axis=-1)[vis]
            rows.append(
                {
                    "method": name,
                    "resolution": str(res),
                    "eval_split": bundle.eval_label,
                    "mean_error_hm_px": float(error.mean()),
                    "max_error_hm_px": float(error.max()),
                    **metrics,
                }
            )
    return rows


def run(args: argparse.Namespace) -> int:
    from lrpose_bench.cli import _bench_config, _method_names

    cfg = _bench_config(args)
    methods = _method_names(args.methods)
    resolutions = parse_resolution_list(args.res)
    out = ensure_writable_folder(Path(args.out))
    rows = oracle_rows(cfg, methods, resolutions, progress=not args.no_progress)
    write_json(out / "oracle.json", rows)
    table = pd.DataFrame(rows)[["method", "resolution", "AP", "AP50", "AP75", "AR", "mean_error_hm_px"]]
    for column in ("AP", "AP50", "AP75", "AR"):
        table[column] = (100 * table[column]).round(1)
    print(f"Codec oracle on {rows[0]['eval_split'] if rows else '?'} (decoding the ground-truth target; OKS AP ×100):")
    print(table.to_string(index=False))
    print(f"written: {out / 'oracle.json'}")
    return 0
