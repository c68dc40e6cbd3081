"""mode=offline_study in a fresh run dir: its stages exist before any of their inputs do, and each
stage's config is validated when the stage runs (the offline stages read the data the record stage
writes, so validating them up front stopped every fresh study)."""

import pytest

import recsys_exp
from recsys_exp.api import _hydra
from recsys_exp.offline.study import study_stages


def test_stages_of_a_fresh_study_validate_when_they_run(tmp_path):
    c = recsys_exp.compose(["+experiment=offline_tutorial", "logger.mode=disabled"])
    with _hydra(None):
        stages = study_stages(c, tmp_path)  # no data, no checkpoints yet: must not raise
        assert [s.name for s in stages] == ["behaviour", "record", "bc", "marwil", "cql"]
        with pytest.raises(recsys_exp.ConfigError, match=r"offline.path=.*behaviour/data: no .parquet files"):
            stages[2].make_config()  # bc before the record stage has written its data
