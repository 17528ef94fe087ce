"""Every constant chosen by measurement names the tune-split sweep that chose it (the protocol:
no constant is chosen on the split that is scored)."""

from __future__ import annotations

import json
import re

import yaml

from lrpose_bench.config import config_dir

REPO = config_dir().parent
SWEEP = REPO / "reports" / "sweep" / "sweep.json"
#: words that mark a comment as a measured choice
MEASURED = re.compile(r"\b(measured|chosen|sweep)\b", re.IGNORECASE)


def method_files():
    return sorted((config_dir() / "methods").glob("*.yaml"))


def test_the_shipped_sweep_scored_the_tune_split_only() -> None:
    record = json.loads(SWEEP.read_text())
    assert record["eval_split"] == "SynthPose tune"
    assert all(r["eval_split"] == "SynthPose tune" for r in record["results"])
    assert len(record["seeds"]) >= 3
    # the grid rule of configs/sweep.yaml, the same for every method: at least three points, extended
    # past an edge winner until the winner lies inside its grid
    for choice in record["chosen"]:
        group = [
            r for r in record["results"] if (r["method"], r["resolution"]) == (choice["method"], choice["resolution"])
        ]
        assert len(group) >= 3, f"{choice['method']} {choice['resolution']}: fewer than three grid points"
        assert not choice["at_edge"], f"{choice['method']} {choice['resolution']}: the winner is at a grid edge"


def test_every_measured_constant_names_its_sweep_and_matches_it() -> None:
    record = json.loads(SWEEP.read_text())
    winners = {(c["method"], c["resolution"]): c["point"] for c in record["chosen"]}
    for path in method_files():
        lines = path.read_text().splitlines()
        data = yaml.safe_load(path.read_text())
        for i, line in enumerate(lines):
            comment = line.split("#", 1)[1] if "#" in line else ""
            if not MEASURED.search(comment):
                continue
            assert "sweep" in comment and "tune" in comment, f"{path.name}:{i + 1} measured without a tune-split sweep"
        for (method, res), point in winners.items():
            if path.stem != method:
                continue
            assert f"# sweep {res}: chosen by lrpose-bench sweep" in path.read_text(), (
                f"{path.name} lacks its {res} evidence"
            )
            for key, value in point.items():
                assert data["per_resolution"][res][key] == value, f"{path.name}: {res}.{key} is not the sweep's choice"
