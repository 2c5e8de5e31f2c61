"""Train streams: ``data.stream_offset`` (where a run starts reading its train split) and a study's
``streams: per_trunk`` (each trunk from its own place in the infinite shapes stream), which leave the
validation images, the trunk sharing and every ``streams: shared`` run as they were."""

from __future__ import annotations

import pytest
import torch
from test_study_trunks import STUDY, runs_csv

from ditscale.config import from_dict, load_yaml
from ditscale.data import build_dataset
from ditscale.data.config import DataConfig
from ditscale.errors import ConfigError
from ditscale.study import load_spec, run_study, spec_from_dict
from ditscale.study.plan import plan_study, run_config, stream_offset
from ditscale.train.config import TrainConfig
from ditscale.train.data_order import DataOrder, rank_batches
from ditscale.train.distributed import DistInfo
from ditscale.train.loop import train
from ditscale.train.rundir import config_changes, weight_relevant


def test_a_run_reads_the_stream_from_its_offset():
    data = DataConfig(name="shapes", image_size=8, shapes_objects=2)
    dataset = build_dataset(data, "train")
    order = DataOrder.for_dataset(dataset, seed=0, offset=1000)
    first = next(rank_batches(dataset, order, lambda s: 4, 4, range(2), DistInfo(0, 1), 0))
    expected = torch.stack([dataset[i]["x"] for i in range(1000, 1004)])
    assert torch.equal(first["x"], expected) and first["y"].tolist() == [
        dataset[i]["y"].item() for i in range(1000, 1004)
    ]
    assert not torch.equal(first["x"], torch.stack([dataset[i]["x"] for i in range(4)]))


def test_stream_offset_is_checked_and_old_configs_still_match():
    for bad in (-1, 2**30):
        with pytest.raises(ConfigError, match=r"data.stream_offset must be in \[0, 2\*\*30\)"):
            DataConfig(stream_offset=bad)
    older = from_dict(TrainConfig, {"data": {"name": "shapes", "image_size": 8}, "max_steps": 1}, where="t").to_dict()
    cfg = {**older, "data": {**older["data"], "stream_offset": 0}}  # as a config written since the key exists
    assert config_changes(older, cfg) == [] and weight_relevant(older) == weight_relevant(cfg)  # same hashes
    moved = {**cfg, "data": {**cfg["data"], "stream_offset": 5}}
    assert config_changes(cfg, moved) == ["data.stream_offset"]


def test_per_trunk_streams_are_one_per_trunk():
    spec = load_spec("quickstart", ["streams=per_trunk"])
    offsets: dict[tuple, set[int]] = {}
    for run in plan_study(spec).runs:
        data = run_config(spec, run).data
        offsets.setdefault((run.rung, run.batch_size, run.seed), set()).add(data["stream_offset"])
        assert data["stream_offset"] == stream_offset(run.rung, run.batch_size, run.seed)
    assert all(len(v) == 1 for v in offsets.values())  # every budget of a trunk reads its stream
    starts = sorted(v.pop() for v in offsets.values())
    assert len(starts) == 10 and all(b - a > 10**6 for a, b in zip(starts, starts[1:]))  # 5 rungs x 2 seeds, apart
    assert stream_offset((2, 96, 3), 8, 0) == 590160231  # pinned: a study's streams never move
    shared = load_spec("quickstart")
    assert all("stream_offset" not in run_config(shared, r).data for r in plan_study(shared).runs)


def test_per_trunk_streams_are_refused_where_they_cannot_work():
    with pytest.raises(ConfigError, match="streams must be one of shared, per_trunk, got 'mine'"):
        load_spec("quickstart", ["streams=mine"])
    with pytest.raises(ConfigError, match="streams: per_trunk needs procedural data .* the 'digits' dataset is finite"):
        spec_from_dict({**STUDY, "data": {"name": "digits", "image_size": 8}, "streams": "per_trunk"})
    with pytest.raises(ConfigError, match="streams: per_trunk sets data.stream_offset for each trunk"):
        load_spec("quickstart", ["streams=per_trunk", "data.stream_offset=7"])


@pytest.mark.slow
def test_a_per_trunk_study_shares_trunks_exactly(tmp_path):
    spec = spec_from_dict({**STUDY, "share_trunks": True, "streams": "per_trunk"})
    out = tmp_path / "s"
    assert run_study(spec, out, progress=False, report=False, echo=lambda m: None).complete
    rows = runs_csv(out)
    # the same runs on the shared stream (test_study_trunks' study) have other losses, the same val images
    shared = tmp_path / "shared"
    assert run_study(
        spec_from_dict({**STUDY, "share_trunks": True}), shared, progress=False, report=False, echo=lambda m: None
    ).complete
    assert [r["run_id"] for r in rows] == [r["run_id"] for r in runs_csv(shared)]
    assert all(a["loss"] != b["loss"] for a, b in zip(rows, runs_csv(shared)))
    # a branch off its trunk equals the run trained alone from its config.yaml (offset included)
    row = max(rows, key=lambda r: float(r["flops"]))
    config = load_yaml(out / "runs" / row["run_id"] / "config.yaml")
    plan = {r.run_id: r for r in plan_study(spec).runs}[row["run_id"]]
    assert config["data"]["stream_offset"] == stream_offset(plan.rung, plan.batch_size, plan.seed) > 0
    alone = train(from_dict(TrainConfig, config, where="config"), tmp_path / "alone", progress=False)
    assert alone["val_loss"] == float(row["loss"])
