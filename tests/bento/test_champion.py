"""The scorer serves the champion promoted into CHAMPION_HOME, the baked model otherwise."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import ModuleType

import bentoml
import pytest

from fraudstream.promotion import write_champion
from fraudstream.training import save

pytestmark = pytest.mark.unit


def test_champion_home_or_the_baked_model(
    service_module: ModuleType, trained_model: str, bentoml_home: Path, tmp_path, monkeypatch
):
    monkeypatch.setattr(service_module.SETTINGS, "champion_home", str(tmp_path))
    # no champion.json yet: the baked model (MODEL_TAG)
    assert service_module.FraudScorer().scorer.model_version == trained_model

    # a champion the shared store lacks: logged, the baked model still serves
    write_champion({"tag": "fraud-model:notinthestore"}, tmp_path)
    assert service_module.FraudScorer().scorer.model_version == trained_model

    # a promoted champion in the shared store (<home>/models, as retrain writes it)
    ref = bentoml.models.get(trained_model)
    tag = save(bentoml.catboost.load_model(ref), {**ref.info.metadata, "threshold": 0.42})
    name, version = tag.split(":")
    source = bentoml_home / "models" / name / version
    shutil.copytree(source, tmp_path / "models" / name / version)
    write_champion({"tag": tag}, tmp_path)
    scorer = service_module.FraudScorer().scorer
    assert scorer.model_version == tag and scorer.threshold == 0.42
