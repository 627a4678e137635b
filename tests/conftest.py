import os
import sys
from pathlib import Path

import pytest

# `from tests import onnx_models` works from the repository root without installing the tests
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@pytest.fixture(scope="session", autouse=True)
def shared_mnn_envs(tmp_path_factory):
    """One folder of `--mnn VERSION` environments for the whole session: MNN 3.5.0 is built once, not once per
    test that asks for it, and never in the user's cache or the working tree. A folder the caller already chose
    (a CI cache) is kept."""
    from mnn_parity.conversion.mnn_env import ENVS_VARIABLE

    chosen = os.environ.get(ENVS_VARIABLE)
    folder = Path(chosen) if chosen else tmp_path_factory.getbasetemp() / "mnn-envs"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENVS_VARIABLE, str(folder))
        yield folder


@pytest.fixture(autouse=True)
def no_converter_children_outlive_a_test():
    """A run keeps its converter children for the next run in the process (conversion/batch.py); a test must not
    inherit another test's (they count as running converters, and hold another test's environment)."""
    yield
    from mnn_parity.conversion import batch

    if batch._shared is not None:
        batch._shared.close()
