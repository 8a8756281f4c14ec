import pytest

from huabu.deployments.mmdit.checkpoint import random_init
from huabu.deployments.mmdit.pipeline import Pipeline


@pytest.fixture(scope="session")
def pipeline() -> Pipeline:
    return Pipeline(random_init(seed=0))
