"""The API test suite again, with its `client` served by the Ray pool (see conftest.py).

Every module whose tests use the shared `client` runs here unchanged. test_auth is left out:
it builds its own app on the local pool, and auth does not depend on the pool.
"""

from __future__ import annotations

import pytest

pytest.importorskip("ray", reason="the Ray backend needs `pip install genserve[ray]`")

from tests.api.test_classify import *  # noqa: F403
from tests.api.test_datasets import *  # noqa: F403
from tests.api.test_generate import *  # noqa: F403
from tests.api.test_generate_image import *  # noqa: F403
from tests.api.test_openai import *  # noqa: F403
from tests.api.test_service import *  # noqa: F403
from tests.api.test_train import *  # noqa: F403
